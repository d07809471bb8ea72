//! Golden files: OpenAI request in, target request out
//! (`tests/golden/translate`); target error in, OpenAI error out
//! (`tests/golden/errors`).

use std::path::Path;

use ecluse::route::translate::{openai_error, Dialect};
use serde_json::Value;

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
