//! The loop both writer threads (audit records, log lines) run: block while
//! idle, poll every few milliseconds while busy. Under load a worker that
//! queues a record never pays for waking the writer (a futex call per
//! record); at rest the writer sleeps until the next one.

use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::Duration;

const POLL: Duration = Duration::from_millis(2);
/// Empty polls before the writer goes back to blocking: 100 ms of quiet.
const IDLE_POLLS: u32 = 50;

/// What a writer thread does with what it receives.
pub(crate) trait Writer<T> {
    fn message(&mut self, message: T);
    /// After each pass, with whether any message came; returns whether
    /// anything was written (which keeps the loop polling).
    fn end_of_pass(&mut self, received: bool) -> bool;
}

/// Serves `receiver` until every sender is gone.
pub(crate) fn serve<T>(receiver: &Receiver<T>, writer: &mut impl Writer<T>) {
    let mut idle = IDLE_POLLS;
    loop {
        let mut received = false;
        if idle >= IDLE_POLLS {
            match receiver.recv() {
                Ok(message) => {
                    writer.message(message);
                    received = true;
                }
                Err(_) => return,
            }
        } else {
            std::thread::sleep(POLL);
        }
        let mut disconnected = false;
        loop {
            match receiver.try_recv() {
                Ok(message) => {
                    writer.message(message);
                    received = true;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    disconnected = true;
                    break;
                }
            }
        }
        if writer.end_of_pass(received) {
            idle = 0;
        } else {
            idle += 1;
        }
        if disconnected {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_is_served_in_order_and_the_loop_ends_with_its_senders() {
        let (sender, receiver) = std::sync::mpsc::channel();
        struct Collect(Vec<u32>, usize);
        impl Writer<u32> for Collect {
            fn message(&mut self, m: u32) {
                self.0.push(m);
            }
            fn end_of_pass(&mut self, received: bool) -> bool {
                self.1 += usize::from(received);
                received
            }
        }
        let writer = std::thread::spawn(move || {
            let mut collect = Collect(Vec::new(), 0);
            serve(&receiver, &mut collect);
            (collect.0, collect.1)
        });
        for i in 0..10_000 {
            sender.send(i).unwrap();
        }
        drop(sender);
        let (seen, passes) = writer.join().unwrap();
        assert_eq!(seen, (0..10_000).collect::<Vec<_>>());
        assert!(passes >= 1);
    }
}
