//! A target's API key, read from a mounted secret file and re-read when the
//! file changes (Kubernetes rotates secrets by swapping a symlink).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

/// A secret that never prints itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[derive(Debug)]
pub struct KeyFile {
    path: PathBuf,
    cached: Mutex<Option<(Stamp, Secret)>>,
}

/// What identifies one version of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl KeyFile {
    pub fn new(path: &Path) -> KeyFile {
        KeyFile {
            path: path.to_owned(),
            cached: Mutex::new(None),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current key. A missing, unreadable or empty file is an error
    /// that names the file, never the key.
    pub fn read(&self) -> Result<Secret, String> {
        let meta =
            std::fs::metadata(&self.path).map_err(|e| format!("{}: {e}", self.path.display()))?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&meta);
        #[cfg(not(unix))]
        let inode = 0;
        let stamp = Stamp {
            modified: meta.modified().ok(),
            len: meta.len(),
            inode,
        };
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((seen, secret)) = cached.as_ref() {
            if *seen == stamp {
                return Ok(secret.clone());
            }
        }
        if meta.len() > 64 * 1024 {
            return Err(format!(
                "{}: larger than 64 KiB, not a key",
                self.path.display()
            ));
        }
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        let key = text.trim();
        if key.is_empty() {
            return Err(format!("{} is empty", self.path.display()));
        }
        if key.contains(['\r', '\n']) || http::HeaderValue::from_str(key).is_err() {
            return Err(format!(
                "{} does not hold a single-line key",
                self.path.display()
            ));
        }
        let secret = Secret(key.to_string());
        *cached = Some((stamp, secret.clone()));
        Ok(secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_missing_and_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let key = KeyFile::new(&path);
        let err = key.read().unwrap_err();
        assert!(err.contains("key"), "{err}");
        std::fs::write(&path, "sk-one\n").unwrap();
        assert_eq!(key.read().unwrap().expose(), "sk-one");
        // Rotation by replacing the file (a new inode), as Kubernetes does.
        std::fs::write(dir.path().join("key.new"), "sk-two-longer").unwrap();
        std::fs::rename(dir.path().join("key.new"), &path).unwrap();
        assert_eq!(key.read().unwrap().expose(), "sk-two-longer");
        std::fs::write(&path, "  \n").unwrap();
        assert!(key.read().unwrap_err().contains("empty"));
        assert_eq!(format!("{:?}", Secret("sk-x".into())), "Secret(<redacted>)");
    }
}
