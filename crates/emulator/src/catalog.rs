//! Every path and method of Customer.io's published Track API document
//! (`shared/specs/customer-io-track-api-openapi.json`, operation ids as
//! there), kept here so the emulator and its tests need no copy of the
//! spec, with what the emulator cannot model about each.
//!
//! A route with a note is still answered as documented (status, auth, 400
//! rules); the note says what has no effect, and is sent back in the
//! `x-ciosync-emulator-unmodelled` header and listed by
//! `GET /_emulator/unmodelled`.

use serde::Serialize;

/// The header that carries a route's note in its answers.
pub const UNMODELLED_HEADER: &str = "x-ciosync-emulator-unmodelled";

/// One operation of the Track API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TrackRoute {
    /// HTTP method, upper case.
    pub method: &'static str,
    /// Path template as in the spec, e.g. `/api/v1/customers/{identifier}`.
    pub path: &'static str,
    /// The spec's `operationId`.
    pub operation: &'static str,
    /// Whether Basic auth is required (the spec's `security`).
    pub auth: bool,
    /// The documented success status.
    pub success: u16,
    /// What the emulator does not model, if anything (ASCII: it goes into a header).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unmodelled: Option<&'static str>,
}

const fn route(
    method: &'static str,
    path: &'static str,
    operation: &'static str,
    auth: bool,
    success: u16,
    unmodelled: Option<&'static str>,
) -> TrackRoute {
    TrackRoute { method, path, operation, auth, success, unmodelled }
}

const NO_DELIVERIES: &str = "the emulator sends no messages, so the metric changes nothing; \
     it is kept as an item in /_emulator/unmodelled";
const SEGMENTS: &str = "manual segments are created with the App API, which the emulator lacks: \
     any segment id exists once used; data-driven segments are not modelled";
const UNSUBSCRIBE: &str = "only delivery ids of webhooks the emulator sent name a person \
     (who gets unsubscribed: true); the email_unsubscribed event is not kept; \
     every call is kept as an item in /_emulator/unmodelled";
const FORMS: &str = "the person is identified with the form fields; the form connection \
     (Data & Integrations > Forms, field re-mapping) is kept only as an item";
const V2: &str = "people, objects, relationships and devices are modelled; delivery items \
     and the anonymous people of an object identify_anonymous are kept as items in \
     /_emulator/unmodelled";

/// The Track API, in the spec's order.
pub const TRACK_ROUTES: &[TrackRoute] = &[
    route("GET", "/api/v1/accounts/region", "getRegion", true, 200, None),
    route("PUT", "/api/v1/customers/{identifier}", "identify", true, 200, None),
    route("DELETE", "/api/v1/customers/{identifier}", "delete", true, 200, None),
    route("PUT", "/api/v1/customers/{identifier}/devices", "add_device", true, 200, None),
    route(
        "DELETE",
        "/api/v1/customers/{identifier}/devices/{device_id}",
        "delete_device",
        true,
        200,
        None,
    ),
    route("POST", "/api/v1/customers/{identifier}/suppress", "suppress", true, 200, None),
    route("POST", "/api/v1/customers/{identifier}/unsuppress", "unsuppress", true, 200, None),
    route("POST", "/unsubscribe/{delivery_id}", "unsubscribe", false, 200, Some(UNSUBSCRIBE)),
    route("POST", "/api/v1/customers/{identifier}/events", "track", true, 200, None),
    route("POST", "/api/v1/events", "trackAnonymous", true, 200, None),
    route("POST", "/api/v1/forms/{form_id}/submit", "submitForm", true, 204, Some(FORMS)),
    route("POST", "/api/v1/merge_customers", "merge", true, 200, None),
    route("POST", "/api/v1/metrics", "metrics", false, 200, Some(NO_DELIVERIES)),
    route("POST", "/api/v1/push/events", "pushMetrics", false, 200, Some(NO_DELIVERIES)),
    route(
        "POST",
        "/api/v1/segments/{segment_id}/add_customers",
        "add_to_segment",
        true,
        200,
        Some(SEGMENTS),
    ),
    route(
        "POST",
        "/api/v1/segments/{segment_id}/remove_customers",
        "remove_from_segment",
        true,
        200,
        Some(SEGMENTS),
    ),
    route("POST", "/api/v2/entity", "entity", true, 200, Some(V2)),
    route("POST", "/api/v2/batch", "batch", true, 200, Some(V2)),
];

/// Whether `path` (as sent, still percent-encoded) fits `template`: the
/// same segments, a `{param}` standing for any non-empty one.
fn fits(template: &str, path: &str) -> bool {
    let mut sent = path.split('/');
    let mut wanted = template.split('/');
    loop {
        match (wanted.next(), sent.next()) {
            (None, None) => return true,
            (Some(want), Some(got)) if want.starts_with('{') => {
                if got.is_empty() {
                    return false;
                }
            }
            (Some(want), Some(got)) if want == got => {}
            _ => return false,
        }
    }
}

/// The Track API path template `path` fits, if any.
pub fn template_of(path: &str) -> Option<&'static str> {
    TRACK_ROUTES.iter().map(|route| route.path).find(|template| fits(template, path))
}

/// The operation `method` and `path` name, if the Track API has it.
pub fn operation_of(method: &str, path: &str) -> Option<&'static TrackRoute> {
    TRACK_ROUTES.iter().find(|route| route.method == method && fits(route.path, path))
}

/// The routes the emulator does not fully model, with why.
pub fn unmodelled() -> Vec<TrackRoute> {
    TRACK_ROUTES.iter().filter(|route| route.unmodelled.is_some()).copied().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_fit_their_templates_only() {
        assert_eq!(
            template_of("/api/v1/customers/a%40b.c/events"),
            Some("/api/v1/customers/{identifier}/events")
        );
        assert_eq!(template_of("/api/v1/customers//events"), None);
        assert_eq!(template_of("/api/v1/customers/1/events/x"), None);
        assert_eq!(template_of("/unsubscribe/d1"), Some("/unsubscribe/{delivery_id}"));
        let delete = operation_of("DELETE", "/api/v1/customers/1/devices/d");
        assert_eq!(delete.map(|route| route.operation), Some("delete_device"));
        assert_eq!(operation_of("GET", "/api/v2/batch"), None);
    }

    #[test]
    fn notes_fit_in_a_header() {
        for route in TRACK_ROUTES {
            let note = route.unmodelled.unwrap_or_default();
            assert!(note.bytes().all(|b| (b' '..=b'~').contains(&b)), "{}", route.operation);
        }
    }
}
