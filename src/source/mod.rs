//! Where policy revisions come from (the embedded defaults, a directory, a
//! Git repository) and the reloader that follows them: each new revision
//! is fetched, checked step by step, and swapped in atomically, or rejected
//! while the active one keeps deciding.

pub mod git;
pub mod status;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use log::{info, warn};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::Config;
use crate::policy::load::{self, Context, LoadError, PolicyFiles};
use crate::policy::Snapshot;
use crate::route::Target;
use crate::state::{Gate, Lifecycle, Recorders};
use git::{GitError, GitSource};
pub use status::{Outcome, PolicyStatus, Rejection, ReloadHandle, ReloadRequest};

/// Where revisions come from.
pub enum Source {
    Embedded,
    Dir {
        path: PathBuf,
        interval: Duration,
    },
    Git {
        git: Box<GitSource>,
        interval: Duration,
    },
}

impl Source {
    pub fn from_config(config: &Config) -> Source {
        if let Some(git) = &config.policy.git {
            Source::Git {
                interval: git.poll_interval,
                git: Box::new(GitSource::new(git.clone(), &config.state_dir)),
            }
        } else if let Some(dir) = &config.policy.dir {
            Source::Dir {
                path: dir.clone(),
                interval: config.policy.poll_interval,
            }
        } else {
            Source::Embedded
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Source::Embedded => "embedded".into(),
            Source::Dir { path, .. } => format!("dir:{}", path.display()),
            Source::Git { git, .. } => git.describe(),
        }
    }

    fn interval(&self) -> Option<Duration> {
        match self {
            Source::Embedded => None,
            Source::Dir { interval, .. } | Source::Git { interval, .. } => Some(*interval),
        }
    }
}

/// A revision read from the source, not yet checked.
pub struct Candidate {
    pub revision: String,
    pub files: PolicyFiles,
    pub commit: Option<String>,
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub struct Reloader {
    gate: Arc<Gate>,
    lifecycle: Arc<Lifecycle>,
    recorders: Arc<Recorders>,
    source: Source,
    requests: tokio::sync::Mutex<mpsc::Receiver<ReloadRequest>>,
    /// Serialises reloads (poll and POST /policy/reload).
    busy: tokio::sync::Mutex<()>,
}

impl Reloader {
    pub fn new(
        gate: Arc<Gate>,
        lifecycle: Arc<Lifecycle>,
        recorders: Arc<Recorders>,
        source: Source,
        requests: mpsc::Receiver<ReloadRequest>,
    ) -> Reloader {
        Reloader {
            gate,
            lifecycle,
            recorders,
            source,
            requests: tokio::sync::Mutex::new(requests),
            busy: tokio::sync::Mutex::new(()),
        }
    }

    /// Polls with jitter until shutdown; answers reload requests at once.
    pub async fn run(&self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let Some(interval) = self.source.interval() else {
            // The embedded policy never changes, but a reload request still
            // gets an answer.
            let mut requests = self.requests.lock().await;
            loop {
                tokio::select! {
                    req = requests.recv() => match req {
                        Some(reply) => { let _ = reply.send(Outcome::Unchanged); }
                        None => return,
                    },
                    _ = shutdown.changed() => return,
                }
            }
        };
        let mut requests = self.requests.lock().await;
        loop {
            let jitter = interval.mul_f64(rand::random::<f64>() * 0.2);
            tokio::select! {
                _ = tokio::time::sleep(interval + jitter) => {
                    self.reload().await;
                }
                req = requests.recv() => match req {
                    Some(reply) => {
                        let outcome = self.reload().await;
                        let _ = reply.send(outcome);
                    }
                    None => return,
                },
                _ = shutdown.changed() => return,
            }
        }
    }

    /// One attempt: read the source; when it holds a new revision, check it
    /// and swap it in, or record why it was rejected.
    pub async fn reload(&self) -> Outcome {
        let _one_at_a_time = self.busy.lock().await;
        let status_time = unix_now();
        self.lifecycle
            .update_status(|s| s.last_check = Some(status_time));
        let active = self.gate.snapshot.load_full();
        let active_commit = self.lifecycle.status().reference_commit();
        let candidate = match self.read(active_commit.as_deref()).await {
            Ok(Some(c)) => c,
            Ok(None) => return Outcome::Unchanged,
            Err((revision, step, error)) => return self.reject(revision, step, error),
        };
        if active.is_ready()
            && candidate.revision == active.revision
            && !self.lifecycle.status().from_persisted
        {
            return Outcome::Unchanged;
        }
        if let Some(last) = self.lifecycle.status().last_error {
            if last.revision == candidate.revision {
                // Already refused; say so once, not at every poll.
                return Outcome::Rejected {
                    revision: last.revision,
                    step: last.step,
                    error: last.error,
                };
            }
        }
        match build(
            &self.gate.config,
            &self.gate.targets,
            &candidate,
            &self.source,
        ) {
            Ok(snapshot) => {
                persist(&self.gate.config.state_dir, &candidate, &self.source);
                let revision = candidate.revision.clone();
                self.install(snapshot, candidate.commit.clone());
                info!(
                    "policy revision {revision} from {} is active",
                    self.source.describe()
                );
                self.recorders.metrics.count(
                    "ecluse_policy_reloads_total",
                    &[("result", "success"), ("step", "none")],
                );
                Outcome::Swapped { revision }
            }
            Err(e) => self.reject(candidate.revision, e.step.to_string(), e.message),
        }
    }

    /// Makes `snapshot` the one every new request decides with.
    fn install(&self, snapshot: Snapshot, commit: Option<String>) {
        let revision = snapshot.revision.clone();
        self.gate.snapshot.store(Arc::new(snapshot));
        self.lifecycle.update_status(|s| {
            s.revision = Some(revision);
            s.reference = commit;
            s.loaded_at = Some(unix_now());
            s.from_persisted = false;
            s.last_error = None;
        });
    }

    fn reject(&self, revision: String, step: String, error: String) -> Outcome {
        warn!(
            "policy revision {revision} from {} rejected at the {step} step: {error}; revision {} stays active",
            self.source.describe(),
            self.gate.snapshot.load().revision
        );
        self.recorders.metrics.count(
            "ecluse_policy_reloads_total",
            &[("result", "failure"), ("step", &step)],
        );
        let rejection = Rejection {
            revision: revision.clone(),
            step: step.clone(),
            error: error.clone(),
            at: unix_now(),
        };
        self.lifecycle
            .update_status(|s| s.last_error = Some(rejection));
        Outcome::Rejected {
            revision,
            step,
            error,
        }
    }

    /// The source's current revision, `None` when it cannot have changed.
    async fn read(
        &self,
        active_commit: Option<&str>,
    ) -> Result<Option<Candidate>, (String, String, String)> {
        if matches!(self.source, Source::Embedded) {
            return Ok(None);
        }
        // An unchanged commit is not read again, unless the active revision
        // came from the persisted copy or could not decide.
        let unchanged = |commit: &str| {
            active_commit == Some(commit)
                && self.gate.snapshot.load().is_ready()
                && !self.lifecycle.status().from_persisted
        };
        read_candidate(&self.source, active_commit, unchanged)
            .await
            .map_err(|r| (r.revision, r.step, r.error))
    }
}

/// The one reader of policy revisions (start, reload, the `policy`
/// commands): the source's files with their revision id, and the commit for
/// Git. A Git commit must carry an allowed signature (when signers are
/// configured) and descend from `active_commit`; `unchanged` says which
/// commit need not be read at all (`Ok(None)`).
pub async fn read_candidate(
    source: &Source,
    active_commit: Option<&str>,
    unchanged: impl Fn(&str) -> bool,
) -> Result<Option<Candidate>, Rejection> {
    let reject = |revision: &str, step: &str, error: String| Rejection {
        revision: revision.to_string(),
        step: step.to_string(),
        error,
        at: unix_now(),
    };
    match source {
        Source::Embedded => {
            let files = PolicyFiles::embedded();
            let revision = format!("embedded-{}-{}", env!("CARGO_PKG_VERSION"), files.digest());
            Ok(Some(Candidate {
                revision,
                files,
                commit: None,
            }))
        }
        Source::Dir { path, .. } => {
            let files = PolicyFiles::read_dir(path)
                .map_err(|e| reject("unknown", &e.step.to_string(), e.message))?;
            Ok(Some(Candidate {
                revision: files.digest(),
                files,
                commit: None,
            }))
        }
        Source::Git { git, .. } => {
            let fail = |revision: &str, e: GitError| reject(revision, e.step(), e.to_string());
            let commit = git.fetch().await.map_err(|e| fail("unknown", e))?;
            if unchanged(&commit) {
                return Ok(None);
            }
            git.verify_signature(&commit)
                .await
                .map_err(|e| fail(&commit, e))?;
            git.check_descends(active_commit, &commit)
                .await
                .map_err(|e| fail(&commit, e))?;
            let files = git
                .read_commit(&commit)
                .await
                .map_err(|e| fail(&commit, e))?;
            Ok(Some(Candidate {
                revision: commit.clone(),
                files,
                commit: Some(commit),
            }))
        }
    }
}

fn build(
    config: &Config,
    targets: &BTreeMap<String, Target>,
    candidate: &Candidate,
    source: &Source,
) -> Result<Snapshot, LoadError> {
    let context = Context {
        targets,
        timeout: config.policy.eval_timeout,
    };
    load::load_revision(
        &candidate.files,
        &context,
        candidate.revision.clone(),
        source.describe(),
    )
}

fn persisted_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("policy-last-good")
}

#[derive(Serialize, serde::Deserialize)]
struct PersistedMeta {
    revision: String,
    source: String,
    commit: Option<String>,
    saved_at: u64,
}

/// Keeps the revision that just became active, for a start while the
/// source is unreachable. Written to a temporary directory then renamed.
fn persist(state_dir: &Path, candidate: &Candidate, source: &Source) {
    let target = persisted_dir(state_dir);
    let tmp = state_dir.join("policy-last-good.tmp");
    let result = (|| -> std::io::Result<()> {
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)?;
        let files = &candidate.files;
        for (path, text) in files.modules.iter().chain(&files.tests) {
            write_under(&tmp, path, text)?;
        }
        for (path, text) in &files.data {
            write_under(&tmp, &format!("data/{path}"), text)?;
        }
        let meta = PersistedMeta {
            revision: candidate.revision.clone(),
            source: source.describe(),
            commit: candidate.commit.clone(),
            saved_at: unix_now(),
        };
        std::fs::write(
            tmp.join(".ecluse-revision.json"),
            serde_json::to_vec_pretty(&meta)?,
        )?;
        let old = state_dir.join("policy-last-good.old");
        let _ = std::fs::remove_dir_all(&old);
        if target.exists() {
            std::fs::rename(&target, &old)?;
        }
        std::fs::rename(&tmp, &target)?;
        let _ = std::fs::remove_dir_all(&old);
        Ok(())
    })();
    if let Err(e) = result {
        warn!(
            "could not persist the active policy revision in {}: {e}",
            target.display()
        );
    }
}

fn write_under(root: &Path, relative: &str, text: &str) -> std::io::Result<()> {
    if relative.split('/').any(|c| c == ".." || c.is_empty()) {
        return Err(std::io::Error::other(format!("unsafe path {relative}")));
    }
    let path = root.join(relative);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, text)
}

/// Reads and checks the source's current revision with no fallback:
/// what `ecluse check` reports, and the first step at start.
pub async fn load_current(
    config: &Config,
    targets: &BTreeMap<String, Target>,
    source: &Source,
) -> Result<Snapshot, Rejection> {
    load_candidate(config, targets, source)
        .await
        .map(|(s, _)| s)
}

async fn load_candidate(
    config: &Config,
    targets: &BTreeMap<String, Target>,
    source: &Source,
) -> Result<(Snapshot, Candidate), Rejection> {
    let Some(candidate) = read_candidate(source, None, |_| false).await? else {
        return Err(Rejection {
            revision: "unknown".into(),
            step: "read".into(),
            error: "the source gave no revision".into(),
            at: unix_now(),
        });
    };
    let reject = |revision: String, step: &str, error: String| Rejection {
        revision,
        step: step.to_string(),
        error,
        at: unix_now(),
    };
    let snapshot = build(config, targets, &candidate, source)
        .map_err(|e| reject(candidate.revision.clone(), &e.step.to_string(), e.message))?;
    Ok((snapshot, candidate))
}

/// The first snapshot at start: the source if it can be read and passes
/// every step. A broken embedded policy or directory is a deployment error
/// (start fails). A Git source that cannot be used falls back to the
/// persisted last good revision (and says so), else to a not-ready snapshot
/// that denies every call.
pub async fn initial_snapshot(
    config: &Config,
    targets: &BTreeMap<String, Target>,
    source: &Source,
) -> Result<(Snapshot, PolicyStatus), Rejection> {
    let mut status = PolicyStatus {
        source: source.describe(),
        ..PolicyStatus::default()
    };
    let first = match load_candidate(config, targets, source).await {
        Ok((snapshot, candidate)) => {
            if !matches!(source, Source::Embedded) {
                persist(&config.state_dir, &candidate, source);
            }
            status.revision = Some(snapshot.revision.clone());
            status.reference = candidate.commit;
            status.loaded_at = Some(unix_now());
            return Ok((snapshot, status));
        }
        Err(rejection) if !matches!(source, Source::Git { .. }) => return Err(rejection),
        Err(rejection) => rejection,
    };
    warn!(
        "policy source {} unusable at start ({} step: {})",
        source.describe(),
        first.step,
        first.error
    );
    status.last_error = Some(first);
    match load_persisted(config, targets) {
        Some((snapshot, commit)) => {
            warn!(
                "serving the persisted policy revision {} until the source recovers",
                snapshot.revision
            );
            status.revision = Some(snapshot.revision.clone());
            status.reference = commit;
            status.loaded_at = Some(unix_now());
            status.from_persisted = true;
            Ok((snapshot, status))
        }
        None => {
            warn!("no persisted policy revision: not ready, and every call is denied until the source can be read");
            Ok((Snapshot::unavailable(source.describe()), status))
        }
    }
}

fn load_persisted(
    config: &Config,
    targets: &BTreeMap<String, Target>,
) -> Option<(Snapshot, Option<String>)> {
    let dir = persisted_dir(&config.state_dir);
    let meta: PersistedMeta =
        serde_json::from_slice(&std::fs::read(dir.join(".ecluse-revision.json")).ok()?).ok()?;
    let files = match PolicyFiles::read_dir(&dir) {
        Ok(f) => f,
        Err(e) => {
            warn!("the persisted policy revision is unreadable: {e}");
            return None;
        }
    };
    let context = Context {
        targets,
        timeout: config.policy.eval_timeout,
    };
    match load::load_revision(
        &files,
        &context,
        meta.revision.clone(),
        format!("persisted:{}", meta.source),
    ) {
        Ok(snapshot) => Some((snapshot, meta.commit)),
        Err(e) => {
            warn!(
                "the persisted policy revision {} no longer loads: {e}",
                meta.revision
            );
            None
        }
    }
}

/// Pingora background service running the reloader on its own runtime.
pub struct ReloadService(pub Arc<Reloader>);

#[async_trait::async_trait]
impl pingora_core::services::background::BackgroundService for ReloadService {
    async fn start(&self, shutdown: pingora_core::server::ShutdownWatch) {
        self.0.run(shutdown).await;
    }
}
