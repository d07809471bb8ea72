//! A policy repository made by the test: `git init`, the default policies,
//! commits on demand; served to ecluse over `file://`.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use super::copy_default_policies;

/// A policy repository: the shipped policies under `policies/` on `main`.
pub struct PolicyRepo {
    dir: tempfile::TempDir,
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = super::run_ok(
        Command::new("git")
            .args([
                "-c",
                "user.name=Compliance",
                "-c",
                "user.email=compliance@example.com",
                "-c",
                "commit.gpgsign=false",
            ])
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", dir),
        &format!("git {args:?}"),
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl PolicyRepo {
    pub fn new() -> PolicyRepo {
        let dir = tempfile::tempdir().unwrap();
        git(dir.path(), &["init", "--quiet", "-b", "main"]);
        copy_default_policies(&dir.path().join("policies"));
        let repo = PolicyRepo { dir };
        repo.commit_all("initial policies", &[]);
        repo
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn url(&self) -> String {
        format!("file://{}", self.path().display())
    }

    pub fn write(&self, relative: &str, text: &str) {
        std::fs::write(self.path().join("policies").join(relative), text).unwrap();
    }

    /// Sets a key of data/settings.json.
    pub fn set_setting(&self, key: &str, value: Value) {
        let path = self.path().join("policies/data/settings.json");
        let mut settings: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        settings[key] = value;
        std::fs::write(path, serde_json::to_string_pretty(&settings).unwrap()).unwrap();
    }

    pub fn commit_all(&self, message: &str, extra: &[&str]) -> String {
        git(self.path(), &["add", "-A"]);
        let mut args = vec!["commit", "--quiet", "--allow-empty", "-m", message];
        args.extend_from_slice(extra);
        git(self.path(), &args);
        git(self.path(), &["rev-parse", "HEAD"])
    }

    pub fn head(&self) -> String {
        git(self.path(), &["rev-parse", "HEAD"])
    }
}
