//! Idle upstream HTTP/1 connections, parked for the next call to the same
//! upstream.
//!
//! pingora's connection pool watches each idle connection with a task of its
//! own: every release spawns one, and every reuse wakes it and waits for it
//! to let go of the connection. That is a task hand-off on the path of every
//! call. Here an idle connection is only parked. It is checked when taken,
//! since the upstream may have closed it meanwhile, and a sweep drops the
//! expired and the closed ones so a quiet sidecar does not hold dead sockets.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use std::future::Future;
use std::task::{Context, Waker};

use pingora_core::protocols::Stream;
use tokio::io::AsyncReadExt;

/// How often idle connections are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

pub struct UpstreamPool {
    idle: Mutex<Parked>,
    capacity: usize,
    idle_timeout: Duration,
    sweeping: AtomicBool,
}

#[derive(Default)]
struct Parked {
    /// By upstream (pingora's peer reuse hash), most recently parked last.
    by_upstream: HashMap<u64, Vec<(Stream, Instant)>>,
    count: usize,
}

impl UpstreamPool {
    /// Holds at most `capacity` idle connections, each for at most
    /// `idle_timeout`.
    pub fn new(capacity: usize, idle_timeout: Duration) -> UpstreamPool {
        UpstreamPool {
            idle: Mutex::new(Parked::default()),
            capacity,
            idle_timeout,
            sweeping: AtomicBool::new(false),
        }
    }

    /// The most recently parked live connection to `upstream`, if any:
    /// reusing the warmest keeps the others idle long enough to expire.
    pub fn take(&self, upstream: u64) -> Option<Stream> {
        loop {
            let (mut stream, since) = {
                let mut idle = self.lock();
                let list = idle.by_upstream.get_mut(&upstream)?;
                let parked = list.pop();
                if list.is_empty() {
                    idle.by_upstream.remove(&upstream);
                }
                let parked = parked?;
                idle.count -= 1;
                parked
            };
            if since.elapsed() < self.idle_timeout && still_open(&mut stream) {
                return Some(stream);
            }
        }
    }

    /// Keeps a connection whose exchange ended cleanly for the next call.
    /// A connection the upstream closed, or one over capacity, is dropped.
    pub fn park(&self, upstream: u64, mut stream: Stream) {
        if self.idle_timeout.is_zero() || !still_open(&mut stream) {
            return;
        }
        let mut idle = self.lock();
        if idle.count >= self.capacity {
            drop(idle);
            return;
        }
        idle.count += 1;
        idle.by_upstream
            .entry(upstream)
            .or_default()
            .push((stream, Instant::now()));
    }

    /// Drops expired and closed connections.
    pub fn sweep(&self) {
        let mut dropped = Vec::new();
        let mut idle = self.lock();
        let Parked { by_upstream, count } = &mut *idle;
        by_upstream.retain(|_, list| {
            let mut kept = Vec::with_capacity(list.len());
            for (mut stream, since) in list.drain(..) {
                if since.elapsed() < self.idle_timeout && still_open(&mut stream) {
                    kept.push((stream, since));
                } else {
                    *count -= 1;
                    dropped.push(stream);
                }
            }
            *list = kept;
            !list.is_empty()
        });
        drop(idle);
        drop(dropped);
    }

    #[cfg(test)]
    pub fn idle_count(&self) -> usize {
        self.lock().count
    }

    /// Starts the periodic sweep once, on the runtime of the caller; it
    /// ends when the pool is dropped.
    pub fn sweep_periodically(self: &Arc<Self>) {
        if self.sweeping.swap(true, Ordering::Relaxed) {
            return;
        }
        let pool: Weak<UpstreamPool> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(SWEEP_EVERY).await;
                match pool.upgrade() {
                    Some(pool) => pool.sweep(),
                    None => return,
                }
            }
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Parked> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An idle connection must have nothing to read: end of stream means the
/// upstream closed it, and bytes it sent unasked mean the exchange state is
/// unknown. A read that would block is the one good answer.
fn still_open(stream: &mut Stream) -> bool {
    let mut byte = [0u8; 1];
    // Unconstrained: tokio's cooperative budget could otherwise answer
    // "would block" for a socket that has its end of stream waiting.
    let read = std::pin::pin!(tokio::task::unconstrained(stream.read(&mut byte)));
    read.poll(&mut Context::from_waker(Waker::noop()))
        .is_pending()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    /// A connected pair: the pool's side as a pingora stream, and the
    /// upstream's side.
    async fn pair() -> (Stream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let stream: Stream = Box::new(pingora_core::protocols::l4::stream::Stream::from(
            client.unwrap(),
        ));
        (stream, accepted.unwrap().0)
    }

    /// Takes `upstream`'s connection until the pool refuses it, parking back
    /// any it still hands out: what the upstream did reaches the socket, and
    /// tokio's view of it, a moment later. Whether the pool refused within
    /// five seconds.
    async fn refused_once_seen(pool: &UpstreamPool, upstream: u64) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Some(stream) = pool.take(upstream) {
            if Instant::now() >= deadline {
                return false;
            }
            pool.park(upstream, stream);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    #[tokio::test]
    async fn hands_back_the_warmest_connection_for_the_same_upstream_only() {
        let pool = UpstreamPool::new(8, Duration::from_secs(60));
        let (first, _keep1) = pair().await;
        let (second, _keep2) = pair().await;
        let second_id = second.id();
        pool.park(1, first);
        pool.park(1, second);
        assert_eq!(pool.idle_count(), 2);
        assert!(pool.take(2).is_none(), "another upstream's connection");
        assert_eq!(pool.take(1).map(|s| s.id()), Some(second_id));
        assert!(pool.take(1).is_some());
        assert!(pool.take(1).is_none());
        assert_eq!(pool.idle_count(), 0);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_is_never_handed_out() {
        let pool = UpstreamPool::new(8, Duration::from_secs(60));
        let (stream, upstream_side) = pair().await;
        pool.park(7, stream);
        drop(upstream_side);
        // The FIN arrives asynchronously; the check must see it once it has.
        assert!(refused_once_seen(&pool, 7).await);
        assert!(pool.take(7).is_none());
        assert_eq!(pool.idle_count(), 0);
    }

    #[tokio::test]
    async fn unasked_bytes_from_the_upstream_retire_a_connection() {
        let pool = UpstreamPool::new(8, Duration::from_secs(60));
        let (stream, mut upstream_side) = pair().await;
        pool.park(7, stream);
        upstream_side
            .write_all(b"HTTP/1.1 200 OK\r\n")
            .await
            .unwrap();
        assert!(refused_once_seen(&pool, 7).await);
        assert!(pool.take(7).is_none());
        drop(upstream_side);
    }

    #[tokio::test]
    async fn expired_connections_are_dropped_when_taken_or_swept() {
        let pool = UpstreamPool::new(8, Duration::from_millis(20));
        let (a, _keep_a) = pair().await;
        let (b, _keep_b) = pair().await;
        pool.park(1, a);
        pool.park(2, b);
        // Outliving the idle timeout is the test's subject.
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert!(pool.take(1).is_none());
        assert_eq!(pool.idle_count(), 1);
        pool.sweep();
        assert_eq!(pool.idle_count(), 0);
    }

    #[tokio::test]
    async fn sweep_keeps_live_connections_and_drops_closed_ones() {
        let pool = UpstreamPool::new(8, Duration::from_secs(60));
        let (live, _keep) = pair().await;
        let (closed, upstream_side) = pair().await;
        pool.park(1, live);
        pool.park(1, closed);
        drop(upstream_side);
        // The FIN reaches the socket a moment later: sweep until it has
        // been seen; the live connection must survive every sweep.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            pool.sweep();
            let idle = pool.idle_count();
            assert!(idle >= 1, "a sweep dropped the live connection");
            if idle == 1 {
                break;
            }
            assert!(Instant::now() < deadline, "the closed connection was kept");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(pool.take(1).is_some());
    }

    #[tokio::test]
    async fn holds_no_more_than_its_capacity() {
        let pool = UpstreamPool::new(2, Duration::from_secs(60));
        let mut upstream_sides = Vec::new();
        for _ in 0..4 {
            let (stream, side) = pair().await;
            upstream_sides.push(side);
            pool.park(1, stream);
        }
        assert_eq!(pool.idle_count(), 2);
        // A dropped one is closed, not leaked: its upstream side reads EOF.
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), upstream_sides[3].read(&mut byte))
            .await
            .expect("the connection over capacity was closed")
            .unwrap();
        assert_eq!(n, 0);
    }

    #[tokio::test]
    async fn no_idle_timeout_means_no_pooling() {
        let pool = UpstreamPool::new(8, Duration::ZERO);
        let (stream, _keep) = pair().await;
        pool.park(1, stream);
        assert_eq!(pool.idle_count(), 0);
    }
}
