//! One connection: hyper's HTTP/1 state machine, watched. The listener
//! keeps the phase ([`Phase`]) itself rather than use hyper's header
//! timeout, which has one value for both a request's headers and the idle
//! time before them: a byte read moves an idle connection to `Headers`, a
//! request reaching the router moves it to `Serving` (`Untrusted` while
//! its handler reads a body it cannot verify yet), and the end of its
//! answer back to `Idle`.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::Response;
use axum::Router;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::slots::{Held, Phase, Slot};
use super::{Cut, Limits, ListenerStats, MAX_HEADER_BYTES};

/// Serves one connection until it ends, is cut off (a phase overran its
/// bound, or it was shed) or, after `stop`, it has no request in progress.
pub(super) async fn run(
    stream: TcpStream,
    app: Router,
    held: Held,
    limits: Limits,
    stats: Arc<ListenerStats>,
    stop: CancellationToken,
) {
    let slot = held.slot.clone();
    let io = TokioIo::new(Watched { stream, slot: slot.clone() });
    let service = Tracked { inner: TowerToHyperService::new(app), slot: slot.clone() };
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(MAX_HEADER_BYTES)
        .serve_connection(io, service);
    tokio::pin!(connection);
    let mut stopping = false;
    loop {
        let (deadline, _) = slot.deadline(&limits);
        tokio::select! {
            ended = connection.as_mut() => {
                if ended.is_err_and(|error| error.is_parse_too_large()) {
                    stats.cut(Cut::HeaderTooLarge);
                }
                break;
            }
            // Counted by the listener, which shed it.
            () = slot.shed.cancelled() => break,
            () = tokio::time::sleep_until(deadline) => {
                // The phase may have changed meanwhile: judge by its own bound.
                let (deadline, cut) = slot.deadline(&limits);
                if deadline <= tokio::time::Instant::now() {
                    stats.cut(cut);
                    break;
                }
            }
            () = slot.changed.notified() => {}
            () = stop.cancelled(), if !stopping => {
                stopping = true;
                connection.as_mut().graceful_shutdown();
            }
        }
        // At shutdown only a request in progress is waited for: a client
        // sitting on unfinished headers must not hold the daemon up.
        if stopping && slot.phase() != Phase::Serving {
            break;
        }
    }
    drop(held);
}

/// The socket, telling the slot when bytes arrive.
struct Watched {
    stream: TcpStream,
    slot: Arc<Slot>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.slot.bytes_arrived();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// The router, marking the connection `Serving` from the request until its
/// answer has been handed to hyper whole.
#[derive(Clone)]
struct Tracked {
    inner: TowerToHyperService<Router>,
    slot: Arc<Slot>,
}

type Answer = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for Tracked {
    type Response = Response;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        self.slot.enter(Phase::Serving);
        request.extensions_mut().insert(super::Connection(self.slot.clone()));
        let slot = self.slot.clone();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            Ok(response.map(|body| Body::new(Answered { body, slot })))
        })
    }
}

/// An answer's body; once hyper has taken all of it (and drops it), the
/// connection is idle.
struct Answered {
    body: Body,
    slot: Arc<Slot>,
}

impl Drop for Answered {
    fn drop(&mut self) {
        self.slot.enter(Phase::Idle);
    }
}

impl hyper::body::Body for Answered {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
