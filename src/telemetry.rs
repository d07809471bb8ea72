//! OpenTelemetry traces: one CLIENT span per intercepted call following the
//! GenAI semantic conventions, children for policy evaluation and the
//! upstream call, a span per connect-stage decision, and W3C trace context
//! continued from the app and passed upstream.
//!
//! Export is batched on a background thread (bounded queue: when the
//! collector is down, spans are dropped, calls are never slowed). With no
//! endpoint configured there is no exporter at all.

use std::collections::BTreeMap;
use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue, Value};
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, Tracer};
use serde::Deserialize;

use crate::units::parse_duration;

/// `telemetry:` in ecluse.yaml. Unset keys fall back to the standard
/// `OTEL_*` environment variables.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// OTLP endpoint (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub endpoint: Option<String>,
    /// `grpc` or `http/protobuf` (`OTEL_EXPORTER_OTLP_PROTOCOL`); default http/protobuf.
    pub protocol: Option<String>,
    /// Extra export headers (`OTEL_EXPORTER_OTLP_HEADERS`), e.g. an API key.
    pub headers: BTreeMap<String, String>,
    /// `service.name` (`OTEL_SERVICE_NAME`); default `ecluse`.
    pub service_name: Option<String>,
    /// `always_on`, `always_off`, `traceidratio`, `parentbased_always_on`,
    /// `parentbased_always_off`, `parentbased_traceidratio` (`OTEL_TRACES_SAMPLER`).
    pub sampler: Option<String>,
    /// The ratio for the ratio samplers (`OTEL_TRACES_SAMPLER_ARG`).
    pub sampler_arg: Option<f64>,
    /// Export prompts and completions as `gen_ai.input.messages` /
    /// `gen_ai.output.messages`. Off by default: they may hold personal data.
    pub capture_content: bool,
    /// Export timeout (`OTEL_EXPORTER_OTLP_TIMEOUT`).
    pub export_timeout: Option<String>,
}

pub struct Telemetry {
    tracer: Option<Tracer>,
    provider: Option<SdkTracerProvider>,
    /// Audit records exported as OTLP log records, beside the local file.
    logs: Option<SdkLoggerProvider>,
    audit_logger: Option<opentelemetry_sdk::logs::SdkLogger>,
    /// Keeps the gRPC channel's tasks alive.
    _runtime: Option<tokio::runtime::Runtime>,
    propagator: TraceContextPropagator,
    pub capture_content: bool,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("enabled", &self.tracer.is_some())
            .finish()
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl Telemetry {
    pub fn disabled() -> Telemetry {
        Telemetry {
            tracer: None,
            provider: None,
            logs: None,
            audit_logger: None,
            _runtime: None,
            propagator: TraceContextPropagator::new(),
            capture_content: false,
        }
    }

    pub fn enabled(&self) -> bool {
        self.tracer.is_some()
    }

    /// Builds the exporter from the config and the `OTEL_*` variables; no
    /// endpoint anywhere means no exporter.
    pub fn init(config: &TelemetryConfig) -> Result<Telemetry, String> {
        let endpoint = config.endpoint.clone();
        let configured = endpoint.is_some()
            || env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
            || env("OTEL_EXPORTER_OTLP_ENDPOINT").is_some();
        if !configured || env("OTEL_TRACES_EXPORTER").as_deref() == Some("none") {
            let mut t = Telemetry::disabled();
            t.capture_content = config.capture_content;
            return Ok(t);
        }
        let protocol = config
            .protocol
            .clone()
            .or_else(|| env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"))
            .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .unwrap_or_else(|| "http/protobuf".into());
        let timeout = match &config.export_timeout {
            Some(t) => {
                Some(parse_duration(t).map_err(|e| format!("telemetry.export_timeout: {e}"))?)
            }
            None => None,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ecluse-otel")
            .enable_all()
            .build()
            .map_err(|e| format!("telemetry runtime: {e}"))?;
        let (exporter, log_exporter) = {
            let _guard = runtime.enter();
            let endpoint = endpoint.as_deref();
            (
                otlp_exporter!(
                    SpanExporter,
                    protocol,
                    endpoint,
                    "/v1/traces",
                    timeout,
                    config
                ),
                otlp_exporter!(LogExporter, protocol, endpoint, "/v1/logs", timeout, config),
            )
        };
        let service = config
            .service_name
            .clone()
            .or_else(|| env("OTEL_SERVICE_NAME"))
            .unwrap_or_else(|| "ecluse".into());
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(service)
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let resource_for_logs = resource.clone();
        let mut builder = SdkTracerProvider::builder()
            .with_resource(resource)
            .with_batch_exporter(exporter);
        if let Some(sampler) = &config.sampler {
            builder = builder.with_sampler(sampler_from(sampler, config.sampler_arg)?);
        }
        let provider = builder.build();
        let tracer = provider.tracer("ecluse");
        let logs = SdkLoggerProvider::builder()
            .with_resource(resource_for_logs)
            .with_batch_exporter(log_exporter)
            .build();
        Ok(Telemetry {
            tracer: Some(tracer),
            provider: Some(provider),
            audit_logger: Some(opentelemetry::logs::LoggerProvider::logger(
                &logs,
                "ecluse.audit",
            )),
            logs: Some(logs),
            _runtime: Some(runtime),
            propagator: TraceContextPropagator::new(),
            capture_content: config.capture_content,
        })
    }

    /// Exports an audit record as an OTLP log record whose attributes are
    /// the record's fields (objects as JSON text), so that a Collector can
    /// ship the audit trail to Loki, Elasticsearch or object storage.
    pub fn export_audit<R: serde::Serialize>(&self, record: &R) {
        use opentelemetry::logs::{AnyValue, LogRecord, Logger, Severity};
        let Some(logger) = &self.audit_logger else {
            return;
        };
        let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(record) else {
            return;
        };
        let mut log = logger.create_log_record();
        log.set_severity_number(Severity::Info);
        log.set_severity_text("INFO");
        log.set_event_name("ecluse.decision");
        log.set_body(AnyValue::from(
            fields
                .get("reason")
                .and_then(|r| r.as_str())
                .unwrap_or_default()
                .to_string(),
        ));
        for (key, value) in fields {
            let value: AnyValue = match value {
                serde_json::Value::Null => continue,
                serde_json::Value::Bool(b) => b.into(),
                serde_json::Value::Number(n) => match n.as_i64() {
                    Some(i) => i.into(),
                    None => n.as_f64().unwrap_or_default().into(),
                },
                serde_json::Value::String(s) => s.into(),
                other => other.to_string().into(),
            };
            log.add_attribute(format!("ecluse.audit.{key}"), value);
        }
        logger.emit(log);
    }

    /// Exports what is queued; called once at exit.
    pub fn shutdown(&self) {
        if let Some(logs) = &self.logs {
            let _ = logs.force_flush();
            let _ = logs.shutdown_with_timeout(Duration::from_secs(5));
        }
        if let Some(p) = &self.provider {
            let _ = p.force_flush();
            let _ = p.shutdown_with_timeout(Duration::from_secs(5));
        }
    }

    /// The W3C context the app sent, if any.
    pub fn extract(&self, headers: &http::HeaderMap) -> Context {
        self.propagator.extract(&HeaderExtractor(headers))
    }

    /// Starts the span of one call (renamed once its operation is known).
    pub fn start_call(&self, parent: &Context) -> CallSpan {
        let Some(tracer) = &self.tracer else {
            return CallSpan {
                cx: None,
                incoming_trace: trace_id_of(parent),
            };
        };
        let span = tracer
            .span_builder("ecluse.call")
            .with_kind(SpanKind::Client)
            .start_with_context(tracer, parent);
        CallSpan {
            cx: Some(parent.with_span(span)),
            incoming_trace: trace_id_of(parent),
        }
    }

    /// A child span of `call`, ended when the returned guard is.
    pub fn child(&self, call: &CallSpan, name: &'static str, kind: SpanKind) -> ChildSpan {
        match (&self.tracer, &call.cx) {
            (Some(tracer), Some(cx)) => {
                let span = tracer
                    .span_builder(name)
                    .with_kind(kind)
                    .start_with_context(tracer, cx);
                ChildSpan {
                    cx: Some(cx.with_span(span)),
                }
            }
            _ => ChildSpan { cx: None },
        }
    }

    /// Writes `traceparent` (and `tracestate`) of `span` into `set`,
    /// replacing what the client sent.
    pub fn inject(&self, span: &ChildSpan, mut set: impl FnMut(&str, String)) {
        if let Some(cx) = &span.cx {
            let mut injector = FnInjector(&mut set);
            self.propagator.inject_context(cx, &mut injector);
        }
    }

    /// A span for a connect-stage decision (intercept, tunnel or deny).
    pub fn connect_span(&self, host: &str, attributes: Vec<KeyValue>, error: Option<&str>) {
        let Some(tracer) = &self.tracer else {
            return;
        };
        let mut span = tracer
            .span_builder(format!("ecluse.connect {host}"))
            .with_kind(SpanKind::Server)
            .with_attributes(attributes)
            .start(tracer);
        if let Some(e) = error {
            span.set_status(Status::error(e.to_string()));
        }
        span.end();
    }
}

/// A trace id for a call that came without one while tracing is off, and
/// the W3C `traceparent` that carries it upstream (not sampled: no span is
/// exported for it).
pub fn new_trace_context() -> (String, String) {
    let trace: u128 = rand::random::<u128>().max(1);
    let span: u64 = rand::random::<u64>().max(1);
    let trace_id = format!("{trace:032x}");
    let traceparent = format!("00-{trace_id}-{span:016x}-00");
    (trace_id, traceparent)
}

fn trace_id_of(cx: &Context) -> Option<String> {
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// The span of one call, when tracing is on.
pub struct CallSpan {
    cx: Option<Context>,
    incoming_trace: Option<String>,
}

impl CallSpan {
    pub fn none() -> CallSpan {
        CallSpan {
            cx: None,
            incoming_trace: None,
        }
    }

    /// The trace the call belongs to (ours, else the app's), for the audit log.
    pub fn trace_id(&self) -> Option<String> {
        match &self.cx {
            Some(cx) => trace_id_of(cx),
            None => self.incoming_trace.clone(),
        }
    }

    pub fn rename(&self, name: String) {
        if let Some(cx) = &self.cx {
            cx.span().update_name(name);
        }
    }

    pub fn set(&self, attributes: Vec<KeyValue>) {
        if let Some(cx) = &self.cx {
            cx.span().set_attributes(attributes);
        }
    }

    pub fn end(&mut self, error: Option<&str>) {
        if let Some(cx) = self.cx.take() {
            if let Some(e) = error {
                cx.span().set_status(Status::error(e.to_string()));
            }
            cx.span().end();
        }
    }
}

impl Drop for CallSpan {
    fn drop(&mut self) {
        self.end(None);
    }
}

pub struct ChildSpan {
    cx: Option<Context>,
}

impl ChildSpan {
    pub fn set(&self, attributes: Vec<KeyValue>) {
        if let Some(cx) = &self.cx {
            cx.span().set_attributes(attributes);
        }
    }

    pub fn fail(&self, error: &str) {
        if let Some(cx) = &self.cx {
            cx.span().set_status(Status::error(error.to_string()));
        }
    }
}

impl Drop for ChildSpan {
    fn drop(&mut self) {
        if let Some(cx) = self.cx.take() {
            cx.span().end();
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct FnInjector<'a, F: FnMut(&str, String)>(&'a mut F);

impl<F: FnMut(&str, String)> Injector for FnInjector<'_, F> {
    fn set(&mut self, key: &str, value: String) {
        (self.0)(key, value)
    }
}

/// OTLP/HTTP wants the full traces path when the endpoint is configured in
/// code (the SDK appends it only to the generic environment variable).
#[cfg(test)]
fn http_traces_endpoint(endpoint: &str) -> String {
    http_signal_endpoint(endpoint, "/v1/traces")
}

/// The OTLP/HTTP URL of one signal: the base endpoint plus its path, unless
/// the endpoint already names a signal's path.
fn http_signal_endpoint(endpoint: &str, path: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    let base = base
        .strip_suffix("/v1/traces")
        .or_else(|| base.strip_suffix("/v1/logs"))
        .unwrap_or(base);
    format!("{base}{path}")
}

/// One OTLP exporter (`SpanExporter`, `LogExporter`) for the configured
/// protocol, endpoint, timeout and headers: the same settings serve traces
/// and audit logs.
macro_rules! otlp_exporter {
    ($kind:ident, $protocol:expr, $endpoint:expr, $http_path:expr, $timeout:expr, $config:expr) => {{
        use opentelemetry_otlp::{
            $kind, Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig,
        };
        let config: &TelemetryConfig = $config;
        match $protocol.as_str() {
            "grpc" => {
                let mut b = $kind::builder().with_tonic();
                if let Some(e) = $endpoint {
                    b = b.with_endpoint(e.to_string());
                }
                if let Some(t) = $timeout {
                    b = b.with_timeout(t);
                }
                if !config.headers.is_empty() {
                    b = b.with_metadata(grpc_metadata(&config.headers)?);
                }
                b.build().map_err(|e| format!("OTLP/gRPC exporter: {e}"))?
            }
            "http/protobuf" => {
                let mut b = $kind::builder()
                    .with_http()
                    .with_protocol(Protocol::HttpBinary);
                if let Some(e) = $endpoint {
                    b = b.with_endpoint(http_signal_endpoint(e, $http_path));
                }
                if let Some(t) = $timeout {
                    b = b.with_timeout(t);
                }
                if !config.headers.is_empty() {
                    b = b.with_headers(config.headers.clone().into_iter().collect());
                }
                b.build().map_err(|e| format!("OTLP/HTTP exporter: {e}"))?
            }
            other => {
                return Err(format!(
                    "OTLP protocol {other:?} is not supported: use grpc or http/protobuf"
                ))
            }
        }
    }};
}
use otlp_exporter;

fn grpc_metadata(
    headers: &BTreeMap<String, String>,
) -> Result<tonic::metadata::MetadataMap, String> {
    let mut map = tonic::metadata::MetadataMap::new();
    for (k, v) in headers {
        let key = tonic::metadata::MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
            .map_err(|_| format!("telemetry.headers: {k:?} is not a valid header"))?;
        let value = v
            .parse()
            .map_err(|_| format!("telemetry.headers: the value of {k} is not valid"))?;
        map.insert(key, value);
    }
    Ok(map)
}

fn sampler_from(name: &str, arg: Option<f64>) -> Result<Sampler, String> {
    let ratio = arg.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&ratio) {
        return Err("telemetry.sampler_arg must be between 0 and 1".into());
    }
    Ok(match name {
        "always_on" => Sampler::AlwaysOn,
        "always_off" => Sampler::AlwaysOff,
        "traceidratio" => Sampler::TraceIdRatioBased(ratio),
        "parentbased_always_on" => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        "parentbased_always_off" => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        "parentbased_traceidratio" => {
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)))
        }
        other => {
            return Err(format!(
                "telemetry.sampler {other:?} is not a known sampler"
            ))
        }
    })
}

/// `gen_ai.operation.name` for ecluse's operation names.
pub fn operation_name(operation: Option<&str>) -> &'static str {
    match operation {
        Some("chat" | "messages" | "converse" | "responses") => "chat",
        Some("completions") => "text_completion",
        Some("embeddings") => "embeddings",
        Some("generate_content") => "generate_content",
        Some("invoke") => "invoke",
        Some("models") => "models",
        _ => "unrecognised",
    }
}

/// `gen_ai.provider.name` for a registry provider id (the semantic
/// conventions' well-known values where they exist).
pub fn provider_name(provider: Option<&str>) -> &'static str {
    match provider {
        Some("openai") => "openai",
        Some("azure_openai") => "azure.ai.openai",
        Some("anthropic") => "anthropic",
        Some("google_gemini") => "gcp.gemini",
        Some("google_vertex") => "gcp.vertex_ai",
        Some("aws_bedrock") => "aws.bedrock",
        Some("cohere") => "cohere",
        Some("mistral") => "mistral_ai",
        Some("deepseek") => "deepseek",
        Some("aleph_alpha") => "aleph_alpha",
        Some("in_cluster") => "self_hosted",
        _ => "unknown",
    }
}

/// The recommended `gen_ai.request.*` attributes present in a call body.
pub fn request_parameters(body: &serde_json::Value) -> Vec<KeyValue> {
    let mut out = Vec::new();
    let number = |k: &str| body.get(k).and_then(serde_json::Value::as_f64);
    let int = |k: &str| body.get(k).and_then(serde_json::Value::as_i64);
    if let Some(n) = int("max_completion_tokens").or_else(|| int("max_tokens")) {
        out.push(KeyValue::new("gen_ai.request.max_tokens", n));
    }
    for (field, key) in [
        ("temperature", "gen_ai.request.temperature"),
        ("top_p", "gen_ai.request.top_p"),
        ("frequency_penalty", "gen_ai.request.frequency_penalty"),
        ("presence_penalty", "gen_ai.request.presence_penalty"),
    ] {
        if let Some(v) = number(field) {
            out.push(KeyValue::new(key, v));
        }
    }
    if let Some(n) = int("seed") {
        out.push(KeyValue::new("gen_ai.request.seed", n));
    }
    if let Some(n) = int("n").filter(|n| *n != 1) {
        out.push(KeyValue::new("gen_ai.request.choice.count", n));
    }
    match body.get("stop") {
        Some(serde_json::Value::String(s)) => out.push(KeyValue::new(
            "gen_ai.request.stop_sequences",
            strings(std::slice::from_ref(s)),
        )),
        Some(serde_json::Value::Array(items)) => {
            let stops: Vec<opentelemetry::StringValue> = items
                .iter()
                .filter_map(|s| s.as_str().map(|s| s.to_string().into()))
                .collect();
            out.push(KeyValue::new(
                "gen_ai.request.stop_sequences",
                Value::Array(stops.into()),
            ));
        }
        _ => {}
    }
    if let Some(fmt) = body
        .get("encoding_format")
        .and_then(serde_json::Value::as_str)
    {
        out.push(KeyValue::new(
            "gen_ai.request.encoding_formats",
            Value::Array(vec![opentelemetry::StringValue::from(fmt.to_string())].into()),
        ));
    }
    if let Some(kind) = body
        .get("response_format")
        .and_then(|f| f.get("type"))
        .and_then(serde_json::Value::as_str)
    {
        let output = if kind == "text" { "text" } else { "json" };
        out.push(KeyValue::new("gen_ai.output.type", output));
    }
    out
}

/// `ecluse.*` attributes of a destination.
pub fn destination_attributes(d: &crate::policy::input::DestinationDoc) -> Vec<KeyValue> {
    let mut out = vec![
        KeyValue::new("ecluse.destination.host", d.host.clone()),
        KeyValue::new("ecluse.destination.port", i64::from(d.port)),
    ];
    if let Some(p) = &d.provider {
        out.push(KeyValue::new("ecluse.destination.provider", p.clone()));
    }
    if let Some(e) = &d.entity {
        out.push(KeyValue::new("ecluse.destination.entity", e.name.clone()));
        out.push(KeyValue::new(
            "ecluse.destination.jurisdiction",
            e.jurisdiction.clone(),
        ));
        out.push(KeyValue::new("ecluse.destination.cloud_act", e.cloud_act));
    }
    out
}

/// `ecluse.*` attributes of a decision.
pub fn decision_attributes(
    action: &str,
    rule: &str,
    reason: &str,
    decision_id: &str,
    revision: &str,
    enforced: bool,
) -> Vec<KeyValue> {
    vec![
        KeyValue::new("ecluse.action", action.to_string()),
        KeyValue::new("ecluse.rule", rule.to_string()),
        KeyValue::new("ecluse.reason", reason.to_string()),
        KeyValue::new("ecluse.decision_id", decision_id.to_string()),
        KeyValue::new("ecluse.policy.revision", revision.to_string()),
        KeyValue::new("ecluse.enforced", enforced),
    ]
}

/// `ecluse.*` attributes of what the call carries (counts, never text).
pub fn data_attributes(data: &crate::classify::DataDoc) -> Vec<KeyValue> {
    let mut out = Vec::new();
    if let Some(c) = &data.classification {
        out.push(KeyValue::new("ecluse.data.classification", c.clone()));
    }
    if let Some(r) = &data.retention {
        out.push(KeyValue::new("ecluse.data.retention", r.clone()));
    }
    for (kind, count) in &data.pii {
        out.push(KeyValue::new(
            format!("ecluse.pii.{kind}"),
            i64::from(*count),
        ));
    }
    out
}

/// A string array attribute.
pub fn strings(items: &[String]) -> Value {
    Value::Array(
        items
            .iter()
            .map(|s| opentelemetry::StringValue::from(s.clone()))
            .collect::<Vec<_>>()
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_parameters_follow_the_conventions() {
        let body = serde_json::json!({
            "model": "gpt-4o", "max_completion_tokens": 100, "temperature": 0.2, "top_p": 0.9,
            "seed": 7, "n": 2, "stop": ["\n"], "response_format": {"type": "json_object"}
        });
        let attrs = request_parameters(&body);
        let get = |k: &str| {
            attrs
                .iter()
                .find(|kv| kv.key.as_str() == k)
                .map(|kv| kv.value.clone())
        };
        assert_eq!(get("gen_ai.request.max_tokens"), Some(Value::I64(100)));
        assert_eq!(get("gen_ai.request.temperature"), Some(Value::F64(0.2)));
        assert_eq!(get("gen_ai.request.seed"), Some(Value::I64(7)));
        assert_eq!(get("gen_ai.request.choice.count"), Some(Value::I64(2)));
        assert_eq!(get("gen_ai.output.type"), Some(Value::from("json")));
        assert!(get("gen_ai.request.stop_sequences").is_some());
    }

    #[test]
    fn names() {
        assert_eq!(operation_name(Some("completions")), "text_completion");
        assert_eq!(provider_name(Some("mistral")), "mistral_ai");
        assert_eq!(
            http_traces_endpoint("http://c:4318"),
            "http://c:4318/v1/traces"
        );
        assert_eq!(
            http_traces_endpoint("http://c:4318/v1/traces"),
            "http://c:4318/v1/traces"
        );
        assert!(sampler_from("nope", None).is_err());
    }

    #[test]
    fn disabled_telemetry_still_reports_the_apps_trace() {
        let t = Telemetry::disabled();
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        let parent = t.extract(&headers);
        let call = t.start_call(&parent);
        assert_eq!(
            call.trace_id().as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
    }
}
