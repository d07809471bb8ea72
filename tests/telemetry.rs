//! OpenTelemetry end to end: a real OTLP receiver (gRPC with tonic, and
//! HTTP decoding the protobuf) gets ecluse's spans; /metrics is read with a
//! Prometheus text parser.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::BodyExt;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

/// Everything the receiver got: decoded spans and the raw bytes.
#[derive(Clone, Default)]
struct Received {
    spans: Arc<Mutex<Vec<Span>>>,
    bytes: Arc<Mutex<Vec<u8>>>,
    /// OTLP log records: the audit records ecluse exports.
    logs: Arc<Mutex<Vec<LogRecord>>>,
}

impl Received {
    fn absorb(&self, request: &ExportTraceServiceRequest, raw: &[u8]) {
        self.bytes.lock().unwrap().extend_from_slice(raw);
        let mut spans = self.spans.lock().unwrap();
        for rs in &request.resource_spans {
            for ss in &rs.scope_spans {
                spans.extend(ss.spans.iter().cloned());
            }
        }
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }

    async fn wait_for(&self, what: &str, pred: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let spans = self.spans();
            if pred(&spans) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} among {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

struct Grpc(Received);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let request = request.into_inner();
        self.0.absorb(&request, &request.encode_to_vec());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

async fn grpc_receiver() -> (SocketAddr, Received) {
    let received = Received::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = TraceServiceServer::new(Grpc(received.clone()));
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream_of(listener))
            .await
            .unwrap();
    });
    (addr, received)
}

fn tokio_stream_of(
    listener: tokio::net::TcpListener,
) -> impl futures_util::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures_util::stream::unfold(listener, |l| async move {
        let item = l.accept().await.map(|(s, _)| s);
        Some((item, l))
    })
}

/// OTLP/HTTP: POST /v1/traces and /v1/logs with protobuf bodies.
async fn http_receiver() -> (SocketAddr, Received) {
    let received = Received::default();
    let r = received.clone();
    let mock = MockUpstream::start(
        None,
        Arc::new(move |req: &Recorded| {
            assert_eq!(req.header("content-type"), Some("application/x-protobuf"));
            if req.path == "/v1/logs" {
                let decoded = ExportLogsServiceRequest::decode(req.body.as_ref()).unwrap();
                r.bytes.lock().unwrap().extend_from_slice(&req.body);
                let mut logs = r.logs.lock().unwrap();
                for rl in &decoded.resource_logs {
                    for sl in &rl.scope_logs {
                        logs.extend(sl.log_records.iter().cloned());
                    }
                }
                return MockResponse::Full {
                    status: 200,
                    headers: vec![("content-type".into(), "application/x-protobuf".into())],
                    body: Bytes::from(
                        ExportLogsServiceResponse {
                            partial_success: None,
                        }
                        .encode_to_vec(),
                    ),
                };
            }
            assert_eq!(req.path, "/v1/traces");
            let decoded = ExportTraceServiceRequest::decode(req.body.as_ref()).unwrap();
            r.absorb(&decoded, &req.body);
            MockResponse::Full {
                status: 200,
                headers: vec![("content-type".into(), "application/x-protobuf".into())],
                body: Bytes::from(
                    ExportTraceServiceResponse {
                        partial_success: None,
                    }
                    .encode_to_vec(),
                ),
            }
        }),
    )
    .await;
    // The receiver serves for the rest of the test process.
    let mock: &'static MockUpstream = Box::leak(Box::new(mock));
    (mock.addr, received)
}

fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a AnyValue> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn attr_str(span: &Span, key: &str) -> Option<String> {
    match attr(span, key) {
        Some(AnyValue::StringValue(s)) => Some(s.clone()),
        _ => None,
    }
}

fn attr_int(span: &Span, key: &str) -> Option<i64> {
    match attr(span, key) {
        Some(AnyValue::IntValue(n)) => Some(*n),
        _ => None,
    }
}

const APP_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const APP_SPAN: &str = "00f067aa0ba902b7";
const CANARY_KEY: &str = "sk-canary-telemetry-7f1e";
const CANARY_PROMPT: &str = "canary-prompt-3b9c2d";

struct World {
    pki: TestPki,
    openai: MockUpstream,
    mistral: MockUpstream,
    tunnel: MockUpstream,
    proxy: Arc<Proxy>,
}

async fn world(extra: &str, envs: &[(&str, &str)]) -> World {
    let pki = TestPki::new();
    let openai = MockUpstream::start(
        Some(pki.server_config(&["api.openai.com"])),
        openai_handler(),
    )
    .await;
    let mistral = MockUpstream::start(
        Some(pki.server_config(&["api.mistral.ai"])),
        Arc::new(|_req: &Recorded| MockResponse::Sse {
            events: vec![
                r#"{"id":"m1","model":"mistral-large-latest","choices":[{"index":0,"delta":{"content":"Bon"},"finish_reason":null}]}"#.into(),
                r#"{"id":"m1","model":"mistral-large-latest","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":3}}"#.into(),
                "[DONE]".into(),
            ],
            gap: Duration::from_millis(20),
        }),
    )
    .await;
    let tunnel = MockUpstream::start(
        Some(pki.server_config(&["tunnel.example"])),
        openai_handler(),
    )
    .await;
    let key = pki.dir.path().join("mistral-key");
    std::fs::write(&key, "mistral-key").unwrap();
    let yaml = format!(
        "{}targets:\n  mistral:\n    base_url: https://api.mistral.ai/v1\n    api_key_file: {}\n    models: {{ \"*\": mistral-large-latest }}\n{extra}",
        upstream_yaml(
            &[
                ("api.openai.com:443", openai.addr),
                ("api.mistral.ai:443", mistral.addr),
                ("tunnel.example:443", tunnel.addr)
            ],
            Some(&pki.ca_path)
        ),
        key.display()
    );
    let envs: Vec<(String, String)> = envs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let proxy = tokio::task::spawn_blocking(move || {
        let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Proxy::start_with_env(tempfile::tempdir().unwrap(), &yaml, &envs)
    })
    .await
    .unwrap();
    World {
        pki,
        openai,
        mistral,
        tunnel,
        proxy: Arc::new(proxy),
    }
}

async fn chat(
    w: &World,
    classification: &str,
    stream: bool,
    traceparent: bool,
) -> (u16, String, String) {
    let tls = w
        .proxy
        .connect_tls("api.openai.com:443", &[b"http/1.1"])
        .await;
    let body = serde_json::json!({
        "model": "gpt-4o", "stream": stream, "temperature": 0.3, "max_tokens": 64,
        "messages": [{"role": "user", "content": CANARY_PROMPT}]
    })
    .to_string();
    let mut req = post_json("api.openai.com", "/v1/chat/completions", &body);
    let headers = req.headers_mut();
    headers.insert(
        "authorization",
        format!("Bearer {CANARY_KEY}").parse().unwrap(),
    );
    headers.insert("x-data-classification", classification.parse().unwrap());
    if traceparent {
        headers.insert(
            "traceparent",
            format!("00-{APP_TRACE}-{APP_SPAN}-01").parse().unwrap(),
        );
    }
    let resp = http1_send(tls, req).await;
    let status = resp.status().as_u16();
    let id = resp
        .headers()
        .get("x-ecluse-decision-id")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let text =
        String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).to_string();
    (status, id, text)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_receiver_gets_genai_spans_for_every_kind_of_decision() {
    let (collector, received) = grpc_receiver().await;
    let endpoint = format!("http://{collector}");
    let w = world(
        "",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_SERVICE_NAME", "ecluse-test"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .await;

    // 1. An allowed call, inside the app's trace.
    let (status, allowed_id, _) = chat(&w, "public", false, true).await;
    assert_eq!(status, 200);
    // 2. A rerouted streaming call.
    let (status, rerouted_id, body) = chat(&w, "personal", true, false).await;
    assert_eq!(status, 200, "{body}");
    // 3. A denied call (special-category, no in-cluster target).
    let (status, denied_id, _) = chat(&w, "special-category", false, false).await;
    assert_eq!(status, 403);
    // 4. A tunnel.
    let (code, out, err) = curl(&[
        "--proxy",
        &w.proxy.proxy_url(),
        "--cacert",
        w.pki.ca_path.to_str().unwrap(),
        "https://tunnel.example/v1/models",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("gpt-4o"));

    let spans = received
        .wait_for("all spans", |spans| {
            spans.iter().filter(|s| s.name.starts_with("chat ")).count() >= 3
                && spans
                    .iter()
                    .any(|s| s.name == "ecluse.connect tunnel.example")
        })
        .await;
    let by_decision = |id: &str| {
        spans
            .iter()
            .find(|s| {
                s.name.starts_with("chat ")
                    && attr_str(s, "ecluse.decision_id").as_deref() == Some(id)
            })
            .unwrap_or_else(|| panic!("no call span for decision {id}"))
            .clone()
    };

    let allowed = by_decision(&allowed_id);
    assert_eq!(allowed.name, "chat gpt-4o");
    assert_eq!(allowed.kind, SpanKind::Client as i32);
    assert_eq!(
        hex(&allowed.trace_id),
        APP_TRACE,
        "the app's trace is continued"
    );
    assert_eq!(
        hex(&allowed.parent_span_id),
        APP_SPAN,
        "the app's span is the parent"
    );
    for (key, want) in [
        ("gen_ai.operation.name", "chat"),
        ("gen_ai.provider.name", "openai"),
        ("gen_ai.request.model", "gpt-4o"),
        ("gen_ai.response.model", "gpt-4o"),
        ("gen_ai.response.id", "chatcmpl-test"),
        ("server.address", "api.openai.com"),
        ("ecluse.action", "allow"),
        ("ecluse.rule", "egress.allowed"),
        ("ecluse.destination.entity", "OpenAI OpCo, LLC"),
        ("ecluse.destination.jurisdiction", "US"),
        ("ecluse.data.classification", "public"),
    ] {
        assert_eq!(attr_str(&allowed, key).as_deref(), Some(want), "{key}");
    }
    assert_eq!(attr_int(&allowed, "gen_ai.usage.input_tokens"), Some(5));
    assert_eq!(attr_int(&allowed, "gen_ai.usage.output_tokens"), Some(2));
    assert_eq!(attr_int(&allowed, "gen_ai.request.max_tokens"), Some(64));
    assert_eq!(attr_int(&allowed, "server.port"), Some(443));
    assert!(
        matches!(attr(&allowed, "gen_ai.request.temperature"), Some(AnyValue::DoubleValue(t)) if (*t - 0.3).abs() < 1e-9)
    );
    assert!(matches!(
        attr(&allowed, "gen_ai.response.finish_reasons"),
        Some(AnyValue::ArrayValue(_))
    ));
    assert!(attr_str(&allowed, "ecluse.policy.revision")
        .unwrap()
        .starts_with("embedded-"));
    let children: Vec<&Span> = spans
        .iter()
        .filter(|s| s.parent_span_id == allowed.span_id)
        .collect();
    let names: Vec<&str> = children.iter().map(|s| s.name.as_str()).collect();
    assert!(
        names.contains(&"ecluse.policy") && names.contains(&"ecluse.upstream"),
        "{names:?}"
    );
    let upstream = children
        .iter()
        .find(|s| s.name == "ecluse.upstream")
        .unwrap();
    // The upstream call carries ecluse's span context, not the app's.
    let sent = w.openai.recorded();
    let traceparent = sent[0].header("traceparent").unwrap().to_string();
    assert_eq!(
        traceparent,
        format!("00-{APP_TRACE}-{}-01", hex(&upstream.span_id))
    );

    let rerouted = by_decision(&rerouted_id);
    assert_eq!(
        attr_str(&rerouted, "gen_ai.provider.name").as_deref(),
        Some("mistral_ai")
    );
    assert_eq!(
        attr_str(&rerouted, "server.address").as_deref(),
        Some("api.mistral.ai")
    );
    assert_eq!(
        attr_str(&rerouted, "ecluse.action").as_deref(),
        Some("reroute")
    );
    assert_eq!(
        attr_str(&rerouted, "ecluse.route.target").as_deref(),
        Some("mistral")
    );
    assert_eq!(
        attr_str(&rerouted, "ecluse.original.provider").as_deref(),
        Some("openai")
    );
    assert_eq!(
        attr_str(&rerouted, "ecluse.original.model").as_deref(),
        Some("gpt-4o")
    );
    assert_eq!(
        attr_str(&rerouted, "gen_ai.response.model").as_deref(),
        Some("mistral-large-latest")
    );
    assert_eq!(
        attr_int(&rerouted, "gen_ai.usage.input_tokens"),
        Some(12),
        "usage from the SSE stream"
    );
    assert_eq!(attr_int(&rerouted, "gen_ai.usage.output_tokens"), Some(3));
    assert!(matches!(
        attr(&rerouted, "gen_ai.response.time_to_first_chunk"),
        Some(AnyValue::DoubleValue(_))
    ));
    assert_eq!(w.mistral.recorded().len(), 1);

    let denied = by_decision(&denied_id);
    assert_eq!(attr_str(&denied, "ecluse.action").as_deref(), Some("deny"));
    assert_eq!(
        attr_str(&denied, "error.type").as_deref(),
        Some("policy_denied")
    );
    assert_eq!(
        denied.status.as_ref().map(|s| s.code),
        Some(2),
        "status ERROR"
    );

    let tunnel = spans
        .iter()
        .find(|s| s.name == "ecluse.connect tunnel.example")
        .unwrap();
    assert_eq!(attr_str(tunnel, "ecluse.action").as_deref(), Some("tunnel"));
    assert_eq!(w.tunnel.recorded().len(), 1);

    // Secrets and prompts never leave in any exported byte.
    let bytes = received.bytes.lock().unwrap().clone();
    for canary in [CANARY_KEY, CANARY_PROMPT, "mistral-key"] {
        assert!(
            !bytes.windows(canary.len()).any(|w| w == canary.as_bytes()),
            "{canary} was exported"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_protobuf_receiver_and_content_capture_opt_in() {
    let (collector, received) = http_receiver().await;
    let endpoint = format!("http://{collector}");
    let w = world(
        &format!("telemetry:\n  endpoint: {endpoint}\n  protocol: http/protobuf\n  capture_content: true\n"),
        &[("OTEL_BSP_SCHEDULE_DELAY", "100")],
    )
    .await;
    let (status, id, _) = chat(&w, "public", false, false).await;
    assert_eq!(status, 200);
    let spans = received
        .wait_for("the call span", |s| {
            s.iter().any(|s| s.name == "chat gpt-4o")
        })
        .await;
    let call = spans
        .iter()
        .find(|s| attr_str(s, "ecluse.decision_id").as_deref() == Some(id.as_str()))
        .unwrap();
    // With the opt-in, the prompt and the answer are exported; keys never are.
    assert!(attr_str(call, "gen_ai.input.messages")
        .unwrap()
        .contains(CANARY_PROMPT));
    assert_eq!(
        attr_str(call, "gen_ai.output.messages").as_deref(),
        Some("Hello from the mock")
    );
    // The audit record of the call arrives as an OTLP log record, its
    // fields as attributes.
    let deadline = Instant::now() + Duration::from_secs(15);
    let record = loop {
        let found = received.logs.lock().unwrap().iter().find(|l| {
            l.attributes.iter().any(|kv| {
                kv.key == "ecluse.audit.decision_id"
                    && matches!(kv.value.as_ref().and_then(|v| v.value.as_ref()), Some(AnyValue::StringValue(s)) if *s == id)
            })
        }).cloned();
        if let Some(record) = found {
            break record;
        }
        assert!(
            Instant::now() < deadline,
            "no OTLP log record for decision {id}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let field = |key: &str| {
        record
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.clone())
    };
    assert_eq!(
        field("ecluse.audit.stage"),
        Some(AnyValue::StringValue("request".into()))
    );
    assert_eq!(
        field("ecluse.audit.action"),
        Some(AnyValue::StringValue("allow".into()))
    );
    assert_eq!(
        field("ecluse.audit.enforced"),
        Some(AnyValue::BoolValue(true))
    );
    match field("ecluse.audit.input") {
        Some(AnyValue::StringValue(input)) => {
            assert!(input.contains("\"stage\":\"request\""), "{input}")
        }
        other => panic!("input attribute: {other:?}"),
    }
    let bytes = received.bytes.lock().unwrap().clone();
    assert!(!bytes
        .windows(CANARY_KEY.len())
        .any(|w| w == CANARY_KEY.as_bytes()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_succeed_while_the_collector_is_down() {
    let closed = free_port();
    let endpoint = format!("http://127.0.0.1:{closed}");
    let w = world(
        "",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ],
    )
    .await;
    let started = Instant::now();
    for _ in 0..20 {
        let (status, _, _) = chat(&w, "public", false, false).await;
        assert_eq!(status, 200);
    }
    // Export runs off the request path: twenty calls stay well under the
    // export timeout, whatever the collector does. (Cost is measured in the
    // load bench, not asserted here.)
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(w.openai.recorded().len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_move_with_calls() {
    let w = world("", &[]).await;
    let read = |proxy: &Proxy| {
        let (code, text) = proxy.admin_get("/metrics");
        assert_eq!(code, 200);
        let lines = text.lines().map(|l| Ok(l.to_string()));
        prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text")
    };
    let value = |scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]| -> f64 {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                prometheus_parse::Value::Histogram(ref h) => {
                    h.iter().map(|b| b.count).fold(0.0, f64::max)
                }
                _ => 0.0,
            })
            .sum()
    };
    let proxy = w.proxy.clone();
    let before = tokio::task::spawn_blocking(move || read(&proxy))
        .await
        .unwrap();
    chat(&w, "public", false, false).await;
    chat(&w, "public", true, false).await;
    chat(&w, "special-category", false, false).await;
    // Counters are recorded just after each response: wait for the third.
    let deadline = Instant::now() + Duration::from_secs(5);
    let after = loop {
        let proxy = w.proxy.clone();
        let scrape = tokio::task::spawn_blocking(move || read(&proxy))
            .await
            .unwrap();
        let done = value(
            &scrape,
            "gen_ai_client_operation_duration_seconds_count",
            &[("gen_ai_operation_name", "chat")],
        );
        if done >= 3.0 || Instant::now() > deadline {
            break scrape;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let token = |s: &prometheus_parse::Scrape, kind: &str| {
        value(
            s,
            "gen_ai_client_token_usage_count",
            &[
                ("gen_ai_token_type", kind),
                ("gen_ai_provider_name", "openai"),
            ],
        )
    };
    assert_eq!(token(&before, "input"), 0.0);
    assert_eq!(
        token(&after, "input"),
        2.0,
        "both allowed calls reported input tokens"
    );
    assert_eq!(token(&after, "output"), 2.0);
    let durations = value(
        &after,
        "gen_ai_client_operation_duration_seconds_count",
        &[("gen_ai_operation_name", "chat")],
    );
    assert_eq!(durations, 3.0);
    let denied = value(
        &after,
        "gen_ai_client_operation_duration_seconds_count",
        &[("error_type", "policy_denied")],
    );
    assert_eq!(denied, 1.0);
    assert!(
        value(
            &after,
            "ecluse_decisions_total",
            &[("stage", "request"), ("action", "deny")]
        ) >= 1.0
    );
    assert!(
        value(
            &after,
            "ecluse_decisions_total",
            &[("stage", "connect"), ("action", "intercept")]
        ) >= 3.0
    );
    assert_eq!(value(&after, "ecluse_policy_ready", &[]), 1.0);
    assert!(value(&after, "ecluse_connections_total", &[]) >= 3.0);
    // Connections close once their clients go: the gauge comes back down.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let proxy = w.proxy.clone();
        let now = tokio::task::spawn_blocking(move || read(&proxy))
            .await
            .unwrap();
        if value(&now, "ecluse_connections_active", &[]) == 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "connections never closed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        value(
            &after,
            "gen_ai_client_operation_time_to_first_chunk_seconds_count",
            &[]
        ) >= 1.0
    );
}
