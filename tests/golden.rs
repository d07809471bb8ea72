//! Golden files: OpenAI request in, target request out
//! (`tests/golden/translate`); target error in, OpenAI error out
//! (`tests/golden/errors`) and the caller's API's error out
//! (`tests/golden/errors/<api>`); ecluse's own errors in every API's shape
//! (`tests/golden/replies/<api>`). `ECLUSE_BLESS=1` rewrites the replies'
//! files from the code: review the diff.

use std::path::Path;
use std::time::Duration;

use ecluse::reply::{CallerApi, ProxyError, Rendered};
use ecluse::route::translate::{openai_error, target_error, Dialect};
use serde_json::{json, Value};

const APIS: [CallerApi; 5] = [
    CallerApi::OpenAi,
    CallerApi::Anthropic,
    CallerApi::Gemini,
    CallerApi::Bedrock,
    CallerApi::Cohere,
];

/// An answer as a golden file holds it: status, headers, body as JSON.
fn as_golden(r: &Rendered) -> Value {
    let headers: serde_json::Map<String, Value> = r
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.clone())))
        .collect();
    json!({
        "status": r.status,
        "content_type": r.content_type,
        "headers": headers,
        "body": serde_json::from_slice::<Value>(&r.body).unwrap(),
    })
}

fn cases(dir: &str) -> Vec<(String, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(dir);
    let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(!out.is_empty(), "no golden files in {}", dir.display());
    out
}

#[test]
fn request_translations_match_the_golden_files() {
    for (name, case) in cases("translate") {
        let dialect = Dialect::from_name(case["dialect"].as_str().unwrap()).unwrap();
        let got = dialect
            .translate(
                case["operation"].as_str().unwrap(),
                &case["in"],
                case["model"].as_str().unwrap(),
            )
            .unwrap();
        assert_eq!(
            got,
            case["out"],
            "{name}: got\n{}",
            serde_json::to_string_pretty(&got).unwrap()
        );
    }
}

#[test]
fn error_translations_match_the_golden_files() {
    for (name, case) in cases("errors") {
        let status = case["status"].as_u64().unwrap() as u16;
        let body = serde_json::to_vec(&case["in"]).unwrap();
        let got: Value = serde_json::from_slice(&openai_error(status, &body)).unwrap();
        assert_eq!(got, case["out"], "{name}: got {got}");
    }
}

#[test]
fn target_errors_take_the_callers_shape() {
    for api in APIS.into_iter().filter(|a| *a != CallerApi::OpenAi) {
        for (name, case) in cases(&format!("errors/{}", api.name())) {
            let status = case["status"].as_u64().unwrap() as u16;
            let body = match &case["in"] {
                Value::String(text) => text.clone().into_bytes(),
                other => serde_json::to_vec(other).unwrap(),
            };
            let got = as_golden(&target_error(api, status, &body));
            if std::env::var_os("ECLUSE_BLESS").is_some() {
                let mut case = case.clone();
                case["out"] = got;
                let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/golden/errors")
                    .join(api.name())
                    .join(&name);
                let text = serde_json::to_string_pretty(&case).unwrap() + "\n";
                std::fs::write(path, text).unwrap();
                continue;
            }
            assert_eq!(got, case["out"], "{}/{name}: got {got}", api.name());
        }
    }
}

#[test]
fn ecluse_errors_in_every_callers_shape() {
    let errors = [
        (
            "denied",
            ProxyError::Denied {
                reason: "personal data (iban) may not go to OpenAI OpCo, LLC (US, CLOUD Act)"
                    .into(),
                rule: "personal_data_cloud_act".into(),
                status: 403,
                decision_id: Some("01JDECISION".into()),
            },
        ),
        (
            "invalid_header",
            ProxyError::InvalidHeader {
                header: "x-data-classification",
                value: "secret-ish".into(),
                allowed: "public, internal, confidential, restricted",
            },
        ),
        ("body_too_large", ProxyError::BodyTooLarge { limit: 1024 }),
        (
            "upstream_timeout",
            ProxyError::UpstreamTimeout {
                host: "api.eu.mistral.ai:443".into(),
                phase: "answer",
                timeout: Duration::from_secs(30),
            },
        ),
        (
            "unavailable",
            ProxyError::Unavailable("ecluse is shutting down".into()),
        ),
    ];
    let bless = std::env::var_os("ECLUSE_BLESS").is_some();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/replies");
    for api in APIS {
        for (name, error) in &errors {
            let got = as_golden(&error.render(api));
            let path = root.join(api.name()).join(format!("{name}.json"));
            if bless {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                let text = serde_json::to_string_pretty(&got).unwrap() + "\n";
                std::fs::write(&path, text).unwrap();
                continue;
            }
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let want: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(got, want, "{}: got {got}", path.display());
        }
    }
}
