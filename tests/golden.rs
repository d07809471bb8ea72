//! Golden files: OpenAI request in, target request out
//! (`tests/golden/translate`); target error in, OpenAI error out
//! (`tests/golden/errors`) and the caller's API's error out
//! (`tests/golden/errors/<api>`); ecluse's own errors in every API's shape
//! (`tests/golden/replies/<api>`); Anthropic Messages and OpenAI Responses
//! to chat completions and back (`tests/golden/anthropic`,
//! `tests/golden/responses`). `ECLUSE_BLESS=1` rewrites the replies' files
//! from the code: review the diff.

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

/// Ids made by a counter, so translated answers are stable.
fn counter_ids() -> ecluse::route::anthropic::IdGen {
    let mut n = 0;
    Box::new(move |prefix| {
        n += 1;
        format!("{prefix}test{n}")
    })
}

/// An Anthropic SSE body from `[event, data]` pairs, as the translator
/// writes it (compact JSON, keys in order).
fn anthropic_sse(events: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events.as_array().unwrap() {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(e[0].as_str().unwrap().as_bytes());
        out.extend_from_slice(b"\ndata: ");
        out.extend_from_slice(serde_json::to_string(&e[1]).unwrap().as_bytes());
        out.extend_from_slice(b"\n\n");
    }
    out
}

fn sse_events(body: &[u8]) -> Value {
    let text = std::str::from_utf8(body).unwrap();
    Value::Array(
        text.split("\n\n")
            .filter(|b| !b.is_empty())
            .map(|block| {
                let (event, data) = block.split_once('\n').unwrap();
                let data: Value =
                    serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
                serde_json::json!([event.strip_prefix("event: ").unwrap(), data])
            })
            .collect(),
    )
}

/// Feeds `body` in the pieces `splits` makes and returns everything out.
fn translate_answer(stream: bool, pieces: &[&[u8]]) -> Result<Vec<u8>, String> {
    let mut t = ecluse::route::anthropic::answer_translator_with_ids(
        stream,
        "claude-sonnet-4-5",
        counter_ids(),
    );
    let mut out = Vec::new();
    for piece in pieces {
        out.extend(t.feed(piece)?);
    }
    out.extend(t.finish()?);
    Ok(out)
}

/// Anthropic Messages through an OpenAI-compatible target
/// (`tests/golden/anthropic`): `request` cases are a Messages request in and
/// the chat request out; `answer` cases a chat completion in and the
/// Message out; `stream` cases the target's SSE body in (a string) and the
/// Anthropic events out (`[event, data]` pairs), checked byte for byte and
/// with the input split at every byte boundary. `ECLUSE_BLESS=1` rewrites
/// the `out` of each file from the translator.
#[test]
fn anthropic_translations_match_the_golden_files() {
    use ecluse::route::anthropic::request_to_chat;
    let bless = std::env::var_os("ECLUSE_BLESS").is_some();
    for (name, mut case) in cases("anthropic") {
        let got = match case["kind"].as_str().unwrap() {
            "request" => request_to_chat(&case["in"]).unwrap_or_else(|e| panic!("{name}: {e}")),
            "answer" => {
                let body = serde_json::to_vec(&case["in"]).unwrap();
                let out =
                    translate_answer(false, &[&body]).unwrap_or_else(|e| panic!("{name}: {e}"));
                serde_json::from_slice(&out).unwrap()
            }
            "stream" => {
                let body = case["in"].as_str().unwrap().as_bytes().to_vec();
                let whole =
                    translate_answer(true, &[&body]).unwrap_or_else(|e| panic!("{name}: {e}"));
                for at in 0..=body.len() {
                    let split = translate_answer(true, &[&body[..at], &body[at..]]).unwrap();
                    assert_eq!(split, whole, "{name}: split at byte {at}");
                }
                let bytewise: Vec<&[u8]> = body.chunks(1).collect();
                assert_eq!(
                    translate_answer(true, &bytewise).unwrap(),
                    whole,
                    "{name}: byte by byte"
                );
                if !bless {
                    assert_eq!(
                        String::from_utf8_lossy(&whole),
                        String::from_utf8_lossy(&anthropic_sse(&case["out"])),
                        "{name}: bytes"
                    );
                }
                sse_events(&whole)
            }
            other => panic!("{name}: unknown kind {other}"),
        };
        if bless {
            case["out"] = got;
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/golden/anthropic")
                .join(&name);
            std::fs::write(path, serde_json::to_string_pretty(&case).unwrap() + "\n").unwrap();
            continue;
        }
        assert_eq!(
            got,
            case["out"],
            "{name}: got\n{}",
            serde_json::to_string_pretty(&got).unwrap()
        );
    }
}

/// Golden files of the Responses API translation (`tests/golden/responses`):
/// `requests/*.json` hold a Responses request `in` and the chat request
/// `out`, or the `error` it is refused with (a file may list `cases`);
/// `answers/*.json` hold a chat answer `in` and the Responses answer `out`;
/// `streams/<name>.in.sse` is a chat stream and `<name>.out.sse` the
/// Responses stream made of it. Ids and times are fixed by `STAMP`.
/// `ECLUSE_BLESS=1` writes missing `out` files, to be read before they are
/// committed.
mod responses {
    use super::*;
    use ecluse::route::responses::{answer_translator_at, request_to_chat, Stamp};

    fn stamp() -> Stamp {
        Stamp {
            token: "0123456789abcdef".into(),
            created_at: 1_767_225_600,
        }
    }

    fn bless() -> bool {
        std::env::var_os("ECLUSE_BLESS").is_some()
    }

    fn dir(sub: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden/responses")
            .join(sub)
    }

    #[test]
    fn requests_match_the_golden_files() {
        for (name, file) in cases("responses/requests") {
            let list = match file.get("cases") {
                Some(Value::Array(list)) => list.clone(),
                _ => vec![file],
            };
            for (i, case) in list.iter().enumerate() {
                let got = request_to_chat(&case["in"]);
                match (&case["error"], got) {
                    (Value::String(want), Err(e)) => {
                        assert!(
                            e.contains(want.as_str()),
                            "{name}[{i}]: {e:?} lacks {want:?}"
                        )
                    }
                    (Value::String(want), Ok(v)) => {
                        panic!("{name}[{i}]: want an error with {want:?}, got {v}")
                    }
                    (_, Ok(v)) => assert_eq!(
                        v,
                        case["out"],
                        "{name}[{i}]: got\n{}",
                        serde_json::to_string_pretty(&v).unwrap()
                    ),
                    (_, Err(e)) => panic!("{name}[{i}]: {e}"),
                }
            }
        }
    }

    #[test]
    fn answers_match_the_golden_files() {
        for (name, case) in cases("responses/answers") {
            let body = serde_json::to_vec(&case["in"]).unwrap();
            let mut t = answer_translator_at(false, case["model"].as_str().unwrap(), stamp());
            assert_eq!(t.content_type(), "application/json");
            let mut out = Vec::new();
            // Three pieces, to show the body is read whole whatever its split.
            for piece in body.chunks(body.len() / 3 + 1) {
                out.extend(t.feed(piece).unwrap());
            }
            out.extend(t.finish().unwrap());
            let got: Value = serde_json::from_slice(&out).unwrap();
            if case.get("out").is_none() && bless() {
                let mut case = case.clone();
                case["out"] = got;
                let text = serde_json::to_string_pretty(&case).unwrap() + "\n";
                std::fs::write(dir("answers").join(&name), text).unwrap();
                continue;
            }
            assert_eq!(
                got,
                case["out"],
                "{name}: got\n{}",
                serde_json::to_string_pretty(&got).unwrap()
            );
        }
    }

    fn translate_stream(model: &str, pieces: &[&[u8]]) -> String {
        let mut t = answer_translator_at(true, model, stamp());
        assert_eq!(t.content_type(), "text/event-stream");
        let mut out = Vec::new();
        for piece in pieces {
            out.extend(t.feed(piece).unwrap());
        }
        out.extend(t.finish().unwrap());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn streams_match_the_golden_files_in_any_split() {
        let mut seen = 0;
        let mut names: Vec<_> = std::fs::read_dir(dir("streams"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".in.sse"))
            .collect();
        names.sort();
        for name in names {
            let stem = name.trim_end_matches(".in.sse");
            let input = std::fs::read(dir("streams").join(&name)).unwrap();
            let model = "gpt-4o";
            let whole = translate_stream(model, &[&input]);
            let want_path = dir("streams").join(format!("{stem}.out.sse"));
            let want = match std::fs::read_to_string(&want_path) {
                Ok(w) => w,
                Err(_) if bless() => {
                    std::fs::write(&want_path, &whole).unwrap();
                    whole.clone()
                }
                Err(e) => panic!("{}: {e}", want_path.display()),
            };
            assert_eq!(whole, want, "{stem}: got\n{whole}");
            for at in 0..=input.len() {
                let (a, b) = input.split_at(at);
                assert_eq!(
                    translate_stream(model, &[a, b]),
                    want,
                    "{stem} split at {at}"
                );
            }
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            assert_eq!(translate_stream(model, &bytes), want, "{stem} byte by byte");
            seen += 1;
        }
        assert!(seen > 0, "no golden streams");
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
