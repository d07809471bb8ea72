//! One decision, one event. Every stage that decides (CONNECT, plain http,
//! request) builds a [`DecisionEvent`]; [`emit`] writes it, in one place, to
//! the log line, the `ecluse_decisions_total` metric, the audit record and
//! the span. The four renderings are plain functions of the event, so they
//! cannot drift apart.

use opentelemetry::KeyValue;
use serde_json::value::RawValue;

use crate::audit::{self, AuditDestination, AuditRecord};
use crate::classify::DataDoc;
use crate::policy::input::DestinationDoc;
use crate::state::{Gate, Recorders};
use crate::telemetry::{self, CallSpan};

/// Which decision point decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// A CONNECT.
    Connect,
    /// An absolute-form plain `http://` request (a connect-stage decision).
    Plain,
    /// A request inside an intercepted tunnel or a plain http request.
    Request,
}

impl Stage {
    /// The stage as policies and audit records name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Connect | Stage::Plain => "connect",
            Stage::Request => "request",
        }
    }

    fn log_prefix(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Plain => "plain http",
            Stage::Request => "request",
        }
    }
}

/// The request-stage facts of a decision.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub method: &'a str,
    /// With credentials in the query masked.
    pub path: &'a str,
    pub operation: Option<&'a str>,
    pub model: Option<&'a str>,
    pub data: &'a DataDoc,
    pub route: Option<&'a str>,
}

/// Everything one decision says.
#[derive(Debug, Clone)]
pub struct DecisionEvent<'a> {
    pub stage: Stage,
    pub decision_id: &'a str,
    pub revision: &'a str,
    /// The decided action: intercept, tunnel or deny (connect); allow, deny
    /// or reroute (request). In report mode, what would have been done.
    pub action: &'static str,
    pub rule: &'a str,
    pub reason: &'a str,
    pub enforced: bool,
    pub destination: &'a DestinationDoc,
    pub request: Option<RequestFacts<'a>>,
    pub workload: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub trace_id: Option<String>,
    /// Why the decided action could not be carried out.
    pub error: Option<String>,
    /// That failure's stable code (`error.type` on the span).
    pub error_code: Option<&'static str>,
    /// The policy input as evaluated and the decision document returned.
    pub input: Option<Box<RawValue>>,
    pub result: Option<Box<RawValue>>,
}

/// The connect stage's input document, as the policy evaluates it.
#[derive(serde::Serialize)]
struct ConnectInputDoc<'a> {
    version: u32,
    stage: &'static str,
    destination: &'a DestinationDoc,
    source: &'a crate::policy::input::SourceDoc,
}

pub fn connect_input_json(
    destination: &DestinationDoc,
    source: &crate::policy::input::SourceDoc,
) -> Option<Box<RawValue>> {
    raw_json(&ConnectInputDoc {
        version: 1,
        stage: "connect",
        destination,
        source,
    })
}

/// A document as raw JSON for the audit record; `None` if it cannot be
/// written (it always can: these documents are plain data).
pub fn raw_json<T: serde::Serialize>(document: &T) -> Option<Box<RawValue>> {
    serde_json::value::to_raw_value(document).ok()
}

impl<'a> DecisionEvent<'a> {
    /// A connect-stage decision (CONNECT or plain http) about `destination`,
    /// with its input and result; failures are added by the caller.
    pub fn connect(
        gate: &'a Gate,
        stage: Stage,
        decision_id: &'a str,
        revision: &'a str,
        decision: &'a crate::policy::ConnectDecision,
        destination: &'a DestinationDoc,
    ) -> DecisionEvent<'a> {
        DecisionEvent {
            stage,
            decision_id,
            revision,
            action: decision.action.as_str(),
            rule: &decision.rule,
            reason: &decision.reason,
            enforced: gate.enforcing(),
            destination,
            request: None,
            workload: gate.source.workload.as_deref(),
            namespace: gate.source.namespace.as_deref(),
            trace_id: None,
            error: None,
            error_code: None,
            input: connect_input_json(destination, &gate.source),
            result: raw_json(decision),
        }
    }

    pub fn log_line(&self) -> String {
        let d = self.destination;
        let target = match &self.request {
            Some(r) => format!("{} {}:{}{}", r.method, d.host, d.port, r.path),
            None => format!("{}:{}", d.host, d.port),
        };
        format!(
            "{} {target}: {} (rule {}, revision {}, decision {}{}): {}{}",
            self.stage.log_prefix(),
            self.action,
            self.rule,
            self.revision,
            self.decision_id,
            if self.enforced { "" } else { ", report only" },
            self.reason,
            self.error
                .as_deref()
                .map(|e| format!("; not carried out: {e}"))
                .unwrap_or_default(),
        )
    }

    /// Labels of `ecluse_decisions_total`.
    pub fn metric_labels(&self) -> [(&'static str, &str); 3] {
        [
            ("stage", self.stage.as_str()),
            ("action", self.action),
            ("rule", self.rule),
        ]
    }

    pub fn audit_record(&self) -> AuditRecord {
        let d = self.destination;
        let request = self.request.as_ref();
        let data = request.map(|r| r.data);
        AuditRecord {
            time: audit::now_rfc3339(),
            decision_id: self.decision_id.to_string(),
            stage: self.stage.as_str(),
            revision: self.revision.to_string(),
            rule: self.rule.to_string(),
            reason: self.reason.to_string(),
            action: self.action.to_string(),
            enforced: self.enforced,
            destination: AuditDestination {
                host: d.host.clone(),
                port: d.port,
                provider: d.provider.clone(),
                entity: d.entity.as_ref().map(|e| e.name.clone()),
                jurisdiction: d.entity.as_ref().map(|e| e.jurisdiction.clone()),
            },
            route: request.and_then(|r| r.route.map(str::to_string)),
            declared_classification: data.and_then(|d| d.declared_classification.clone()),
            classification: data.and_then(|d| d.classification.clone()),
            retention: data.and_then(|d| d.retention.clone()),
            pii: data.map(|d| d.pii.clone()).unwrap_or_default(),
            scan: data.map(|d| d.scan.clone()).unwrap_or_default(),
            operation: request.and_then(|r| r.operation.map(str::to_string)),
            model: request.and_then(|r| r.model.map(str::to_string)),
            workload: self.workload.map(str::to_string),
            namespace: self.namespace.map(str::to_string),
            trace_id: self.trace_id.clone(),
            error: self.error.clone(),
            input: self.input.clone(),
            result: self.result.clone(),
            chain: None,
        }
    }

    pub fn span_attributes(&self) -> Vec<KeyValue> {
        let mut attributes = telemetry::decision_attributes(
            self.action,
            self.rule,
            self.reason,
            self.decision_id,
            self.revision,
            self.enforced,
        );
        attributes.extend(telemetry::destination_attributes(self.destination));
        match &self.request {
            Some(r) => attributes.extend(telemetry::data_attributes(r.data)),
            None => {
                attributes.push(KeyValue::new(
                    "server.address",
                    self.destination.host.clone(),
                ));
                attributes.push(KeyValue::new(
                    "server.port",
                    i64::from(self.destination.port),
                ));
            }
        }
        attributes
    }
}

/// Which span an event's attributes go to.
pub enum SpanTarget<'s> {
    /// The call's own span.
    Call(&'s CallSpan),
    /// A span of its own (CONNECT and plain http decisions).
    Connect,
    /// None: the span already says it.
    None,
}

/// Writes the event to the log, the metric, the audit log and the span.
pub fn emit(recorders: &Recorders, event: &DecisionEvent<'_>, span: SpanTarget<'_>) {
    // The line is built only when it will be written: `warn` is common
    // under load.
    if log::log_enabled!(log::Level::Info) {
        log::info!("{}", event.log_line());
    }
    recorders
        .metrics
        .count("ecluse_decisions_total", &event.metric_labels());
    let record = event.audit_record();
    recorders.telemetry.export_audit(&record);
    recorders.audit.record(record);
    let telemetry = &recorders.telemetry;
    if !telemetry.enabled() {
        return;
    }
    match span {
        SpanTarget::Call(span) => span.set(event.span_attributes()),
        SpanTarget::None => {}
        SpanTarget::Connect => {
            let mut attributes = event.span_attributes();
            if let Some(code) = event.error_code {
                attributes.push(KeyValue::new("error.type", code));
            }
            telemetry.connect_span(&event.destination.host, attributes, event.error_code);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authority::Authority;
    use crate::classify::{declared, Counts, Unread, UnreadReason};
    use crate::entity::Registry;
    use crate::policy::input::{destination, Scheme};

    /// The log line, the metric, the audit record and the span attributes
    /// of one event say the same decision.
    #[test]
    fn one_event_renders_the_same_decision_four_ways() {
        let registry = Registry::embedded();
        let dest = destination(
            &registry,
            &Authority::new("api.openai.com", 443),
            Scheme::Https,
            &[443],
        );
        let data = declared(Some(b"public"), None).unwrap().with_scan(
            Counts {
                iban: 1,
                ..Counts::default()
            },
            vec![Unread::new(UnreadReason::Media, "data URI", "image/png")],
            false,
        );
        let event = DecisionEvent {
            stage: Stage::Request,
            decision_id: "d-42",
            revision: "rev-7",
            action: "reroute",
            rule: "egress.personal_data_cloud_act",
            reason: "personal data may not reach OpenAI OpCo, LLC",
            enforced: false,
            destination: &dest,
            request: Some(RequestFacts {
                method: "POST",
                path: "/v1/chat/completions?key=REDACTED",
                operation: Some("chat"),
                model: Some("gpt-4o"),
                data: &data,
                route: Some("mistral"),
            }),
            workload: Some("billing"),
            namespace: Some("finance"),
            trace_id: Some("0af7651916cd43dd8448eb211c80319c".into()),
            error: None,
            error_code: None,
            input: raw_json(&serde_json::json!({"stage": "request", "data": {"pii": {"iban": 1}}})),
            result: raw_json(
                &serde_json::json!({"allowed": true, "rule": "egress.personal_data_cloud_act"}),
            ),
        };

        let line = event.log_line();
        for part in [
            "request POST api.openai.com:443/v1/chat/completions?key=REDACTED",
            ": reroute (rule egress.personal_data_cloud_act",
            "revision rev-7",
            "decision d-42",
            "report only",
            "personal data may not reach OpenAI OpCo, LLC",
        ] {
            assert!(line.contains(part), "{part:?} not in {line}");
        }

        assert_eq!(
            event.metric_labels(),
            [
                ("stage", "request"),
                ("action", "reroute"),
                ("rule", "egress.personal_data_cloud_act")
            ]
        );

        let record = serde_json::to_value(event.audit_record()).unwrap();
        assert_eq!(record["decision_id"], "d-42");
        assert_eq!(record["stage"], "request");
        assert_eq!(record["action"], "reroute");
        assert_eq!(record["rule"], "egress.personal_data_cloud_act");
        assert_eq!(record["revision"], "rev-7");
        assert_eq!(record["enforced"], false);
        assert_eq!(record["route"], "mistral");
        assert_eq!(record["declared_classification"], "public");
        assert_eq!(record["classification"], "personal");
        assert_eq!(record["pii"]["iban"], 1);
        assert_eq!(record["scan"][0]["reason"], "media");
        assert_eq!(record["destination"]["entity"], "OpenAI OpCo, LLC");
        assert_eq!(record["trace_id"], "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(record["workload"], "billing");
        assert_eq!(record["input"]["data"]["pii"]["iban"], 1);
        assert_eq!(record["result"]["rule"], "egress.personal_data_cloud_act");

        let attributes = event.span_attributes();
        let get = |k: &str| {
            attributes
                .iter()
                .find(|kv| kv.key.as_str() == k)
                .map(|kv| kv.value.to_string())
        };
        assert_eq!(get("ecluse.action").as_deref(), Some("reroute"));
        assert_eq!(
            get("ecluse.rule").as_deref(),
            Some("egress.personal_data_cloud_act")
        );
        assert_eq!(get("ecluse.decision_id").as_deref(), Some("d-42"));
        assert_eq!(get("ecluse.policy.revision").as_deref(), Some("rev-7"));
        assert_eq!(get("ecluse.enforced").as_deref(), Some("false"));
        assert_eq!(
            get("ecluse.data.classification").as_deref(),
            Some("personal")
        );

        // A connect event: no request facts, the server named instead.
        let connect = DecisionEvent {
            stage: Stage::Connect,
            action: "deny",
            request: None,
            enforced: true,
            error: Some("upstream refused".into()),
            ..event.clone()
        };
        assert!(connect
            .log_line()
            .starts_with("connect api.openai.com:443: deny"));
        assert!(connect
            .log_line()
            .ends_with("; not carried out: upstream refused"));
        assert_eq!(connect.metric_labels()[0], ("stage", "connect"));
        let record = serde_json::to_value(connect.audit_record()).unwrap();
        assert_eq!(record["error"], "upstream refused");
        assert!(record["classification"].is_null());
        assert!(connect
            .span_attributes()
            .iter()
            .any(|kv| kv.key.as_str() == "server.address"));
    }
}
