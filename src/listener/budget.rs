//! The body budget: one limit on the request-body bytes a listener holds
//! in memory at once, over all its connections. Each body reserves its
//! buffer's capacity from the budget as its bytes arrive (not from
//! `Content-Length`, which a client could declare and never send, spending
//! the budget for free); a body that does not fit is refused at once, and
//! its reservation returned when the buffer is dropped.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::ListenerStats;

/// Why a body was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Over the request's own limit.
    TooLarge,
    /// The listener's budget is spent by other requests: answer 503.
    OverBudget,
    /// Not complete within the timeout.
    TimedOut,
    /// The connection broke, or the framing was wrong.
    Broken,
}

/// A listener's budget of buffered body bytes.
pub struct BodyBudget {
    bytes: Arc<Semaphore>,
    stats: Arc<ListenerStats>,
}

/// Bytes of the budget held by one body; returned when dropped.
pub struct Reserved {
    permits: Option<OwnedSemaphorePermit>,
    bytes: usize,
    stats: Arc<ListenerStats>,
}

impl Drop for Reserved {
    fn drop(&mut self) {
        self.stats.buffered_bytes.fetch_sub(self.bytes as u64, Ordering::Relaxed);
    }
}

impl Reserved {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl BodyBudget {
    /// A budget of `limit` bytes, shown in `stats`.
    pub fn new(limit: usize, stats: Arc<ListenerStats>) -> Self {
        let limit = limit.min(Semaphore::MAX_PERMITS);
        stats.buffer_limit_bytes.store(limit as u64, Ordering::Relaxed);
        Self { bytes: Arc::new(Semaphore::new(limit)), stats }
    }

    /// Reads `body` whole, at most `max` bytes, within `timeout`; the bytes
    /// and their reservation, to be held as long as the bytes are.
    pub async fn read(
        &self,
        body: Body,
        max: usize,
        timeout: Duration,
    ) -> Result<(Bytes, Reserved), BodyError> {
        let mut reserved = Reserved { permits: None, bytes: 0, stats: self.stats.clone() };
        let mut buffer = Vec::new();
        let read = self.fill(body, max, &mut buffer, &mut reserved);
        match tokio::time::timeout(timeout, read).await {
            Ok(Ok(())) => Ok((Bytes::from(buffer), reserved)),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(BodyError::TimedOut),
        }
    }

    async fn fill(
        &self,
        mut body: Body,
        max: usize,
        buffer: &mut Vec<u8>,
        reserved: &mut Reserved,
    ) -> Result<(), BodyError> {
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame.map_err(|_| BodyError::Broken)?.into_data() else { continue };
            let needed = buffer.len() + data.len();
            if needed > max {
                return Err(BodyError::TooLarge);
            }
            if needed > buffer.capacity() {
                // Grow by doubling (few reallocations), reserving the growth first.
                let capacity = needed.max(buffer.capacity() * 2).min(max);
                self.reserve(reserved, capacity - buffer.capacity())?;
                buffer.reserve_exact(capacity - buffer.len());
            }
            buffer.extend_from_slice(&data);
        }
        Ok(())
    }

    /// Takes `bytes` more of the budget for `reserved`, or refuses at once.
    fn reserve(&self, reserved: &mut Reserved, bytes: usize) -> Result<(), BodyError> {
        let count = u32::try_from(bytes).map_err(|_| BodyError::TooLarge)?;
        let Ok(permit) = self.bytes.clone().try_acquire_many_owned(count) else {
            self.stats.budget_refusals.fetch_add(1, Ordering::Relaxed);
            return Err(BodyError::OverBudget);
        };
        match &mut reserved.permits {
            Some(held) => held.merge(permit),
            None => reserved.permits = Some(permit),
        }
        reserved.bytes += bytes;
        let now =
            self.stats.buffered_bytes.fetch_add(bytes as u64, Ordering::Relaxed) + bytes as u64;
        self.stats.buffered_peak_bytes.fetch_max(now, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(limit: usize) -> (BodyBudget, Arc<ListenerStats>) {
        let stats = Arc::new(ListenerStats::default());
        (BodyBudget::new(limit, stats.clone()), stats)
    }

    const T: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn bodies_share_the_budget_and_give_it_back() {
        let (budget, stats) = budget(1000);
        let (first, held) = budget.read(Body::from(vec![1u8; 600]), 800, T).await.unwrap();
        assert_eq!(first.len(), 600);
        assert_eq!(held.bytes(), 600);
        assert_eq!(stats.buffered_bytes.load(Ordering::Relaxed), 600);
        let second = budget.read(Body::from(vec![2u8; 600]), 800, T).await;
        assert_eq!(second.err(), Some(BodyError::OverBudget));
        assert_eq!(stats.budget_refusals.load(Ordering::Relaxed), 1);
        drop(held);
        assert_eq!(stats.buffered_bytes.load(Ordering::Relaxed), 0);
        assert!(budget.read(Body::from(vec![2u8; 600]), 800, T).await.is_ok());
        assert_eq!(stats.buffered_peak_bytes.load(Ordering::Relaxed), 600);
        assert_eq!(stats.buffer_limit_bytes.load(Ordering::Relaxed), 1000);
    }

    #[tokio::test]
    async fn a_body_over_its_own_limit_is_too_large() {
        let (budget, stats) = budget(10_000);
        let read = budget.read(Body::from(vec![0u8; 900]), 800, T).await;
        assert_eq!(read.err(), Some(BodyError::TooLarge));
        assert_eq!(stats.buffered_bytes.load(Ordering::Relaxed), 0);
    }

    /// A body whose first frame arrives and whose end never does.
    struct Stalled(bool);

    impl hyper::body::Body for Stalled {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
            if std::mem::replace(&mut self.0, true) {
                return std::task::Poll::Pending;
            }
            let frame = hyper::body::Frame::data(Bytes::from_static(b"{\"a\":"));
            std::task::Poll::Ready(Some(Ok(frame)))
        }
    }

    #[tokio::test]
    async fn a_body_that_never_ends_times_out_and_returns_its_bytes() {
        let (budget, stats) = budget(10_000);
        let read = budget.read(Body::new(Stalled(false)), 800, Duration::from_millis(100)).await;
        assert_eq!(read.err(), Some(BodyError::TimedOut));
        assert!(stats.buffered_peak_bytes.load(Ordering::Relaxed) > 0);
        assert_eq!(stats.buffered_bytes.load(Ordering::Relaxed), 0);
    }
}
