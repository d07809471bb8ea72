//! Runs both fixture corpora: every true-positive line must be counted under
//! its kind (and, for national ids, with its country); every false-positive
//! line must count nothing. Failures are collected so one run shows them all.

use std::fs;
use std::path::Path;

use ecluse::classify::detect::{national_ids, scan_text, Counts};

fn fixtures() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pii"))
}

fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("# "))
}

fn count_of(counts: &Counts, kind: &str) -> u32 {
    match kind {
        "email" => counts.email,
        "phone" => counts.phone,
        "iban" => counts.iban,
        "card" => counts.card,
        "national_id" => counts.national_id,
        other => panic!("unknown kind {other:?}"),
    }
}

#[test]
fn true_positives_are_counted() {
    let text = fs::read_to_string(fixtures().join("true_positives.tsv")).unwrap();
    let mut failures = Vec::new();
    let mut total = 0;
    for line in lines(&text) {
        let mut fields = line.splitn(3, '\t');
        let (kind, country, sample) = (
            fields.next().unwrap(),
            fields.next().unwrap(),
            fields
                .next()
                .unwrap_or_else(|| panic!("malformed line {line:?}")),
        );
        total += 1;
        let mut counts = Counts::default();
        scan_text(sample, &mut counts);
        if count_of(&counts, kind) == 0 {
            failures.push(format!("{kind} not counted: {sample:?} -> {counts:?}"));
            continue;
        }
        if kind == "national_id" {
            let found = national_ids(sample);
            if !found.contains(&country) {
                failures.push(format!("{country} expected: {sample:?} -> {found:?}"));
            }
        }
    }
    assert!(total >= 100, "only {total} true positives");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn false_positives_count_nothing() {
    let mut failures = Vec::new();
    let mut total = 0;
    let mut entries: Vec<_> = fs::read_dir(fixtures().join("false_positives"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    entries.sort();
    for path in entries {
        let text = fs::read_to_string(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        for line in lines(&text) {
            total += 1;
            let mut counts = Counts::default();
            scan_text(line, &mut counts);
            if !counts.is_empty() {
                failures.push(format!("{name}: {line:?} -> {:?}", counts.into_map()));
            }
        }
    }
    assert!(total >= 300, "only {total} false-positive lines");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
