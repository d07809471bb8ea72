//! The gate holds: no body coding, header repetition, declaration, upload
//! shape, identifier format, host or URL credential lets personal data past
//! the default policies. Every case goes through the ecluse binary with curl
//! (HTTP/1.1 and HTTP/2 inside the tunnel, real TLS with minted leaves) to
//! mock upstreams that record what reached them.

#[path = "support/codings.rs"]
mod codings;
mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use codings::{brotli, gzip, multipart, zlib, zstd};
use common::*;
use serde_json::{json, Value};

const IBAN: &str = "DE89 3704 0044 0532 0130 00";

struct Gate {
    _pki: TestPki,
    openai: MockUpstream,
    other: MockUpstream,
    proxy: Proxy,
    files: tempfile::TempDir,
}

/// `settings` is merged into the default policies' settings.json.
async fn gate(settings: Value, extra_yaml: &str) -> Gate {
    let pki = TestPki::new();
    let openai = MockUpstream::start(
        Some(pki.server_config(&[
            "api.openai.com",
            "eu.api.openai.com",
            "generativelanguage.googleapis.com",
        ])),
        Arc::new(|req: &Recorded| {
            if req.path.ends_with("/chat/completions") {
                MockResponse::json(200, chat_completion("gpt-4o", "ok"))
            } else {
                MockResponse::json(200, json!({"ok": true}))
            }
        }),
    )
    .await;
    let other = MockUpstream::start(
        Some(pki.server_config(&["llm.example.net", "api.eu.mistral.ai"])),
        Arc::new(|req: &Recorded| {
            if req.path.ends_with("/chat/completions") {
                MockResponse::json(200, chat_completion("m", "ok"))
            } else {
                MockResponse::json(200, json!({"ok": true}))
            }
        }),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    copy_default_policies(&policies);
    let settings_path = policies.join("data/settings.json");
    let mut current: Value =
        serde_json::from_str(&std::fs::read_to_string(&settings_path).unwrap()).unwrap();
    for (k, v) in settings.as_object().unwrap() {
        current[k] = v.clone();
    }
    std::fs::write(&settings_path, current.to_string()).unwrap();
    let yaml = format!(
        "policy:\n  dir: {}\n{}{extra_yaml}",
        policies.display(),
        upstream_yaml(
            &[
                ("api.openai.com:443", openai.addr),
                ("eu.api.openai.com:443", openai.addr),
                ("generativelanguage.googleapis.com:443", openai.addr),
                ("llm.example.net:443", other.addr),
                ("api.eu.mistral.ai:443", other.addr),
            ],
            Some(&pki.ca_path),
        )
    );
    let proxy = Proxy::start_in(dir, &yaml);
    Gate {
        _pki: pki,
        openai,
        other,
        proxy,
        files: tempfile::tempdir().unwrap(),
    }
}

#[derive(Clone, Copy, Debug)]
enum Http {
    One,
    Two,
}

const BOTH: [Http; 2] = [Http::One, Http::Two];

struct Answer {
    status: u16,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    fn reason(&self) -> String {
        self.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

impl Gate {
    fn file(&self, bytes: &[u8]) -> PathBuf {
        let mut f = tempfile::NamedTempFile::new_in(self.files.path()).unwrap();
        f.write_all(bytes).unwrap();
        f.into_temp_path().keep().unwrap()
    }

    /// One call with curl through the proxy.
    fn call(&self, http: Http, url: &str, headers: &[&str], body: &[u8]) -> Answer {
        let body_file = self.file(body);
        let data = format!("@{}", body_file.display());
        let ca = self.proxy.ca_path();
        let proxy = self.proxy.proxy_url();
        let mut args: Vec<&str> = vec![
            "-x",
            &proxy,
            "--cacert",
            ca.to_str().unwrap(),
            "-w",
            "\n%{http_code} %{http_version}",
            match http {
                Http::One => "--http1.1",
                Http::Two => "--http2",
            },
        ];
        for h in headers {
            args.push("-H");
            args.push(h);
        }
        if !body.is_empty() {
            args.extend(["--data-binary", &data]);
        }
        args.push(url);
        let (code, out, err) = curl(&args);
        assert_eq!(
            code,
            0,
            "curl failed: {err}\n--- ecluse ---\n{}",
            self.proxy.logs()
        );
        let (body, tail) = out.rsplit_once('\n').unwrap();
        let (status, version) = tail.split_once(' ').unwrap();
        let want = match http {
            Http::One => "1.1",
            Http::Two => "2",
        };
        assert_eq!(version, want, "protocol inside the tunnel");
        Answer {
            status: status.parse().unwrap(),
            body: body.to_string(),
        }
    }

    fn chat(&self, http: Http, headers: &[&str], body: &[u8]) -> Answer {
        let mut all = vec!["content-type: application/json"];
        all.extend_from_slice(headers);
        self.call(
            http,
            "https://api.openai.com/v1/chat/completions",
            &all,
            body,
        )
    }

    fn reached_openai(&self) -> usize {
        self.openai.recorded().len()
    }
}

fn chat_body(text: &str) -> Vec<u8> {
    json!({"model": "gpt-4o", "messages": [{"role": "user", "content": text}]})
        .to_string()
        .into_bytes()
}

fn assert_refused(answer: &Answer, status: u16, fragment: &str, logs: &str) {
    assert_eq!(
        answer.status, status,
        "{}\n--- ecluse ---\n{logs}",
        answer.body
    );
    assert!(
        answer.reason().contains(fragment),
        "reason {:?} lacks {fragment:?}",
        answer.reason()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coded_bodies_are_decoded_scanned_and_forwarded_as_sent() {
    let g = gate(json!({}), "").await;
    let personal = chat_body(&format!("Pay to {IBAN} please"));
    let codings: Vec<(&str, Vec<u8>)> = vec![
        ("gzip", gzip(&personal)),
        ("x-gzip", gzip(&personal)),
        ("deflate", zlib(&personal)),
        ("br", brotli(&personal)),
        ("zstd", zstd(&personal)),
        ("gzip, br", brotli(&gzip(&personal))),
        ("zstd, deflate, gzip", gzip(&zlib(&zstd(&personal)))),
    ];
    for http in BOTH {
        for (coding, body) in &codings {
            let header = format!("content-encoding: {coding}");
            let answer = g.chat(http, &[&header], body);
            assert_refused(
                &answer,
                403,
                "personal data may not reach OpenAI",
                &g.proxy.logs(),
            );
        }
    }
    assert_eq!(
        g.reached_openai(),
        0,
        "a coded personal body reached OpenAI"
    );

    // A clean coded body passes, byte for byte as the app sent it.
    let clean = gzip(&chat_body("What is the capital of France?"));
    for http in BOTH {
        let answer = g.chat(http, &["content-encoding: gzip"], &clean);
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    let recorded = g.openai.recorded();
    assert_eq!(recorded.len(), 2);
    for r in &recorded {
        assert_eq!(r.header("content-encoding"), Some("gzip"));
        assert_eq!(r.body.as_ref(), clean.as_slice());
    }

    // A decompression bomb is a 413, and nothing is sent.
    let bomb = gzip(&vec![b' '; 64 << 20]);
    for http in BOTH {
        let answer = g.chat(http, &["content-encoding: gzip"], &bomb);
        assert_eq!(answer.status, 413, "{}", answer.body);
    }
    // Corrupt coding: a 400 that says which.
    for http in BOTH {
        let answer = g.chat(http, &["content-encoding: gzip"], b"not gzip");
        assert_refused(&answer, 400, "not valid gzip", &g.proxy.logs());
    }
    assert_eq!(g.reached_openai(), 2);

    // A coding ecluse cannot undo leaves the body unread: undeclared, it is
    // confidential; declared public, it passes as declared.
    for http in BOTH {
        let answer = g.chat(http, &["content-encoding: compress"], &personal);
        assert_refused(
            &answer,
            403,
            "unknown_coding at body: Content-Encoding compress",
            &g.proxy.logs(),
        );
    }
    let answer = g.chat(
        Http::Two,
        &[
            "content-encoding: compress",
            "x-data-classification: public",
        ],
        b"\x1f\x9d\x90opaque",
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(g.reached_openai(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declarations_resolve_to_the_strictest_and_the_scan_can_raise_them() {
    let g = gate(json!({}), "").await;
    let clean = chat_body("What is the capital of France?");
    for http in BOTH {
        // Repeated headers, either order: the stricter wins.
        for pair in [["public", "personal"], ["personal", "public"]] {
            let a = format!("x-data-classification: {}", pair[0]);
            let b = format!("x-data-classification: {}", pair[1]);
            let answer = g.chat(http, &[&a, &b], &clean);
            assert_refused(&answer, 403, "personal data may not reach", &g.proxy.logs());
        }
        // One header with a list.
        let answer = g.chat(http, &["x-data-classification: public, personal"], &clean);
        assert_refused(&answer, 403, "personal data", &g.proxy.logs());
        // Retention: a bound is stricter than none, whatever the order, and
        // OpenAI keeps prompts for longer than an hour.
        let answer = g.chat(
            http,
            &["x-data-retention: none", "x-data-retention: 1h"],
            &clean,
        );
        assert_refused(&answer, 403, "longer than the 1h allowed", &g.proxy.logs());
        // Declared public with an IBAN: decided as personal.
        let answer = g.chat(
            http,
            &["x-data-classification: public"],
            &chat_body(&format!("IBAN {IBAN}")),
        );
        assert_refused(&answer, 403, "personal data may not reach", &g.proxy.logs());
        // Declared public and clean: passes.
        let answer = g.chat(http, &["x-data-classification: public"], &clean);
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    assert_eq!(g.reached_openai(), 2);
    // The audit record carries both the declaration and the counts.
    let logs = g.proxy.logs();
    assert!(logs.contains("\"iban\":1"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organisation_may_trust_declarations() {
    let g = gate(json!({"trust_declared_classification": true}), "").await;
    let answer = g.chat(
        Http::Two,
        &["x-data-classification: public"],
        &chat_body(&format!("IBAN {IBAN}")),
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    // Undeclared, the scan still decides.
    let answer = g.chat(Http::One, &[], &chat_body(&format!("IBAN {IBAN}")));
    assert_eq!(answer.status, 403);
    assert_eq!(g.reached_openai(), 1);
}

/// Every true positive of the detector corpus, sent undeclared to OpenAI,
/// is refused; every false positive passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_detected_kind_and_national_id_is_refused_and_look_alikes_pass() {
    let g = gate(json!({}), "").await;
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pii");
    let positives = std::fs::read_to_string(corpus.join("true_positives.tsv")).unwrap();
    let mut countries = std::collections::BTreeSet::new();
    let mut sent = 0;
    for (n, line) in positives
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("# "))
        .enumerate()
    {
        let mut fields = line.splitn(3, '\t');
        let (kind, country, text) = (
            fields.next().unwrap(),
            fields.next().unwrap(),
            fields.next().unwrap(),
        );
        if kind == "national_id" {
            countries.insert(country.to_string());
        }
        let http = if n % 2 == 0 { Http::One } else { Http::Two };
        let answer = g.chat(http, &[], &chat_body(text));
        assert_eq!(answer.status, 403, "{kind} {country} passed: {text}");
        sent += 1;
    }
    assert!(sent >= 100, "{sent}");
    // One id per member state at least, and the UK's.
    for cc in [
        "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE", "IT",
        "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE", "GB",
    ] {
        assert!(
            countries.contains(cc),
            "no national id of {cc} in the corpus"
        );
    }
    assert_eq!(g.reached_openai(), 0);

    // Look-alikes (invalid check digits, code, logs, versions) pass.
    let mut passed = 0;
    for entry in std::fs::read_dir(corpus.join("false_positives")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with("# "))
            .collect();
        // One call per file, all its lines as one prompt.
        let answer = g.chat(Http::Two, &[], &chat_body(&lines.join("\n")));
        assert_eq!(answer.status, 200, "{}", answer.body);
        passed += 1;
    }
    assert_eq!(g.reached_openai(), passed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_and_media_the_scan_cannot_read_are_not_waved_through() {
    let g = gate(json!({}), "").await;
    let url = "https://api.openai.com/v1/audio/transcriptions";
    let (ctype, audio) = multipart(&[
        ("model", None, None, b"whisper-1"),
        (
            "file",
            Some("call.wav"),
            Some("audio/wav"),
            b"RIFF\x24\0\0\0WAVEfmt \x10\0\0\0",
        ),
    ]);
    for http in BOTH {
        let answer = g.call(http, url, &[&format!("content-type: {ctype}")], &audio);
        assert_refused(
            &answer,
            403,
            "binary_upload at part file: audio/wav",
            &g.proxy.logs(),
        );
        let answer = g.call(
            http,
            url,
            &[
                &format!("content-type: {ctype}"),
                "x-data-classification: internal",
            ],
            &audio,
        );
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    // Text parts are read: a batch file with an e-mail address.
    let (ctype, batch) = multipart(&[
        ("purpose", None, None, b"batch"),
        (
            "file",
            Some("batch.jsonl"),
            Some("application/octet-stream"),
            b"{\"custom_id\":\"1\",\"body\":{\"messages\":[{\"content\":\"write to bob@example.com\"}]}}\n",
        ),
    ]);
    let answer = g.call(
        Http::Two,
        "https://api.openai.com/v1/files",
        &[&format!("content-type: {ctype}")],
        &batch,
    );
    assert_refused(&answer, 403, "personal data may not reach", &g.proxy.logs());
    // ... and a clean text upload passes undeclared.
    let (ctype, clean) = multipart(&[
        ("purpose", None, None, b"assistants"),
        (
            "file",
            Some("notes.md"),
            Some("text/markdown"),
            b"# Notes\nThe build is green.",
        ),
    ]);
    let answer = g.call(
        Http::One,
        "https://api.openai.com/v1/files",
        &[&format!("content-type: {ctype}")],
        &clean,
    );
    assert_eq!(answer.status, 200, "{}", answer.body);

    // A real inline image, undeclared: confidential, refused.
    let png = base64_encode(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89\0\0\0\rIDATx\x9cc\xf8\x0f\0\0\x01\x01\0\x05\x18\xd8N\0\0\0\0IEND\xaeB`\x82");
    let image = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{png}")}}
    ]}]});
    let answer = g.chat(Http::Two, &[], image.to_string().as_bytes());
    assert_refused(
        &answer,
        403,
        "media at data URI: image/png",
        &g.proxy.logs(),
    );
    let answer = g.chat(
        Http::One,
        &["x-data-classification: public"],
        image.to_string().as_bytes(),
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    // A `data:` prefix on text that is not base64 does not hide it.
    let fake = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,IBAN: {IBAN}")}}
    ]}]});
    let answer = g.chat(Http::One, &[], fake.to_string().as_bytes());
    assert_refused(&answer, 403, "personal data may not reach", &g.proxy.logs());
    // Nor does base64 itself.
    let hidden = chat_body(&base64_encode(
        format!("Customer record: jane.doe@example.com, IBAN {IBAN}. ")
            .repeat(3)
            .as_bytes(),
    ));
    let answer = g.chat(Http::Two, &[], &hidden);
    assert_refused(&answer, 403, "personal data may not reach", &g.proxy.logs());
    // Nor does putting it in a JSON key.
    let keyed = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}],
        "metadata": {"jane.doe@example.com": "customer"}});
    let answer = g.chat(Http::One, &[], keyed.to_string().as_bytes());
    assert_refused(&answer, 403, "personal data may not reach", &g.proxy.logs());
    assert_eq!(g.reached_openai(), 4);
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regional_hosts_are_registered_and_unregistered_llm_calls_are_refused_when_inspecting() {
    let g = gate(json!({"non_llm_hosts": "inspect"}), "").await;
    // OpenAI's EU data-residency host is OpenAI: personal data is refused.
    let answer = g.call(
        Http::Two,
        "https://eu.api.openai.com/v1/chat/completions",
        &["content-type: application/json"],
        &chat_body(&format!("IBAN {IBAN}")),
    );
    assert_refused(&answer, 403, "OpenAI OpCo, LLC", &g.proxy.logs());
    // Mistral's EU endpoint may receive it.
    let answer = g.call(
        Http::One,
        "https://api.eu.mistral.ai/v1/chat/completions",
        &["content-type: application/json"],
        &chat_body(&format!("IBAN {IBAN}")),
    );
    assert_eq!(answer.status, 200, "{}", answer.body);

    // An unregistered host is intercepted: an LLM-shaped call is refused,
    // by path or by body, and anything else passes.
    for http in BOTH {
        let answer = g.call(
            http,
            "https://llm.example.net/v1/chat/completions",
            &["content-type: application/json"],
            &chat_body("hello"),
        );
        assert_refused(&answer, 403, "shaped like an LLM API call", &g.proxy.logs());
        let answer = g.call(
            http,
            "https://llm.example.net/api/generate",
            &["content-type: application/json"],
            br#"{"model":"llama3","prompt":"hello"}"#,
        );
        assert_refused(&answer, 403, "shaped like an LLM API call", &g.proxy.logs());
        let answer = g.call(
            http,
            "https://llm.example.net/upload",
            &["content-type: application/json"],
            br#"{"name":"report","rows":3}"#,
        );
        assert_eq!(answer.status, 200, "{}", answer.body);
        let answer = g.call(http, "https://llm.example.net/simple/", &[], b"");
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    let reached: Vec<String> = g.other.recorded().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        reached,
        [
            "/v1/chat/completions",
            "/upload",
            "/simple/",
            "/upload",
            "/simple/"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_in_urls_never_leave_the_forwarded_request() {
    let g = gate(json!({}), "").await;
    let canary = "AIzaSyCANARY-url-key-0042";
    let url = format!(
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent?key={canary}"
    );
    let personal = json!({"contents": [{"parts": [{"text": format!("IBAN {IBAN}")}]}]});
    let clean = json!({"contents": [{"parts": [{"text": "hello"}]}]});
    for http in BOTH {
        let answer = g.call(
            http,
            &url,
            &["content-type: application/json"],
            personal.to_string().as_bytes(),
        );
        assert_eq!(answer.status, 403, "{}", answer.body);
        assert!(!answer.body.contains("CANARY"), "{}", answer.body);
        let answer = g.call(
            http,
            &url,
            &["content-type: application/json"],
            clean.to_string().as_bytes(),
        );
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    // The forwarded request keeps the key; nothing else shows it.
    let recorded = g.openai.recorded();
    assert_eq!(recorded.len(), 2);
    assert!(recorded[0].path.contains(canary));
    let logs = g.proxy.logs();
    assert!(!logs.contains("CANARY"), "{logs}");
    assert!(logs.contains("key=REDACTED"), "{logs}");
}

/// Two 10 MiB bodies of tiny JSON strings at once stay far within the
/// shipped manifest's 256Mi memory limit (the peak resident size of the
/// process is read from /proc after the calls).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_of_tiny_strings_fit_a_small_pod() {
    let g = gate(json!({}), "").await;
    let mut body = String::from(
        r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"metadata":{"tags":["#,
    );
    while body.len() < (10 << 20) - 64 {
        body.push_str("\"a\",");
    }
    body.push_str("\"a\"]}}");
    let body = Arc::new(body.into_bytes());
    let g = Arc::new(g);
    let calls: Vec<_> = BOTH
        .into_iter()
        .map(|http| {
            let (g, body) = (g.clone(), body.clone());
            tokio::task::spawn_blocking(move || g.chat(http, &[], &body).status)
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), 200);
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", g.proxy.pid())).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap();
    assert!(
        peak_kib < 160 * 1024,
        "peak resident memory {peak_kib} KiB with two 10 MiB bodies"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_data_in_the_url_or_a_header_is_found_as_in_the_body() {
    let g = gate(json!({}), "").await;
    let chat = "https://api.openai.com/v1/chat/completions";
    let json = "content-type: application/json";
    let calls: [(&str, Vec<&str>); 4] = [
        (
            "https://api.openai.com/v1/chat/completions?user=jane.doe%40example.com",
            vec![json],
        ),
        (chat, vec![json, "x-user-email: jane.doe@example.com"]),
        (
            chat,
            vec![json, "helicone-property-iban: DE89 3704 0044 0532 0130 00"],
        ),
        (
            "https://api.openai.com/v1/files/jane.doe%40example.com/content",
            vec![],
        ),
    ];
    for http in [Http::One, Http::Two] {
        for (url, headers) in &calls {
            let answer = g.call(http, url, headers, &chat_body("hello"));
            assert_refused(
                &answer,
                403,
                "personal data may not reach OpenAI",
                &g.proxy.logs(),
            );
        }
    }
    assert_eq!(g.reached_openai(), 0);
    // The same shapes without personal data pass, the SDK's own headers and
    // a key in the query included.
    let clean = [
        (
            "https://api.openai.com/v1/chat/completions?user=u-1234",
            vec![json, "x-user: u-1234"],
        ),
        (
            "https://api.openai.com/v1/chat/completions?key=jane.doe%40example.com",
            vec![
                json,
                "x-stainless-runtime-version: 3.12.3",
                "user-agent: OpenAI/Python 1.54.4",
            ],
        ),
    ];
    for (url, headers) in &clean {
        let answer = g.call(Http::Two, url, headers, &chat_body("hello"));
        assert_eq!(answer.status, 200, "{url}: {}", answer.body);
    }
    assert_eq!(g.reached_openai(), clean.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_in_a_body_are_read_as_the_digits_they_are() {
    let g = gate(json!({}), "").await;
    let json = "content-type: application/json";
    // A tool's result handed back to the model, as a JSON number.
    let gemini = json!({"contents": [
        {"role": "user", "parts": [{"text": "what card did the customer use?"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "lookup", "args": {}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "lookup",
            "response": {"card": 4111111111111111u64}}}]}
    ]});
    let record = json!({"contents": [{"role": "user", "parts": [
        {"text": "summarise this customer record"},
        {"functionResponse": {"name": "crm", "response": {"customer": {"personnummer": 8804197633u64}}}}
    ]}]});
    let refused = [
        (
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:generateContent",
            gemini,
        ),
        (
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:generateContent",
            record,
        ),
    ];
    for http in [Http::One, Http::Two] {
        for (url, body) in &refused {
            let answer = g.call(http, url, &[json], body.to_string().as_bytes());
            assert_eq!(answer.status, 403, "{url}: {}", answer.body);
            assert!(answer.body.contains("personal data"), "{}", answer.body);
        }
    }
    // An ordinary call's numbers are parameters, not personal data.
    let ordinary = json!({"model": "gpt-4o", "seed": 1234567890, "max_tokens": 4096,
        "temperature": 0.7, "messages": [{"role": "user", "content": "hi"}]});
    let answer = g.chat(Http::Two, &[], ordinary.to_string().as_bytes());
    assert_eq!(answer.status, 200, "{}", answer.body);
}

/// A plain-HTTP (absolute-form) call to an LLM API host meets the same gate
/// as one through CONNECT: personal data is refused, nothing is forwarded;
/// a clean call passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_calls_to_an_llm_host_meet_the_gate() {
    let openai = MockUpstream::start(
        None,
        Arc::new(|_req: &Recorded| MockResponse::json(200, chat_completion("gpt-4o", "ok"))),
    )
    .await;
    let proxy = Proxy::start(&upstream_yaml(&[("api.openai.com:80", openai.addr)], None));
    let send = |body: Vec<u8>| {
        let (code, out, err) = curl(&[
            "--proxy",
            &proxy.proxy_url(),
            "-H",
            "content-type: application/json",
            "-w",
            "\n%{http_code}",
            "--data-binary",
            std::str::from_utf8(&body).unwrap(),
            "http://api.openai.com/v1/chat/completions",
        ]);
        assert_eq!(code, 0, "{err}");
        let (body, status) = out.rsplit_once('\n').unwrap();
        (status.to_string(), body.to_string())
    };
    let (status, body) = send(chat_body(&format!("Pay to {IBAN} please")));
    assert_eq!(status, "403", "{body}\n{}", proxy.logs());
    assert!(body.contains("personal data"), "{body}");
    assert!(openai.recorded().is_empty(), "personal data reached OpenAI");
    let (status, body) = send(chat_body("What is the capital of France?"));
    assert_eq!(status, "200", "{body}\n{}", proxy.logs());
    assert_eq!(openai.recorded().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_escaped_in_links_and_html_are_found() {
    let g = gate(json!({}), "").await;
    let prompts = [
        "Summarise https://crm.example.com/users?email=jane.doe%40example.com",
        "Summarise https://crm.example.com/users?email=jane.doe@example.com",
        "<p>Contact: jane.doe&#64;example.com</p>",
    ];
    for http in [Http::One, Http::Two] {
        for prompt in prompts {
            let answer = g.chat(http, &[], &chat_body(prompt));
            assert_eq!(answer.status, 403, "{prompt}: {}", answer.body);
        }
    }
    assert_eq!(g.reached_openai(), 0);
    // Links without an address pass.
    let answer = g.chat(
        Http::Two,
        &[],
        &chat_body(
            "See https://unpkg.com/react@18.2.0/umd/react.js and ssh://git@github.com/o/r.git",
        ),
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
}
