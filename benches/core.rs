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

criterion_group!(benches, leaf_minting, connect_parsing, body_parsing);
criterion_main!(benches);
