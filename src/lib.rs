//! ecluse: an intercepting egress proxy that decides, per call, whether an
//! LLM request may reach the legal entity behind its destination.
#![forbid(unsafe_code)]
// Untrusted input must never panic the proxy: outside tests (clippy.toml
// allows them there), an unwrap or expect needs a stated invariant.
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub(crate) mod admin;
pub(crate) mod app;
pub(crate) mod audit;
pub(crate) mod audit_check;
pub(crate) mod audit_report;
pub mod authority;
pub mod classify;
pub mod cli;
pub mod config;
pub mod entity;
pub(crate) mod event;
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod headers;
pub mod iptables;
pub mod listener;
pub mod llm;
pub mod log_sink;
pub(crate) mod metrics;
pub mod policy;
mod polling;
pub(crate) mod proxy;
pub(crate) mod redact;
pub mod reply;
pub(crate) mod revision;
pub mod route;
pub(crate) mod source;
pub(crate) mod state;
pub(crate) mod telemetry;
pub mod tls;
pub(crate) mod tunnel;
pub(crate) mod units;
pub(crate) mod upstream;
