//! What the policy source reports and how a reload is asked for: the types
//! the admin endpoint and the shared state hold, apart from the reloader
//! that produces them, so that state does not depend on the reloader.

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

/// A revision that was refused, and at which step.
#[derive(Debug, Clone, Serialize, thiserror::Error)]
#[error("policy revision {revision} rejected at the {step} step: {error}")]
pub struct Rejection {
    pub revision: String,
    pub step: String,
    pub error: String,
    pub at: u64,
}

/// What `GET /policy` reports.
#[derive(Debug, Clone, Serialize, Default)]
pub struct PolicyStatus {
    pub source: String,
    pub revision: Option<String>,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    pub loaded_at: Option<u64>,
    /// True when serving the revision persisted by an earlier run because
    /// the source could not be read at start.
    pub from_persisted: bool,
    pub last_error: Option<Rejection>,
    pub last_check: Option<u64>,
}

/// How one reload attempt ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Unchanged,
    Swapped {
        revision: String,
    },
    Rejected {
        revision: String,
        step: String,
        error: String,
    },
}

pub type ReloadRequest = oneshot::Sender<Outcome>;

impl PolicyStatus {
    /// The commit of the active revision, for git sources.
    pub fn reference_commit(&self) -> Option<String> {
        self.reference.clone()
    }
}

/// Requests a reload from the admin endpoint.
#[derive(Clone)]
pub struct ReloadHandle(pub mpsc::Sender<ReloadRequest>);

impl ReloadHandle {
    pub async fn reload(&self) -> Option<Outcome> {
        let (tx, rx) = oneshot::channel();
        self.0.send(tx).await.ok()?;
        rx.await.ok()
    }
}
