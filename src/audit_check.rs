//! What an auditor runs on an audit log: `verify` checks that no line was
//! edited, removed, inserted or reordered (the chain), and `replay`
//! evaluates every recorded input again under the revision the record names
//! and compares the decision with the one recorded. Replay sends nothing
//! anywhere: it only evaluates policies.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::audit::{line_hash, GENESIS};
use crate::policy::{ConnectDecision, Decision, Snapshot};

/// The first break in a file's chain, with the line (1-based) it shows at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    pub line: usize,
    pub problem: String,
}

impl std::fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.problem)
    }
}

/// Checks one file's chain; the number of records when it is intact.
pub fn verify(text: &[u8]) -> Result<u64, ChainBreak> {
    // Every seq in the file, to tell a gap (removed records) from records
    // that stand later in the file (reordered ones).
    let all_seqs: std::collections::BTreeSet<u64> = text
        .split(|b| *b == b'\n')
        .filter_map(|l| serde_json::from_slice::<Value>(l).ok())
        .filter_map(|r| r.pointer("/chain/seq").and_then(Value::as_u64))
        .collect();
    let mut expected_seq = 0u64;
    let mut prev = GENESIS.to_string();
    let mut seen = std::collections::BTreeSet::new();
    let mut records = 0u64;
    for (index, line) in text.split(|b| *b == b'\n').enumerate() {
        let number = index + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let broken = |problem: String| ChainBreak {
            line: number,
            problem,
        };
        let record: Value = serde_json::from_slice(line)
            .map_err(|e| broken(format!("not a JSON record ({e}): edited or torn")))?;
        let (seq, claimed_prev) = match (
            record.pointer("/chain/seq").and_then(Value::as_u64),
            record.pointer("/chain/prev").and_then(Value::as_str),
        ) {
            (Some(seq), Some(prev)) => (seq, prev.to_string()),
            _ => return Err(broken("the record has no chain (seq, prev)".into())),
        };
        let decision = record
            .get("decision_id")
            .and_then(Value::as_str)
            .unwrap_or("?");
        if claimed_prev != prev || seq != expected_seq {
            let problem = if seq == expected_seq {
                format!(
                    "the record before it (seq {}) was edited: its hash is not the prev of seq {seq} (decision {decision})",
                    seq.saturating_sub(1)
                )
            } else if seq > expected_seq && all_seqs.contains(&expected_seq) {
                format!(
                    "seq {seq} stands where seq {expected_seq} should: records were reordered (decision {decision})"
                )
            } else if seq > expected_seq {
                format!(
                    "records seq {expected_seq} to {} were removed before seq {seq} (decision {decision})",
                    seq - 1
                )
            } else if seen.contains(&seq) {
                format!(
                    "seq {seq} comes again (decision {decision}): a record was inserted before it, or records were reordered"
                )
            } else {
                format!(
                    "seq {seq} comes after seq {}: records were reordered",
                    expected_seq - 1
                )
            };
            return Err(broken(problem));
        }
        seen.insert(seq);
        prev = line_hash(line);
        expected_seq = seq + 1;
        records += 1;
    }
    Ok(records)
}

/// One record whose decision does not reproduce.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    pub decision_id: String,
    pub revision: String,
    pub recorded: Value,
    pub replayed: Value,
}

/// What a replay found.
#[derive(Debug, Default)]
pub struct Replay {
    pub reproduced: u64,
    pub mismatches: Vec<Mismatch>,
    /// Records that could not be replayed, and why (no input kept, a
    /// revision that cannot be had).
    pub skipped: Vec<(String, String)>,
}

/// Evaluates every record's input under its revision. `snapshot` gives the
/// compiled revision for a revision id (or why it cannot be had); each is
/// asked for once.
pub fn replay<'l>(
    lines: impl Iterator<Item = &'l [u8]>,
    mut snapshot: impl FnMut(&str) -> Result<Snapshot, String>,
) -> Replay {
    let mut compiled: BTreeMap<String, Result<Snapshot, String>> = BTreeMap::new();
    let mut out = Replay::default();
    for line in lines {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let Ok(record) = serde_json::from_slice::<Value>(line) else {
            out.skipped
                .push(("?".into(), "a line that is not a JSON record".into()));
            continue;
        };
        let decision_id = record
            .get("decision_id")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string();
        let (Some(input), Some(result), Some(revision)) = (
            record.get("input"),
            record.get("result"),
            record.get("revision").and_then(Value::as_str),
        ) else {
            out.skipped.push((
                decision_id,
                "the record keeps no input, result or revision".into(),
            ));
            continue;
        };
        let entry = compiled
            .entry(revision.to_string())
            .or_insert_with(|| snapshot(revision));
        let snapshot = match entry {
            Ok(s) => s,
            Err(why) => {
                out.skipped.push((decision_id, why.clone()));
                continue;
            }
        };
        let (recorded, replayed) = match input.get("stage").and_then(Value::as_str) {
            Some("connect") => (
                comparable_connect(result),
                serde_json::to_value(snapshot.decide_connect(input)).unwrap_or(Value::Null),
            ),
            _ => (
                comparable_request(result),
                serde_json::to_value(snapshot.decide_request(input)).unwrap_or(Value::Null),
            ),
        };
        let replayed = if input.get("stage").and_then(Value::as_str) == Some("connect") {
            comparable_connect(&replayed)
        } else {
            comparable_request(&replayed)
        };
        if recorded == replayed {
            out.reproduced += 1;
        } else {
            out.mismatches.push(Mismatch {
                decision_id,
                revision: revision.to_string(),
                recorded,
                replayed,
            });
        }
    }
    out
}

/// A decision document as ecluse reads it, so that fields a policy may
/// leave out compare equal to their defaults.
fn comparable_request(v: &Value) -> Value {
    match crate::policy::parse_decision(v) {
        Ok(d) => serde_json::to_value::<Decision>(d).unwrap_or(Value::Null),
        Err(e) => Value::String(format!("malformed: {e}")),
    }
}

fn comparable_connect(v: &Value) -> Value {
    match crate::policy::parse_connect(v) {
        Ok(d) => serde_json::to_value::<ConnectDecision>(d).unwrap_or(Value::Null),
        Err(e) => Value::String(format!("malformed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chained(records: &[Value]) -> Vec<String> {
        let mut prev = GENESIS.to_string();
        records
            .iter()
            .enumerate()
            .map(|(seq, r)| {
                let mut r = r.clone();
                r["chain"] = serde_json::json!({"seq": seq, "prev": prev});
                let line = r.to_string();
                prev = line_hash(line.as_bytes());
                line
            })
            .collect()
    }

    fn file(lines: &[String]) -> Vec<u8> {
        (lines.join("\n") + "\n").into_bytes()
    }

    #[test]
    fn intact_edited_removed_inserted_and_reordered_logs() {
        let records: Vec<Value> = (0..5)
            .map(|i| serde_json::json!({"decision_id": format!("d{i}"), "action": "deny"}))
            .collect();
        let lines = chained(&records);
        assert_eq!(verify(&file(&lines)), Ok(5));
        assert_eq!(verify(b""), Ok(0));

        let mut edited = lines.clone();
        edited[2] = edited[2].replace("deny", "allow");
        let err = verify(&file(&edited)).unwrap_err();
        assert_eq!(err.line, 4);
        assert!(err.problem.contains("seq 2) was edited"), "{err}");

        let mut removed = lines.clone();
        removed.remove(1);
        let err = verify(&file(&removed)).unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.problem.contains("seq 1 to 1 were removed"), "{err}");

        let mut inserted = lines.clone();
        inserted.insert(3, lines[2].clone());
        let err = verify(&file(&inserted)).unwrap_err();
        assert_eq!(err.line, 4);
        assert!(err.problem.contains("comes again"), "{err}");

        let mut reordered = lines.clone();
        reordered.swap(1, 3);
        let err = verify(&file(&reordered)).unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.problem.contains("reordered"), "{err}");

        let mut torn = lines.clone();
        torn[4].truncate(10);
        assert!(verify(&file(&torn))
            .unwrap_err()
            .problem
            .contains("not a JSON record"));

        let unchained = file(&["{\"decision_id\":\"x\"}".to_string()]);
        assert!(verify(&unchained).unwrap_err().problem.contains("no chain"));
    }
}
