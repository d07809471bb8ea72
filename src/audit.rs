//! The decision audit log: one JSON line per decision, on stdout or appended
//! to `audit.file`. Written by a dedicated thread so that a slow disk never
//! stalls a call; records queue in memory meanwhile and are flushed on exit.
//! Records carry counts and facts, never prompt text or credentials.
//!
//! Each record is chained to the one before it (`chain.seq`, `chain.prev`:
//! the SHA-256 of the previous line), so an edited, removed, inserted or
//! reordered line shows (`ecluse audit verify`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::config::OnFull;

#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    pub time: String,
    pub decision_id: String,
    pub stage: &'static str,
    pub revision: String,
    pub rule: String,
    pub reason: String,
    /// intercept, tunnel, deny (connect); allow, deny, reroute (request).
    pub action: String,
    /// False in report mode: the decision was logged, not applied.
    pub enforced: bool,
    pub destination: AuditDestination,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// What the app declared (strictest of its values), or null.
    pub declared_classification: Option<String>,
    /// What the policies decided on: declared and detected combined.
    pub classification: Option<String>,
    pub retention: Option<String>,
    pub pii: BTreeMap<&'static str, u32>,
    /// `"complete"`, or the parts of the body the scan could not read.
    pub scan: crate::classify::ScanReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub workload: Option<String>,
    pub namespace: Option<String>,
    pub trace_id: Option<String>,
    /// Why the decided action could not be carried out (unresolvable host, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The policy input document exactly as evaluated (no prompt text, no
    /// credentials): what `ecluse audit replay` evaluates again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<Box<serde_json::value::RawValue>>,
    /// The decision document the policy returned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Box<serde_json::value::RawValue>>,
    /// This record's place in the file's chain: written by the writer as
    /// the last field (see [`chained`]); a value set by a caller is ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain: Option<Chain>,
}

/// A record's link to the one before it in the same file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Chain {
    /// Counts from 0 per file.
    pub seq: u64,
    /// Lowercase hex SHA-256 of the previous line's bytes without its
    /// newline; 64 zeros for the first record.
    pub prev: String,
}

/// `prev` of a file's first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The chain hash of one line (without its newline).
pub fn line_hash(line: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = ring::digest::digest(&ring::digest::SHA256, line);
    let mut hex = String::with_capacity(64);
    for b in digest.as_ref() {
        hex.push(char::from(HEX[usize::from(b >> 4)]));
        hex.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    hex
}

/// Appends `chain` to a record serialised without it, as its last field:
/// the bytes serde writes for the record with `chain` set, which is
/// declared last. False (and `record` left as it was) if `record` is not a
/// JSON object.
fn chain_into(record: &mut Vec<u8>, chain: &Chain) -> bool {
    if record.last() != Some(&b'}') {
        return false;
    }
    let end = record.len() - 1;
    record.truncate(end);
    // Every record has fields before its chain (`time` first).
    record.extend_from_slice(b",\"chain\":");
    if serde_json::to_writer(&mut *record, chain).is_err() {
        record.truncate(end);
        record.push(b'}');
        return false;
    }
    record.push(b'}');
    true
}

/// Where the chain of an existing file stands, so that a restart appending
/// to it continues it: the next `seq` and the hash of the last line.
fn chain_tail(path: &Path) -> (u64, String) {
    let Ok(text) = std::fs::read(path) else {
        return (0, GENESIS.to_string());
    };
    let trimmed = text.strip_suffix(b"\n").unwrap_or(&text);
    if trimmed.is_empty() {
        return (0, GENESIS.to_string());
    }
    let last = match trimmed.iter().rposition(|b| *b == b'\n') {
        Some(i) => &trimmed[i + 1..],
        None => trimmed,
    };
    let seq = serde_json::from_slice::<serde_json::Value>(last)
        .ok()
        .and_then(|v| v.get("chain")?.get("seq")?.as_u64())
        .map(|s| s + 1)
        // A last line without a chain (a log from before chains, or a torn
        // write): the chain goes on from the line count.
        .unwrap_or_else(|| trimmed.split(|b| *b == b'\n').count() as u64);
    (seq, line_hash(last))
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditDestination {
    pub host: String,
    pub port: u16,
    pub provider: Option<String>,
    pub entity: Option<String>,
    pub jurisdiction: Option<String>,
}

pub struct AuditLog {
    /// Records serialised without their chain (see [`AuditLog::record`]).
    sender: Mutex<Option<mpsc::Sender<Vec<u8>>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Shared with the writer: records waiting, and whether writing fails.
    state: Arc<WriterState>,
    /// Records dropped because the queue was full (`on_full: drop`).
    dropped: AtomicU64,
    limits: QueueLimits,
    /// Named in refusals and readiness messages.
    name: String,
}

/// How full the queue may get and what a call does then.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    pub capacity: usize,
    pub on_full: OnFull,
    pub max_wait: Duration,
}

impl Default for QueueLimits {
    fn default() -> Self {
        QueueLimits {
            capacity: 8192,
            on_full: OnFull::Block,
            max_wait: Duration::from_secs(1),
        }
    }
}

#[derive(Default)]
struct WriterState {
    queued: AtomicUsize,
    /// The last write or flush error, cleared by the next success.
    failing: Mutex<Option<String>>,
    /// Line buffers the writer is done with, for the next records. A
    /// buffer freed on the writer's thread would take the allocator lock
    /// of the thread that allocated it; pooled, it is never freed.
    spare: Mutex<Vec<Vec<u8>>>,
}

/// Buffers kept in [`WriterState::spare`]: enough for the records of the
/// calls in flight on a busy sidecar, a few KiB each.
const SPARE_BUFFERS: usize = 64;

/// A buffer grown larger than this (a record with a large policy input) is
/// freed rather than kept.
const SPARE_CAPACITY: usize = 16 * 1024;

/// Room for the chain the writer appends (`,"chain":{"seq":…,"prev":"…"}}`),
/// reserved by the caller so that the writer does not grow the buffer.
const CHAIN_ROOM: usize = 128;

impl WriterState {
    fn spare_buffer(&self) -> Vec<u8> {
        self.spare
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default()
    }

    fn give_back(&self, mut buffer: Vec<u8>) {
        if buffer.capacity() > SPARE_CAPACITY {
            return;
        }
        buffer.clear();
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        if spare.len() < SPARE_BUFFERS {
            spare.push(buffer);
        }
    }
}

impl AuditLog {
    /// Opens `path` for appending, or stdout when `None`, with the default
    /// queue limits (the tests' shorthand; start-up uses `open_with`).
    #[cfg(test)]
    pub fn open(path: Option<&Path>) -> std::io::Result<AuditLog> {
        AuditLog::open_with(path, QueueLimits::default())
    }

    pub fn open_with(path: Option<&Path>, limits: QueueLimits) -> std::io::Result<AuditLog> {
        let (out, tail): (Box<dyn Write + Send>, _) = match path {
            Some(p) => {
                if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                // Only a regular file has a chain to continue: a pipe or a
                // device (a log shipper's FIFO) is not read back.
                let regular = std::fs::metadata(p).is_ok_and(|m| m.is_file());
                let tail = if regular {
                    chain_tail(p)
                } else {
                    (0, GENESIS.to_string())
                };
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?;
                // A torn last line (a crash mid-write) must not swallow the
                // next record.
                if regular && std::fs::read(p).is_ok_and(|t| !t.is_empty() && !t.ends_with(b"\n")) {
                    file.write_all(b"\n")?;
                }
                (Box::new(file), tail)
            }
            None => (Box::new(std::io::stdout()), (0, GENESIS.to_string())),
        };
        let (sender, receiver) = mpsc::channel::<Vec<u8>>();
        let state = Arc::new(WriterState::default());
        let writer_state = state.clone();
        let writer = std::thread::Builder::new()
            .name("ecluse-audit".into())
            .spawn(move || write_loop(receiver, out, tail, writer_state))?;
        Ok(AuditLog {
            sender: Mutex::new(Some(sender)),
            writer: Mutex::new(Some(writer)),
            state,
            dropped: AtomicU64::new(0),
            limits,
            name: path
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "on stdout".into()),
        })
    }

    /// Queues a record. Full under `on_full: drop`, it is dropped and
    /// counted; under `block`, callers wait for [`AuditLog::room`] first, so
    /// the queue overshoots its capacity by at most the calls in flight.
    ///
    /// The record is serialised here, on the caller's thread, into a pooled
    /// buffer the writer gives back: freeing the record's many strings on
    /// the writer's thread took the caller's allocator arena lock for each,
    /// and under load that contention cost futex calls on both sides.
    pub fn record(&self, mut record: AuditRecord) {
        let full = self.state.queued.load(Ordering::Relaxed) >= self.limits.capacity;
        if full && self.limits.on_full == OnFull::Drop {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        record.chain = None;
        let mut line = self.state.spare_buffer();
        if let Err(e) = serde_json::to_writer(&mut line, &record) {
            log::error!("audit record could not be serialised: {e}");
            return;
        }
        line.reserve(CHAIN_ROOM);
        drop(record);
        if let Some(sender) = self
            .sender
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            self.state.queued.fetch_add(1, Ordering::Relaxed);
            if sender.send(line).is_err() {
                self.state.queued.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Waits (under `on_full: block`) until the queue has room for this
    /// call's records; `Err` with the reason once `max_wait` has passed. No
    /// decision is made that could not be recorded.
    pub async fn room(&self) -> Result<(), String> {
        if self.limits.on_full == OnFull::Drop {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + self.limits.max_wait;
        loop {
            let queued = self.state.queued.load(Ordering::Relaxed);
            if queued < self.limits.capacity {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "the audit log {} is not keeping up ({queued} records wait to be written for more than {:?}): calls are refused until it does, so that no decision goes unrecorded",
                    self.name, self.limits.max_wait
                ));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Records waiting to be written.
    pub fn depth(&self) -> usize {
        self.state.queued.load(Ordering::Relaxed)
    }

    /// Records dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Why the log cannot be written now, if it cannot.
    pub fn problem(&self) -> Option<String> {
        self.state
            .failing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|e| format!("the audit log {} cannot be written: {e}", self.name))
    }

    /// Writes out everything queued; later records are dropped.
    pub fn close(&self) {
        self.sender.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(writer) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = writer.join();
        }
    }
}

fn write_loop(
    receiver: mpsc::Receiver<Vec<u8>>,
    out: Box<dyn Write + Send>,
    (seq, prev): (u64, String),
    state: Arc<WriterState>,
) {
    let mut records = Records {
        out: std::io::BufWriter::with_capacity(64 * 1024, out),
        seq,
        prev,
        state,
    };
    crate::polling::serve(&receiver, &mut records);
    let _ = records.out.flush();
}

/// The writer's side: the file and where its chain stands.
struct Records<W: Write> {
    out: W,
    seq: u64,
    prev: String,
    state: Arc<WriterState>,
}

impl<W: Write> Records<W> {
    fn outcome(&self, result: std::io::Result<()>) {
        let mut failing = self.state.failing.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(()) => *failing = None,
            Err(e) => {
                if failing.is_none() {
                    log::error!("audit log write failed: {e}");
                }
                *failing = Some(e.to_string());
            }
        }
    }
}

impl<W: Write> crate::polling::Writer<Vec<u8>> for Records<W> {
    fn message(&mut self, mut line: Vec<u8>) {
        self.state.queued.fetch_sub(1, Ordering::Relaxed);
        let chain = Chain {
            seq: self.seq,
            prev: std::mem::take(&mut self.prev),
        };
        if chain_into(&mut line, &chain) {
            self.prev = line_hash(&line);
            self.seq += 1;
            line.push(b'\n');
            let written = self.out.write_all(&line);
            if written.is_err() {
                self.outcome(written);
            }
        } else {
            // Keep the chain where it was: nothing was written.
            self.prev = chain.prev;
            log::error!("audit record could not be serialised: not a JSON object");
        }
        self.state.give_back(line);
    }

    fn end_of_pass(&mut self, received: bool) -> bool {
        if received {
            let flushed = self.out.flush();
            self.outcome(flushed);
        }
        received
    }
}

/// A decision id: 128 random bits, hex.
pub fn new_decision_id() -> String {
    let bits: u128 = rand::random();
    format!("{bits:032x}")
}

/// RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    rfc3339_millis(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default(),
    )
}

/// `since_epoch` in RFC 3339 UTC with milliseconds. Every record is
/// stamped, so each thread formats the date and time of day once per second
/// and only the milliseconds per record.
fn rfc3339_millis(since_epoch: Duration) -> String {
    thread_local! {
        static SECOND: std::cell::RefCell<(u64, String)> =
            const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    let seconds = since_epoch.as_secs();
    let millis = since_epoch.subsec_millis();
    SECOND.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != seconds {
            *cached = (seconds, whole_second(seconds));
        }
        let mut stamp = String::with_capacity(cached.1.len() + 5);
        stamp.push_str(&cached.1);
        stamp.push('.');
        for digit in [millis / 100, millis / 10 % 10, millis % 10] {
            stamp.push(char::from_digit(digit, 10).unwrap_or('0'));
        }
        stamp.push('Z');
        stamp
    })
}

/// `YYYY-MM-DDTHH:MM:SS` of a second since the epoch, UTC.
fn whole_second(seconds: u64) -> String {
    let time = i64::try_from(seconds)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        time.year(),
        u8::from(time.month()),
        time.day(),
        time.hour(),
        time.minute(),
        time.second(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_times_are_rfc3339_utc_with_milliseconds() {
        // Same second twice, back to an earlier second, across a leap day
        // and a year: the per-second cache never serves a stale prefix.
        let cases = [
            (0, 0, "1970-01-01T00:00:00.000Z"),
            (1_709_164_799, 999, "2024-02-28T23:59:59.999Z"),
            (1_709_164_800, 7, "2024-02-29T00:00:00.007Z"),
            (1_709_164_800, 450, "2024-02-29T00:00:00.450Z"),
            (1_709_164_799, 10, "2024-02-28T23:59:59.010Z"),
            (1_798_761_599, 123, "2026-12-31T23:59:59.123Z"),
            (1_798_761_600, 0, "2027-01-01T00:00:00.000Z"),
            (4_102_444_800, 999, "2100-01-01T00:00:00.999Z"),
        ];
        for (seconds, millis, expected) in cases {
            let at = Duration::from_secs(seconds) + Duration::from_micros(millis * 1000 + 999);
            assert_eq!(rfc3339_millis(at), expected, "{seconds}.{millis}");
            let parsed = time::OffsetDateTime::parse(
                expected,
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap();
            assert_eq!(parsed.unix_timestamp() as u64, seconds);
        }
        let now = now_rfc3339();
        assert_eq!(now.len(), 24, "{now}");
        assert!(now.ends_with('Z'), "{now}");
    }

    #[test]
    fn chain_hashes_are_sha256_in_lowercase_hex() {
        // FIPS 180-2's examples: auditors recompute these with any tool.
        assert_eq!(
            line_hash(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            line_hash(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn records_are_json_lines_and_flushed_on_close() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(Some(&path)).unwrap();
        for i in 0..3 {
            log.record(AuditRecord {
                time: now_rfc3339(),
                decision_id: new_decision_id(),
                stage: "request",
                revision: "r1".into(),
                rule: "egress.allowed".into(),
                reason: format!("reason {i}"),
                action: "allow".into(),
                enforced: true,
                destination: AuditDestination {
                    host: "api.openai.com".into(),
                    port: 443,
                    provider: Some("openai".into()),
                    entity: Some("OpenAI OpCo, LLC".into()),
                    jurisdiction: Some("US".into()),
                },
                route: None,
                declared_classification: Some("public".into()),
                classification: Some("public".into()),
                scan: Default::default(),
                retention: None,
                pii: [("email", 1)].into_iter().collect(),
                operation: Some("chat".into()),
                model: Some("gpt-4o".into()),
                workload: None,
                namespace: None,
                trace_id: None,
                error: None,
                input: None,
                result: None,
                chain: None,
            });
        }
        log.close();
        assert!(
            !log.state.spare.lock().unwrap().is_empty(),
            "line buffers go back to the pool"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[2]["reason"], "reason 2");
        assert_eq!(lines[0]["pii"]["email"], 1);
        assert_eq!(lines[0]["decision_id"].as_str().unwrap().len(), 32);
        assert!(lines[0]["time"].as_str().unwrap().ends_with('Z'));
        // Chained: seq from 0, prev the hash of the previous line.
        let raw: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0]["chain"]["seq"], 0);
        assert_eq!(lines[0]["chain"]["prev"], GENESIS);
        for i in 1..3 {
            assert_eq!(lines[i]["chain"]["seq"], i);
            assert_eq!(lines[i]["chain"]["prev"], line_hash(raw[i - 1].as_bytes()));
        }
        // A restart appending to the file continues its chain.
        let log = AuditLog::open(Some(&path)).unwrap();
        log.record(
            serde_json::from_value::<RecordFixture>(lines[0].clone())
                .unwrap()
                .0,
        );
        log.close();
        let text = std::fs::read_to_string(&path).unwrap();
        let raw: Vec<&str> = text.lines().collect();
        let last: serde_json::Value = serde_json::from_str(raw[3]).unwrap();
        assert_eq!(last["chain"]["seq"], 3);
        assert_eq!(last["chain"]["prev"], line_hash(raw[2].as_bytes()));
    }

    #[test]
    fn a_chained_line_is_what_serde_writes_for_the_record_with_its_chain() {
        let text = r#"{"decision_id":"d1","stage":"request","revision":"r","rule":"x","reason":"","action":"allow","enforced":true,"destination":{"host":"h","port":443}}"#;
        let mut record = serde_json::from_str::<RecordFixture>(text).unwrap().0;
        record.input =
            Some(serde_json::value::RawValue::from_string(r#"{"a":"}"}"#.into()).unwrap());
        let chain = Chain {
            seq: 7,
            prev: line_hash(b"previous"),
        };
        let mut line = serde_json::to_vec(&record).unwrap();
        record.chain = Some(chain.clone());
        let with = serde_json::to_vec(&record).unwrap();
        assert!(chain_into(&mut line, &chain));
        assert_eq!(line, with);
        for not_an_object in [&b"[1]"[..], b""] {
            let mut line = not_an_object.to_vec();
            assert!(!chain_into(&mut line, &chain));
            assert_eq!(line, not_an_object);
        }
        // The hash is lowercase hex of SHA-256.
        assert_eq!(
            line_hash(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    /// A record rebuilt from a written line, for tests.
    struct RecordFixture(AuditRecord);

    impl<'de> serde::Deserialize<'de> for RecordFixture {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let v = serde_json::Value::deserialize(d)?;
            Ok(RecordFixture(AuditRecord {
                time: now_rfc3339(),
                decision_id: v["decision_id"].as_str().unwrap_or_default().into(),
                stage: "request",
                revision: "r2".into(),
                rule: "egress.allowed".into(),
                reason: "after restart".into(),
                action: "allow".into(),
                enforced: true,
                destination: AuditDestination {
                    host: "api.openai.com".into(),
                    port: 443,
                    provider: None,
                    entity: None,
                    jurisdiction: None,
                },
                route: None,
                declared_classification: None,
                classification: None,
                scan: Default::default(),
                retention: None,
                pii: Default::default(),
                operation: None,
                model: None,
                workload: None,
                namespace: None,
                trace_id: None,
                error: None,
                input: None,
                result: None,
                chain: None,
            }))
        }
    }
}
