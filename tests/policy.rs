//! Policies decide every call: table-driven decisions of the default
//! policies, broken policies failing closed, and the same end to end through
//! the proxy (deny, allow, PII, invalid headers, report mode, audit log).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use ecluse::authority::Authority;
use ecluse::config::TargetConfig;
use ecluse::entity::Registry;
use ecluse::policy::input::{self, Scheme, SourceDoc};
use ecluse::policy::load::{self, Context, PolicyFiles, Step};
use ecluse::route::{targets_from_config, Target};
use serde_json::{json, Value};

fn targets() -> BTreeMap<String, Target> {
    let mut configs = BTreeMap::new();
    configs.insert(
        "mistral".to_string(),
        TargetConfig {
            base_url: "https://api.mistral.ai/v1".into(),
            models: [("*".to_string(), "mistral-large-latest".to_string())].into(),
            ..Default::default()
        },
    );
    configs.insert(
        "vllm".to_string(),
        TargetConfig {
            base_url: "http://vllm.llm.svc:8000/v1".into(),
            models: [(
                "*".to_string(),
                "meta-llama/Llama-3.1-8B-Instruct".to_string(),
            )]
            .into(),
            ..Default::default()
        },
    );
    targets_from_config(&configs).unwrap()
}

fn snapshot(files: &PolicyFiles, targets: &BTreeMap<String, Target>) -> ecluse::policy::Snapshot {
    let context = Context {
        targets,
        timeout: Duration::from_millis(50),
    };
    load::compile(files, &context, "test".into(), "test".into()).unwrap()
}

/// The input document the proxy builds for a fixture.
fn fixture_input(registry: &Registry, fixture: &Value) -> input::RequestInput {
    let host = fixture["destination"].as_str().unwrap();
    let destination =
        input::destination(registry, &Authority::new(host, 443), Scheme::Https, &[443]);
    let mut data = ecluse::classify::declared(
        fixture["classification"].as_str().map(str::as_bytes),
        fixture["retention"].as_str().map(str::as_bytes),
    )
    .unwrap();
    if let Some(pii) = fixture["pii"].as_object() {
        for (kind, n) in pii {
            let kind: &'static str = match kind.as_str() {
                "email" => "email",
                "iban" => "iban",
                other => panic!("fixture pii kind {other}"),
            };
            data.pii.insert(kind, n.as_u64().unwrap() as u32);
        }
    }
    let api = fixture["api"].as_str().unwrap_or("openai");
    let operation = match fixture["operation"].as_str().unwrap_or("chat") {
        "chat" => "chat",
        "messages" => "messages",
        "responses" => "responses",
        "completions" => "completions",
        "converse" => "converse",
        other => panic!("fixture operation {other}"),
    };
    call_input(destination, data, api, Some(operation))
}

/// The input of a POST of a recognised call of `api` (a chat with gpt-4o).
fn call_input(
    destination: input::DestinationDoc,
    data: ecluse::classify::DataDoc,
    api: &str,
    operation: Option<&'static str>,
) -> input::RequestInput {
    let call = ecluse::llm::ParsedCall {
        api: Some(api.into()),
        operation,
        model: Some("gpt-4o".into()),
        ..Default::default()
    };
    let request = input::request_doc(
        "POST",
        "/v1/chat/completions",
        std::iter::empty(),
        100,
        &call,
    );
    input::request_input(destination, request, data, SourceDoc::default())
}

#[test]
fn default_policies_decide_the_fixture_table() {
    let fixtures: Vec<Value> =
        serde_json::from_str(include_str!("fixtures/decisions.json")).unwrap();
    let files = PolicyFiles::embedded();
    let registry = Registry::embedded();
    let with_targets = targets();
    let none = BTreeMap::new();
    let (full, empty) = (snapshot(&files, &with_targets), snapshot(&files, &none));
    for fixture in &fixtures {
        let name = fixture["name"].as_str().unwrap();
        let snapshot = if fixture["targets"] == false {
            &empty
        } else {
            &full
        };
        let input = fixture_input(&registry, &fixture["input"]);
        let d = snapshot.decide_request(&input);
        let expect = &fixture["expect"];
        assert_eq!(
            d.allowed,
            expect["allowed"].as_bool().unwrap(),
            "{name}: {d:?}"
        );
        if let Some(rule) = expect["rule"].as_str() {
            assert_eq!(d.rule, rule, "{name}: {d:?}");
        }
        if let Some(fragment) = expect["reason"].as_str() {
            assert!(
                d.reason.contains(fragment),
                "{name}: {:?} lacks {fragment:?}",
                d.reason
            );
        }
        if expect.get("route").is_some() {
            assert_eq!(
                d.route.as_ref().map(|r| r.target.as_str()),
                expect["route"].as_str(),
                "{name}"
            );
        }
        if let Some(status) = expect["status"].as_u64() {
            assert_eq!(u64::from(d.http_status), status, "{name}");
        }
    }
}

/// The embedded files with `egress.rego` replaced.
fn with_egress(rego: &str) -> PolicyFiles {
    let mut files = PolicyFiles::embedded();
    for (path, text) in files.modules.iter_mut() {
        if path == "egress.rego" {
            *text = rego.to_string();
        }
    }
    files
}

#[test]
fn broken_policies_fail_closed_with_the_reason() {
    let registry = Registry::embedded();
    let input = fixture_input(
        &registry,
        &json!({"destination": "api.openai.com", "classification": "public"}),
    );
    let none = BTreeMap::new();
    let cases = [
        (
            "package ecluse.egress\ndecision := \"allow\"\n",
            "malformed decision",
        ),
        (
            "package ecluse.egress\ndecision := {\"allowed\": true} if { input.nothing == 1 }\n",
            "is undefined",
        ),
        (
            "package ecluse.egress\ndecision := {\"allowed\": true} if { count([x | some x in numbers.range(1, 3000); some y in numbers.range(1, 3000); x != y]) > 0 }\n",
            "time limit",
        ),
        (
            "package ecluse.egress\ndecision := {\"allowed\": true} if { true }\ndecision := {\"allowed\": false} if { true }\n",
            "policy evaluation failed",
        ),
        (
            "package ecluse.egress\ndecision := {\"allowed\": \"yes\"}\n",
            "allowed must be true or false",
        ),
    ];
    for (rego, fragment) in cases {
        let files = with_egress(rego);
        let context = Context {
            targets: &none,
            timeout: Duration::from_millis(50),
        };
        let snapshot = load::compile(&files, &context, "broken".into(), "test".into())
            .unwrap_or_else(|e| panic!("{rego}: {e}"));
        let started = std::time::Instant::now();
        let d = snapshot.decide_request(&input);
        assert!(!d.allowed, "{rego}: {d:?}");
        assert_eq!(d.rule, "ecluse.policy_error", "{rego}");
        assert_eq!(d.http_status, 403);
        assert!(
            d.reason.contains(fragment),
            "{rego}: {:?} lacks {fragment:?}",
            d.reason
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{rego} ran {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn syntax_errors_broken_registries_and_failing_tests_are_rejected_at_load() {
    let none = BTreeMap::new();
    let context = Context {
        targets: &none,
        timeout: Duration::from_millis(50),
    };
    let syntax = with_egress("package ecluse.egress\ndecision := {\"allowed\": true} if {\n");
    let err = load::load_revision(&syntax, &context, "r".into(), "s".into()).unwrap_err();
    assert_eq!(err.step, Step::Compile, "{err}");
    assert!(err.message.contains("egress.rego"), "{err}");

    let mut registry = PolicyFiles::embedded();
    for (path, text) in registry.data.iter_mut() {
        if path == "entities.json" {
            *text = r#"{"version": 1, "providers": {"x": {"hosts": []}}}"#.into();
        }
    }
    let err = load::load_revision(&registry, &context, "r".into(), "s".into()).unwrap_err();
    assert_eq!(err.step, Step::Registry, "{err}");

    let mut failing = PolicyFiles::embedded();
    failing.tests.push((
        "extra_test.rego".into(),
        "package ecluse.extra_test\n\ntest_public_is_denied if {\n\tdata.ecluse.lib.deny(\"r\", \"x\").allowed\n}\n".into(),
    ));
    let err = load::load_revision(&failing, &context, "r".into(), "s".into()).unwrap_err();
    assert_eq!(err.step, Step::Test, "{err}");
    assert!(err.message.contains("test_public_is_denied"), "{err}");
}

#[test]
fn policy_test_and_eval_commands() {
    let out = std::process::Command::new(ecluse_bin())
        .args([
            "policy",
            "test",
            concat!(env!("CARGO_MANIFEST_DIR"), "/policies"),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout
        .contains("PASS data.ecluse.egress_test.test_personal_to_openai_is_rerouted_to_mistral"));
    assert!(stdout.contains(" 0 failed"), "{stdout}");

    // A failing test makes the command fail and names the test.
    let dir = tempfile::tempdir().unwrap();
    copy_default_policies(dir.path());
    std::fs::write(
        dir.path().join("broken_test.rego"),
        "package ecluse.broken_test\n\ntest_wrong if {\n\t1 == 2\n}\n",
    )
    .unwrap();
    let out = std::process::Command::new(ecluse_bin())
        .args(["policy", "test"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL data.ecluse.broken_test.test_wrong"),
        "{stdout}"
    );

    let input = dir.path().join("input.json");
    let registry = Registry::embedded();
    let document = fixture_input(
        &registry,
        &json!({"destination": "api.openai.com", "classification": "personal"}),
    );
    std::fs::write(&input, serde_json::to_vec(&document).unwrap()).unwrap();
    let out = std::process::Command::new(ecluse_bin())
        .args(["policy", "eval", "--input"])
        .arg(&input)
        .output()
        .unwrap();
    assert!(out.status.success());
    let decision: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(decision["allowed"], false);
    assert_eq!(decision["rule"], "egress.personal_data_cloud_act");
}

async fn openai_mock(pki: &TestPki) -> MockUpstream {
    MockUpstream::start(
        Some(pki.server_config(&["api.openai.com"])),
        openai_handler(),
    )
    .await
}

fn audit_lines(proxy: &Proxy) -> Vec<Value> {
    let path = proxy.dir.path().join("audit.log");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn wait_for_audit(proxy: &Proxy, n: usize) -> Vec<Value> {
    wait_until_async(Duration::from_secs(2), || audit_lines(proxy).len() >= n).await;
    audit_lines(proxy)
}

fn start(mock: &MockUpstream, pki: &TestPki, extra: &str) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.log");
    Proxy::start_in(
        dir,
        &format!(
            "{}audit: {{ file: {} }}\n{extra}",
            upstream_yaml(&[("api.openai.com:443", mock.addr)], Some(&pki.ca_path)),
            audit.display()
        ),
    )
}

async fn post(
    proxy: &Proxy,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, BTreeMap<String, String>, String) {
    let tls = proxy
        .connect_tls("api.openai.com:443", &[b"http/1.1"])
        .await;
    let mut req = post_json("api.openai.com", "/v1/chat/completions", body);
    for (k, v) in headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let resp = http1_send(tls, req).await;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
        .collect();
    (status, headers, body_text(resp).await)
}

const CHAT: &str =
    r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Summarise our Q3 roadmap"}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_data_never_reaches_openai_and_public_data_does() {
    let pki = TestPki::new();
    let mock = openai_mock(&pki).await;
    let proxy = start(&mock, &pki, "");

    let (status, headers, body) =
        post(&proxy, &[("x-data-classification", "personal")], CHAT).await;
    assert_eq!(status, 403, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "policy_denied");
    assert_eq!(v["error"]["rule"], "egress.personal_data_cloud_act");
    let reason = v["error"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("OpenAI OpCo, LLC") && reason.contains("US"),
        "{reason}"
    );
    let decision_id = headers["x-ecluse-decision-id"].clone();
    assert_eq!(v["error"]["decision_id"], decision_id.as_str());
    assert!(
        mock.recorded().is_empty(),
        "personal data reached the upstream"
    );

    let (status, headers, body) = post(
        &proxy,
        &[
            ("x-data-classification", "public"),
            ("x-data-retention", "none"),
        ],
        CHAT,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(headers.contains_key("x-ecluse-decision-id"));
    let recorded = mock.recorded();
    assert_eq!(recorded.len(), 1);
    assert!(
        recorded[0].header("x-data-classification").is_none(),
        "classification header leaked"
    );
    assert!(recorded[0].header("x-data-retention").is_none());

    let lines = wait_for_audit(&proxy, 4).await;
    let requests: Vec<&Value> = lines.iter().filter(|l| l["stage"] == "request").collect();
    assert_eq!(requests.len(), 2, "{lines:?}");
    assert_eq!(requests[0]["decision_id"], decision_id.as_str());
    assert_eq!(requests[0]["action"], "deny");
    assert_eq!(requests[0]["enforced"], true);
    assert_eq!(requests[0]["classification"], "personal");
    assert_eq!(requests[0]["destination"]["entity"], "OpenAI OpCo, LLC");
    assert_eq!(requests[0]["destination"]["jurisdiction"], "US");
    assert!(requests[0]["revision"]
        .as_str()
        .unwrap()
        .starts_with("embedded-"));
    assert_eq!(requests[1]["action"], "allow");
    assert!(lines
        .iter()
        .any(|l| l["stage"] == "connect" && l["action"] == "intercept"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undeclared_iban_counts_as_personal() {
    let pki = TestPki::new();
    let mock = openai_mock(&pki).await;
    let proxy = start(&mock, &pki, "");
    let iban = "DE89 3704 0044 0532 0130 00";
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": format!("Pay the invoice to {iban}")}]}).to_string();
    let (status, _, text) = post(&proxy, &[], &body).await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("personal data"), "{text}");
    assert!(mock.recorded().is_empty());
    let lines = wait_for_audit(&proxy, 2).await;
    let request = lines.iter().find(|l| l["stage"] == "request").unwrap();
    assert_eq!(request["pii"]["iban"], 1);
    // Undeclared, and decided as personal because the scan found an IBAN.
    assert!(request["declared_classification"].is_null());
    assert_eq!(request["classification"], "personal");
    let all = std::fs::read_to_string(proxy.dir.path().join("audit.log")).unwrap() + &proxy.logs();
    assert!(!all.contains("3704 0044"), "the matched text reached a log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_classification_headers_are_400_naming_the_header() {
    let pki = TestPki::new();
    let mock = openai_mock(&pki).await;
    let proxy = start(&mock, &pki, "");
    let (status, _, body) = post(&proxy, &[("x-data-classification", "top-secret")], CHAT).await;
    assert_eq!(status, 400);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["param"], "x-data-classification");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("special-category"));
    let (status, _, body) = post(&proxy, &[("x-data-retention", "forever")], CHAT).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("x-data-retention"));
    assert!(mock.recorded().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_mode_forwards_but_records_the_would_be_deny() {
    let pki = TestPki::new();
    let mock = openai_mock(&pki).await;
    let proxy = start(&mock, &pki, "mode: report\n");
    let (status, _, body) = post(&proxy, &[("x-data-classification", "personal")], CHAT).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(mock.recorded().len(), 1);
    let lines = wait_for_audit(&proxy, 2).await;
    let request = lines.iter().find(|l| l["stage"] == "request").unwrap();
    assert_eq!(request["action"], "deny");
    assert_eq!(request["enforced"], false);
    assert!(proxy.logs().contains("report only"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregistered_llm_apis_are_denied_before_tls_with_a_decision_id() {
    let pki = TestPki::new();
    let mock = openai_mock(&pki).await;
    let proxy = start(&mock, &pki, "");
    let (status, text) = proxy.connect("api.siliconflow.cn:443").await.unwrap_err();
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("x-ecluse-decision-id: "), "{text}");
    assert!(text.contains("connect.unregistered_llm_api"), "{text}");
    let lines = wait_for_audit(&proxy, 1).await;
    assert_eq!(lines[0]["stage"], "connect");
    assert_eq!(lines[0]["action"], "deny");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_directory_with_a_syntax_error_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    copy_default_policies(&policies);
    std::fs::write(
        policies.join("egress.rego"),
        "package ecluse.egress\ndecision := {\n",
    )
    .unwrap();
    let config = dir.path().join("c.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{}\nadmin_listen: 127.0.0.1:{}\nstate_dir: {}\npolicy: {{ dir: {} }}\n",
            free_port(),
            free_port(),
            dir.path().join("state").display(),
            policies.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(ecluse_bin())
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("rejected at the compile step") && stderr.contains("egress.rego"),
        "{stderr}"
    );
    let out = std::process::Command::new(ecluse_bin())
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let _ = Arc::new(());
}

// ------------------------------------------------ compiled form (regorus RVM)

/// Calls that vary every part of the input the default policies read: each
/// registered host (wildcard labels filled in) and an unregistered one, every
/// declared classification and none, found personal data or not, a complete
/// or a partial scan, every kind of retention, and each API's operations.
fn generated_corpus(registry: &Registry) -> Vec<input::RequestInput> {
    let mut hosts: Vec<String> = registry
        .providers()
        .iter()
        .flat_map(|p| p.hosts.iter().map(|h| h.replace('*', "eu-west-1")))
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts.push("llm.unregistered.example".into());
    let classifications = [
        None,
        Some("public"),
        Some("internal"),
        Some("confidential"),
        Some("personal"),
        Some("special-category"),
    ];
    let retentions = [None, Some("zero"), Some("1d"), Some("30d"), Some("400d")];
    let calls = [
        ("openai", "chat"),
        ("openai", "responses"),
        ("openai", "embeddings"),
        ("anthropic", "messages"),
        ("gemini", "generate"),
        ("bedrock", "converse"),
    ];
    let mut corpus = Vec::new();
    for (h, host) in hosts.iter().enumerate() {
        let destination =
            input::destination(registry, &Authority::new(host, 443), Scheme::Https, &[443]);
        for (c, classification) in classifications.iter().enumerate() {
            for (r, retention) in retentions.iter().enumerate() {
                // Not the full product: each host meets every classification
                // and retention, and the other parts rotate through theirs.
                let turn = h + c + r;
                let mut data = ecluse::classify::declared(
                    classification.map(str::as_bytes),
                    retention.map(str::as_bytes),
                )
                .unwrap();
                if turn % 3 == 1 {
                    data.pii.insert("iban", 1);
                }
                if turn % 4 == 2 {
                    data.scan.unread.push(ecluse::classify::Unread::new(
                        ecluse::classify::UnreadReason::Media,
                        "messages[0].content[1]",
                        "image/png",
                    ));
                }
                let (api, operation) = calls[turn % calls.len()];
                corpus.push(call_input(
                    destination.clone(),
                    data,
                    api,
                    (turn % 7 != 3).then_some(operation),
                ));
            }
        }
    }
    corpus
}

/// What each evaluator makes of one input: the decision, or "undefined" and
/// errors by name.
fn outcome(result: Result<regorus::Value, String>) -> String {
    match result {
        Ok(regorus::Value::Undefined) => "undefined".into(),
        Ok(value) => value.to_string(),
        Err(e) => format!("error: {}", e.lines().next().unwrap_or_default()),
    }
}

/// regorus's compiled form (its RVM) takes a decision in 1.5-2.4x fewer
/// instructions than its interpreter, and would be adopted where it decides
/// exactly as the interpreter does. This differential decides: the decision
/// fixtures and a generated corpus, with and without targets, through both.
/// While any decision differs, ecluse decides with the interpreter, and this
/// test fails the day an upgraded regorus agrees, so that the compiled form
/// is then adopted (README, "Keeping policies fast").
#[test]
fn the_compiled_form_is_adopted_only_where_it_decides_as_the_interpreter() {
    use regorus::languages::rego::compiler::Compiler;
    use regorus::rvm::RegoVM;

    let files = PolicyFiles::embedded();
    let registry = Registry::embedded();
    let fixtures: Vec<Value> =
        serde_json::from_str(include_str!("fixtures/decisions.json")).unwrap();
    let corpus = generated_corpus(&registry);
    assert!(corpus.len() > 500, "corpus of {}", corpus.len());
    let with_targets = targets();
    let none = BTreeMap::new();
    let mut compared = 0;
    let mut differences = Vec::new();
    for (label, targets) in [("with targets", &with_targets), ("without targets", &none)] {
        let context = Context {
            targets,
            timeout: Duration::from_secs(5),
        };
        let mut interpreter = load::decision_engine(&files, &context).unwrap();
        let entry: Arc<str> = ecluse::policy::EGRESS_RULE.into();
        let program = Compiler::compile_from_policy(
            &interpreter.compile_with_entrypoint(&entry).unwrap(),
            &[ecluse::policy::EGRESS_RULE],
        )
        .unwrap();
        let mut vm = RegoVM::new();
        vm.load_program(program);
        vm.set_data(load::decision_engine(&files, &context).unwrap().get_data())
            .unwrap();
        let inputs = fixtures
            .iter()
            .filter(|f| (f["targets"] == false) == targets.is_empty())
            .map(|f| fixture_input(&registry, &f["input"]))
            .chain(corpus.iter().cloned());
        for input in inputs {
            let value = ecluse::policy::rego::to_value(&input).unwrap();
            interpreter.set_input(value.clone());
            let interpreted = outcome(
                interpreter
                    .eval_rule(ecluse::policy::EGRESS_RULE.to_string())
                    .map_err(|e| e.to_string()),
            );
            vm.set_input(value);
            let compiled = outcome(vm.execute().map_err(|e| e.to_string()));
            assert_ne!(interpreted, "undefined", "{label}: {input:?}");
            compared += 1;
            if interpreted != compiled {
                differences.push(format!(
                    "{label}: {} {:?} {:?}: interpreter {interpreted}, compiled {compiled}",
                    input.destination.host, input.data.classification, input.data.retention,
                ));
            }
        }
    }
    eprintln!(
        "compiled form: {} of {compared} decisions differ from the interpreter's",
        differences.len()
    );
    for d in differences.iter().take(5) {
        eprintln!("  {d}");
    }
    assert!(
        !differences.is_empty(),
        "the compiled form now decides all {compared} calls as the interpreter does: \
         adopt it for evaluated decisions (src/policy/rego.rs) behind this differential"
    );
}

/// A remembered decision's input is built from the parts of the call the
/// policy reads, and a missed one is evaluated on those parts alone: over
/// the generated corpus, the first call (evaluated on that input) and the
/// second (remembered) decide exactly as an evaluation of the whole input.
#[test]
fn decisions_on_the_parts_the_policy_reads_equal_decisions_on_the_whole_input() {
    let registry = Registry::embedded();
    let with_targets = targets();
    let none = BTreeMap::new();
    let files = PolicyFiles::embedded();
    let mut compared = 0;
    for targets in [&with_targets, &none] {
        let snapshot = snapshot(&files, targets);
        assert!(snapshot.caches_decisions());
        for input in generated_corpus(&registry) {
            let whole = snapshot.decide_request(&input);
            let destination = snapshot.destination(
                &Authority::new(&input.destination.host, 443),
                Scheme::Https,
                &[443],
            );
            let source = ecluse::policy::rego::to_value(&input.source).unwrap();
            for _ in 0..2 {
                let parts =
                    snapshot.decide_request_at(&destination, &input.request, &input.data, &source);
                assert_eq!(parts, whole, "{input:?}");
                compared += 1;
            }
        }
    }
    assert!(compared > 1000);
}
