//! Delivering one batch until every item in it is accepted or dead-lettered.
//! Runs as its own task, several at once; the queue guarantees that the
//! batches in flight share no customer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::batch::{self, EncodedItem};
use super::client::TrackClient;
use super::recorded::{Prepared, Recorded};
use super::retry::{cut_error_text, describe_item_error, Backoff};
use super::send::{self, Answer, Policy};
use super::SinkError;
use crate::dead_letter::{DeadLetter, DeadLetterStore};
use crate::record::Effect;
use crate::telemetry::Counters;
use crate::track_api::ItemError;

/// Attempts an item with a transient per-item error gets before it is
/// dead-lettered.
pub const ITEM_ATTEMPTS: u32 = 5;

/// While dead letters cannot be stored, one log line per this long (per
/// batch), however short the backoff.
pub const STORE_FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// What every delivery task shares.
pub struct Delivery {
    pub client: TrackClient,
    pub dead_letters: Arc<DeadLetterStore>,
    pub counters: Arc<Counters>,
    pub max_backoff: Duration,
    /// Lower-case substrings of per-item error reasons worth retrying.
    pub transient_item_errors: Vec<String>,
    /// The record of what Customer.io accepted (`None`: turned off).
    pub recorded: Option<Recorded>,
}

struct Pending {
    item: EncodedItem,
    /// What accepting it changes in the record.
    effect: Effect,
    attempts: u32,
}

impl Delivery {
    /// Sends `items` until each is accepted or, refused for good, stored as
    /// a dead letter. Transient failures are retried for as long as it
    /// takes, and so are refused credentials (HTTP 401, see
    /// `Health::set_unauthorized`); `Err` only for a refusal no
    /// retry fixes (a redirect, a wrong host), in which case nothing of the
    /// batch counts as delivered.
    ///
    /// With the record on, identifies are diffed against it first (what
    /// Customer.io holds already is not sent), and what Customer.io
    /// accepted is written to it before the batch counts as delivered.
    pub async fn deliver(&self, items: Vec<EncodedItem>) -> Result<(), SinkError> {
        let prepared = match &self.recorded {
            Some(recorded) => recorded.prepare(items).await,
            None => Prepared {
                send: items.into_iter().map(|item| (item, Effect::None)).collect(),
                always: Vec::new(),
            },
        };
        let mut pending: Vec<Pending> = prepared
            .send
            .into_iter()
            .map(|(item, effect)| Pending { item, effect, attempts: 0 })
            .collect();
        // Watched values first: a customer has one operation per batch, so
        // they never meet an accepted operation's effect of the same customer.
        let mut accepted = prepared.always;
        accepted.reserve(pending.len());
        let mut letters = Vec::new();
        let mut backoff = Backoff::new(self.max_backoff);
        let policy = Policy::daemon(self.max_backoff);
        // After a whole-request refusal, items go one by one so only the bad one is refused.
        let mut one_by_one = false;
        while !pending.is_empty() {
            let count = if one_by_one { 1 } else { pending.len() };
            // An anonymous event travels alone, as the whole v1 body.
            let route = pending[0].item.route;
            let body = match route {
                batch::Route::Batch => batch::body_of(pending[..count].iter().map(|p| &p.item)),
                batch::Route::AnonymousEvent => pending[0].item.json.clone(),
            };
            match send::until_answered(&self.client, route, body.into(), count, policy).await? {
                Answer::Accepted => {
                    Counters::add(&self.counters.ops_accepted, count as u64);
                    accepted.extend(pending.drain(..count).map(|p| p.effect));
                    backoff.reset();
                }
                Answer::PartlyRejected(errors)
                    if errors.iter().any(|e| e.batch_index.is_none_or(|i| i >= count)) =>
                {
                    // An error naming no item we sent: we cannot tell which
                    // failed, so all of them go again (repeating is harmless).
                    let why =
                        "Customer.io named an item the request did not hold; retrying it whole";
                    self.wait(&mut backoff, count, why).await;
                }
                Answer::PartlyRejected(errors) => {
                    let sent: Vec<Pending> = pending.drain(..count).collect();
                    let retry = self.sort_item_errors(sent, &errors, &mut accepted, &mut letters);
                    if !retry.is_empty() {
                        let why =
                            "Customer.io could not take some operations for now; retrying them";
                        self.wait(&mut backoff, retry.len(), why).await;
                    }
                    // Retried items go first: they are older than the rest.
                    pending.splice(0..0, retry);
                }
                Answer::Rejected { status, message } if count > 1 => {
                    tracing::warn!(
                        status,
                        %message,
                        operations = count,
                        "Customer.io refused a batch; sending its operations one by one"
                    );
                    one_by_one = true;
                }
                Answer::Rejected { status, message } => {
                    let refused = pending.remove(0);
                    letters.push(refused.item.into_dead_letter(refused.attempts, status, message));
                }
            }
        }
        // Dead letters first: a watched event's value is recorded whether
        // it was accepted or refused, and once recorded the event is not
        // derived again, so its letter must be stored by then.
        self.record(letters).await;
        if let Some(recorded) = &self.recorded {
            recorded.store(accepted).await;
        }
        Ok(())
    }

    /// Waits the next backoff step before `operations` go again, counted
    /// and logged with `why`.
    async fn wait(&self, backoff: &mut Backoff, operations: usize, why: &str) {
        let delay = backoff.next_delay(None);
        Counters::add(&self.counters.requests_retried, 1);
        tracing::warn!(operations, retry_in_ms = delay.as_millis() as u64, "{why}");
        tokio::time::sleep(delay).await;
    }

    /// Splits the items of a 207 into accepted (counted, their effects to
    /// `accepted`), refused for good (to `letters`) and worth another try
    /// (returned, in order).
    fn sort_item_errors(
        &self,
        sent: Vec<Pending>,
        errors: &[ItemError],
        accepted_effects: &mut Vec<Effect>,
        letters: &mut Vec<DeadLetter>,
    ) -> Vec<Pending> {
        let by_index: HashMap<usize, &ItemError> =
            errors.iter().filter_map(|e| e.batch_index.map(|i| (i, e))).collect();
        let mut retry = Vec::new();
        let mut accepted = 0;
        for (index, mut pending) in sent.into_iter().enumerate() {
            let Some(error) = by_index.get(&index) else {
                accepted += 1;
                accepted_effects.push(pending.effect);
                continue;
            };
            pending.attempts += 1;
            if self.is_transient(error) && pending.attempts < ITEM_ATTEMPTS {
                retry.push(pending);
            } else {
                let error = cut_error_text(describe_item_error(error));
                letters.push(pending.item.into_dead_letter(pending.attempts, 207, error));
            }
        }
        Counters::add(&self.counters.ops_accepted, accepted);
        retry
    }

    fn is_transient(&self, error: &ItemError) -> bool {
        let reason = error.reason.as_deref().unwrap_or("").to_lowercase();
        self.transient_item_errors.iter().any(|t| reason.contains(t.as_str()))
    }

    /// Stores dead letters, retrying until they are: the batch does not
    /// count as delivered (so nothing is acknowledged) until they are
    /// stored, and never stops the daemon, which would only replay the same
    /// refusal after a restart (a crash loop holding up every customer).
    ///
    /// A store that keeps failing is loud instead: an error log line (a
    /// warning for a first failure that looks like an outage) at most every
    /// [`STORE_FAILURE_LOG_INTERVAL`],
    /// `ciosync_dead_letter_store_failing` at 1 and `/readyz` 503 until they
    /// are stored, and a count of failed attempts. Each attempt also counts
    /// as activity for the systemd watchdog: a restart cannot fix a missing
    /// privilege, and the retries go on by themselves.
    async fn record(&self, letters: Vec<DeadLetter>) {
        if letters.is_empty() {
            return;
        }
        for letter in &letters {
            tracing::warn!(
                operation = letter.operation,
                status = letter.status,
                error = %letter.error,
                "Customer.io refused an operation for good; storing it in ciosync.dead_letters"
            );
        }
        let health = &self.counters.health;
        let mut backoff = Backoff::new(self.max_backoff);
        let mut failing = None;
        let mut failures: u64 = 0;
        let mut logged: Option<Instant> = None;
        while let Err(error) = self.dead_letters.record(&letters).await {
            failing.get_or_insert_with(|| health.failing_to_store_dead_letters());
            failures += 1;
            Counters::add(&self.counters.dead_letter_store_failures, 1);
            health.attempted();
            let delay = backoff.next_delay(None);
            if logged.is_none_or(|at| at.elapsed() >= STORE_FAILURE_LOG_INTERVAL) {
                logged = Some(Instant::now());
                // A first transient failure may be a blip (Postgres
                // restarting); anything longer, or definite, is an error.
                let blip = failures == 1 && error.is_transient();
                let error = crate::error::error_chain(&error);
                let retry_in_ms = delay.as_millis() as u64;
                let operations = letters.len();
                let message = "cannot store refused operations in ciosync.dead_letters; \
                               retrying, nothing is acknowledged meanwhile";
                if blip {
                    tracing::warn!(%error, operations, failures, retry_in_ms, "{message}");
                } else {
                    tracing::error!(%error, operations, failures, retry_in_ms, "{message}");
                }
            }
            tokio::time::sleep(delay).await;
        }
        if failures > 0 {
            tracing::info!(
                operations = letters.len(),
                failures,
                "stored the refused operations in ciosync.dead_letters after failed attempts"
            );
        }
        drop(failing);
        Counters::add(&self.counters.ops_dead_lettered, letters.len() as u64);
    }
}
