//! Is this request from the campaign that holds the action's secret? A
//! campaign webhook is unsigned, so the secret travels in the request:
//! Basic auth (`https://<user>:<secret>@host/…` in the action's URL, which
//! Customer.io sends as `Authorization: Basic …`) or a header the author
//! adds, `Authorization: Bearer <secret>`. Pure, no I/O.
//!
//! The comparison takes the same time wherever the first difference is:
//! both sides are reduced to HMAC-SHA256 tags under a fixed key, and the
//! tags compared with `verify_slice` (constant time).

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::actions::Action;

type HmacSha256 = Hmac<Sha256>;

fn tag(secret: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(b"ciosync webhook action").expect("any key length");
    mac.update(secret);
    mac
}

fn same(given: &[u8], expected: &[u8]) -> bool {
    let given = tag(given).finalize().into_bytes();
    tag(expected).verify_slice(&given).is_ok()
}

/// Whether the `Authorization` header carries `action`'s credentials.
pub fn authorized(action: &Action, authorization: Option<&str>) -> bool {
    let Some(value) = authorization.map(str::trim) else { return false };
    let secret = action.secret.expose().as_bytes();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return same(rest.as_bytes(), secret);
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest) else {
        return false;
    };
    let Some(colon) = decoded.iter().position(|b| *b == b':') else { return false };
    let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
    // Both compared, whatever the first gives: no early answer.
    let user_ok = same(user, action.username.as_bytes());
    let password_ok = same(password, secret);
    user_ok & password_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::actions::{Action, Effect, FieldPath, Which};
    use crate::pg::name::TableName;
    use crate::secret::Secret;

    fn action() -> Action {
        Action {
            name: "segments".into(),
            username: "ciosync".into(),
            secret: Secret::new("s3cret-s3cret-s3cret"),
            customer: FieldPath::parse("customer_id").unwrap(),
            occurred_at: None,
            idempotency_key: None,
            dedupe_window: std::time::Duration::from_secs(60),
            effect: Effect::Segment {
                table: TableName::parse("ciosync.segment_memberships").unwrap(),
                segment: FieldPath::parse("segment").unwrap(),
                which: Which::Always(crate::config::actions::Direction::Enter),
            },
        }
    }

    fn basic(user_pass: &str) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(user_pass))
    }

    #[test]
    fn basic_and_bearer_with_the_secret_pass() {
        let a = action();
        assert!(authorized(&a, Some(&basic("ciosync:s3cret-s3cret-s3cret"))));
        assert!(authorized(&a, Some("Bearer s3cret-s3cret-s3cret")));
        assert!(authorized(&a, Some("bearer   s3cret-s3cret-s3cret ")));
    }

    #[test]
    fn anything_else_fails() {
        let a = action();
        for header in [
            None,
            Some(String::new()),
            Some(basic("ciosync:s3cret-s3cret-s3cre")),
            Some(basic("other:s3cret-s3cret-s3cret")),
            Some(basic("ciosync")),
            Some(basic(":s3cret-s3cret-s3cret")),
            Some("Basic not-base64!".to_owned()),
            Some("Bearer s3cret-s3cret-s3cretX".to_owned()),
            Some("Bearer".to_owned()),
            Some("Token s3cret-s3cret-s3cret".to_owned()),
            Some("s3cret-s3cret-s3cret".to_owned()),
        ] {
            assert!(!authorized(&a, header.as_deref()), "{header:?} passed");
        }
    }
}
