//! The hand-off between the CONNECT front end and the request path: what an
//! intercepted tunnel's requests are bound to. Its own module, so that the
//! front end and the proxy both depend on it and not on each other.

use std::sync::Arc;

use crate::authority::Authority;
use crate::listener::head_clock::HeadClock;
use crate::upstream::resolve::Resolved;

/// What an intercepted tunnel's requests are bound to: the CONNECT authority
/// and the one address that was checked for it; and the clock bounding each
/// HTTP/1 request head, which the proxy's hooks start and stop.
#[derive(Debug, Clone)]
pub struct TunnelTarget {
    pub authority: Authority,
    pub resolved: Resolved,
    pub head_clock: Arc<HeadClock>,
}
