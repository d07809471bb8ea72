//! Following a policy repository with the `git` command line.
//!
//! Why the CLI: it is the one implementation that speaks every transport
//! operators use (https with tokens, ssh with known hosts, file://), verifies
//! SSH commit signatures (`gpg.format=ssh`) and is a small, audited package
//! in any base image. Repository content is never checked out: files are read
//! as blobs from the fetched commit, so hooks, symlinks and filters in an
//! untrusted repository cannot run or escape.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::config::GitConfig;
use crate::policy::load::PolicyFiles;

/// A failing step of following the repository.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GitError {
    #[error("fetch: {0}")]
    Fetch(String),
    #[error("signature: {0}")]
    Signature(String),
    #[error("ancestry: {0}")]
    Rewind(String),
    #[error("checkout: {0}")]
    Checkout(String),
}

impl GitError {
    pub fn step(&self) -> &'static str {
        match self {
            GitError::Fetch(_) => "fetch",
            GitError::Signature(_) => "signature",
            GitError::Rewind(_) => "ancestry",
            GitError::Checkout(_) => "checkout",
        }
    }
}

pub struct GitSource {
    config: GitConfig,
    /// Roots for https remotes: the same bundle that verifies upstreams
    /// (system roots plus `upstream.extra_ca_file`).
    ca_bundle: PathBuf,
    /// The bare repository fetched into (under `state_dir`).
    repo: PathBuf,
    /// An empty HOME so that no user or system configuration applies.
    home: PathBuf,
}

const CANDIDATE: &str = "refs/ecluse/candidate";
const MAX_FILE: usize = 4 << 20;
const MAX_TOTAL: usize = 32 << 20;

impl GitSource {
    pub fn new(config: GitConfig, state_dir: &Path) -> GitSource {
        let base = state_dir.join("policy-git");
        GitSource {
            config,
            ca_bundle: state_dir.join("upstream-roots.pem"),
            repo: base.join("repo.git"),
            home: base.join("home"),
        }
    }

    pub fn describe(&self) -> String {
        format!("git:{}#{}", redact_url(&self.config.url), self.config.r#ref)
    }

    fn command(&self, timeout_secs: u64) -> Command {
        let mut cmd = Command::new("git");
        cmd.current_dir(&self.repo)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .env("GIT_DIR", &self.repo)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_ASKPASS", "/bin/false")
            .env("SSH_ASKPASS", "/bin/false")
            .env("GIT_HTTP_LOW_SPEED_LIMIT", "1")
            .env("GIT_HTTP_LOW_SPEED_TIME", timeout_secs.max(1).to_string())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Environment for talking to the remote: the token as an HTTP header
    /// (through GIT_CONFIG_*, never on a command line), ssh with the given
    /// key and strict host key checking.
    fn remote_env(&self, cmd: &mut Command) -> Result<(), GitError> {
        let mut configs: Vec<(String, String)> =
            vec![("protocol.ext.allow".into(), "never".into())];
        if self.ca_bundle.exists() {
            configs.push((
                "http.sslCAInfo".into(),
                self.ca_bundle.display().to_string(),
            ));
        }
        if let Some(path) = &self.config.token_file {
            let token = std::fs::read_to_string(path)
                .map_err(|e| GitError::Fetch(format!("token_file {}: {e}", path.display())))?;
            let token = token.trim();
            if token.is_empty() || token.contains(['\r', '\n']) {
                return Err(GitError::Fetch(format!(
                    "token_file {} does not hold a single-line token",
                    path.display()
                )));
            }
            let basic = base64_encode(format!("{}:{token}", self.config.token_username).as_bytes());
            configs.push((
                "http.extraHeader".into(),
                format!("Authorization: Basic {basic}"),
            ));
        }
        for (i, (k, v)) in configs.iter().enumerate() {
            cmd.env(format!("GIT_CONFIG_KEY_{i}"), k)
                .env(format!("GIT_CONFIG_VALUE_{i}"), v);
        }
        cmd.env("GIT_CONFIG_COUNT", configs.len().to_string());
        let mut ssh = String::from("ssh -o BatchMode=yes -o StrictHostKeyChecking=yes");
        if let Some(known) = &self.config.known_hosts_file {
            ssh.push_str(&format!(" -o UserKnownHostsFile={}", shell_quote(known)));
        }
        if let Some(key) = &self.config.ssh_key_file {
            ssh.push_str(&format!(" -o IdentitiesOnly=yes -i {}", shell_quote(key)));
        }
        cmd.env("GIT_SSH_COMMAND", ssh);
        Ok(())
    }

    async fn run(
        &self,
        mut cmd: Command,
        what: &str,
        timeout: Duration,
    ) -> Result<Vec<u8>, String> {
        let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).output();
        let out = match tokio::time::timeout(timeout, child).await {
            Err(_) => return Err(format!("{what} took longer than {timeout:?}")),
            Ok(Err(e)) => return Err(format!("cannot run git ({e}); is git installed?")),
            Ok(Ok(out)) => out,
        };
        if out.status.success() {
            Ok(out.stdout)
        } else {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let line = stderr
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .take(3)
                .collect::<Vec<_>>()
                .join(" | ");
            Err(format!("{what} failed: {}", redact_url(&line)))
        }
    }

    async fn ensure_repo(&self) -> Result<(), GitError> {
        std::fs::create_dir_all(&self.home)
            .map_err(|e| GitError::Fetch(format!("{}: {e}", self.home.display())))?;
        if self.repo.join("HEAD").exists() {
            return Ok(());
        }
        std::fs::create_dir_all(&self.repo)
            .map_err(|e| GitError::Fetch(format!("{}: {e}", self.repo.display())))?;
        let mut cmd = self.command(10);
        cmd.args(["init", "--bare", "--quiet"]);
        self.run(cmd, "git init", Duration::from_secs(10))
            .await
            .map_err(GitError::Fetch)?;
        Ok(())
    }

    /// Fetches the configured ref; returns the commit it points at.
    pub async fn fetch(&self) -> Result<String, GitError> {
        self.ensure_repo().await?;
        let timeout = self.config.timeout;
        let reference = &self.config.r#ref;
        let is_sha = reference.len() == 40 && reference.bytes().all(|b| b.is_ascii_hexdigit());
        let mut cmd = self.command(timeout.as_secs());
        self.remote_env(&mut cmd)?;
        cmd.args([
            "fetch",
            "--quiet",
            "--no-tags",
            "--no-write-fetch-head",
            "--force",
            "--",
        ])
        .arg(&self.config.url);
        if is_sha {
            // Any commit reachable from a branch or tag of the remote.
            cmd.args([
                "+refs/heads/*:refs/ecluse/heads/*",
                "+refs/tags/*:refs/ecluse/tags/*",
            ]);
        } else {
            cmd.arg(format!("+{reference}:{CANDIDATE}"));
        }
        self.run(cmd, "git fetch", timeout)
            .await
            .map_err(GitError::Fetch)?;
        let target = if is_sha {
            reference.to_string()
        } else {
            CANDIDATE.to_string()
        };
        let mut cmd = self.command(10);
        cmd.args(["rev-parse", "--verify", "--quiet"])
            .arg(format!("{target}^{{commit}}"));
        let out = self
            .run(cmd, "git rev-parse", Duration::from_secs(10))
            .await
            .map_err(|_| {
                GitError::Fetch(format!(
                    "{reference} does not name a commit of the repository"
                ))
            })?;
        Ok(String::from_utf8_lossy(&out).trim().to_string())
    }

    /// With `allowed_signers` set, the commit must carry a valid SSH
    /// signature by one of its keys.
    pub async fn verify_signature(&self, commit: &str) -> Result<(), GitError> {
        let Some(signers) = &self.config.allowed_signers else {
            return Ok(());
        };
        let mut cmd = self.command(10);
        cmd.args(["-c", "gpg.format=ssh", "-c"])
            .arg(format!("gpg.ssh.allowedSignersFile={}", signers.display()))
            .args(["verify-commit", "--", commit]);
        self.run(cmd, "git verify-commit", Duration::from_secs(20))
            .await
            .map(|_| ())
            .map_err(|e| {
                GitError::Signature(format!(
                    "commit {} is unsigned or not signed by a key in {} ({e})",
                    short(commit),
                    signers.display()
                ))
            })
    }

    /// Refuses a commit that does not descend from the active one.
    pub async fn check_descends(&self, active: Option<&str>, commit: &str) -> Result<(), GitError> {
        let Some(active) = active else {
            return Ok(());
        };
        if self.config.allow_rewind || active == commit {
            return Ok(());
        }
        let mut cmd = self.command(10);
        cmd.args(["merge-base", "--is-ancestor", "--", active, commit]);
        self.run(cmd, "git merge-base", Duration::from_secs(20))
            .await
            .map(|_| ())
            .map_err(|_| {
                GitError::Rewind(format!(
                    "{} moved to {}, which does not descend from the active {} (set policy.git.allow_rewind to accept rewinds)",
                    self.config.r#ref,
                    short(commit),
                    short(active)
                ))
            })
    }

    /// The policy files of `commit` (under `subdir`), read as blobs.
    pub async fn read_commit(&self, commit: &str) -> Result<PolicyFiles, GitError> {
        let subdir = self
            .config
            .subdir
            .as_deref()
            .map(|s| s.trim_matches('/'))
            .filter(|s| !s.is_empty());
        let mut cmd = self.command(10);
        cmd.args(["ls-tree", "-r", "-z", "--full-tree", commit]);
        if let Some(sub) = subdir {
            cmd.args(["--", sub]);
        }
        let listing = self
            .run(cmd, "git ls-tree", Duration::from_secs(20))
            .await
            .map_err(GitError::Checkout)?;
        let mut wanted: Vec<(String, String)> = Vec::new();
        for entry in listing.split(|b| *b == 0).filter(|e| !e.is_empty()) {
            let entry = String::from_utf8_lossy(entry);
            let Some((meta, path)) = entry.split_once('\t') else {
                continue;
            };
            let mut parts = meta.split_whitespace();
            let (mode, kind, oid) = (parts.next(), parts.next(), parts.next());
            let relative = match subdir {
                Some(sub) => match path.strip_prefix(sub).and_then(|p| p.strip_prefix('/')) {
                    Some(rel) => rel.to_string(),
                    None => continue,
                },
                None => path.to_string(),
            };
            let interesting = relative.ends_with(".rego")
                || (relative.starts_with("data/") && relative.ends_with(".json"));
            if !interesting || relative.split('/').any(|c| c.starts_with('.')) {
                continue;
            }
            if kind != Some("blob") || mode == Some("120000") {
                return Err(GitError::Checkout(format!(
                    "{path} is a {} (mode {}): only regular files are policies",
                    kind.unwrap_or("?"),
                    mode.unwrap_or("?")
                )));
            }
            if let Some(oid) = oid {
                wanted.push((relative, oid.to_string()));
            }
        }
        if wanted.is_empty() {
            return Err(GitError::Checkout(format!(
                "commit {} has no policy files{}",
                short(commit),
                subdir.map(|s| format!(" under {s}/")).unwrap_or_default()
            )));
        }
        let blobs = self.cat_blobs(&wanted).await?;
        let mut files = PolicyFiles::default();
        for ((path, _), text) in wanted.into_iter().zip(blobs) {
            files.add(&path, text);
        }
        Ok(files)
    }

    /// Reads blobs through one `git cat-file --batch`, within size limits.
    async fn cat_blobs(&self, wanted: &[(String, String)]) -> Result<Vec<String>, GitError> {
        let mut cmd = self.command(10);
        cmd.args(["cat-file", "--batch"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd
            .spawn()
            .map_err(|e| GitError::Checkout(format!("cannot run git: {e}")))?;
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| GitError::Checkout("no stdin".into()))?;
        let request: String = wanted.iter().map(|(_, oid)| format!("{oid}\n")).collect();
        let writer = tokio::spawn(async move {
            let _ = stdin.write_all(request.as_bytes()).await;
        });
        let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
            .await
            .map_err(|_| GitError::Checkout("reading files took longer than 30s".into()))?
            .map_err(|e| GitError::Checkout(e.to_string()))?;
        let _ = writer.await;
        let mut rest = out.stdout.as_slice();
        let mut texts = Vec::with_capacity(wanted.len());
        let mut total = 0usize;
        for (path, _) in wanted {
            let newline = rest
                .iter()
                .position(|b| *b == b'\n')
                .ok_or_else(|| GitError::Checkout(format!("{path}: truncated blob")))?;
            let header = String::from_utf8_lossy(&rest[..newline]).to_string();
            let size: usize = header
                .rsplit(' ')
                .next()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| GitError::Checkout(format!("{path}: {header}")))?;
            if size > MAX_FILE {
                return Err(GitError::Checkout(format!(
                    "{path} is {size} bytes; the limit is {MAX_FILE}"
                )));
            }
            total += size;
            if total > MAX_TOTAL {
                return Err(GitError::Checkout(format!(
                    "the policies exceed {MAX_TOTAL} bytes"
                )));
            }
            let body = rest
                .get(newline + 1..newline + 1 + size)
                .ok_or_else(|| GitError::Checkout(format!("{path}: truncated blob")))?;
            let text = String::from_utf8(body.to_vec())
                .map_err(|_| GitError::Checkout(format!("{path} is not UTF-8 text")))?;
            texts.push(text);
            rest = rest.get(newline + 2 + size..).unwrap_or_default();
        }
        Ok(texts)
    }
}

pub fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

/// Removes user information (tokens) from URLs in messages.
fn redact_url(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (before, after) = rest.split_at(i + 3);
        out.push_str(before);
        let end = after
            .find(|c: char| c == '/' || c.is_whitespace() || c == '\'')
            .unwrap_or(after.len());
        let authority = &after[..end];
        match authority.rfind('@') {
            Some(at) => {
                out.push_str("***@");
                out.push_str(&authority[at + 1..]);
            }
            None => out.push_str(authority),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', "'\\''"))
}

fn base64_encode(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials_in_messages() {
        assert_eq!(
            redact_url("fatal: unable to access 'https://user:tok@github.com/org/p.git/': 403"),
            "fatal: unable to access 'https://***@github.com/org/p.git/': 403"
        );
        assert_eq!(redact_url("file:///tmp/x"), "file:///tmp/x");
    }

    #[test]
    fn base64() {
        assert_eq!(
            base64_encode(b"x-access-token:abc"),
            "eC1hY2Nlc3MtdG9rZW46YWJj"
        );
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
    }
}
