//! The Customer.io sink: operations in, accepted (or deliberately refused)
//! operations out.
//!
//! Contract: [`Sink::flush`] returns `Ok` only when every operation pushed so
//! far was accepted by Customer.io or refused for good (a 4xx that no retry
//! can fix: logged with the status and Customer.io's text, counted, skipped).
//! Transient failures (connect errors, timeouts, 408, 429, 5xx) are retried
//! with capped exponential backoff and jitter for as long as it takes, so the
//! caller simply does not acknowledge anything while `flush` is pending. A
//! customer's operations go out in the order pushed. Repeating an operation
//! is harmless, which is what makes at-least-once delivery safe.

pub mod batch;
pub mod client;
pub mod retry;

use std::sync::Arc;
use std::time::Duration;

use crate::config::CustomerioConfig;
use crate::customer::CustomerOp;
use crate::telemetry::Counters;
use crate::track_api::RegionResponse;
use batch::{Batch, EncodedItem};
use client::TrackClient;
use retry::{Backoff, Verdict};

/// Why the sink cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Customer.io answered 401: definite, retrying cannot help.
    #[error(
        "Customer.io refused the credentials (HTTP 401): check customerio.site_id and \
         customerio.api_key (or CIOSYNC_CUSTOMERIO_SITE_ID / CIOSYNC_CUSTOMERIO_API_KEY)"
    )]
    Unauthorized,
    /// Customer.io redirected the request: definite, the host is wrong.
    #[error(
        "Customer.io answered HTTP {status} (a redirect): the workspace is probably in the \
         other region; set customerio.region (ciosync check shows the workspace's region) or \
         customerio.track_url"
    )]
    Redirected { status: u16 },
    /// Customer.io (or something in front of it) refused the request for a
    /// reason no single operation caused.
    #[error(
        "Customer.io refused the request (HTTP {status}: {message}): check customerio.track_url \
         and the workspace; nothing was skipped or acknowledged"
    )]
    Refused { status: u16, message: String },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
    /// A one-off request (the region check) failed.
    #[error("request to Customer.io failed: {0}")]
    Request(String),
}

impl SinkError {
    /// Whether retrying later may help.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Request(_))
    }
}

/// Sends operations to the Track API's `/api/v2/batch`, one batch at a time.
pub struct Sink {
    client: Arc<TrackClient>,
    max_backoff: Duration,
    max_batch_ops: usize,
    batch: Batch,
    counters: Arc<Counters>,
}

impl Sink {
    /// A sink for the configured workspace.
    pub fn new(config: &CustomerioConfig, counters: Arc<Counters>) -> Result<Self, SinkError> {
        Ok(Self {
            client: Arc::new(TrackClient::new(config, counters.clone())?),
            max_backoff: Duration::from_secs(config.retry_max_backoff_secs),
            max_batch_ops: config.max_batch_ops,
            batch: Batch::default(),
            counters,
        })
    }

    /// Queues `op`, first sending what waits if `op` cannot join it (full, or
    /// the same customer already in it), and sending the batch once it is
    /// full. Returns `true` when it flushed: everything pushed before `op` is
    /// then delivered.
    pub async fn push(&mut self, op: CustomerOp) -> Result<bool, SinkError> {
        let Some(customer) = op.customer_id().map(str::to_owned) else {
            // A barrier: deliver everything before it now.
            self.flush().await?;
            return Ok(true);
        };
        let Some(item) = batch::encode(op) else { return Ok(false) };
        if !item.trimmed.is_empty() {
            Counters::add(&self.counters.attributes_dropped, item.trimmed.len() as u64);
            tracing::warn!(
                customer_id = %customer,
                attributes = ?item.trimmed,
                "attributes left out: the identify would exceed Customer.io's 32 KB item limit"
            );
        }
        let mut flushed = false;
        if !self.batch.fits(&item, self.max_batch_ops) {
            self.flush().await?;
            flushed = true;
        }
        self.batch.push(item);
        if self.batch.len() >= self.max_batch_ops {
            self.flush().await?;
            flushed = true;
        }
        Ok(flushed)
    }

    /// Whether nothing waits to be sent.
    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }

    /// Sends what waits and returns once Customer.io accepted it or refused it
    /// for good. Cancelling the future leaves the operations queued.
    pub async fn flush(&mut self) -> Result<(), SinkError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.deliver(self.batch.items()).await?;
        self.batch.take();
        Ok(())
    }

    /// Forgets what waits (after the source broke: it will be replayed).
    pub fn discard(&mut self) {
        self.batch.take();
    }

    fn deliver<'a>(
        &'a self,
        items: &'a [EncodedItem],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), SinkError>> + Send + 'a>>
    {
        Box::pin(async move {
            let body = bytes::Bytes::from(batch::body(items));
            let mut backoff = Backoff::new(self.max_backoff);
            loop {
                let verdict = self.client.post_batch(body.clone()).await;
                match verdict {
                    Verdict::Accepted => {
                        Counters::add(&self.counters.ops_accepted, items.len() as u64);
                        return Ok(());
                    }
                    Verdict::PartlyRejected(errors) => {
                        let mut rejected = 0;
                        for error in &errors {
                            let Some(item) = error.batch_index.and_then(|i| items.get(i)) else {
                                continue;
                            };
                            rejected += 1;
                            tracing::warn!(
                                customer_id = %item.customers[0],
                                operation = item.kind,
                                field = error.field.as_deref().unwrap_or(""),
                                reason = error.reason.as_deref().unwrap_or(""),
                                message = error.message.as_deref().unwrap_or(""),
                                "Customer.io refused an operation; skipped"
                            );
                        }
                        Counters::add(&self.counters.ops_rejected, rejected);
                        Counters::add(
                            &self.counters.ops_accepted,
                            (items.len() as u64).saturating_sub(rejected),
                        );
                        return Ok(());
                    }
                    Verdict::Retry { after, reason } => {
                        let delay = backoff.next_delay(after);
                        Counters::add(&self.counters.requests_retried, 1);
                        tracing::warn!(
                            %reason,
                            retry_in_ms = delay.as_millis() as u64,
                            operations = items.len(),
                            "Customer.io request failed; retrying"
                        );
                        tokio::time::sleep(delay).await;
                    }
                    Verdict::Rejected { status, message } if items.len() > 1 => {
                        // The whole batch was refused: send its items one by one
                        // so only the bad one is skipped.
                        tracing::warn!(
                            status,
                            %message,
                            operations = items.len(),
                            "Customer.io refused a batch; sending its operations one by one"
                        );
                        for item in items {
                            self.deliver(std::slice::from_ref(item)).await?;
                        }
                        return Ok(());
                    }
                    Verdict::Rejected { status, message } => {
                        Counters::add(&self.counters.ops_rejected, 1);
                        tracing::warn!(
                            customer_id = %items[0].customers[0],
                            operation = items[0].kind,
                            status,
                            %message,
                            "Customer.io refused an operation; skipped"
                        );
                        return Ok(());
                    }
                    Verdict::Unauthorized => return Err(SinkError::Unauthorized),
                    Verdict::Redirected { status } => return Err(SinkError::Redirected { status }),
                    Verdict::Refused { status, message } => {
                        return Err(SinkError::Refused { status, message })
                    }
                }
            }
        })
    }

    /// `GET /api/v1/accounts/region`: proves the credentials and the host.
    pub async fn region(&self) -> Result<RegionResponse, SinkError> {
        self.client.region().await
    }

    /// The base URL requests go to.
    pub fn base_url(&self) -> &str {
        self.client.base_url()
    }
}
