//! Where the process log goes: lines are written to stderr by a thread of
//! their own, so a slow reader of stderr (a node's log pipeline, a full
//! pipe) never stalls a worker thread, and a call does not pay a write per
//! line. Lines wait in a bounded queue; when it is full, lines are dropped
//! and counted, and the count is written as soon as the queue drains.

use std::io::{BufWriter, Write};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Lines held while stderr is slow; about a second of lines at the
/// heaviest load this proxy sustains.
const QUEUE_LINES: usize = 16 * 1024;

enum Message {
    Line(Vec<u8>),
    /// Acknowledged once every earlier line is written.
    Flush(mpsc::Sender<()>),
}

/// A `Write` for the logger: each write is one line, queued.
pub struct LogSink {
    sender: Sender<Message>,
    counts: Arc<Counts>,
}

/// The queue is bounded by count rather than by a bounded channel, which
/// would allocate all its slots up front: memory a resting sidecar holds
/// for nothing.
#[derive(Default)]
struct Counts {
    queued: AtomicUsize,
    dropped: AtomicU64,
}

/// The sink installed for the process, kept to flush it on exit.
static INSTALLED: Mutex<Option<Sender<Message>>> = Mutex::new(None);

impl LogSink {
    /// A sink that writes to `out` from a new thread.
    pub fn spawn(out: Box<dyn Write + Send>) -> std::io::Result<LogSink> {
        let (sender, receiver) = mpsc::channel();
        let counts = Arc::new(Counts::default());
        let drained = counts.clone();
        std::thread::Builder::new()
            .name("ecluse-log".into())
            .spawn(move || drain(receiver, out, &drained))?;
        Ok(LogSink { sender, counts })
    }

    /// Makes this the sink [`flush_installed`] waits for.
    pub fn install(&self) {
        *INSTALLED.lock().unwrap_or_else(|e| e.into_inner()) = Some(self.sender.clone());
    }

    /// Waits up to `timeout` until every line queued so far is written.
    pub fn flush_within(&self, timeout: Duration) -> bool {
        flush_sender(&self.sender, timeout)
    }
}

/// Writes out what the installed sink holds; called before the process
/// exits so its last lines are not lost.
pub fn flush_installed(timeout: Duration) {
    let sender = INSTALLED.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if let Some(sender) = sender {
        flush_sender(&sender, timeout);
    }
}

fn flush_sender(sender: &Sender<Message>, timeout: Duration) -> bool {
    let (ack, acked) = mpsc::channel();
    if sender.send(Message::Flush(ack)).is_err() {
        return false;
    }
    acked.recv_timeout(timeout).is_ok()
}

impl Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let counts = &self.counts;
        let queued = counts.queued.fetch_add(1, Ordering::Relaxed) < QUEUE_LINES
            && self.sender.send(Message::Line(buf.to_vec())).is_ok();
        if !queued {
            counts.queued.fetch_sub(1, Ordering::Relaxed);
            counts.dropped.fetch_add(1, Ordering::Relaxed);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn drain(receiver: Receiver<Message>, out: Box<dyn Write + Send>, counts: &Counts) {
    let mut lines = Lines {
        out: BufWriter::with_capacity(8 * 1024, out),
        counts,
        acks: Vec::new(),
        wrote: false,
    };
    crate::polling::serve(&receiver, &mut lines);
    let _ = lines.out.flush();
}

struct Lines<'c> {
    out: BufWriter<Box<dyn Write + Send>>,
    counts: &'c Counts,
    /// Flush requests answered once this pass's lines are written.
    acks: Vec<mpsc::Sender<()>>,
    wrote: bool,
}

impl crate::polling::Writer<Message> for Lines<'_> {
    fn message(&mut self, message: Message) {
        match message {
            Message::Line(line) => {
                self.counts.queued.fetch_sub(1, Ordering::Relaxed);
                let _ = self.out.write_all(&line);
                self.wrote = true;
            }
            Message::Flush(ack) => self.acks.push(ack),
        }
    }

    fn end_of_pass(&mut self, _received: bool) -> bool {
        let lost = self.counts.dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            let _ = writeln!(
                self.out,
                "ecluse: {lost} log lines dropped: stderr was not read fast enough"
            );
        }
        let wrote = std::mem::take(&mut self.wrote) || lost > 0;
        if wrote {
            let _ = self.out.flush();
        }
        for ack in self.acks.drain(..) {
            let _ = ack.send(());
        }
        wrote
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer the test can read back, and block.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_arrive_in_order_and_flush_waits_for_them() {
        let out = Shared::default();
        let mut sink = LogSink::spawn(Box::new(out.clone())).unwrap();
        for i in 0..1000 {
            sink.write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        assert!(sink.flush_within(Duration::from_secs(5)));
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let expected: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(text, expected);
    }

    #[test]
    fn a_stalled_reader_costs_lines_not_a_blocked_writer() {
        let out = Shared::default();
        let mut sink = LogSink::spawn(Box::new(out.clone())).unwrap();
        let stall = out.0.lock().unwrap();
        let started = std::time::Instant::now();
        let total = QUEUE_LINES + 500;
        // Long lines, so the drain thread's buffer fills and it blocks on
        // the stalled reader after a few dozen.
        let line = format!("{}\n", "x".repeat(1023));
        for _ in 0..total {
            sink.write_all(line.as_bytes()).unwrap();
        }
        // Never blocked: the whole burst was queued or counted at once.
        assert!(started.elapsed() < Duration::from_secs(5));
        drop(stall);
        assert!(sink.flush_within(Duration::from_secs(5)));
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let written = text.lines().filter(|l| l.starts_with('x')).count();
        let report = text
            .lines()
            .find(|l| l.contains("log lines dropped"))
            .expect("the drop is reported");
        let lost: usize = report
            .trim_start_matches("ecluse: ")
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(lost > 0);
        assert_eq!(written + lost, total, "every line is written or counted");
    }
}
