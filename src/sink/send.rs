//! The one send loop: a request until Customer.io answers it for good,
//! under a [`Policy`] saying how long to keep trying. The daemon's delivery
//! ([`super::deliver`]) retries for ever and waits out refused credentials
//! (a key can be re-enabled; restarting would not help); the operator's
//! commands (`dlq retry`, `deletes approve`) give up after [`MAX_TRIES`]
//! sends and stop at a 401, since an operator is waiting. What only the
//! operator can fix (a redirect, a refusal of every request) stops both,
//! with the config key to change.

use std::time::Duration;

use bytes::Bytes;

use super::advice;
use super::client::TrackClient;
use super::retry::{Backoff, Verdict};
use crate::telemetry::Counters;
use crate::track_api::{ItemError, Route};

/// Sends of one request before a command gives up on a transient failure.
pub const MAX_TRIES: u32 = 5;

/// How long a request is tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Sends before a transient failure stops the loop; `None`: for ever.
    pub max_tries: Option<u32>,
    /// Whether refused credentials (HTTP 401) are waited out rather than
    /// a stop.
    pub wait_for_credentials: bool,
    /// The longest wait between two sends.
    pub max_backoff: Duration,
}

impl Policy {
    /// The daemon's: nothing is acknowledged until Customer.io answers, so
    /// it waits as long as it takes, 401 included.
    pub const fn daemon(max_backoff: Duration) -> Self {
        Self { max_tries: None, wait_for_credentials: true, max_backoff }
    }

    /// The operator's commands': [`MAX_TRIES`] sends, and a 401 stops.
    pub const fn command(max_backoff: Duration) -> Self {
        Self { max_tries: Some(MAX_TRIES), wait_for_credentials: false, max_backoff }
    }
}

/// Customer.io's definite answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Accepted,
    /// HTTP 207: these items were refused, the others accepted.
    PartlyRejected(Vec<ItemError>),
    /// The request was refused for its content (a 400, 413 or 422).
    Rejected {
        status: u16,
        message: String,
    },
}

/// Why the loop stopped before an answer: nothing more can go through until
/// the operator fixes something (or, for a command, Customer.io recovers).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Stop {
    #[error("{}", advice::UNAUTHORIZED)]
    Unauthorized,
    #[error("{}", advice::redirected(*.status))]
    Redirected { status: u16 },
    #[error("{}", advice::refused(*.status, .message))]
    Refused { status: u16, message: String },
    #[error("Customer.io did not accept it after {tries} tries (last: {reason}); try again later")]
    Unavailable { tries: u32, reason: String },
}

/// Sends `body` (holding `operations` operations, for the log) on `route`
/// until Customer.io answers it for good, or `policy` says stop. Every send
/// is counted (`request_items`), every wait too (`requests_retried`) and
/// logged, and the client's health learns whether the credentials work.
pub async fn until_answered(
    client: &TrackClient,
    route: Route,
    body: Bytes,
    operations: usize,
    policy: Policy,
) -> Result<Answer, Stop> {
    let counters = &client.counters;
    let mut backoff = Backoff::new(policy.max_backoff);
    let mut tries = 0;
    loop {
        tries += 1;
        counters.request_items.observe(operations as f64);
        let verdict = client.post(route, body.clone()).await;
        counters.health.set_unauthorized(verdict == Verdict::Unauthorized);
        match step(verdict, tries, policy) {
            Step::Done(answer) => return Ok(answer),
            Step::Wait(wait) => {
                let delay = backoff.next_delay(wait.after());
                Counters::add(&counters.requests_retried, 1);
                wait.log(delay, operations);
                tokio::time::sleep(delay).await;
            }
            Step::Stop(stop) => return Err(stop),
        }
    }
}

/// What to do after an answer, the `tries`-th for this request.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Done(Answer),
    /// Send again after the backoff (or the `Retry-After`).
    Wait(Wait),
    Stop(Stop),
}

/// Why a request goes again.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Wait {
    /// A failure that may pass (a timeout, a 5xx, a 429), with the
    /// `Retry-After` if Customer.io gave one.
    Transient { after: Option<Duration>, reason: String },
    /// A 401, under a policy that waits it out.
    Credentials,
}

impl Wait {
    fn after(&self) -> Option<Duration> {
        match self {
            Self::Transient { after, .. } => *after,
            Self::Credentials => None,
        }
    }

    fn log(&self, delay: Duration, operations: usize) {
        let retry_in_ms = delay.as_millis() as u64;
        match self {
            Self::Transient { reason, .. } => tracing::warn!(
                %reason,
                retry_in_ms,
                operations,
                "Customer.io request failed; retrying"
            ),
            Self::Credentials => tracing::error!(
                retry_in_ms,
                operations,
                "{}; retrying, nothing is acknowledged meanwhile",
                advice::UNAUTHORIZED
            ),
        }
    }
}

fn step(verdict: Verdict, tries: u32, policy: Policy) -> Step {
    let more = policy.max_tries.is_none_or(|max| tries < max);
    match verdict {
        Verdict::Accepted => Step::Done(Answer::Accepted),
        Verdict::PartlyRejected(errors) => Step::Done(Answer::PartlyRejected(errors)),
        Verdict::Rejected { status, message } => Step::Done(Answer::Rejected { status, message }),
        Verdict::Retry { after, reason } if more => Step::Wait(Wait::Transient { after, reason }),
        Verdict::Retry { reason, .. } => Step::Stop(Stop::Unavailable { tries, reason }),
        Verdict::Unauthorized if policy.wait_for_credentials => Step::Wait(Wait::Credentials),
        Verdict::Unauthorized => Step::Stop(Stop::Unauthorized),
        Verdict::Redirected { status } => Step::Stop(Stop::Redirected { status }),
        Verdict::Refused { status, message } => Step::Stop(Stop::Refused { status, message }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMAND: Policy = Policy::command(Duration::from_secs(1));
    const DAEMON: Policy = Policy::daemon(Duration::from_secs(1));

    fn retry(tries: u32, policy: Policy) -> Step {
        let verdict =
            Verdict::Retry { after: Some(Duration::from_secs(2)), reason: "HTTP 503".into() };
        step(verdict, tries, policy)
    }

    #[test]
    fn each_verdict_has_its_step() {
        for policy in [COMMAND, DAEMON] {
            assert_eq!(step(Verdict::Accepted, 1, policy), Step::Done(Answer::Accepted));
            let errors = vec![ItemError {
                batch_index: Some(0),
                reason: Some("too_large".into()),
                field: Some("attributes.x".into()),
                message: Some("attribute name cannot be longer than 150 bytes".into()),
            }];
            assert_eq!(
                step(Verdict::PartlyRejected(errors.clone()), 1, policy),
                Step::Done(Answer::PartlyRejected(errors))
            );
            assert_eq!(
                step(Verdict::Rejected { status: 400, message: "bad".into() }, 1, policy),
                Step::Done(Answer::Rejected { status: 400, message: "bad".into() })
            );
            let transient =
                Wait::Transient { after: Some(Duration::from_secs(2)), reason: "HTTP 503".into() };
            assert_eq!(retry(1, policy), Step::Wait(transient.clone()));
            assert_eq!(retry(MAX_TRIES - 1, policy), Step::Wait(transient));
            assert_eq!(
                step(Verdict::Redirected { status: 301 }, 1, policy),
                Step::Stop(Stop::Redirected { status: 301 })
            );
            assert!(matches!(
                step(Verdict::Refused { status: 403, message: "no".into() }, 1, policy),
                Step::Stop(Stop::Refused { status: 403, .. })
            ));
        }
    }

    #[test]
    fn a_command_gives_up_where_the_daemon_waits() {
        assert_eq!(
            retry(MAX_TRIES, COMMAND),
            Step::Stop(Stop::Unavailable { tries: MAX_TRIES, reason: "HTTP 503".into() })
        );
        assert_eq!(step(Verdict::Unauthorized, 1, COMMAND), Step::Stop(Stop::Unauthorized));
        for tries in [MAX_TRIES, 1000, u32::MAX] {
            assert!(matches!(retry(tries, DAEMON), Step::Wait(Wait::Transient { .. })));
            assert_eq!(step(Verdict::Unauthorized, tries, DAEMON), Step::Wait(Wait::Credentials));
        }
        assert_eq!(Wait::Credentials.after(), None, "a 401 has no Retry-After to honour");
    }

    #[test]
    fn every_stop_names_the_config_key_to_fix() {
        assert!(Stop::Unauthorized.to_string().contains("customerio.api_key"));
        assert!(Stop::Redirected { status: 301 }.to_string().contains("customerio.region"));
        let refused = Stop::Refused { status: 403, message: "x".into() };
        assert!(refused.to_string().contains("customerio.track_url"));
    }

    #[test]
    fn a_stop_reads_like_the_daemons_stop() {
        use crate::sink::SinkError;
        assert_eq!(Stop::Unauthorized.to_string(), SinkError::Unauthorized.to_string());
        let (daemon, command) =
            (SinkError::Redirected { status: 308 }, Stop::Redirected { status: 308 });
        assert_eq!(command.to_string(), daemon.to_string());
        let daemon = SinkError::Refused { status: 403, message: "suspended".into() };
        let command = Stop::Refused { status: 403, message: "suspended".into() };
        assert!(daemon.to_string().starts_with(&command.to_string()), "{daemon}");
    }
}
