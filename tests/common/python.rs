//! A Python virtualenv with the official SDKs (openai, anthropic,
//! google-genai, boto3, cohere), created on first use under
//! `target/test-venv` (CI creates it up front in `.ci/run`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub fn venv_dir() -> PathBuf {
    std::env::var_os("ECLUSE_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-venv"))
}

/// The venv's python, with the SDKs importable. Several test binaries may
/// ask at once: a lock directory makes one of them build it.
pub fn python() -> PathBuf {
    let dir = venv_dir();
    let python = dir.join("bin/python");
    if ready(&python) {
        return python;
    }
    let lock = dir.with_extension("lock");
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if std::fs::create_dir_all(lock.parent().unwrap()).is_ok()
            && std::fs::create_dir(&lock).is_ok()
        {
            break;
        }
        if ready(&python) {
            return python;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {}",
            lock.display()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let result = (|| {
        if !ready(&python) {
            let status = Command::new("python3")
                .args(["-m", "venv"])
                .arg(&dir)
                .status()
                .map_err(|e| format!("python3 -m venv: {e}"))?;
            if !status.success() {
                return Err("python3 -m venv failed".to_string());
            }
            let status = Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "openai>=1.40,<3",
                    "httpx",
                    "anthropic>=0.60,<3",
                    "google-genai>=1.0",
                    "boto3>=1.35",
                    "cohere>=5.11",
                ])
                .status()
                .map_err(|e| format!("pip: {e}"))?;
            if !status.success() {
                return Err("pip install of the SDKs failed".to_string());
            }
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir(&lock);
    if let Err(e) = result {
        panic!(
            "cannot prepare the Python test venv at {}: {e}",
            dir.display()
        );
    }
    python
}

fn ready(python: &Path) -> bool {
    python.exists()
        && Command::new(python)
            .args([
                "-c",
                "import openai, httpx, anthropic, google.genai, boto3, cohere",
            ])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
}
