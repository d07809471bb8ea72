//! A total deadline for each HTTP/1 request head inside an intercepted
//! tunnel. pingora reads those heads itself with a timeout per read only, so
//! a client trickling one byte just under it keeps a connection (and its
//! worker task) forever. The front end wraps the TLS stream it hands to
//! pingora in [`ClockedStream`]; the clock starts at the first byte that
//! arrives while no request is in progress, the proxy stops it once the head
//! is parsed (`early_request_filter`) and rearms it when the request is over
//! (`logging`). Past the deadline reads fail, and the 408 is written when
//! pingora closes the connection.
//!
//! HTTP/2 heads are HEADERS frames, which pingora's h2 server reads with no
//! deadline at all. There the wrapper follows the frame layer itself
//! ([`H2Heads`]) and runs a clock of its own, from the first byte of a
//! header block (or of the preface, or of a frame header) until the block
//! is whole; past the deadline the connection's reads fail and it closes.
//!
//! The same wrapper joins a response head to the body that follows it:
//! pingora writes the head, then each body chunk, and flushes after the
//! chunk. Written as they come, head and first chunk are two TLS records, and
//! two socket writes once the chunk outgrows the 1460-byte buffer under TLS.
//! Held until the next write or flush, they go to rustls as one write: one
//! record, one socket write.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::{SslDigest, TlsRef};
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::reply::ProxyError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Between requests: nothing of a head has arrived yet.
    Idle,
    /// A head has started arriving and must be complete by `deadline`.
    Head { deadline: Instant },
    /// The head was parsed; body and answer have timeouts of their own.
    Request,
}

/// The state of one connection's head deadline. Pure: callers pass the time.
#[derive(Debug)]
pub struct HeadClock {
    limit: Duration,
    phase: Mutex<Phase>,
}

impl HeadClock {
    pub fn new(limit: Duration) -> HeadClock {
        HeadClock {
            limit,
            phase: Mutex::new(Phase::Idle),
        }
    }

    pub fn limit(&self) -> Duration {
        self.limit
    }

    fn phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        // The state is a plain value: a panic elsewhere cannot leave it torn.
        self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes were read at `now`: between requests they start a head.
    pub fn bytes_arrived(&self, now: Instant) {
        let mut phase = self.phase();
        if *phase == Phase::Idle {
            *phase = Phase::Head {
                deadline: now + self.limit,
            };
        }
    }

    /// The head was parsed in time.
    pub fn head_complete(&self) {
        *self.phase() = Phase::Request;
    }

    /// The request is answered; the next bytes start the next head. An
    /// unread body pingora drains before reusing the connection counts
    /// towards the next head: both must arrive within the limit.
    pub fn request_done(&self) {
        *self.phase() = Phase::Idle;
    }

    /// When the head being read must be complete, if one is being read.
    pub fn deadline(&self) -> Option<Instant> {
        match *self.phase() {
            Phase::Head { deadline } => Some(deadline),
            Phase::Idle | Phase::Request => None,
        }
    }

    pub fn expired(&self, now: Instant) -> bool {
        self.deadline().is_some_and(|d| now >= d)
    }
}

/// Where the reader of an HTTP/2 connection is with regard to request heads,
/// from the frame layer only (RFC 9113 4.1, 6.2, 6.10): no HPACK. Pure: it
/// is fed the bytes as they are read.
#[derive(Debug)]
pub struct H2Heads {
    /// Bytes of the client preface still to come.
    preface_left: usize,
    /// The frame header being read, and how much of it has come.
    header: [u8; 9],
    header_len: usize,
    /// Payload bytes of the current frame still to come.
    payload_left: usize,
    /// Inside a header block: from a HEADERS (or PUSH_PROMISE) frame until
    /// the end of the frame that carries END_HEADERS.
    in_block: bool,
    /// The current frame ends its header block.
    ends_block: bool,
}

/// What a read did to the heads of an HTTP/2 connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct H2Progress {
    /// A head (preface, frame header or header block) was completed.
    pub completed: bool,
    /// A head is still incomplete after the bytes read.
    pub pending: bool,
}

const H2_PREFACE_LEN: usize = 24;
const H2_HEADERS: u8 = 0x1;
const H2_PUSH_PROMISE: u8 = 0x5;
const H2_CONTINUATION: u8 = 0x9;
const H2_END_HEADERS: u8 = 0x4;

impl Default for H2Heads {
    fn default() -> Self {
        H2Heads::new()
    }
}

impl H2Heads {
    pub fn new() -> H2Heads {
        H2Heads {
            preface_left: H2_PREFACE_LEN,
            header: [0; 9],
            header_len: 0,
            payload_left: 0,
            in_block: false,
            ends_block: false,
        }
    }

    fn pending(&self) -> bool {
        self.preface_left > 0 || self.header_len > 0 || self.in_block
    }

    /// Takes the bytes just read.
    pub fn feed(&mut self, mut bytes: &[u8]) -> H2Progress {
        let mut completed = false;
        while !bytes.is_empty() {
            if self.preface_left > 0 {
                let n = self.preface_left.min(bytes.len());
                self.preface_left -= n;
                bytes = &bytes[n..];
                completed |= self.preface_left == 0;
                continue;
            }
            if self.payload_left > 0 {
                let n = self.payload_left.min(bytes.len());
                self.payload_left -= n;
                bytes = &bytes[n..];
                if self.payload_left == 0 {
                    completed |= self.end_of_frame();
                }
                continue;
            }
            let n = (self.header.len() - self.header_len).min(bytes.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
            self.header_len += n;
            bytes = &bytes[n..];
            if self.header_len < self.header.len() {
                break;
            }
            self.header_len = 0;
            let [l0, l1, l2, kind, flags, ..] = self.header;
            self.payload_left = u32::from_be_bytes([0, l0, l1, l2]) as usize;
            let ends = flags & H2_END_HEADERS != 0;
            match kind {
                H2_HEADERS | H2_PUSH_PROMISE => {
                    self.in_block = true;
                    self.ends_block = ends;
                }
                H2_CONTINUATION => self.ends_block = ends,
                // Other frames inside a block are the h2 server's protocol
                // error to find; they neither start nor end a head here.
                _ => self.ends_block = false,
            }
            completed |= !self.in_block;
            if self.payload_left == 0 {
                completed |= self.end_of_frame();
            }
        }
        H2Progress {
            completed,
            pending: self.pending(),
        }
    }

    /// The current frame's payload is in; whether that ended a header block.
    fn end_of_frame(&mut self) -> bool {
        if self.in_block && self.ends_block {
            self.in_block = false;
            self.ends_block = false;
            return true;
        }
        false
    }
}

/// A stream that fails its reads once the current head is late. The 408 is
/// written on shutdown: pingora shuts a connection down after a failed head
/// read, and a reader cannot wait for a write to finish.
pub struct ClockedStream<S> {
    inner: S,
    clock: Arc<HeadClock>,
    /// Wakes a read waiting on a silent client at the deadline; made the
    /// first time a head is read across a wait.
    timer: Option<Pin<Box<Sleep>>>,
    /// The 408 still to write, set when the deadline passed.
    reply: Option<Bytes>,
    timed_out: bool,
    /// A byte read by [`Peek::try_peek`], handed out by the next read.
    peeked: Option<u8>,
    /// A small write (a response head) held back to go out with the next
    /// write, or at the next flush: see [`HOLD_MAX`].
    held: Vec<u8>,
    /// For HTTP/2: the frame layer, which starts and stops the clock. No
    /// 408 is written and no write is held back there.
    h2: Option<H2Heads>,
}

/// Largest write held back to join the next one. Response heads are far
/// smaller; a larger write goes out as it comes.
const HOLD_MAX: usize = 8 * 1024;

/// Slices passed to one vectored write: the held bytes and what is written.
const JOINED_SLICES: usize = 8;

impl<S> ClockedStream<S> {
    pub fn new(inner: S, clock: Arc<HeadClock>) -> ClockedStream<S> {
        ClockedStream {
            inner,
            clock,
            timer: None,
            reply: None,
            timed_out: false,
            peeked: None,
            held: Vec::new(),
            h2: None,
        }
    }

    /// For an HTTP/2 connection: `clock` is this stream's alone, started
    /// and stopped by the header blocks it reads (the proxy's hooks time
    /// HTTP/1 heads only).
    pub fn for_http2(inner: S, clock: Arc<HeadClock>) -> ClockedStream<S> {
        ClockedStream {
            h2: Some(H2Heads::new()),
            ..ClockedStream::new(inner, clock)
        }
    }

    /// Bytes were read: for HTTP/2 the frame layer moves the clock, for
    /// HTTP/1 they start a head between requests.
    fn arrived(&mut self, bytes: &[u8]) {
        let now = Instant::now();
        let Some(h2) = self.h2.as_mut() else {
            self.clock.bytes_arrived(now);
            return;
        };
        let progress = h2.feed(bytes);
        if progress.completed || !progress.pending {
            self.clock.request_done();
        }
        if progress.pending {
            self.clock.bytes_arrived(now);
        }
    }

    fn timeout_error(&mut self) -> io::Error {
        let limit = self.clock.limit();
        if !self.timed_out {
            self.timed_out = true;
            // HTTP/2 has no place for an HTTP/1 answer: the connection closes.
            if self.h2.is_none() {
                self.reply = Some(Bytes::from(
                    ProxyError::ClientTimeout(limit).to_h1_response(),
                ));
            }
        }
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("request head not complete within {limit:?}"),
        )
    }

    /// True once `deadline` has passed; otherwise the task is woken then.
    fn wait_for(&mut self, deadline: Instant, cx: &mut Context<'_>) -> bool {
        let deadline = tokio::time::Instant::from_std(deadline);
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx).is_ready()
    }
}

impl<S: fmt::Debug> fmt::Debug for ClockedStream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClockedStream")
            .field("inner", &self.inner)
            .field("clock", &self.clock)
            .field("timed_out", &self.timed_out)
            .finish()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ClockedStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let late = this
            .clock
            .deadline()
            .is_some_and(|deadline| Instant::now() >= deadline);
        if this.timed_out || late {
            return Poll::Ready(Err(this.timeout_error()));
        }
        let before = buf.filled().len();
        if let Some(byte) = this.peeked.take() {
            if buf.remaining() == 0 {
                this.peeked = Some(byte);
                return Poll::Ready(Ok(()));
            }
            buf.put_slice(&[byte]);
            // What else has arrived is read in the same call; nothing more
            // is not worth a wait, the peeked byte is returned alone.
            let result = match Pin::new(&mut this.inner).poll_read(cx, buf) {
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) | Poll::Pending => Poll::Ready(Ok(())),
            };
            // The peeked byte went through `arrived` when it was read;
            // the frame layer takes what came with it.
            if this.h2.is_some() {
                let after_peeked = buf.filled().get(before + 1..).unwrap_or_default();
                if !after_peeked.is_empty() {
                    this.arrived(after_peeked);
                }
            }
            return result;
        }
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.arrived(&buf.filled()[before..]);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.clock.deadline() {
                Some(deadline) if this.wait_for(deadline, cx) => {
                    Poll::Ready(Err(this.timeout_error()))
                }
                _ => Poll::Pending,
            },
        }
    }
}

impl<S: AsyncWrite + Unpin> ClockedStream<S> {
    /// Bytes `n` of a write that also carried the held ones were accepted:
    /// how many of them were the new write's.
    fn consume_held(&mut self, n: usize) -> usize {
        let held = self.held.len();
        if n < held {
            self.held.drain(..n);
            return 0;
        }
        // Freed, not kept: an idle kept-alive connection holds nothing for
        // it (kept, it cost ~0.5 KiB per idle connection; a head's
        // allocation per response costs next to nothing).
        self.held = Vec::new();
        n - held
    }

    /// Writes the held bytes and `bufs` in one write to the stream beneath.
    /// Ready with how many of `bufs`' bytes went, once all held ones did.
    fn poll_write_joined(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        while !self.held.is_empty() {
            let mut slices = [io::IoSlice::new(&[]); JOINED_SLICES];
            slices[0] = io::IoSlice::new(&self.held);
            let mut count = 1;
            for buf in bufs.iter().filter(|b| !b.is_empty()) {
                if count == JOINED_SLICES {
                    break;
                }
                slices[count] = io::IoSlice::new(buf);
                count += 1;
            }
            let n = match Pin::new(&mut self.inner).poll_write_vectored(cx, &slices[..count]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => n,
                other => return other,
            };
            let ours = self.consume_held(n);
            if ours > 0 {
                return Poll::Ready(Ok(ours));
            }
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    /// Writes out what is held.
    fn poll_release(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.held.is_empty() {
            let n = match Pin::new(&mut self.inner).poll_write(cx, &self.held) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            self.consume_held(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ClockedStream<S> {
    /// Holds a small write while nothing is held: what a writer flushes
    /// after is on its way at the flush, as with the buffered stream beneath.
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.h2.is_none() && this.held.is_empty() && buf.len() <= HOLD_MAX {
            this.held.extend_from_slice(buf);
            return Poll::Ready(Ok(buf.len()));
        }
        this.poll_write_joined(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total == 0 {
            return Poll::Ready(Ok(0));
        }
        if this.h2.is_none() && this.held.is_empty() && total <= HOLD_MAX {
            for buf in bufs {
                this.held.extend_from_slice(buf);
            }
            return Poll::Ready(Ok(total));
        }
        this.poll_write_joined(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_release(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_release(cx))?;
        // Best effort: a client that does not read its 408 still gets closed.
        while let Some(reply) = this.reply.as_mut() {
            match Pin::new(&mut this.inner).poll_write(cx, reply) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(n)) if n > 0 && n < reply.len() => {
                    let _ = reply.split_to(n);
                }
                Poll::Ready(_) => this.reply = None,
            }
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl<S: AsyncRead + AsyncWrite + Unpin + Send> Shutdown for ClockedStream<S> {
    async fn shutdown(&mut self) {
        let _ = tokio::io::AsyncWriteExt::shutdown(self).await;
    }
}

impl<S: UniqueID> UniqueID for ClockedStream<S> {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl<S: Ssl> Ssl for ClockedStream<S> {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl<S: GetTimingDigest> GetTimingDigest for ClockedStream<S> {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl<S: GetProxyDigest> GetProxyDigest for ClockedStream<S> {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl<S: GetSocketDigest> GetSocketDigest for ClockedStream<S> {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

/// Waits for the first byte of the next request without taking it, so that
/// the front end can wait out a kept-alive connection's silence in a small
/// future and build pingora's (large) request future only once a request
/// arrives. `Ok(false)`: the client closed the connection.
#[async_trait]
impl<S: AsyncRead + Unpin + Send> Peek for ClockedStream<S> {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        if self.peeked.is_none() {
            // Read through `poll_read`: the byte starts the head's clock.
            let mut byte = [0u8; 1];
            if tokio::io::AsyncReadExt::read(self, &mut byte).await? == 0 {
                return Ok(false);
            }
            self.peeked = Some(byte[0]);
        }
        if let (Some(slot), Some(byte)) = (buf.first_mut(), self.peeked) {
            *slot = byte;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_is_timed_from_its_first_byte_until_parsed() {
        let clock = HeadClock::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(clock.deadline(), None, "an idle connection has no deadline");
        clock.bytes_arrived(t0);
        let deadline = t0 + Duration::from_secs(10);
        assert_eq!(clock.deadline(), Some(deadline));
        // Later bytes of the same head do not extend it.
        clock.bytes_arrived(t0 + Duration::from_secs(9));
        assert_eq!(clock.deadline(), Some(deadline));
        assert!(!clock.expired(t0 + Duration::from_secs(9)));
        assert!(clock.expired(deadline));

        clock.head_complete();
        assert_eq!(clock.deadline(), None);
        // Body bytes are read under the body's own timeout.
        clock.bytes_arrived(t0 + Duration::from_secs(30));
        assert!(!clock.expired(t0 + Duration::from_secs(60)));

        // The next head on the kept-alive connection is timed afresh.
        clock.request_done();
        assert_eq!(clock.deadline(), None);
        let t1 = t0 + Duration::from_secs(100);
        clock.bytes_arrived(t1);
        assert_eq!(clock.deadline(), Some(t1 + Duration::from_secs(10)));
        assert!(clock.expired(t1 + Duration::from_secs(10)));
    }

    #[tokio::test]
    async fn a_peeked_byte_is_read_first_and_starts_the_clock() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = tokio::io::duplex(4096);
        let clock = Arc::new(HeadClock::new(Duration::from_secs(10)));
        let mut stream = ClockedStream::new(server, clock.clone());
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let mut peeked = [0u8; 4];
        assert!(stream.try_peek(&mut peeked).await.unwrap());
        assert_eq!(peeked[0], b'G');
        assert!(
            clock.deadline().is_some(),
            "the peeked byte starts the head"
        );
        // A second peek sees the same byte; nothing is consumed.
        assert!(stream.try_peek(&mut peeked).await.unwrap());
        assert_eq!(peeked[0], b'G');
        let mut buf = [0u8; 64];
        let n = stream.read(&mut buf).await.unwrap();
        assert_eq!(
            &buf[..n],
            b"GET / HTTP/1.1\r\n",
            "the byte, then what had arrived"
        );
        // With nothing else there, the peeked byte comes alone.
        client.write_all(b"X").await.unwrap();
        assert!(stream.try_peek(&mut peeked).await.unwrap());
        assert_eq!(stream.read(&mut buf).await.unwrap(), 1);
        assert_eq!(buf[0], b'X');
        drop(client);
        assert!(!stream.try_peek(&mut peeked).await.unwrap(), "closed");
    }

    #[tokio::test]
    async fn a_peek_waits_for_the_first_byte() {
        use tokio::io::AsyncWriteExt;
        let (mut client, server) = tokio::io::duplex(4096);
        let clock = Arc::new(HeadClock::new(Duration::from_secs(10)));
        let mut stream = ClockedStream::new(server, clock.clone());
        let mut peeked = [0u8; 1];
        let silent =
            tokio::time::timeout(Duration::from_millis(100), stream.try_peek(&mut peeked)).await;
        assert!(silent.is_err(), "no byte yet: the peek waits");
        assert_eq!(clock.deadline(), None, "waiting is not a head");
        client.write_all(b"P").await.unwrap();
        assert!(stream.try_peek(&mut peeked).await.unwrap());
        assert_eq!(peeked[0], b'P');
    }

    /// Records each write that reaches it as one entry; accepts at most
    /// `limit` bytes per write.
    #[derive(Default)]
    struct Writes {
        writes: Vec<Vec<u8>>,
        flushes: usize,
        limit: Option<usize>,
    }

    impl AsyncWrite for Writes {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
        }
        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let mut write: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            write.truncate(self.limit.unwrap_or(usize::MAX));
            let n = write.len();
            self.writes.push(write);
            Poll::Ready(Ok(n))
        }
        fn is_write_vectored(&self) -> bool {
            true
        }
        fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.flushes += 1;
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn clocked(limit: Option<usize>) -> ClockedStream<Writes> {
        let clock = Arc::new(HeadClock::new(Duration::from_secs(10)));
        ClockedStream::new(
            Writes {
                limit,
                ..Writes::default()
            },
            clock,
        )
    }

    const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 20000\r\n\r\n";

    #[tokio::test]
    async fn a_head_goes_out_with_the_first_body_chunk_in_one_write() {
        use tokio::io::AsyncWriteExt;
        let body = vec![b'x'; 20_000];
        let mut stream = clocked(None);
        stream.write_all(HEAD).await.unwrap();
        assert!(stream.inner.writes.is_empty(), "the head waits");
        stream.write_all(&body).await.unwrap();
        stream.flush().await.unwrap();
        assert_eq!(stream.inner.writes, vec![[HEAD, &body].concat()]);
        assert_eq!(stream.inner.flushes, 1);

        // Chunked: the size line, the data and its CRLF come as one
        // vectored write; all of it joins the head.
        let mut chunked = clocked(None);
        chunked.write_all(HEAD).await.unwrap();
        let mut chunk =
            bytes::Buf::chain(bytes::Buf::chain(&b"4E20\r\n"[..], &body[..]), &b"\r\n"[..]);
        chunked.write_all_buf(&mut chunk).await.unwrap();
        chunked.flush().await.unwrap();
        assert_eq!(
            chunked.inner.writes,
            vec![[HEAD, b"4E20\r\n", &body, b"\r\n"].concat()]
        );
    }

    #[tokio::test]
    async fn a_flush_or_shutdown_sends_what_is_held_and_large_writes_pass() {
        use tokio::io::AsyncWriteExt;
        // A head without a body (pingora flushes it).
        let mut stream = clocked(None);
        stream.write_all(HEAD).await.unwrap();
        stream.flush().await.unwrap();
        assert_eq!(stream.inner.writes, vec![HEAD.to_vec()]);
        // Later bytes are not held behind earlier ones: a second small
        // write goes out at once with the first.
        stream.write_all(b"a").await.unwrap();
        stream.write_all(b"b").await.unwrap();
        assert_eq!(stream.inner.writes.last().unwrap(), b"ab");
        // A large write with nothing held is not copied.
        let large = vec![b'y'; HOLD_MAX + 1];
        stream.write_all(&large).await.unwrap();
        assert_eq!(stream.inner.writes.last().unwrap(), &large);
        stream.write_all(b"tail").await.unwrap();
        stream.shutdown().await.unwrap();
        assert_eq!(stream.inner.writes.last().unwrap(), b"tail");
        assert!(stream.held.is_empty());
    }

    #[tokio::test]
    async fn short_writes_beneath_lose_and_reorder_nothing() {
        use tokio::io::AsyncWriteExt;
        let body: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        for limit in [1, 7, HEAD.len() - 1, HEAD.len(), HEAD.len() + 1, 4096] {
            let mut stream = clocked(Some(limit));
            stream.write_all(HEAD).await.unwrap();
            stream.write_all(&body).await.unwrap();
            stream.write_all(b"end").await.unwrap();
            stream.flush().await.unwrap();
            let sent = stream.inner.writes.concat();
            assert_eq!(sent, [HEAD, &body, b"end"].concat(), "limit {limit}");
            assert!(stream.inner.writes.iter().all(|w| !w.is_empty()));
        }
    }

    fn frame(kind: u8, flags: u8, payload_len: usize) -> Vec<u8> {
        let mut out = (payload_len as u32).to_be_bytes()[1..].to_vec();
        out.extend_from_slice(&[kind, flags, 0, 0, 0, 1]);
        out.extend(std::iter::repeat_n(b'x', payload_len));
        out
    }

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    /// Each case: the reads, and after each whether a head is pending.
    #[test]
    fn http2_heads_are_followed_through_the_frame_layer() {
        let settings = frame(0x4, 0, 6);
        let headers_whole = frame(H2_HEADERS, H2_END_HEADERS | 0x1, 20);
        let headers_open = frame(H2_HEADERS, 0, 20);
        let continuation_end = frame(H2_CONTINUATION, H2_END_HEADERS, 10);
        let continuation_more = frame(H2_CONTINUATION, 0, 10);
        let data = frame(0x0, 0x1, 40);
        let empty_block_end = frame(H2_CONTINUATION, H2_END_HEADERS, 0);
        type Reads = Vec<(Vec<u8>, bool)>;
        let cases: Vec<(&str, Reads)> = vec![
            (
                "preface in parts",
                vec![
                    (PREFACE[..5].to_vec(), true),
                    (PREFACE[5..].to_vec(), false),
                ],
            ),
            (
                "preface and settings",
                vec![([PREFACE, &settings].concat(), false)],
            ),
            (
                "a frame header in parts",
                vec![
                    (PREFACE.to_vec(), false),
                    (settings[..4].to_vec(), true),
                    (settings[4..].to_vec(), false),
                ],
            ),
            (
                "a whole HEADERS frame",
                vec![(PREFACE.to_vec(), false), (headers_whole.clone(), false)],
            ),
            (
                "a HEADERS frame trickled",
                vec![
                    (PREFACE.to_vec(), false),
                    (headers_whole[..12].to_vec(), true),
                    (headers_whole[12..28].to_vec(), true),
                    (headers_whole[28..].to_vec(), false),
                ],
            ),
            (
                "a block over CONTINUATIONs",
                vec![
                    (PREFACE.to_vec(), false),
                    (headers_open.clone(), true),
                    (continuation_more.clone(), true),
                    (continuation_end.clone(), false),
                ],
            ),
            (
                "an empty CONTINUATION ends a block",
                vec![
                    (PREFACE.to_vec(), false),
                    (headers_open.clone(), true),
                    (empty_block_end.clone(), false),
                ],
            ),
            // A DATA payload in parts is a body, not a head.
            (
                "DATA in parts",
                vec![
                    (PREFACE.to_vec(), false),
                    (data[..20].to_vec(), false),
                    (data[20..].to_vec(), false),
                ],
            ),
            (
                "head, body and the next head in one read",
                vec![
                    (
                        [PREFACE, &headers_whole, &data, &headers_open].concat(),
                        true,
                    ),
                    (continuation_end.clone(), false),
                ],
            ),
        ];
        for (case, reads) in cases {
            let mut heads = H2Heads::new();
            for (i, (bytes, pending)) in reads.iter().enumerate() {
                assert_eq!(heads.feed(bytes).pending, *pending, "{case}: read {i}");
            }
        }
        // A read that ends one head and starts the next completes one.
        let mut heads = H2Heads::new();
        heads.feed(PREFACE);
        let both = [&headers_whole[..], &headers_open[..5]].concat();
        assert_eq!(
            heads.feed(&both),
            H2Progress {
                completed: true,
                pending: true
            }
        );
    }

    #[tokio::test]
    async fn a_late_http2_head_fails_the_read_without_an_http1_answer() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client, server) = tokio::io::duplex(4096);
        let clock = Arc::new(HeadClock::new(Duration::from_millis(200)));
        let mut stream = ClockedStream::for_http2(server, clock.clone());
        let (mut client_read, mut client_write) = tokio::io::split(client);
        let headers = frame(H2_HEADERS, H2_END_HEADERS, 20);
        client_write.write_all(PREFACE).await.unwrap();
        client_write.write_all(&headers).await.unwrap();
        let mut buf = [0u8; 256];
        let mut got = 0;
        while got < PREFACE.len() + headers.len() {
            got += stream.read(&mut buf).await.unwrap();
        }
        assert_eq!(clock.deadline(), None, "whole heads leave no deadline");
        // Idle between heads for longer than the limit: no deadline.
        tokio::time::sleep(Duration::from_millis(300)).await;
        client_write.write_all(&headers[..3]).await.unwrap();
        assert_eq!(stream.read(&mut buf).await.unwrap(), 3);
        let started = Instant::now();
        let err = stream.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(2));
        // Writes go straight through, and no HTTP/1 408 is written.
        stream.write_all(b"frame").await.unwrap();
        AsyncWriteExt::shutdown(&mut stream).await.unwrap();
        let mut answer = Vec::new();
        client_read.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"frame");
    }

    #[tokio::test]
    async fn a_late_head_fails_the_read_and_answers_408_on_shutdown() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client, server) = tokio::io::duplex(4096);
        let clock = Arc::new(HeadClock::new(Duration::from_millis(200)));
        let mut stream = ClockedStream::new(server, clock.clone());
        let (mut client_read, mut client_write) = tokio::io::split(client);
        client_write.write_all(b"GET / HT").await.unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(stream.read(&mut buf).await.unwrap(), 8);
        let started = Instant::now();
        // The client goes silent: the pending read ends at the deadline.
        let err = stream.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(stream.read(&mut buf).await.is_err(), "stays failed");
        AsyncWriteExt::shutdown(&mut stream).await.unwrap();
        let mut answer = String::new();
        client_read.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
        assert!(answer.contains("connection: close"), "{answer}");
        assert!(answer.contains("client_timeout"), "{answer}");
    }
}
