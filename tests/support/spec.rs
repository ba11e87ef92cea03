//! Customer.io's published OpenAPI document as JSON Schema validators, for
//! checking what the sink sends and what the emulator answers.
//!
//! The document is read from `CARGO_MANIFEST_DIR/../shared/specs/`, where
//! the repository keeps it beside the crate (also in CI).

use serde_json::Value;

const SPEC: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/specs/customer-io-track-api-openapi.json");
const WEBHOOK_SPEC: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/specs/customer-io-reporting-webhooks-openapi.json"
);

/// The Track API document.
pub fn spec() -> Value {
    read(SPEC)
}

/// The reporting-webhooks document.
pub fn webhook_spec() -> Value {
    read(WEBHOOK_SPEC)
}

/// Pointer to the reporting webhook's body schema in `webhook_spec()`.
pub const WEBHOOK_BODY: &str =
    "/webhooks/reportingWebhook/post/requestBody/content/application~1json/schema";

fn read(path: &str) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|error| {
        panic!(
            "cannot read Customer.io's OpenAPI document at {path}: {error}. These tests expect \
             the repository's shared/ folder beside the crate (CARGO_MANIFEST_DIR/../shared)."
        )
    });
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{path} is not JSON: {error}"))
}

/// A validator for the schema at JSON pointer `pointer` in the document.
/// The whole document becomes the root schema plus a `$ref` to the
/// pointer, so the spec's own `#/components/...` refs resolve inside it.
/// OpenAPI-only keywords (`discriminator`, `example`, `x-*`) are unknown to
/// JSON Schema 2020-12 and ignored; formats such as `ulid` and `email` are
/// annotations only in 2020-12, so they are not checked.
pub fn validator(spec: &Value, pointer: &str) -> jsonschema::Validator {
    let mut root = spec.clone();
    root["$ref"] = Value::String(format!("#{pointer}"));
    jsonschema::draft202012::options()
        .build(&root)
        .unwrap_or_else(|error| panic!("schema at {pointer} does not compile: {error}"))
}

/// Pointer to something under a path item, e.g. `/post/responses/207`,
/// ready for a URI fragment (so `{` and `}` are percent-encoded).
pub fn path_pointer(path: &str, rest: &str) -> String {
    let escaped =
        path.replace('~', "~0").replace('/', "~1").replace('{', "%7B").replace('}', "%7D");
    format!("/paths/{escaped}{rest}")
}

pub const JSON_SCHEMA: &str = "/content/application~1json/schema";

pub fn assert_valid(validator: &jsonschema::Validator, instance: &Value, what: &str) {
    let errors: Vec<String> = validator.iter_errors(instance).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{what} breaks the spec: {errors:?}\n{instance}");
}
