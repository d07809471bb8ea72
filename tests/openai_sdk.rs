//! The official `openai` Python SDK, unmodified, through `HTTPS_PROXY` with the
//! CA bundle from `ecluse ca bundle`.

mod common;

use common::*;

const SCRIPT: &str = r#"
import json, sys
from openai import OpenAI
client = OpenAI(api_key="sk-test-canary-0000", max_retries=0, timeout=30)
mode = sys.argv[1]
if mode == "chat":
    r = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    print(json.dumps({"content": r.choices[0].message.content, "model": r.model,
                      "usage": r.usage.total_tokens}))
elif mode == "stream":
    parts = []
    stream = client.chat.completions.create(model="gpt-4o-mini", stream=True,
        messages=[{"role": "user", "content": "hi"}])
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
    print(json.dumps({"content": "".join(parts)}))
elif mode == "models":
    print(json.dumps({"ids": [m.id for m in client.models.list()]}))
elif mode in ("transcribe", "transcribe-declared"):
    import io, openai
    audio = io.BytesIO(b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00")
    audio.name = "call.wav"
    extra = {"x-data-classification": "internal"} if mode == "transcribe-declared" else {}
    try:
        r = client.audio.transcriptions.create(model="whisper-1", file=audio, extra_headers=extra)
        print(json.dumps({"text": r.text}))
    except openai.PermissionDeniedError as e:
        print(json.dumps({"denied": e.message}))
elif mode == "iban-lowercase":
    import openai
    try:
        client.chat.completions.create(model="gpt-4o",
            messages=[{"role": "user", "content": "iban: de89 3704 0044 0532 0130 00"}])
        print(json.dumps({"passed": True}))
    except openai.PermissionDeniedError as e:
        print(json.dumps({"denied": e.message}))
"#;

fn run_sdk(proxy: &Proxy, bundle: &std::path::Path, mode: &str) -> serde_json::Value {
    let stdout = sdk::run_python_sdk(SCRIPT, &[mode], proxy, bundle, &[]);
    serde_json::from_str(stdout.trim()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_sdk_through_https_proxy() {
    let pki = TestPki::new();
    let mock = MockUpstream::start(
        Some(pki.server_config(&["api.openai.com"])),
        openai_handler(),
    )
    .await;
    let proxy = Proxy::start(&upstream_yaml(
        &[("api.openai.com:443", mock.addr)],
        Some(&pki.ca_path),
    ));
    let bundle = sdk::ca_bundle(&proxy);

    let (proxy, bundle) = (std::sync::Arc::new(proxy), std::sync::Arc::new(bundle));
    let run = |mode: &'static str| {
        let (proxy, bundle) = (proxy.clone(), bundle.clone());
        tokio::task::spawn_blocking(move || run_sdk(&proxy, &bundle, mode))
    };
    let chat = run("chat").await.unwrap();
    assert_eq!(chat["content"], "Hello from the mock");
    assert_eq!(chat["model"], "gpt-4o");
    assert_eq!(chat["usage"], 7);

    let streamed = run("stream").await.unwrap();
    assert_eq!(streamed["content"], "Hello from the mock");

    let models = run("models").await.unwrap();
    assert_eq!(models["ids"][0], "gpt-4o");

    let recorded = mock.recorded();
    assert_eq!(recorded.len(), 3);
    assert!(recorded[1]
        .body
        .windows(13)
        .any(|w| w == b"\"stream\":true"));
    // The SDK's own key reaches the (unrerouted) upstream, and nowhere else.
    assert_eq!(
        recorded[0].header("authorization"),
        Some("Bearer sk-test-canary-0000")
    );
    assert!(
        !proxy.logs().contains("sk-test-canary-0000"),
        "client key in ecluse's log"
    );
}

/// What the scan cannot read is refused in the SDK's own error, and passes
/// when the app declares it; a lower-case IBAN is personal data too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_sdk_uploads_and_lowercase_ibans_meet_the_gate() {
    let pki = TestPki::new();
    let mock = MockUpstream::start(
        Some(pki.server_config(&["api.openai.com"])),
        std::sync::Arc::new(|req: &Recorded| {
            if req.path == "/v1/audio/transcriptions" {
                MockResponse::json(200, serde_json::json!({"text": "transcribed"}))
            } else {
                MockResponse::json(200, chat_completion("gpt-4o", "ok"))
            }
        }),
    )
    .await;
    let proxy = Proxy::start(&upstream_yaml(
        &[("api.openai.com:443", mock.addr)],
        Some(&pki.ca_path),
    ));
    let bundle = sdk::ca_bundle(&proxy);
    let (proxy, bundle) = (std::sync::Arc::new(proxy), std::sync::Arc::new(bundle));
    let run = |mode: &'static str| {
        let (proxy, bundle) = (proxy.clone(), bundle.clone());
        tokio::task::spawn_blocking(move || run_sdk(&proxy, &bundle, mode))
    };
    let denied = run("transcribe").await.unwrap();
    let message = denied["denied"].as_str().unwrap_or_default();
    assert!(
        message.contains("binary_upload at part file") && message.contains("audio"),
        "{denied}"
    );
    let declared = run("transcribe-declared").await.unwrap();
    assert_eq!(declared["text"], "transcribed");
    let iban = run("iban-lowercase").await.unwrap();
    assert!(
        iban["denied"]
            .as_str()
            .unwrap_or_default()
            .contains("personal data"),
        "{iban}"
    );
    let paths: Vec<String> = mock.recorded().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["/v1/audio/transcriptions"]);
}
