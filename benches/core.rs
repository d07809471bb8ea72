//! Micro-benchmarks of the per-connection and per-request work.
//! `cargo bench --bench core`

use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use ecluse::listener::connect::parse_head;
use ecluse::llm::parse_request;
use ecluse::tls::{ca, CertificateAuthority, LeafCache};

fn ca() -> (tempfile::TempDir, Arc<CertificateAuthority>) {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::load_or_create(
        &dir.path().join("ca.pem"),
        &dir.path().join("ca-key.pem"),
        true,
        ca::DEFAULT_LEAF_VALIDITY,
    )
    .unwrap();
    (dir, Arc::new(ca))
}

fn leaf_minting(c: &mut Criterion) {
    let (_dir, ca) = ca();
    c.bench_function("mint_leaf_cold", |b| {
        b.iter(|| ca.mint_leaf(black_box("api.openai.com")).unwrap())
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let cache = LeafCache::new(ca.clone(), 1024);
    runtime
        .block_on(cache.server_config("api.openai.com"))
        .unwrap();
    c.bench_function("leaf_cached", |b| {
        b.iter(|| {
            runtime
                .block_on(cache.server_config(black_box("api.openai.com")))
                .unwrap()
        })
    });
}

fn connect_parsing(c: &mut Criterion) {
    let head = b"CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\nUser-Agent: OpenAI/Python 1.54.0\r\nProxy-Connection: keep-alive\r\n\r\n";
    c.bench_function("parse_connect_head", |b| {
        b.iter(|| parse_head(black_box(head), 32 * 1024, 100).unwrap())
    });
}

fn chat_body(content_bytes: usize) -> Vec<u8> {
    let content = "lorem ipsum dolor sit amet ".repeat(content_bytes / 27 + 1);
    serde_json::to_vec(&serde_json::json!({
        "model": "gpt-4o",
        "stream": true,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": content}
        ]
    }))
    .unwrap()
}

fn body_parsing(c: &mut Criterion) {
    for (name, size) in [
        ("parse_chat_body_1KiB", 1024),
        ("parse_chat_body_1MiB", 1 << 20),
    ] {
        let body = chat_body(size);
        c.bench_function(name, |b| {
            b.iter_batched(
                || body.clone(),
                |body| parse_request(Some("openai"), "POST", "/v1/chat/completions", &body),
                BatchSize::LargeInput,
            )
        });
    }
}

fn prompt_with_pii(bytes: usize) -> serde_json::Value {
    let sentence = "Please summarise the invoice for jane.doe@example.com, IBAN DE89 3704 0044 0532 0130 00, call +33 6 12 34 56 78. ";
    let filler =
        "The quarterly roadmap covers reliability, onboarding and the new billing engine. ";
    let mut content = String::with_capacity(bytes);
    while content.len() < bytes {
        content.push_str(if content.len() % 7 == 0 {
            sentence
        } else {
            filler
        });
    }
    serde_json::json!({"model": "gpt-4o", "messages": [{"role": "user", "content": content}]})
}

fn pii_scan(c: &mut Criterion) {
    for (name, size) in [("pii_scan_4KiB", 4 << 10), ("pii_scan_1MiB", 1 << 20)] {
        let body = serde_json::to_vec(&prompt_with_pii(size)).unwrap();
        c.bench_function(name, |b| {
            b.iter(|| ecluse::classify::body::scan_body(Some("application/json"), black_box(&body)))
        });
    }
}

fn policy_evaluation(c: &mut Criterion) {
    use ecluse::authority::Authority;
    use ecluse::policy::input::{self, Scheme, SourceDoc};
    use ecluse::policy::load::{self, Context, PolicyFiles};
    // A mistral target, so that personal data to OpenAI is rerouted as in
    // the README's set-up.
    let mistral = ecluse::route::Target::from_config(
        "mistral",
        &ecluse::config::TargetConfig {
            base_url: "https://api.mistral.ai/v1".into(),
            ..Default::default()
        },
    )
    .unwrap();
    let targets = [("mistral".to_string(), mistral)].into_iter().collect();
    let context = Context {
        targets: &targets,
        timeout: std::time::Duration::from_millis(50),
    };
    // ECLUSE_BENCH_POLICY_DIR times a policy directory of your own instead
    // of the embedded defaults.
    let files = match std::env::var_os("ECLUSE_BENCH_POLICY_DIR") {
        Some(dir) => PolicyFiles::read_dir(std::path::Path::new(&dir)).unwrap(),
        None => PolicyFiles::embedded(),
    };
    // The evaluation itself: without the per-revision decision cache,
    // which would answer every iteration after the first.
    let cached = load::compile(&files, &context, "bench".into(), "bench".into()).unwrap();
    let snapshot = load::compile(&files, &context, "bench".into(), "bench".into())
        .unwrap()
        .without_decision_cache();
    let body = serde_json::to_vec(&prompt_with_pii(512)).unwrap();
    let headers: Vec<(&str, &[u8])> = vec![
        ("content-type", b"application/json"),
        ("authorization", b"Bearer sk-test"),
        ("x-data-classification", b"internal"),
        ("user-agent", b"OpenAI/Python 1.54.0"),
    ];
    let source = ecluse::policy::rego::to_value(&SourceDoc::default()).unwrap();
    let authority = Authority::new("api.openai.com", 443);
    // As the proxy does it: the destination document comes from the
    // revision's cache; the request and data parts are built per call.
    // First input building and evaluation alone (parsing and the PII scan
    // have their own benches), then the whole decision step of a call.
    let parse_and_scan = || {
        let call = parse_request(Some("openai"), "POST", "/v1/chat/completions", &body);
        let scan = ecluse::classify::body::scan_body(Some("application/json"), &body);
        let data = ecluse::classify::declared(Some(b"internal"), None)
            .unwrap()
            .with_scan(scan.pii, scan.unread, false);
        (call, data)
    };
    let input_and_eval = |call: &ecluse::llm::ParsedCall, data: &ecluse::classify::DataDoc| {
        let destination = snapshot.destination(&authority, Scheme::Https, &[443]);
        let request = input::request_doc(
            "POST",
            "/v1/chat/completions",
            headers.iter().copied(),
            body.len(),
            call,
        );
        snapshot.decide_request_at(&destination, &request, data, &source)
    };
    let (call, data) = parse_and_scan();
    // The load harness's `evaluated` call: a small chat without personal
    // data or a declared classification, a retention of 31 days and up;
    // the default policies allow it.
    let allowed_data = ecluse::classify::declared(None, Some(b"45d")).unwrap();
    let allowed_call = parse_request(
        Some("openai"),
        "POST",
        "/v1/chat/completions",
        br#"{"model":"gpt-4o","messages":[{"role":"user","content":"Summarise the quarterly roadmap."}]}"#,
    );
    c.bench_function("policy_input_and_eval_allowed", |b| {
        b.iter(|| {
            let decision = input_and_eval(&allowed_call, &allowed_data);
            assert_eq!(decision.rule, "egress.allowed", "{}", decision.reason);
            black_box(decision)
        })
    });
    c.bench_function("policy_input_and_eval_default", |b| {
        b.iter(|| black_box(input_and_eval(&call, &data)))
    });
    let mut personal = data.clone();
    personal.classification = Some("personal".into());
    c.bench_function("policy_input_and_eval_reroute", |b| {
        b.iter(|| {
            let decision = input_and_eval(&call, &personal);
            assert!(decision.route.is_some(), "{}", decision.reason);
            black_box(decision)
        })
    });
    c.bench_function("policy_input_and_remembered_decision", |b| {
        let destination = cached.destination(&authority, Scheme::Https, &[443]);
        b.iter(|| {
            let request = input::request_doc(
                "POST",
                "/v1/chat/completions",
                headers.iter().copied(),
                body.len(),
                &call,
            );
            black_box(cached.decide_request_at(&destination, &request, &data, &source))
        })
    });
    c.bench_function("decide_call_parse_scan_input_eval", |b| {
        b.iter(|| {
            let (call, data) = parse_and_scan();
            black_box(input_and_eval(&call, &data))
        })
    });
    c.bench_function("policy_eval_connect", |b| {
        b.iter(|| {
            let destination = snapshot.destination(&authority, Scheme::Https, &[443]);
            black_box(snapshot.decide_connect_at(&destination, &source))
        })
    });
}

fn rewrite(c: &mut Criterion) {
    let body = serde_json::json!({
        "model": "gpt-4o", "seed": 1, "max_completion_tokens": 100, "logprobs": true, "user": "u",
        "messages": [{"role": "system", "content": "be brief", "name": "s"}, {"role": "user", "content": "x".repeat(2000)}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    });
    let dialect = ecluse::route::translate::Dialect::Mistral;
    c.bench_function("rewrite_chat_for_mistral", |b| {
        b.iter(|| {
            serde_json::to_vec(
                &dialect
                    .translate("chat", black_box(&body), "mistral-large-latest")
                    .unwrap(),
            )
            .unwrap()
        })
    });
}

fn sse_usage(c: &mut Criterion) {
    let mut stream = Vec::new();
    for i in 0..200 {
        stream.extend_from_slice(
            format!("data: {{\"id\":\"c1\",\"model\":\"gpt-4o\",\"choices\":[{{\"delta\":{{\"content\":\"tok{i} \"}},\"finish_reason\":null}}]}}\n\n").as_bytes(),
        );
    }
    stream.extend_from_slice(b"data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":50,\"completion_tokens\":200}}\n\ndata: [DONE]\n\n");
    c.bench_function("sse_usage_200_events", |b| {
        b.iter(|| {
            let mut o = ecluse::llm::usage::ResponseObserver::new(Some("text/event-stream"));
            for chunk in stream.chunks(1400) {
                o.feed(chunk);
            }
            black_box(o.finish())
        })
    });
}

criterion_group!(
    benches,
    leaf_minting,
    connect_parsing,
    body_parsing,
    pii_scan,
    policy_evaluation,
    rewrite,
    sse_usage
);
criterion_main!(benches);
