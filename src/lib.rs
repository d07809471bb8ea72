//! ecluse: an intercepting egress proxy that decides, per call, whether an
//! LLM request may reach the legal entity behind its destination.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod audit;
pub mod authority;
pub mod classify;
pub mod cli;
pub mod config;
pub mod entity;
pub mod event;
#[doc(hidden)]
pub mod fuzzing;
pub mod headers;
pub mod listener;
pub mod llm;
pub mod log_sink;
pub mod metrics;
pub mod policy;
mod polling;
pub mod proxy;
pub mod redact;
pub mod reply;
pub mod revision;
pub mod route;
pub mod source;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod units;
pub mod upstream;
