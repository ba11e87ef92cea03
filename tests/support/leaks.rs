//! A tripwire for the whole suite: every log event of ciosync's own code in
//! this process (the in-process daemons, at debug level), every body read
//! from a daemon's `/metrics`, `/readyz` or `/healthz`, and the soak's
//! daemon logs are scanned for the suite's secrets and for email addresses
//! (the customer value every test has). A hit is recorded without the value
//! and fails the test that stops a daemon, reads an endpoint, or checks logs.
//!
//! The in-process logs are shared by every test running at the same time,
//! so a hit fails whichever test looks next; its description names the
//! target that logged it.

use std::fmt::Write as _;
use std::sync::{Mutex, Once};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use super::daemon::{API_KEY, SITE_ID};
use super::dead_letters::PG_PASSWORD;
use super::webhooks::{ACTION_SECRET, SIGNING_KEY};

/// Every secret the suite hands a daemon, by name. (The SCRAM and
/// least-privilege tests' role passwords go to the built binary, whose
/// logs those tests check themselves.)
const SECRETS: [(&str, &str); 4] = [
    ("the API key", API_KEY),
    ("the database password", PG_PASSWORD),
    ("the signing key", SIGNING_KEY),
    ("a webhook action's secret", ACTION_SECRET),
];

/// Leaks found so far: where, and what kind (never the value).
static FOUND: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// What `text` leaks, if anything: a secret's name or "an email address".
pub fn leak_in(text: &str) -> Option<&'static str> {
    SECRETS
        .iter()
        .find(|(_, secret)| text.contains(secret))
        .map(|(name, _)| *name)
        .or_else(|| text.contains(&basic_auth()).then_some("the Authorization header"))
        .or_else(|| has_email(text).then_some("an email address"))
}

/// The Track API's `Authorization: Basic` value: base64 of `site:key`.
fn basic_auth() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let input = format!("{SITE_ID}:{API_KEY}").into_bytes();
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            let c = ALPHABET[((n >> shift) & 63) as usize] as char;
            out.push(if i <= chunk.len() { c } else { '=' });
        }
    }
    out
}

/// Records a leak in `text` (from `source`), if any.
pub fn scan(source: &str, text: &str) {
    if let Some(what) = leak_in(text) {
        found().push(format!("{source} carries {what}"));
    }
}

/// Fails if any leak was recorded so far in this process.
pub fn assert_none() {
    let found = found().clone();
    assert!(found.is_empty(), "secrets or customer values leaked: {found:?}");
}

/// The leaks found; a panic elsewhere while it was held does not hide them.
fn found() -> std::sync::MutexGuard<'static, Vec<String>> {
    FOUND.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether `text` holds something shaped like an email address: a local
/// part, `@`, and a domain ending in a dot and two or more letters (so
/// `postgres@127.0.0.1` in a connection's description is not one).
fn has_email(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.iter().enumerate().filter(|(_, b)| **b == b'@').any(|(at, _)| {
        let local = at > 0 && is_local(bytes[at - 1]);
        let domain: Vec<u8> = bytes[at + 1..]
            .iter()
            .copied()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'.' || *b == b'-')
            .collect();
        let domain = String::from_utf8_lossy(&domain);
        let domain = domain.trim_end_matches('.');
        local
            && domain.rsplit_once('.').is_some_and(|(host, tld)| {
                !host.is_empty() && tld.len() >= 2 && tld.bytes().all(|b| b.is_ascii_alphabetic())
            })
    })
}

fn is_local(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"._%+-".contains(&b)
}

/// Installs the process's log subscriber once: the usual output to the
/// test's captured writer (`RUST_LOG`, else `ciosync=info`), and the
/// tripwire on every ciosync event at debug level and above.
pub fn init_logging() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let output = tracing_subscriber::fmt::layer().with_test_writer().with_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| "ciosync=info".into()),
        );
        let tripwire =
            Tripwire.with_filter(Targets::new().with_target("ciosync", tracing::Level::DEBUG));
        let _ = tracing_subscriber::registry().with(output).with(tripwire).try_init();
    });
}

struct Tripwire;

impl<S: Subscriber> Layer<S> for Tripwire {
    fn on_new_span(
        &self,
        attributes: &tracing::span::Attributes<'_>,
        _id: &tracing::span::Id,
        _ctx: Context<'_, S>,
    ) {
        let mut text = String::new();
        attributes.record(&mut Collect(&mut text));
        scan(&format!("a span of {}", attributes.metadata().target()), &text);
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut text = String::new();
        event.record(&mut Collect(&mut text));
        let metadata = event.metadata();
        scan(&format!("a {} event of {}", metadata.level(), metadata.target()), &text);
    }
}

/// Every field's value as text, strings unquoted.
struct Collect<'a>(&'a mut String);

impl Visit for Collect<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        let _ = write!(self.0, " {}={value}", field.name());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={value:?}", field.name());
    }

    /// The whole chain, as the output layer prints it.
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let _ = write!(self.0, " {}={value}", field.name());
        let mut source = value.source();
        while let Some(error) = source {
            let _ = write!(self.0, ": {error}");
            source = error.source();
        }
    }
}

#[test]
fn finds_secrets_and_emails_but_not_connection_descriptions() {
    assert_eq!(leak_in(&format!("key={API_KEY}")), Some("the API key"));
    assert_eq!(leak_in("sent to a.b+c@x.io today"), Some("an email address"));
    assert_eq!(leak_in("U7@Example.COM."), Some("an email address"));
    assert_eq!(leak_in("postgres://postgres@127.0.0.1:5432/db"), None);
    assert_eq!(leak_in("connected to postgres@127.0.0.1"), None);
    assert_eq!(leak_in("an @ alone, or x@y"), None);
    // base64("test-site:test-key-0123456789")
    assert_eq!(
        leak_in("Basic dGVzdC1zaXRlOnRlc3Qta2V5LTAxMjM0NTY3ODk="),
        Some("the Authorization header")
    );
}
