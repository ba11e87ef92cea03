//! The send loop of the operator's commands (`dlq retry`, `deletes
//! approve`): one request until Customer.io answers it for good. Transient
//! failures are retried [`MAX_TRIES`] times with backoff (an operator is
//! waiting, unlike the daemon, which retries for ever); what only the
//! operator can fix stops the command with the config key to change.

use std::time::Duration;

use bytes::Bytes;

use crate::sink::advice;
use crate::sink::client::TrackClient;
use crate::sink::retry::{Backoff, Verdict};
use crate::track_api::{ItemError, Route};

/// Sends of one request before a command gives up on a transient failure.
pub const MAX_TRIES: u32 = 5;

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

/// Why a command stopped before the end: nothing more can go through until
/// the operator fixes something (or Customer.io recovers).
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

/// Sends `body` on `route` until Customer.io answers it for good, or stops.
pub async fn until_answered(
    client: &TrackClient,
    route: Route,
    body: Bytes,
    max_backoff: Duration,
) -> Result<Answer, Stop> {
    let mut backoff = Backoff::new(max_backoff);
    let mut tries = 0;
    loop {
        tries += 1;
        match step(client.post(route, body.clone()).await, tries) {
            Step::Done(answer) => return Ok(answer),
            Step::Wait(after) => tokio::time::sleep(backoff.next_delay(after)).await,
            Step::Stop(stop) => return Err(stop),
        }
    }
}

/// What to do after an answer, the `tries`-th for this request.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Done(Answer),
    /// Send again after the backoff (or the `Retry-After`).
    Wait(Option<Duration>),
    Stop(Stop),
}

fn step(verdict: Verdict, tries: u32) -> Step {
    match verdict {
        Verdict::Accepted => Step::Done(Answer::Accepted),
        Verdict::PartlyRejected(errors) => Step::Done(Answer::PartlyRejected(errors)),
        Verdict::Rejected { status, message } => Step::Done(Answer::Rejected { status, message }),
        Verdict::Retry { after, .. } if tries < MAX_TRIES => Step::Wait(after),
        Verdict::Retry { reason, .. } => Step::Stop(Stop::Unavailable { tries, reason }),
        Verdict::Unauthorized => Step::Stop(Stop::Unauthorized),
        Verdict::Redirected { status } => Step::Stop(Stop::Redirected { status }),
        Verdict::Refused { status, message } => Step::Stop(Stop::Refused { status, message }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_verdict_has_its_step() {
        assert_eq!(step(Verdict::Accepted, 1), Step::Done(Answer::Accepted));
        let errors = vec![ItemError {
            batch_index: Some(0),
            reason: Some("too_large".into()),
            field: Some("attributes.x".into()),
            message: Some("attribute name cannot be longer than 150 bytes".into()),
        }];
        assert_eq!(
            step(Verdict::PartlyRejected(errors.clone()), 1),
            Step::Done(Answer::PartlyRejected(errors))
        );
        assert_eq!(
            step(Verdict::Rejected { status: 400, message: "bad".into() }, 1),
            Step::Done(Answer::Rejected { status: 400, message: "bad".into() })
        );
        let retry = |tries| {
            step(
                Verdict::Retry { after: Some(Duration::from_secs(2)), reason: "HTTP 503".into() },
                tries,
            )
        };
        assert_eq!(retry(1), Step::Wait(Some(Duration::from_secs(2))));
        assert_eq!(retry(MAX_TRIES - 1), Step::Wait(Some(Duration::from_secs(2))));
        assert_eq!(
            retry(MAX_TRIES),
            Step::Stop(Stop::Unavailable { tries: MAX_TRIES, reason: "HTTP 503".into() })
        );
        assert_eq!(step(Verdict::Unauthorized, 1), Step::Stop(Stop::Unauthorized));
        assert_eq!(
            step(Verdict::Redirected { status: 301 }, 1),
            Step::Stop(Stop::Redirected { status: 301 })
        );
        assert!(matches!(
            step(Verdict::Refused { status: 403, message: "no".into() }, 1),
            Step::Stop(Stop::Refused { status: 403, .. })
        ));
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
