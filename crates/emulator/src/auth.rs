//! HTTP Basic auth as the Track API does it: `base64(site_id:api_key)`.
//!
//! Both base64 alphabets are accepted, with or without padding, because
//! go-customerio encodes with the URL-safe one (facts sheet §1).

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use ciosync_track_api::{ErrorsResponse, ItemError, V1ErrorResponse, V1Meta};

use crate::state::Shared;

const LENIENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);

/// Whether `headers` carry Basic credentials equal to `site_id:api_key`.
pub fn is_authorized(headers: &HeaderMap, site_id: &str, api_key: &str) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some((scheme, encoded)) = value.trim().split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let encoded = encoded.trim();
    let Some(decoded) = STANDARD.decode(encoded).or_else(|_| URL_SAFE.decode(encoded)).ok() else {
        return false;
    };
    let Ok(decoded) = String::from_utf8(decoded) else {
        return false;
    };
    match decoded.split_once(':') {
        Some((user, password)) => user == site_id && password == api_key,
        None => false,
    }
}

/// Middleware for the Track API routes: 401 unless the credentials match.
pub async fn require(State(shared): State<Shared>, request: Request, next: Next) -> Response {
    let config = shared.config();
    if is_authorized(request.headers(), &config.site_id, &config.api_key) {
        return next.run(request).await;
    }
    tracing::debug!(path = request.uri().path(), "rejecting request without valid credentials");
    unauthorized(request.uri().path().starts_with("/api/v2/"))
}

/// The 401 answer. The spec gives 401 no body; these bodies are a guess in
/// each API version's error shape, so clients that parse errors still can.
fn unauthorized(v2: bool) -> Response {
    const MESSAGE: &str = "Unauthorized request";
    if v2 {
        let body = ErrorsResponse {
            errors: vec![ItemError {
                reason: Some("unauthorized".to_owned()),
                message: Some(MESSAGE.to_owned()),
                ..ItemError::default()
            }],
        };
        (StatusCode::UNAUTHORIZED, Json(body)).into_response()
    } else {
        let body = V1ErrorResponse {
            meta: V1Meta { errors: Vec::new(), error: Some(MESSAGE.to_owned()) },
        };
        (StatusCode::UNAUTHORIZED, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use base64::engine::general_purpose;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    // "site:x???~~~" encodes with '/' and '+' in the standard alphabet and
    // '_' and '-' in the URL-safe one, so both alphabets are really exercised.
    const KEY: &str = "x???~~~";

    #[test]
    fn accepts_both_alphabets_with_and_without_padding() {
        let raw = format!("site:{KEY}");
        for encoded in [
            general_purpose::STANDARD.encode(&raw),
            general_purpose::STANDARD_NO_PAD.encode(&raw),
            general_purpose::URL_SAFE.encode(&raw),
            general_purpose::URL_SAFE_NO_PAD.encode(&raw),
        ] {
            assert!(is_authorized(&headers(&format!("Basic {encoded}")), "site", KEY), "{encoded}");
        }
        assert_ne!(general_purpose::STANDARD.encode(&raw), general_purpose::URL_SAFE.encode(&raw));
    }

    #[test]
    fn rejects_wrong_or_missing_credentials() {
        let wrong = general_purpose::STANDARD.encode("site:other");
        assert!(!is_authorized(&headers(&format!("Basic {wrong}")), "site", KEY));
        assert!(!is_authorized(&headers("Bearer abc"), "site", KEY));
        assert!(!is_authorized(&headers("Basic !!!"), "site", KEY));
        assert!(!is_authorized(&HeaderMap::new(), "site", KEY));
    }
}
