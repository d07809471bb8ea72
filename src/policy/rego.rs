//! Policies in Rego, evaluated in-process by regorus.
//!
//! A revision is compiled once into a template engine; each worker thread
//! keeps its own clone (regorus evaluation takes `&mut self`), replaced when
//! the revision changes. Every evaluation runs under a time limit, and any
//! failure is reported to the caller, which fails closed.

use std::cell::RefCell;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use regorus::utils::limits::{ExecutionTimerConfig, LimitError};
use regorus::Engine;
use serde::Serialize;

/// Why a policy evaluation produced no usable decision.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// The rule is undefined for this input.
    #[error("policy returned no decision ({rule} is undefined)")]
    Undefined { rule: String },
    /// Evaluation ran past `policy.eval_timeout`.
    #[error("policy evaluation exceeded its time limit of {limit:?}")]
    Timeout { limit: Duration },
    /// The policy failed while evaluating (a builtin error, a conflict, ...).
    #[error("policy evaluation failed: {0}")]
    Failed(String),
    /// The rule returned something that is not a decision document.
    #[error("malformed decision from {rule}: {problem}")]
    Malformed { rule: String, problem: String },
    /// No policy revision could be loaded yet.
    #[error("no policy revision is loaded (ecluse is not ready)")]
    NotLoaded,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A compiled revision.
pub struct RegoPolicy {
    id: u64,
    /// Cloned per thread; the mutex is held only while cloning.
    template: Mutex<Engine>,
    timeout: Duration,
}

impl std::fmt::Debug for RegoPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegoPolicy").field("id", &self.id).finish()
    }
}

thread_local! {
    /// The engines this thread evaluates with, newest revision first. Two
    /// slots so that requests straddling a swap do not re-clone each time.
    static ENGINES: RefCell<Vec<(u64, Engine)>> = const { RefCell::new(Vec::new()) };
}

impl RegoPolicy {
    /// Takes an engine holding the modules and data of one revision.
    pub fn new(mut engine: Engine, timeout: Duration) -> RegoPolicy {
        engine.set_execution_timer_config(ExecutionTimerConfig {
            limit: timeout,
            // Reading the clock at every work unit costs about a tenth of an
            // evaluation; every 64 units keeps the limit precise to well
            // under a millisecond.
            check_interval: NonZeroU32::new(64).unwrap_or(NonZeroU32::MIN),
        });
        RegoPolicy {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            template: Mutex::new(engine),
            timeout,
        }
    }

    /// Evaluates `rule` (for example `data.ecluse.egress.decision`) on `input`.
    pub fn eval<I: Serialize>(
        &self,
        rule: &str,
        input: &I,
    ) -> Result<serde_json::Value, EvalError> {
        to_json(rule, &self.eval_value(rule, to_value(input)?)?)
    }

    /// Evaluates `rule` on an input already in regorus's form; the result
    /// stays in regorus's form (the hot path reads it without converting).
    pub fn eval_value(
        &self,
        rule: &str,
        input: regorus::Value,
    ) -> Result<regorus::Value, EvalError> {
        ENGINES.with(|cell| {
            let mut engines = cell.borrow_mut();
            let position = engines.iter().position(|(id, _)| *id == self.id);
            let slot = match position {
                Some(i) => i,
                None => {
                    let engine = self
                        .template
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .clone();
                    engines.insert(0, (self.id, engine));
                    engines.truncate(2);
                    0
                }
            };
            let engine = &mut engines[slot].1;
            engine.set_input(input);
            let result = engine.eval_rule(rule.to_string());
            match result {
                Ok(regorus::Value::Undefined) => Err(EvalError::Undefined {
                    rule: rule.to_string(),
                }),
                Ok(value) => Ok(value),
                Err(e) => Err(match e.downcast_ref::<LimitError>() {
                    Some(LimitError::TimeLimitExceeded { .. }) => EvalError::Timeout {
                        limit: self.timeout,
                    },
                    _ if e.to_string().contains("time limit") => EvalError::Timeout {
                        limit: self.timeout,
                    },
                    _ => EvalError::Failed(first_line(&e.to_string())),
                }),
            }
        })
    }
}

/// A result of `rule` as a JSON document.
pub fn to_json(rule: &str, value: &regorus::Value) -> Result<serde_json::Value, EvalError> {
    serde_json::to_value(value).map_err(|e| EvalError::Malformed {
        rule: rule.to_string(),
        problem: e.to_string(),
    })
}

/// A document in regorus's form. Through JSON text: regorus parses it
/// straight into its own values, cheaper than via a serde_json tree.
pub fn to_value<I: Serialize>(document: &I) -> Result<regorus::Value, EvalError> {
    let text = serde_json::to_string(document)
        .map_err(|e| EvalError::Failed(format!("input document: {e}")))?;
    regorus::Value::from_json_str(&text)
        .map_err(|e| EvalError::Failed(format!("input document: {e}")))
}

/// Per-call documents built straight into regorus's form. Going through
/// JSON text instead costs a serialisation and a parse per call, about a
/// third of the fixed cost of a decision. Each `to_rego` must equal
/// `to_value` of the same document; the unit tests check both ways agree.
pub trait ToRego {
    fn to_rego(&self) -> regorus::Value;

    /// One top-level field as `to_rego()` holds it, built alone; `None`
    /// when the document has no such field.
    fn field_to_rego(&self, name: &str) -> Option<regorus::Value>;
}

/// An object of the named fields that `field` gives.
pub(crate) fn object_of(
    names: &[&str],
    field: impl Fn(&str) -> Option<regorus::Value>,
) -> regorus::Value {
    names
        .iter()
        .filter_map(|name| Some((regorus::Value::from(*name), field(name)?)))
        .collect::<std::collections::BTreeMap<_, _>>()
        .into()
}

/// An object from its fields. The result is in regorus's compact sorted
/// form, as a parsed document would be.
pub(crate) fn object<const N: usize>(fields: [(&str, regorus::Value); N]) -> regorus::Value {
    fields
        .into_iter()
        .map(|(name, value)| (regorus::Value::from(name), value))
        .collect::<std::collections::BTreeMap<_, _>>()
        .into()
}

pub(crate) fn optional_string(value: Option<&str>) -> regorus::Value {
    value.map_or(regorus::Value::Null, regorus::Value::from)
}

pub(crate) fn optional_number(value: Option<u64>) -> regorus::Value {
    value.map_or(regorus::Value::Null, regorus::Value::from)
}

pub(crate) fn first_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(8)
        .collect::<Vec<_>>()
        .join(" | ")
}
