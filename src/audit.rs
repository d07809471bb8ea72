//! The decision audit log: one JSON line per decision, on stdout or appended
//! to `audit.file`. Written by a dedicated thread so that a slow disk never
//! stalls a call; records queue in memory meanwhile and are flushed on exit.
//! Records carry counts and facts, never prompt text or credentials.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::mpsc;
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

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
    sender: Mutex<Option<mpsc::Sender<AuditRecord>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl AuditLog {
    /// Opens `path` for appending, or stdout when `None`.
    pub fn open(path: Option<&Path>) -> std::io::Result<AuditLog> {
        let out: Box<dyn Write + Send> = match path {
            Some(p) => {
                if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                Box::new(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(p)?,
                )
            }
            None => Box::new(std::io::stdout()),
        };
        let (sender, receiver) = mpsc::channel::<AuditRecord>();
        let writer = std::thread::Builder::new()
            .name("ecluse-audit".into())
            .spawn(move || write_loop(receiver, out))?;
        Ok(AuditLog {
            sender: Mutex::new(Some(sender)),
            writer: Mutex::new(Some(writer)),
        })
    }

    pub fn record(&self, record: AuditRecord) {
        if let Some(sender) = self
            .sender
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            let _ = sender.send(record);
        }
    }

    /// Writes out everything queued; later records are dropped.
    pub fn close(&self) {
        self.sender.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(writer) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = writer.join();
        }
    }
}

fn write_loop(receiver: mpsc::Receiver<AuditRecord>, out: Box<dyn Write + Send>) {
    struct Records<W: Write>(W);
    impl<W: Write> crate::polling::Writer<AuditRecord> for Records<W> {
        fn message(&mut self, record: AuditRecord) {
            write_one(&mut self.0, &record);
        }
        fn end_of_pass(&mut self, received: bool) -> bool {
            if received {
                if let Err(e) = self.0.flush() {
                    log::error!("audit log write failed: {e}");
                }
            }
            received
        }
    }
    let mut records = Records(std::io::BufWriter::with_capacity(64 * 1024, out));
    crate::polling::serve(&receiver, &mut records);
    let _ = records.0.flush();
}

fn write_one(out: &mut impl Write, record: &AuditRecord) {
    if let Ok(mut line) = serde_json::to_vec(record) {
        line.push(b'\n');
        if let Err(e) = out.write_all(&line) {
            log::error!("audit log write failed: {e}");
        }
    }
}

/// A decision id: 128 random bits, hex.
pub fn new_decision_id() -> String {
    let bits: u128 = rand::random();
    format!("{bits:032x}")
}

/// RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let time = time::OffsetDateTime::from_unix_timestamp_nanos(now.as_nanos() as i128)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        time.year(),
        u8::from(time.month()),
        time.day(),
        time.hour(),
        time.minute(),
        time.second(),
        time.millisecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
            });
        }
        log.close();
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
    }
}
