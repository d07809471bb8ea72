//! The `examples/node` project (the official `openai` npm package and undici)
//! installed with `npm ci` on first use under `target/test-node` (CI installs
//! it up front in `.ci/run`), reinstalled when the example's lock file moves.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/node")
}

pub fn node_dir() -> PathBuf {
    std::env::var_os("ECLUSE_TEST_NODE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-node"))
}

/// The directory holding `node_modules` with the example's dependencies and
/// a current copy of its preload. Several test binaries may ask at once: a
/// lock directory makes one of them install.
pub fn project() -> PathBuf {
    let dir = node_dir();
    if !ready(&dir) {
        let lock = dir.with_extension("lock");
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            if std::fs::create_dir_all(lock.parent().unwrap()).is_ok()
                && std::fs::create_dir(&lock).is_ok()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {}",
                lock.display()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        let result = if ready(&dir) { Ok(()) } else { install(&dir) };
        let _ = std::fs::remove_dir(&lock);
        if let Err(e) = result {
            panic!(
                "cannot prepare the Node test project at {}: {e}",
                dir.display()
            );
        }
    }
    // The preload under test is always the example's current one.
    put(
        &dir,
        "ecluse-proxy.mjs",
        &std::fs::read(example_dir().join("ecluse-proxy.mjs")).unwrap(),
    );
    dir
}

/// Writes `name` into the project atomically, so that concurrent tests never
/// run a half-written file.
pub fn put(dir: &Path, name: &str, contents: &[u8]) {
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

fn lock_file() -> Vec<u8> {
    std::fs::read(example_dir().join("package-lock.json")).expect("examples/node/package-lock.json")
}

fn ready(dir: &Path) -> bool {
    std::fs::read(dir.join("installed.lock.json")).ok() == Some(lock_file())
        && dir.join("node_modules/openai/package.json").exists()
        && dir.join("node_modules/undici/package.json").exists()
}

fn install(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(dir.join("installed.lock.json"));
    for name in ["package.json", "package-lock.json"] {
        std::fs::copy(example_dir().join(name), dir.join(name))
            .map_err(|e| format!("{name}: {e}"))?;
    }
    let status = Command::new("npm")
        .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .status()
        .map_err(|e| format!("npm ci: {e} (are Node.js and npm installed?)"))?;
    if !status.success() {
        return Err("npm ci failed".into());
    }
    std::fs::write(dir.join("installed.lock.json"), lock_file()).map_err(|e| e.to_string())
}

/// `node --version` as (major, minor).
pub fn version() -> (u32, u32) {
    let out = Command::new("node")
        .arg("--version")
        .output()
        .expect("node");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text.trim().trim_start_matches('v').split('.');
    let mut next = || parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (next(), next())
}
