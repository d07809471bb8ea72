//! Cuts an `application/vnd.amazon.eventstream` body (Bedrock's
//! ConverseStream and InvokeModelWithResponseStream) into its frames as the
//! bytes arrive. Each frame is length-prefixed; the frame itself (headers,
//! CRCs, payload) is decoded by `aws-smithy-eventstream`, the AWS SDK's own
//! decoder. A frame over the cap or one that does not decode ends the
//! reading: the stream cannot be resynchronised, and nothing more is kept.

use aws_smithy_eventstream::frame::read_message_from;
use aws_smithy_types::event_stream::{HeaderValue, Message};

/// Prelude: total length, headers length, prelude CRC; then a message CRC.
const MIN_FRAME: usize = 16;

#[derive(Debug)]
pub(super) struct Frames {
    cap: usize,
    buf: Vec<u8>,
    broken: bool,
}

/// One decoded frame, as far as usage reading needs it.
pub(super) struct Frame<'a> {
    /// `:message-type`: `event` or `exception`.
    pub(super) message_type: Option<&'a str>,
    /// `:event-type`: `messageStop`, `metadata`, `chunk`, ...
    pub(super) event_type: Option<&'a str>,
    pub(super) payload: &'a [u8],
}

impl Frames {
    pub(super) fn new(cap: usize) -> Frames {
        Frames {
            cap,
            buf: Vec::new(),
            broken: false,
        }
    }

    #[cfg(test)]
    pub(super) fn buffered(&self) -> usize {
        self.buf.capacity()
    }

    pub(super) fn feed(&mut self, bytes: &[u8], on_frame: &mut dyn FnMut(Frame<'_>)) {
        if self.broken {
            return;
        }
        self.buf.extend_from_slice(bytes);
        loop {
            let Some(total) = self.next_len() else {
                return;
            };
            if total < MIN_FRAME || total > self.cap {
                self.give_up();
                return;
            }
            let Some(frame) = self.buf.get(..total) else {
                return;
            };
            match read_message_from(frame) {
                Ok(message) => on_frame(view(&message)),
                Err(_) => {
                    self.give_up();
                    return;
                }
            }
            self.buf.drain(..total);
        }
    }

    /// The next frame's total length, once its first four bytes are here.
    fn next_len(&self) -> Option<usize> {
        let prefix: [u8; 4] = self.buf.get(..4)?.try_into().ok()?;
        usize::try_from(u32::from_be_bytes(prefix)).ok()
    }

    fn give_up(&mut self) {
        self.broken = true;
        self.buf = Vec::new();
    }
}

fn view(message: &Message) -> Frame<'_> {
    let header = |name: &str| {
        message
            .headers()
            .iter()
            .find(|h| h.name().as_str() == name)
            .and_then(|h| match h.value() {
                HeaderValue::String(s) => Some(s.as_str()),
                _ => None,
            })
    };
    Frame {
        message_type: header(":message-type"),
        event_type: header(":event-type"),
        payload: message.payload(),
    }
}
