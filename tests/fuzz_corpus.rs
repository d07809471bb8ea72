//! Replays the kept fuzz corpus (seeds and every crash input found, under
//! `tests/fuzz/corpus/<target>/`) through the same entry points the
//! cargo-fuzz targets call, so a fixed crash stays fixed on stable CI.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/corpus")
        .join(target);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{target}: {} panics", path.display());
        count += 1;
    }
    assert!(count > 0, "{target}: empty corpus");
    count
}

#[test]
fn body_reader_corpus() {
    replay("body_reader", ecluse::fuzzing::body_reader);
}

#[test]
fn scanner_corpus() {
    replay("scanner", ecluse::fuzzing::scanner);
}

#[test]
fn llm_request_corpus() {
    replay("llm_request", ecluse::fuzzing::llm_request);
}

#[test]
fn connect_head_corpus() {
    replay("connect_head", ecluse::fuzzing::connect_head);
}

#[test]
fn response_observer_corpus() {
    replay("response_observer", ecluse::fuzzing::response_observer);
}
