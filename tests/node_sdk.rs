//! The official `openai` npm package, unmodified, through ecluse on the Node.js
//! installed here, with only HTTPS_PROXY, NODE_EXTRA_CA_CERTS and the
//! `examples/node` preload in NODE_OPTIONS. Without the preload, Node's fetch
//! ignores the proxy variables (before 22.21 / 24.0, even with
//! NODE_USE_ENV_PROXY=1) and the SDK connects directly.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

const SCRIPT: &str = r#"
import OpenAI from "openai";
const client = new OpenAI({ apiKey: "sk-test-canary-0000", maxRetries: 0, timeout: 20000 });
const content = process.argv[2] === "personal"
  ? "Please wire it to IBAN DE89 3704 0044 0532 0130 00"
  : "hi";
try {
  const r = await client.chat.completions.create({ model: "gpt-4o", messages: [{ role: "user", content }] });
  console.log(JSON.stringify({ content: r.choices[0].message.content, model: r.model }));
} catch (e) {
  const causes = [];
  for (let c = e.cause; c && causes.length < 5; c = c.cause) causes.push(String(c.code ?? c.message ?? c));
  const cause = causes.join(" <- ");
  console.log(JSON.stringify({ error: e.constructor.name, status: e.status ?? null, message: String(e.message), cause }));
}
"#;

const SCRIPT_NAME: &str = "ecluse-sdk-check.mjs";

/// Runs the SDK script; `preload` adds the example's preload to
/// NODE_OPTIONS, otherwise NODE_USE_ENV_PROXY=1 asks Node to do it itself.
fn run_sdk(dir: &Path, proxy: &Proxy, preload: bool, mode: &str) -> serde_json::Value {
    let mut cmd = Command::new("node");
    cmd.arg(dir.join(SCRIPT_NAME))
        .arg(mode)
        .current_dir(dir)
        .env("HTTPS_PROXY", proxy.proxy_url())
        .env("NODE_EXTRA_CA_CERTS", proxy.ca_path());
    for var in [
        "HTTP_PROXY",
        "http_proxy",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
        "OPENAI_BASE_URL",
        "OPENAI_API_KEY",
        "NODE_OPTIONS",
        "NODE_USE_ENV_PROXY",
    ] {
        cmd.env_remove(var);
    }
    if preload {
        let preload = dir.join("ecluse-proxy.mjs");
        cmd.env("NODE_OPTIONS", format!("--import={}", preload.display()));
    } else {
        cmd.env("NODE_USE_ENV_PROXY", "1");
        if !native_env_proxy(common::node::version()) {
            // This call is expected to go direct: aim it at a name that
            // resolves nowhere (RFC 6761), so that no test ever reaches the
            // real API, wherever it runs.
            cmd.env("OPENAI_BASE_URL", "https://api.openai.com.invalid/v1");
        }
    }
    let out = cmd.output().expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "node ({mode}, preload {preload}) failed:\n{stdout}\n{}\n--- ecluse ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        proxy.logs()
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// Whether this Node's fetch honours NODE_USE_ENV_PROXY=1 (added in 24.0.0,
/// backported to 22.21.0).
fn native_env_proxy((major, minor): (u32, u32)) -> bool {
    major >= 24 || (major == 22 && minor >= 21)
}

#[test]
fn native_env_proxy_versions() {
    for (version, native) in [
        ((20, 19), false),
        ((20, 20), false),
        ((22, 20), false),
        ((22, 21), true),
        ((23, 11), false),
        ((24, 0), true),
        ((25, 1), true),
    ] {
        assert_eq!(native_env_proxy(version), native, "{version:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_npm_sdk_through_the_preload() {
    let dir = common::node::project();
    common::node::put(&dir, SCRIPT_NAME, SCRIPT.as_bytes());
    let pki = TestPki::new();
    let mock = MockUpstream::start(
        Some(pki.server_config(&["api.openai.com"])),
        openai_handler(),
    )
    .await;
    let state = tempfile::tempdir().unwrap();
    let audit_file = state.path().join("audit.log");
    let yaml = format!(
        "{}audit: {{ file: {} }}\n",
        upstream_yaml(&[("api.openai.com:443", mock.addr)], Some(&pki.ca_path)),
        audit_file.display()
    );
    let proxy = std::sync::Arc::new(Proxy::start_in(state, &yaml));
    // ecluse's request-stage audit records for OpenAI so far: (action, rule).
    let audited = || -> Vec<(String, String)> {
        std::fs::read_to_string(&audit_file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|r| r["stage"] == "request" && r["destination"]["host"] == "api.openai.com")
            .map(|r| {
                let field = |k: &str| r[k].as_str().unwrap_or_default().to_string();
                (field("action"), field("rule"))
            })
            .collect()
    };
    let run = |preload: bool, mode: &'static str| {
        let (proxy, dir) = (proxy.clone(), dir.clone());
        tokio::task::spawn_blocking(move || run_sdk(&dir, &proxy, preload, mode))
    };

    // With the preload: the call goes through ecluse to the mock.
    let chat = run(true, "chat").await.unwrap();
    assert_eq!(chat["content"], "Hello from the mock", "{chat}");
    assert_eq!(chat["model"], "gpt-4o");
    let recorded = mock.recorded();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].path, "/v1/chat/completions");
    assert_eq!(
        recorded[0].header("authorization"),
        Some("Bearer sk-test-canary-0000")
    );
    let records = audited();
    assert_eq!(records.len(), 1, "{records:?}\n{}", proxy.logs());
    assert_eq!(records[0].0, "allow", "{records:?}");

    // Personal data: refused by ecluse, its reason in the SDK's error.
    let denied = run(true, "personal").await.unwrap();
    assert_eq!(denied["error"], "PermissionDeniedError", "{denied}");
    assert_eq!(denied["status"], 403, "{denied}");
    let message = denied["message"].as_str().unwrap_or_default();
    assert!(message.contains("personal data"), "{denied}");
    assert_eq!(
        mock.recorded().len(),
        1,
        "the refused call reached the mock"
    );

    let records = audited();
    assert_eq!(records.len(), 2, "{records:?}");
    assert_eq!(records[1].0, "deny", "{records:?}");
    assert!(records[1].1.contains("personal_data"), "{records:?}");

    // Without the preload, the same app with NODE_USE_ENV_PROXY=1: on a Node
    // whose fetch ignores it, the SDK resolves api.openai.com itself and
    // ecluse never hears of the call.
    let direct = run(false, "chat").await.unwrap();
    if native_env_proxy(common::node::version()) {
        assert_eq!(direct["content"], "Hello from the mock", "{direct}");
        assert_eq!(audited().len(), 3);
        assert_eq!(mock.recorded().len(), 2);
    } else {
        // The SDK resolved the host itself (ENOTFOUND for a `.invalid`
        // name): not through ecluse.
        assert!(direct["error"].is_string(), "{direct}");
        assert_eq!(audited().len(), 2, "the call went through ecluse");
        assert_eq!(mock.recorded().len(), 1);
    }
    assert!(
        !proxy.logs().contains("sk-test-canary-0000"),
        "client key in ecluse's log"
    );
}
