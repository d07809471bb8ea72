//! `ecluse.yaml`: every key, its default, and the checks that reject a bad file.
//!
//! Unknown keys are refused (`deny_unknown_fields`) so that a typo in a limit or
//! a policy source never silently falls back to a default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::units::{de_duration, de_opt_duration, de_size};
pub use crate::units::{parse_duration, parse_size};

/// A problem with the configuration file. `ecluse check` prints every one.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The YAML is malformed, has an unknown key or a value of the wrong shape.
    #[error("invalid config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// The file parsed, but some values are inconsistent.
    #[error("invalid config: {}", .0.join("; "))]
    Invalid(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Decisions are enforced: denies block, reroutes rewrite.
    #[default]
    Enforce,
    /// Decisions are evaluated, logged and traced, never enforced.
    Report,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub admin: AdminConfig,
    /// Where connections redirected by `ecluse iptables` arrive (off unless
    /// set; one address or a list, e.g. `127.0.0.1:15001` and `[::1]:15001`
    /// for both families): each is decided as a `CONNECT` to its TLS SNI
    /// (or plain HTTP `Host`) that must resolve to the connection's original
    /// destination.
    #[serde(deserialize_with = "one_or_many")]
    pub transparent_listen: Vec<SocketAddr>,
    pub state_dir: PathBuf,
    pub ca: CaConfig,
    pub mode: Mode,
    pub policy: PolicyConfig,
    pub targets: BTreeMap<String, TargetConfig>,
    pub upstream: UpstreamConfig,
    pub limits: Limits,
    pub timeouts: Timeouts,
    pub source: SourceConfig,
    pub audit: AuditConfig,
    pub telemetry: crate::telemetry::TelemetryConfig,
    /// Worker threads for the proxy service; 0 means one per CPU.
    pub threads: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 3128)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9901)),
            admin: AdminConfig::default(),
            transparent_listen: Vec::new(),
            state_dir: PathBuf::from(".ecluse"),
            ca: CaConfig::default(),
            mode: Mode::Enforce,
            policy: PolicyConfig::default(),
            targets: BTreeMap::new(),
            upstream: UpstreamConfig::default(),
            limits: Limits::default(),
            timeouts: Timeouts::default(),
            source: SourceConfig::default(),
            audit: AuditConfig::default(),
            telemetry: Default::default(),
            threads: 0,
        }
    }
}

/// What the admin listener lets callers do (`admin`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Shortest time between two accepted `POST /policy/reload` (each one
    /// fetches and compiles policy); sooner ones get a 429. 0s: no limit.
    #[serde(deserialize_with = "de_duration")]
    pub reload_min_interval: Duration,
    /// File holding the token `POST /policy/reload` requires as
    /// `Authorization: Bearer <token>`; read at each request, so a rotated
    /// Secret applies without a restart.
    pub reload_token_file: Option<PathBuf>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            reload_min_interval: Duration::from_secs(5),
            reload_token_file: None,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaConfig {
    /// PEM certificate of the CA (for example a mounted cert-manager secret).
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the CA; must not be readable by group or others.
    pub key_file: Option<PathBuf>,
    /// Where to write the app-facing bundle (public roots + ecluse CA) at start.
    pub bundle_out: Option<PathBuf>,
    /// Validity of minted leaf certificates.
    #[serde(deserialize_with = "de_opt_duration")]
    pub leaf_validity: Option<Duration>,
    /// Leaf certificates kept in memory (distinct hosts).
    pub leaf_cache_size: Option<usize>,
    /// Accept a `key_file` its group may read: a Kubernetes secret mounted
    /// with an `fsGroup` is group-readable by construction.
    pub allow_group_readable_key: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Directory holding `*.rego` modules and `data/*.json`; embedded defaults
    /// when neither `dir` nor `git` is set.
    pub dir: Option<PathBuf>,
    /// How often the directory is checked for changes.
    #[serde(deserialize_with = "de_duration")]
    pub poll_interval: Duration,
    /// A Git repository to follow instead of a directory.
    pub git: Option<GitConfig>,
    /// Longest a single policy evaluation may run before it counts as a deny.
    #[serde(deserialize_with = "de_duration")]
    pub eval_timeout: Duration,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            dir: None,
            poll_interval: Duration::from_secs(5),
            git: None,
            eval_timeout: Duration::from_millis(50),
        }
    }
}

/// A policy repository (`policy.git`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitConfig {
    /// `https://...`, `ssh://...`, `git@host:path`, `file://...` or a local path.
    pub url: String,
    /// Branch, tag or full commit SHA.
    #[serde(default = "default_ref")]
    pub r#ref: String,
    /// Directory of the repository holding the policies (default: its root).
    #[serde(default)]
    pub subdir: Option<String>,
    #[serde(default = "default_git_poll", deserialize_with = "de_duration")]
    pub poll_interval: Duration,
    /// File holding an HTTPS access token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// User name sent with the token (GitHub: x-access-token; GitLab: oauth2).
    #[serde(default = "default_token_user")]
    pub token_username: String,
    /// Private key for ssh URLs.
    #[serde(default)]
    pub ssh_key_file: Option<PathBuf>,
    /// known_hosts for ssh URLs; host keys are always checked.
    #[serde(default)]
    pub known_hosts_file: Option<PathBuf>,
    /// git's SSH allowed-signers file: when set, the tip commit must be
    /// signed by one of these keys.
    #[serde(default)]
    pub allowed_signers: Option<PathBuf>,
    /// Accept a ref that moved to a commit that does not descend from the
    /// active one (a force-push rewind).
    #[serde(default)]
    pub allow_rewind: bool,
    /// Longest a fetch may take.
    #[serde(default = "default_git_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
}

fn default_ref() -> String {
    "main".into()
}

fn default_git_poll() -> Duration {
    Duration::from_secs(30)
}

fn default_token_user() -> String {
    "x-access-token".into()
}

fn default_git_timeout() -> Duration {
    Duration::from_secs(60)
}

/// Where a decision may reroute a call (`route.target`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// `https://host[:port]/prefix` or `http://...` for in-cluster servers.
    pub base_url: String,
    /// File holding the target's API key; re-read when it changes.
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// Client model -> target model; `"*"` is the fallback.
    #[serde(default)]
    pub models: BTreeMap<String, String>,
    /// Extra request headers sent to the target.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The target's API dialect: `mistral` or `openai` (vLLM and other
    /// OpenAI-compatible servers). Default: `mistral` for Mistral's hosts,
    /// `openai` otherwise.
    #[serde(default)]
    pub api: Option<String>,
    /// APIs besides chat completions that the target serves itself, so that
    /// calls to them are sent as they are instead of translated: `responses`
    /// (OpenAI's Responses API, served by vLLM), `messages` (Anthropic's
    /// Messages API, also served by vLLM).
    #[serde(default)]
    pub native: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// File the decision audit log (JSON lines) is appended to; stdout when unset.
    pub file: Option<PathBuf>,
    /// What a call does when the queue to the audit writer is full.
    pub on_full: OnFull,
    /// How long a call waits for room in the queue (`on_full: block`).
    #[serde(deserialize_with = "de_duration")]
    pub max_wait: Duration,
    /// Records the queue holds before it is full.
    pub queue_records: usize,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            file: None,
            on_full: OnFull::Block,
            max_wait: Duration::from_secs(1),
            queue_records: 8192,
        }
    }
}

/// No decision without its record (`block`), or serving on with losses
/// counted (`drop`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnFull {
    /// The call waits up to `max_wait` for room, then is refused (503).
    #[default]
    Block,
    /// The record is dropped and counted.
    Drop,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// `host:port` -> address, like curl's `--resolve`. These destinations are
    /// dialled as given and are exempt from the private-address refusal.
    pub resolve: BTreeMap<String, SocketAddr>,
    /// A PEM file of CAs trusted for upstream TLS besides the system roots.
    pub extra_ca_file: Option<PathBuf>,
    /// Ports a CONNECT may name.
    pub connect_ports: Vec<u16>,
    /// Ports an absolute-form plain `http://` request may name.
    pub http_ports: Vec<u16>,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            resolve: BTreeMap::new(),
            extra_ca_file: None,
            connect_ports: vec![443],
            http_ports: vec![80],
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    #[serde(deserialize_with = "de_size")]
    pub max_request_body: usize,
    #[serde(deserialize_with = "de_size")]
    pub max_header_bytes: usize,
    pub max_header_count: usize,
    /// How many times its sent size a content-coded request body may grow
    /// when decoded for the scan (beyond 1 MiB decoded); more is a 413.
    pub max_decoded_ratio: usize,
    /// Client connections served at once (tunnels included); more get a 503.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_body: 10 * 1024 * 1024,
            max_header_bytes: 32 * 1024,
            max_header_count: 100,
            max_decoded_ratio: 100,
            max_connections: 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    #[serde(deserialize_with = "de_duration")]
    pub header_read: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub tls_handshake: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub dns: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub upstream_connect: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub first_byte: Duration,
    /// Longest silence between two chunks of a streamed response.
    #[serde(deserialize_with = "de_duration")]
    pub stream_idle: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub keepalive_idle: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub tunnel_idle: Duration,
    /// Longest time a SIGTERM waits for in-flight calls before exiting.
    #[serde(deserialize_with = "de_duration")]
    pub shutdown_grace: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            header_read: Duration::from_secs(10),
            tls_handshake: Duration::from_secs(10),
            dns: Duration::from_secs(5),
            upstream_connect: Duration::from_secs(5),
            first_byte: Duration::from_secs(120),
            stream_idle: Duration::from_secs(300),
            keepalive_idle: Duration::from_secs(60),
            tunnel_idle: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(15),
        }
    }
}

/// Who is calling: fed to policies as `input.source`. Defaults come from the
/// environment the Kubernetes downward API fills.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    pub workload: Option<String>,
    pub namespace: Option<String>,
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            workload: std::env::var("ECLUSE_WORKLOAD")
                .ok()
                .filter(|v| !v.is_empty()),
            namespace: std::env::var("ECLUSE_NAMESPACE")
                .or_else(|_| std::env::var("POD_NAMESPACE"))
                .ok()
                .filter(|v| !v.is_empty()),
        }
    }
}

/// What secret a Git remote URL embeds, if any: any userinfo of an http(s)
/// URL (GitHub and GitLab accept a token as the user name alone), a
/// password of an ssh URL (`ssh://git@host/...` and `git@host:path` name a
/// user, not a secret). Such a URL would put the token on git's command
/// line, in `ps` and in error messages.
pub fn url_credentials(url: &str) -> Option<&'static str> {
    let url = url.trim();
    if let Some((scheme, rest)) = url.split_once("://") {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let (userinfo, _) = authority.rsplit_once('@')?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme == "ssh" || scheme == "git+ssh" || scheme == "ssh+git" {
            userinfo
                .contains(':')
                .then_some("a password (user:password@)")
        } else if scheme == "file" {
            None
        } else {
            Some(if userinfo.contains(':') {
                "credentials (user:token@)"
            } else {
                "a user name that may be a token (token@)"
            })
        }
    } else {
        // scp-like `user@host:path`: a colon before the `@` is a password.
        let (user, _) = url.split_once('@')?;
        (user.contains(':') && !user.contains('/')).then_some("a password (user:password@)")
    }
}

impl Config {
    /// Reads and validates a config file. Relative paths inside it are taken
    /// relative to the current directory, as a user typing them would expect.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Config::from_yaml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })?;
        config.validate()?;
        config.anchor_paths(&working_dir()?);
        Ok(config)
    }

    /// The defaults, as `load` would give them for an empty file.
    pub fn load_defaults() -> Result<Config, ConfigError> {
        let mut config = Config::default();
        config.anchor_paths(&working_dir()?);
        Ok(config)
    }

    /// Makes every relative path absolute against `base`, the working
    /// directory at load time: some are used from another directory later
    /// (git runs inside its repository under `state_dir`, and is handed the
    /// ssh key, known hosts, signers and CA bundle paths).
    pub fn anchor_paths(&mut self, base: &Path) {
        let anchor = |path: &mut PathBuf| {
            if path.is_relative() {
                // A leading `./` would otherwise stay inside the joined path.
                let rest: PathBuf = path
                    .components()
                    .filter(|c| !matches!(c, std::path::Component::CurDir))
                    .collect();
                *path = base.join(rest);
            }
        };
        anchor(&mut self.state_dir);
        for path in [
            &mut self.ca.cert_file,
            &mut self.ca.key_file,
            &mut self.ca.bundle_out,
            &mut self.policy.dir,
            &mut self.audit.file,
            &mut self.upstream.extra_ca_file,
            &mut self.admin.reload_token_file,
        ]
        .into_iter()
        .flatten()
        {
            anchor(path);
        }
        if let Some(git) = &mut self.policy.git {
            for path in [
                &mut git.token_file,
                &mut git.ssh_key_file,
                &mut git.known_hosts_file,
                &mut git.allowed_signers,
            ]
            .into_iter()
            .flatten()
            {
                anchor(path);
            }
            if is_local_git_path(&git.url) {
                let mut path = PathBuf::from(&git.url);
                anchor(&mut path);
                git.url = path.display().to_string();
            }
        }
        for target in self.targets.values_mut() {
            if let Some(path) = &mut target.api_key_file {
                anchor(path);
            }
        }
    }

    pub fn from_yaml(text: &str) -> Result<Config, String> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        serde_yaml::from_str(text).map_err(|e| e.to_string())
    }

    /// Cross-field checks that serde cannot express; returns every problem.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if self.listen == self.admin_listen {
            problems.push(format!(
                "listen and admin_listen are both {}; they need distinct addresses",
                self.listen
            ));
        }
        for t in &self.transparent_listen {
            if *t == self.listen || *t == self.admin_listen {
                problems.push(format!(
                    "transparent_listen {t} is also listen or admin_listen; it needs its own address"
                ));
            }
        }
        if self.ca.cert_file.is_some() != self.ca.key_file.is_some() {
            problems.push("ca.cert_file and ca.key_file must be given together".to_string());
        }
        if self.limits.max_request_body == 0 {
            problems.push("limits.max_request_body must be above 0".to_string());
        }
        if self.limits.max_header_bytes < 1024 {
            problems.push("limits.max_header_bytes must be at least 1KiB".to_string());
        }
        if self.limits.max_header_count == 0 || self.limits.max_connections == 0 {
            problems.push(
                "limits.max_header_count and limits.max_connections must be above 0".to_string(),
            );
        }
        if self.upstream.connect_ports.is_empty() {
            problems.push("upstream.connect_ports must name at least one port".to_string());
        }
        for key in self.upstream.resolve.keys() {
            if crate::authority::parse_authority(key).is_err() {
                problems.push(format!(
                    "upstream.resolve key {key:?} must be host:port, like curl --resolve"
                ));
            }
        }
        if self.policy.dir.is_some() && self.policy.git.is_some() {
            problems.push("policy.dir and policy.git are exclusive: choose one source".to_string());
        }
        if self.policy.poll_interval < Duration::from_millis(100) {
            problems.push("policy.poll_interval must be at least 100ms".to_string());
        }
        if let Some(git) = &self.policy.git {
            if git.url.trim().is_empty() || git.url.starts_with('-') {
                problems.push("policy.git.url must name a repository".to_string());
            }
            if let Some(what) = url_credentials(&git.url) {
                problems.push(format!(
                    "policy.git.url carries {what}: remove it from the URL and put the token in \
                     policy.git.token_file (sent as an HTTP header, never on a command line or in logs), \
                     or use an ssh URL with policy.git.ssh_key_file"
                ));
            }
            if git.r#ref.is_empty() || git.r#ref.starts_with('-') || git.r#ref.contains("..") {
                problems.push(format!(
                    "policy.git.ref {:?} is not a branch, tag or commit",
                    git.r#ref
                ));
            }
            if let Some(sub) = &git.subdir {
                if sub.starts_with('/') || sub.split('/').any(|c| c == "..") {
                    problems.push(
                        "policy.git.subdir must be a relative path inside the repository"
                            .to_string(),
                    );
                }
            }
            if git.poll_interval < Duration::from_secs(1) {
                problems.push("policy.git.poll_interval must be at least 1s".to_string());
            }
            let ssh = git.url.starts_with("ssh://")
                || (git.url.contains('@') && git.url.contains(':') && !git.url.contains("://"));
            if ssh && git.known_hosts_file.is_none() {
                problems.push("policy.git.known_hosts_file is required for ssh URLs (host keys are always checked)".to_string());
            }
        }
        if self.policy.eval_timeout.is_zero() || self.policy.eval_timeout > Duration::from_secs(5) {
            problems.push("policy.eval_timeout must be between 1ms and 5s".to_string());
        }
        for (name, target) in &self.targets {
            if let Err(e) = crate::route::url::TargetUrl::parse(&target.base_url) {
                problems.push(format!("targets.{name}.base_url: {e}"));
            }
            if let Some(api) = &target.api {
                if crate::route::translate::Dialect::from_name(api).is_none() {
                    problems.push(format!(
                        "targets.{name}.api: {api:?} is not one of mistral, openai"
                    ));
                }
            }
            for (header, value) in &target.headers {
                if http::HeaderName::from_bytes(header.as_bytes()).is_err()
                    || http::HeaderValue::from_str(value).is_err()
                {
                    problems.push(format!(
                        "targets.{name}.headers: {header:?} is not a valid header"
                    ));
                }
            }
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                problems.push(format!(
                    "targets: name {name:?} must be letters, digits, '-' or '_'"
                ));
            }
        }
        if let Some(v) = self.ca.leaf_validity {
            if v < Duration::from_secs(3600) || v > Duration::from_secs(30 * 86400) {
                problems.push("ca.leaf_validity must be between 1h and 30d".to_string());
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    pub fn ca_cert_path(&self) -> PathBuf {
        self.ca
            .cert_file
            .clone()
            .unwrap_or_else(|| self.state_dir.join("ca.pem"))
    }

    pub fn ca_key_path(&self) -> PathBuf {
        self.ca
            .key_file
            .clone()
            .unwrap_or_else(|| self.state_dir.join("ca-key.pem"))
    }
}

fn working_dir() -> Result<PathBuf, ConfigError> {
    std::env::current_dir().map_err(|e| {
        ConfigError::Invalid(vec![format!(
            "cannot read the working directory to resolve relative paths: {e}"
        )])
    })
}

/// Whether git reads `url` as a local path: no scheme, and no `host:` of
/// the scp-like ssh syntax (a `/` before the first `:` makes it a path, as
/// git decides).
fn is_local_git_path(url: &str) -> bool {
    if url.contains("://") {
        return false;
    }
    match (url.find(':'), url.find('/')) {
        (None, _) => true,
        (Some(colon), Some(slash)) => slash < colon,
        (Some(_), None) => false,
    }
}

/// One address or a list of them.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(SocketAddr),
        Many(Vec<SocketAddr>),
    }
    match OneOrMany::deserialize(d) {
        Ok(OneOrMany::One(a)) => Ok(vec![a]),
        Ok(OneOrMany::Many(v)) => Ok(v),
        Err(_) => Err(serde::de::Error::custom(
            "transparent_listen: expected an address (127.0.0.1:15001) or a list of them",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_documented_defaults() {
        let c = Config::from_yaml("").unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:3128");
        assert_eq!(c.admin_listen.to_string(), "127.0.0.1:9901");
        assert_eq!(c.limits.max_request_body, 10 << 20);
        assert_eq!(c.limits.max_header_bytes, 32 << 10);
        assert_eq!(c.timeouts.first_byte, Duration::from_secs(120));
        assert_eq!(c.upstream.connect_ports, vec![443]);
        assert_eq!(c.mode, Mode::Enforce);
        assert_eq!(c.policy.eval_timeout, Duration::from_millis(50));
        assert_eq!(c.upstream.http_ports, vec![80]);
        // Sized together for a 256Mi sidecar: see the README's "Sizing".
        assert_eq!(c.limits.max_connections, 1024);
        assert_eq!(c.audit.queue_records, 8192);
    }

    #[test]
    fn admin_reload_settings_parse() {
        let c = Config::from_yaml("").unwrap();
        assert_eq!(c.admin.reload_min_interval, Duration::from_secs(5));
        assert_eq!(c.admin.reload_token_file, None);
        let c = Config::from_yaml(
            "admin: { reload_min_interval: 30s, reload_token_file: /etc/ecluse/reload-token }",
        )
        .unwrap();
        assert_eq!(c.admin.reload_min_interval, Duration::from_secs(30));
        assert_eq!(
            c.admin.reload_token_file.as_deref(),
            Some(Path::new("/etc/ecluse/reload-token"))
        );
        let err = Config::from_yaml("admin: { reload_token: x }").unwrap_err();
        assert!(err.contains("reload_token"), "{err}");
    }

    #[test]
    fn git_urls_with_credentials_are_named() {
        for (url, found) in [
            ("https://github.com/acme/policies.git", None),
            (
                "https://user:ghp_secret@github.com/acme/policies.git",
                Some("credentials (user:token@)"),
            ),
            (
                "HTTPS://x-access-token:t@github.com/a",
                Some("credentials (user:token@)"),
            ),
            (
                "https://ghp_secret@github.com/acme/policies.git",
                Some("a user name that may be a token (token@)"),
            ),
            (
                "http://u:p@10.0.0.1:8080/a.git",
                Some("credentials (user:token@)"),
            ),
            ("https://github.com/acme/policies.git?x=a@b", None),
            ("https://github.com/acme/p@ths.git", None),
            ("ssh://git@github.com/acme/policies.git", None),
            (
                "ssh://git:hunter2@github.com/acme/policies.git",
                Some("a password (user:password@)"),
            ),
            ("git@github.com:acme/policies.git", None),
            (
                "git:hunter2@github.com:acme/policies.git",
                Some("a password (user:password@)"),
            ),
            ("file:///srv/git/policies.git", None),
            ("/srv/repos/a@b:c", None),
            ("../policies", None),
        ] {
            assert_eq!(url_credentials(url), found, "{url}");
        }
        let c = Config::from_yaml(
            "policy:\n  git: { url: 'https://bot:ghp_secret123@github.com/acme/policies.git' }",
        )
        .unwrap();
        let ConfigError::Invalid(problems) = c.validate().unwrap_err() else {
            panic!("not an Invalid error")
        };
        let text = problems.join("; ");
        assert!(text.contains("policy.git.token_file"), "{text}");
        assert!(
            !text.contains("ghp_secret123"),
            "the token is echoed: {text}"
        );
    }

    #[test]
    fn the_transparent_listener_is_off_unless_set_and_needs_its_own_address() {
        assert!(Config::from_yaml("").unwrap().transparent_listen.is_empty());
        let c = Config::from_yaml("transparent_listen: 127.0.0.1:15001").unwrap();
        assert_eq!(
            c.transparent_listen,
            ["127.0.0.1:15001".parse::<SocketAddr>().unwrap()]
        );
        assert!(c.validate().is_ok());
        let c = Config::from_yaml("transparent_listen: [127.0.0.1:15001, '[::1]:15001']").unwrap();
        assert_eq!(c.transparent_listen.len(), 2);
        let err = Config::from_yaml("transparent_listen: 15001").unwrap_err();
        assert!(err.contains("expected an address"), "{err}");
        let c = Config::from_yaml("transparent_listen: 127.0.0.1:3128").unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("transparent_listen 127.0.0.1:3128"), "{err}");
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = Config::from_yaml("listen: 127.0.0.1:1\nlisten_adress: x\n").unwrap_err();
        assert!(err.contains("listen_adress"), "{err}");
        let err = Config::from_yaml("limits: { max_body: 1MiB }").unwrap_err();
        assert!(err.contains("max_body"), "{err}");
    }

    #[test]
    fn sizes_and_durations_parse() {
        let c = Config::from_yaml(
            "limits: { max_request_body: 1MiB, max_header_bytes: 8192 }\ntimeouts: { first_byte: 90s, header_read: 500ms, tunnel_idle: 5m }",
        )
        .unwrap();
        assert_eq!(c.limits.max_request_body, 1 << 20);
        assert_eq!(c.limits.max_header_bytes, 8192);
        assert_eq!(c.timeouts.first_byte, Duration::from_secs(90));
        assert_eq!(c.timeouts.header_read, Duration::from_millis(500));
        assert_eq!(c.timeouts.tunnel_idle, Duration::from_secs(300));
        assert!(parse_size("10 parsecs").is_err());
        assert!(parse_duration("5 fortnights").is_err());
        assert!(parse_size("99999999999999999999GiB").is_err());
    }

    #[test]
    fn relative_paths_are_anchored_to_the_working_directory() {
        let mut c = Config::from_yaml(
            "state_dir: ./.ecluse\naudit: { file: logs/audit.log }\nca: { cert_file: /etc/ca.pem, key_file: ../k.pem }\npolicy:\n  git: { url: ../policies, ssh_key_file: id_ed25519, known_hosts_file: /etc/kh }\ntargets: { m: { base_url: 'https://api.mistral.ai', api_key_file: ./key } }",
        )
        .unwrap();
        c.anchor_paths(Path::new("/srv/app"));
        assert_eq!(c.state_dir, Path::new("/srv/app/.ecluse"));
        assert_eq!(c.audit.file.unwrap(), Path::new("/srv/app/logs/audit.log"));
        assert_eq!(c.ca.cert_file.unwrap(), Path::new("/etc/ca.pem"));
        assert_eq!(c.ca.key_file.unwrap(), Path::new("/srv/app/../k.pem"));
        let git = c.policy.git.unwrap();
        assert_eq!(git.url, "/srv/app/../policies");
        assert_eq!(git.ssh_key_file.unwrap(), Path::new("/srv/app/id_ed25519"));
        assert_eq!(git.known_hosts_file.unwrap(), Path::new("/etc/kh"));
        assert_eq!(
            c.targets["m"].api_key_file.as_deref(),
            Some(Path::new("/srv/app/key"))
        );
        let defaults = Config::load_defaults().unwrap();
        assert!(defaults.state_dir.is_absolute());
        assert!(defaults.state_dir.ends_with(".ecluse"));
    }

    #[test]
    fn only_local_git_urls_are_paths() {
        for local in ["policies", "../policies", "./a:b", "/srv/policies"] {
            assert!(is_local_git_path(local), "{local}");
        }
        for remote in [
            "https://git.example.com/p.git",
            "file:///srv/p",
            "git@github.com:org/p.git",
            "host:p",
        ] {
            assert!(!is_local_git_path(remote), "{remote}");
        }
    }

    #[test]
    fn validation_lists_every_problem() {
        let c = Config::from_yaml(
            "listen: 127.0.0.1:1\nadmin_listen: 127.0.0.1:1\nca: { cert_file: a.pem }\nupstream: { resolve: { 'nohostport': 127.0.0.1:1 } }",
        )
        .unwrap();
        let ConfigError::Invalid(problems) = c.validate().unwrap_err() else {
            panic!("expected Invalid")
        };
        assert_eq!(problems.len(), 3, "{problems:?}");
    }
}
