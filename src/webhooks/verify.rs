//! Is this request from Customer.io, and fresh? Pure functions over headers
//! and bytes, no I/O.
//!
//! Customer.io signs `v0:<X-CIO-Timestamp>:<raw body>` with HMAC-SHA256
//! keyed with the reporting webhook's signing key and sends the digest in
//! `X-CIO-Signature`. The encoding is not documented; third-party verifiers
//! compare lower-case hex, and we accept either case. The signature covers
//! the timestamp, so a captured request cannot be replayed with a new one,
//! and [`check_timestamp`] refuses an old one.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::Rejection;

/// The header with the Unix time (seconds) the request was signed at.
pub const TIMESTAMP_HEADER: &str = "x-cio-timestamp";
/// The header with the hex HMAC-SHA256 signature.
pub const SIGNATURE_HEADER: &str = "x-cio-signature";

type HmacSha256 = Hmac<Sha256>;

fn mac(key: &[u8], timestamp: &str, body: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    mac
}

/// The signature Customer.io sends for `body` signed at `timestamp` (the
/// header's text, as sent): lower-case hex. For tests and tools that play
/// Customer.io (the emulator's webhook sender).
pub fn sign(key: &[u8], timestamp: &str, body: &[u8]) -> String {
    hex::encode(mac(key, timestamp, body).finalize().into_bytes())
}

/// Whether `signature` (hex, either case, surrounding blanks ignored) is
/// the signature of `body` at `timestamp`. The comparison takes the same
/// time wherever the first difference is.
pub fn signature_matches(key: &[u8], timestamp: &str, body: &[u8], signature: &str) -> bool {
    let Ok(given) = hex::decode(signature.trim()) else {
        return false;
    };
    mac(key, timestamp, body).verify_slice(&given).is_ok()
}

/// Parses `X-CIO-Timestamp` and refuses it ([`Rejection::Timestamp`]) when
/// it is missing, not a whole number of seconds, or further than
/// `tolerance_secs` from `now` (Unix seconds) in either direction.
pub fn check_timestamp(
    header: Option<&str>,
    now: u64,
    tolerance_secs: u64,
) -> Result<u64, Rejection> {
    let sent: u64 = header.and_then(|h| h.trim().parse().ok()).ok_or(Rejection::Timestamp)?;
    if sent.abs_diff(now) > tolerance_secs {
        return Err(Rejection::Timestamp);
    }
    Ok(sent)
}

/// Whether a `Content-Type` header names JSON: `application/json` or a
/// `+json` type, parameters (`; charset=utf-8`) allowed.
pub fn is_json_content_type(header: Option<&str>) -> bool {
    let Some(essence) = header.and_then(|h| h.split(';').next()) else {
        return false;
    };
    let essence = essence.trim().to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Refuses ([`Rejection::TooLarge`]) a declared `Content-Length` over
/// `max` before anything is read; an unparseable one is left to the capped
/// read, which stops at `max` whatever was declared.
pub fn check_content_length(header: Option<&str>, max: usize) -> Result<(), Rejection> {
    match header.and_then(|h| h.trim().parse::<u64>().ok()) {
        Some(length) if length > max as u64 => Err(Rejection::TooLarge),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"cio-signing-key";
    const BODY: &[u8] = br#"{"event_id":"01E4C4CT6YDC7Y5M7FE1GWWPQJ"}"#;

    #[test]
    fn a_signature_matches_in_either_case_and_nothing_else_does() {
        let signature = sign(KEY, "1613063089", BODY);
        assert_eq!(signature.len(), 64);
        assert_eq!(signature, signature.to_lowercase());
        assert!(signature_matches(KEY, "1613063089", BODY, &signature));
        assert!(signature_matches(KEY, "1613063089", BODY, &signature.to_uppercase()));
        assert!(!signature_matches(KEY, "1613063090", BODY, &signature), "other timestamp");
        assert!(!signature_matches(b"other-key", "1613063089", BODY, &signature), "other key");
        assert!(!signature_matches(KEY, "1613063089", b"{}", &signature), "other body");
        assert!(!signature_matches(KEY, "1613063089", BODY, &signature[..62]), "truncated");
        assert!(!signature_matches(KEY, "1613063089", BODY, "not hex"));
        assert!(!signature_matches(KEY, "1613063089", BODY, ""));
    }

    #[test]
    fn the_signed_string_is_v0_timestamp_body() {
        // Computed independently, with Python's hmac module:
        // hmac.new(b"k", b"v0:1:{}", hashlib.sha256).hexdigest()
        assert_eq!(
            sign(b"k", "1", b"{}"),
            "6e9d972a495354bb9c6b67038087671e9f624f13ec1d6aef5cce80103860a7f7"
        );
    }

    #[test]
    fn timestamps_outside_the_tolerance_are_refused() {
        let now = 1_700_000_000;
        assert_eq!(check_timestamp(Some("1700000000"), now, 300), Ok(now));
        assert_eq!(check_timestamp(Some(" 1699999700 "), now, 300), Ok(now - 300));
        assert_eq!(check_timestamp(Some("1700000300"), now, 300), Ok(now + 300));
        for bad in
            [Some("1699999699"), Some("1700000301"), Some("-5"), Some("1.5e9"), Some(""), None]
        {
            assert_eq!(check_timestamp(bad, now, 300), Err(Rejection::Timestamp), "{bad:?}");
        }
    }

    #[test]
    fn json_content_types() {
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/vnd.cio+json",
        ] {
            assert!(is_json_content_type(Some(ok)), "{ok}");
        }
        for bad in [
            None,
            Some(""),
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some("text/json+xml"),
        ] {
            assert!(!is_json_content_type(bad), "{bad:?}");
        }
    }

    #[test]
    fn declared_lengths_over_the_limit_are_refused_before_reading() {
        assert_eq!(check_content_length(Some("1024"), 1024), Ok(()));
        assert_eq!(check_content_length(Some("1025"), 1024), Err(Rejection::TooLarge));
        assert_eq!(check_content_length(None, 1024), Ok(()));
        assert_eq!(check_content_length(Some("lots"), 1024), Ok(()));
    }
}
