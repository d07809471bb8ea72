//! Cuts a JSON body into the documents worth reading, as its bytes arrive:
//! each top-level object (one for an ordinary answer, several for
//! newline-delimited JSON), or each element of a top-level array (Gemini's
//! `streamGenerateContent` without `alt=sse` answers `[{...},\r\n{...}]`).
//!
//! This only tracks nesting, strings and escapes to find where a document
//! ends; `serde_json` parses each document. A document over the cap is
//! skipped (its end is still found), so memory stays bounded however long
//! the answer; a body that does not start like JSON is ignored from there.

#[derive(Debug)]
pub(super) struct JsonValues {
    cap: usize,
    /// The document under way, until it exceeds the cap.
    buf: Vec<u8>,
    /// Inside a document: its nesting depth (1 for its own braces).
    depth: usize,
    in_value: bool,
    in_string: bool,
    escaped: bool,
    /// The current document outgrew the cap: find its end, keep nothing.
    skipping: bool,
    /// Inside a top-level array, between or in its elements.
    in_array: bool,
    seen_array: bool,
    /// A top-level document (or the array) has closed.
    complete: bool,
    /// The body is not JSON: nothing more is read.
    not_json: bool,
}

impl JsonValues {
    pub(super) fn new(cap: usize) -> JsonValues {
        JsonValues {
            cap,
            buf: Vec::new(),
            depth: 0,
            in_value: false,
            in_string: false,
            escaped: false,
            skipping: false,
            in_array: false,
            seen_array: false,
            complete: false,
            not_json: false,
        }
    }

    /// Whether the body is a JSON array of chunks (a stream).
    pub(super) fn is_array(&self) -> bool {
        self.seen_array
    }

    /// Whether a whole top-level value has been seen (and nothing is open).
    pub(super) fn complete(&self) -> bool {
        self.complete && !self.in_value && !self.in_array
    }

    #[cfg(test)]
    pub(super) fn buffered(&self) -> usize {
        self.buf.capacity()
    }

    pub(super) fn feed(&mut self, bytes: &[u8], on_document: &mut dyn FnMut(&[u8])) {
        let mut i = 0;
        while i < bytes.len() && !self.not_json {
            if self.in_value {
                i += self.value_bytes(&bytes[i..], on_document);
                continue;
            }
            let Some(&b) = bytes.get(i) else { break };
            i += 1;
            match b {
                b' ' | b'\t' | b'\r' | b'\n' => {}
                b',' if self.in_array => {}
                b']' if self.in_array => {
                    self.in_array = false;
                    self.complete = true;
                }
                b'[' if !self.in_array && !self.seen_array && !self.complete => {
                    self.in_array = true;
                    self.seen_array = true;
                }
                b'{' | b'[' => {
                    self.in_value = true;
                    self.depth = 1;
                    self.skipping = false;
                    self.buf.clear();
                    self.buf.push(b);
                    if !self.in_array {
                        self.complete = false;
                    }
                }
                // A scalar element carries nothing to read; anything else
                // at the top is not a JSON document.
                _ if self.in_array => {}
                _ => {
                    self.not_json = true;
                    self.buf = Vec::new();
                }
            }
        }
    }

    /// Consumes bytes of the open document up to its end; returns how many.
    fn value_bytes(&mut self, bytes: &[u8], on_document: &mut dyn FnMut(&[u8])) -> usize {
        let mut end = None;
        for (at, &b) in bytes.iter().enumerate() {
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth = self.depth.saturating_add(1),
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        end = Some(at + 1);
                        break;
                    }
                }
                _ => {}
            }
        }
        let used = end.unwrap_or(bytes.len());
        let piece = bytes.get(..used).unwrap_or(bytes);
        if !self.skipping {
            let needed = self.buf.len() + piece.len();
            if needed > self.cap {
                self.skipping = true;
                self.buf = Vec::new();
            } else {
                if needed > self.buf.capacity() {
                    // Doubling as `Vec` does, but never past the cap.
                    let target = needed.max(self.buf.capacity() * 2).min(self.cap);
                    self.buf.reserve_exact(target - self.buf.len());
                }
                self.buf.extend_from_slice(piece);
            }
        }
        if end.is_some() {
            self.in_value = false;
            if !self.skipping {
                on_document(&self.buf);
            }
            self.buf.clear();
            self.skipping = false;
            if !self.in_array {
                self.complete = true;
            }
        }
        used
    }
}
