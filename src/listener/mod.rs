//! The one HTTP/1.1 server behind both of the daemon's listeners (the
//! metrics endpoint and the webhook receiver), hardened for clients that
//! do not play fair. axum's own `serve` has no timeout and no cap, and a
//! review showed what that costs: idle connections taking every file
//! descriptor, unfinished headers and bodies taking hundreds of MB.
//!
//! What a client may hold, each bound counted when it bites
//! ([`ListenerStats`], exported as `ciosync_listener_*`):
//!
//! - **Header timeout**: a connection has `header_timeout` from its first
//!   byte of a request (or from connecting) to finish the request's headers.
//! - **Idle timeout**: a kept-alive connection that sends nothing for
//!   `idle_timeout` after an answer is closed.
//! - **Request timeout**: a request being served (its body read, its answer
//!   written) for longer than [`REQUEST_TIMEOUT`] loses its connection.
//! - **Header size**: at most [`MAX_HEADER_BYTES`] of request line and
//!   headers are buffered per connection; more is answered 431.
//! - **Connection cap**: at most `max_connections` are open. When a new
//!   client arrives at the cap, the *oldest connection that has no request
//!   in progress* (still sending its headers, or idle) is closed to make
//!   room ("shed"); only when every connection is serving a request is the
//!   newcomer refused (503, closed). A request whose handler reads a body
//!   it cannot trust yet ([`Connection::untrusted`]) counts as without a
//!   request, so slow unsigned bodies cannot hold the slots either. Why shed rather than queue: queueing
//!   (the previous design) let a few hundred sockets that never finish
//!   their headers starve every real client for a whole header timeout.
//!   Shedding the oldest unfinished one means an attacker must keep
//!   opening connections faster than real clients send their headers (a
//!   few milliseconds on a LAN or behind an ingress) to keep them out, and
//!   a real client, once its headers are in, is never shed.
//! - **Buffered bytes**: bodies are read through a [`budget::BodyBudget`]
//!   shared by every connection of the listener, so many slow bodies
//!   together cannot hold more than its limit; past it a request is
//!   answered 503 (Customer.io retries).
//!
//! Memory a listener can hold at worst is therefore about
//! `max_connections ×` [`CONNECTION_MEMORY_BYTES`] plus the body budget.

pub mod budget;
mod connection;
mod slots;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Most bytes of request line and headers buffered per connection (hyper's
/// read buffer); Customer.io's and Prometheus' requests need under 2 KiB.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Memory one open connection may hold besides its body, at most (an
/// estimate with room: hyper's read buffer, capped at [`MAX_HEADER_BYTES`],
/// its write buffer, the task and the socket's state). Memory limits in
/// `deploy/` add `max_connections ×` this for each listener.
pub const CONNECTION_MEMORY_BYTES: usize = 32 * 1024;

/// Longest a request may be in progress (its body read, its answer
/// written); a client that reads its answer too slowly is cut off.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// What a client may hold of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Time to send a request's headers, from connecting or from the
    /// request's first byte.
    pub header_timeout: Duration,
    /// Time a kept-alive connection may stay silent after an answer.
    pub idle_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
}

/// The connection a request arrived on, in the request's extensions. A
/// handler that reads a body it cannot trust yet (a webhook before its
/// signature is checked) says so, so that the connection may be shed
/// meanwhile like one still sending its headers: otherwise slow unsigned
/// bodies could hold every slot for the body timeout.
#[derive(Debug, Clone)]
pub struct Connection(Arc<slots::Slot>);

impl Connection {
    /// From now on the request may be shed at the cap.
    pub fn untrusted(&self) {
        self.0.enter(slots::Phase::Untrusted);
    }

    /// The request proved itself: it is no longer shed.
    pub fn trusted(&self) {
        self.0.enter(slots::Phase::Serving);
    }
}

/// Why the listener closed a connection itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Its headers were not complete within the header timeout.
    HeaderTimeout,
    /// Kept alive and silent for longer than the idle timeout.
    IdleTimeout,
    /// A request in progress for longer than [`REQUEST_TIMEOUT`].
    RequestTimeout,
    /// Closed at the connection cap to make room for a newer client.
    Shed,
    /// A new client refused: at the cap with every connection serving.
    Refused,
    /// Its headers were over [`MAX_HEADER_BYTES`] (answered 431).
    HeaderTooLarge,
}

impl Cut {
    /// Every reason, in the order the exporter lists them.
    pub const ALL: [Cut; 6] = [
        Self::HeaderTimeout,
        Self::IdleTimeout,
        Self::RequestTimeout,
        Self::Shed,
        Self::Refused,
        Self::HeaderTooLarge,
    ];

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HeaderTimeout => "header_timeout",
            Self::IdleTimeout => "idle_timeout",
            Self::RequestTimeout => "request_timeout",
            Self::Shed => "shed",
            Self::Refused => "refused",
            Self::HeaderTooLarge => "header_too_large",
        }
    }
}

/// One listener's counters and gauges (plain atomics; `telemetry` exports
/// them as `ciosync_listener_*{listener}`).
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Gauge: connections open now.
    pub open: AtomicU64,
    /// Connections closed by the listener, indexed like [`Cut::ALL`].
    cuts: [AtomicU64; Cut::ALL.len()],
    /// Gauge: bytes of request bodies buffered now.
    pub buffered_bytes: AtomicU64,
    /// Gauge: the highest `buffered_bytes` seen since start.
    pub buffered_peak_bytes: AtomicU64,
    /// Gauge: the body budget (0: bodies are not read on this listener).
    pub buffer_limit_bytes: AtomicU64,
    /// Requests answered 503 because the body budget was spent.
    pub budget_refusals: AtomicU64,
}

impl ListenerStats {
    /// Counts one connection closed for `cut`.
    pub fn cut(&self, cut: Cut) {
        let i = Cut::ALL.iter().position(|c| *c == cut).unwrap_or_default();
        self.cuts[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Connections closed for `cut` so far.
    pub fn cut_count(&self, cut: Cut) -> u64 {
        let i = Cut::ALL.iter().position(|c| *c == cut).unwrap_or_default();
        self.cuts[i].load(Ordering::Relaxed)
    }
}

/// Serves `app` on `listener` within `limits` until `stop` is cancelled;
/// then it accepts no more and lets requests in flight finish (each still
/// bound by its timeouts). `name` is the listener's, for the log.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    stats: Arc<ListenerStats>,
    stop: CancellationToken,
    name: &'static str,
) -> std::io::Result<()> {
    let slots = slots::Slots::new(limits.max_connections, stats.clone());
    let mut connections = JoinSet::new();
    let mut pressure = Pressure::default();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // A client gone before it was accepted: nothing to see.
                Err(error) if matches!(
                    error.kind(),
                    std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset
                ) => continue,
                Err(error) => {
                    // Out of file descriptors, most likely (max_connections
                    // above the process's limit): say so, and do not spin.
                    tracing::error!(%error, listener = name, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        let shed_before = stats.cut_count(Cut::Shed);
        let admitted = slots.admit();
        if admitted.is_none() || stats.cut_count(Cut::Shed) > shed_before {
            pressure.warn(name, limits.max_connections, admitted.is_none());
        }
        let Some(held) = admitted else {
            stats.cut(Cut::Refused);
            refuse(stream);
            continue;
        };
        let (app, stats, stop) = (app.clone(), stats.clone(), stop.clone());
        connections.spawn(connection::run(stream, app, held, limits, stats, stop));
        // Forget connections that ended.
        while connections.try_join_next().is_some() {}
    }
    // New clients are refused at once rather than queued behind the drain.
    drop(listener);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Says in the log, at most once a minute, that the listener is at its
/// cap (the metrics count every time).
#[derive(Default)]
struct Pressure {
    last: Option<tokio::time::Instant>,
}

impl Pressure {
    fn warn(&mut self, name: &str, cap: usize, refused: bool) {
        let now = tokio::time::Instant::now();
        if self.last.is_some_and(|last| now < last + Duration::from_secs(60)) {
            return;
        }
        self.last = Some(now);
        if refused {
            tracing::warn!(
                listener = name,
                max_connections = cap,
                "listener at its connection cap with every connection serving: refusing new ones"
            );
        } else {
            tracing::warn!(
                listener = name,
                max_connections = cap,
                "listener at its connection cap: closing the oldest idle or unfinished connection \
                 for each new one (see ciosync_listener_connections_cut_total)"
            );
        }
    }
}

/// Answers 503 to a client that found every connection serving, without
/// waiting for it (what does not fit in the socket's buffer is dropped).
fn refuse(stream: TcpStream) {
    const ANSWER: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\
        Content-Length: 5\r\nRetry-After: 1\r\n\r\nbusy\n";
    let _ = stream.try_write(ANSWER);
}
