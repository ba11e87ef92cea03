//! Customer.io's request, answer and webhook shapes as JSON Schema checks,
//! for what the sink sends and what the emulator answers and sends.
//!
//! Every check uses the project's own schemas in `tests/fixtures/`
//! (compiled in, so a bare checkout needs nothing else). Where Customer.io's
//! published OpenAPI documents are available, each check also validates
//! against the published schema for the same shape, so CI keeps their full
//! strength. They are looked for in the directory `CIOSYNC_SHARED_SPECS`
//! names, else in `CARGO_MANIFEST_DIR/../shared/specs`, where CI keeps them.
//! `tests/openapi_fixtures_agree_with_the_published_documents.rs` checks the
//! two against each other.

use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::Value;

/// The environment variable naming the directory of the published documents.
pub const SHARED_SPECS_ENV: &str = "CIOSYNC_SHARED_SPECS";

/// Which API a shape belongs to: the Track API or the reporting webhooks,
/// each with a fixture document and a published one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Doc {
    TrackApi,
    ReportingWebhooks,
}

impl Doc {
    pub const ALL: [Doc; 2] = [Doc::TrackApi, Doc::ReportingWebhooks];

    /// The project's schema document, under `tests/fixtures/`.
    pub fn fixture_file(self) -> &'static str {
        match self {
            Doc::TrackApi => "tests/fixtures/track-api.schema.json",
            Doc::ReportingWebhooks => "tests/fixtures/reporting-webhooks.schema.json",
        }
    }

    /// The published document's file name in the shared specs directory.
    pub fn published_file(self) -> &'static str {
        match self {
            Doc::TrackApi => "customer-io-track-api-openapi.json",
            Doc::ReportingWebhooks => "customer-io-reporting-webhooks-openapi.json",
        }
    }

    /// The project's schema document, parsed.
    pub fn fixture(self) -> &'static Value {
        static TRACK: OnceLock<Value> = OnceLock::new();
        static WEBHOOKS: OnceLock<Value> = OnceLock::new();
        let (cell, text) = match self {
            Doc::TrackApi => (&TRACK, include_str!("../fixtures/track-api.schema.json")),
            Doc::ReportingWebhooks => {
                (&WEBHOOKS, include_str!("../fixtures/reporting-webhooks.schema.json"))
            }
        };
        cell.get_or_init(|| {
            serde_json::from_str(text)
                .unwrap_or_else(|error| panic!("{} is not JSON: {error}", self.fixture_file()))
        })
    }
}

/// A shape the tests check, named after what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `POST /api/v2/batch` request body.
    BatchRequest,
    /// `POST /api/v2/entity` request body.
    EntityRequest,
    /// `/api/v2/batch` 207 answer: the items that failed.
    BatchPartial,
    /// `/api/v2/batch` 400 answer.
    BatchRefusal,
    /// `/api/v2/entity` 400 answer.
    EntityRefusal,
    /// The v1 endpoints' shared 400 answer.
    V1Refusal,
    /// `/api/v1/merge_customers` 400 answer.
    MergeRefusal,
    /// `GET /api/v1/accounts/region` 200 answer.
    Region,
    /// `PUT /api/v1/customers/{identifier}` request body.
    V1Identify,
    /// `POST /api/v1/customers/{identifier}/events` request body.
    V1Event,
    /// `POST /api/v1/events` (anonymous event) request body.
    AnonymousEvent,
    /// A reporting webhook's body, any object type and metric except push
    /// `attempted`.
    ReportingWebhook,
    /// A push `attempted` reporting webhook's body (see the fixture's note).
    PushAttempted,
}

impl Shape {
    pub const ALL: [Shape; 13] = [
        Shape::BatchRequest,
        Shape::EntityRequest,
        Shape::BatchPartial,
        Shape::BatchRefusal,
        Shape::EntityRefusal,
        Shape::V1Refusal,
        Shape::MergeRefusal,
        Shape::Region,
        Shape::V1Identify,
        Shape::V1Event,
        Shape::AnonymousEvent,
        Shape::ReportingWebhook,
        Shape::PushAttempted,
    ];

    /// The name of its samples file, `tests/fixtures/samples/{name}.json`.
    pub fn name(self) -> &'static str {
        match self {
            Shape::BatchRequest => "batch_request",
            Shape::EntityRequest => "entity_request",
            Shape::BatchPartial => "batch_partial",
            Shape::BatchRefusal => "batch_refusal",
            Shape::EntityRefusal => "entity_refusal",
            Shape::V1Refusal => "v1_refusal",
            Shape::MergeRefusal => "merge_refusal",
            Shape::Region => "region",
            Shape::V1Identify => "v1_identify",
            Shape::V1Event => "v1_event",
            Shape::AnonymousEvent => "anonymous_event",
            Shape::ReportingWebhook => "reporting_webhook",
            Shape::PushAttempted => "push_attempted",
        }
    }

    pub fn doc(self) -> Doc {
        match self {
            Shape::ReportingWebhook | Shape::PushAttempted => Doc::ReportingWebhooks,
            _ => Doc::TrackApi,
        }
    }

    /// Its schema in the fixture document: `#/$defs/{fixture_def}`.
    pub fn fixture_def(self) -> &'static str {
        match self {
            Shape::BatchRefusal | Shape::EntityRefusal => "v2_refusal",
            Shape::V1Refusal | Shape::MergeRefusal => "v1_refusal",
            other => other.name(),
        }
    }

    /// JSON pointer to its schema in the published document.
    pub fn published_pointer(self) -> String {
        let json = "/content/application~1json/schema";
        let path =
            |path: &str, rest: &str| format!("/paths/{}{rest}{json}", path.replace('/', "~1"));
        match self {
            Shape::BatchRequest => path("/api/v2/batch", "/post/requestBody"),
            Shape::EntityRequest => path("/api/v2/entity", "/post/requestBody"),
            Shape::BatchPartial => path("/api/v2/batch", "/post/responses/207"),
            Shape::BatchRefusal => path("/api/v2/batch", "/post/responses/400"),
            Shape::EntityRefusal => path("/api/v2/entity", "/post/responses/400"),
            Shape::V1Refusal => format!("/components/responses/400{json}"),
            Shape::MergeRefusal => path("/api/v1/merge_customers", "/post/responses/400"),
            Shape::Region => path("/api/v1/accounts/region", "/get/responses/200"),
            Shape::V1Identify => path("/api/v1/customers/{identifier}", "/put/requestBody"),
            Shape::V1Event => "/components/schemas/eventsRequest".to_owned(),
            Shape::AnonymousEvent => path("/api/v1/events", "/post/requestBody"),
            Shape::ReportingWebhook => format!("/webhooks/reportingWebhook/post/requestBody{json}"),
            Shape::PushAttempted => "/components/schemas/push_attempted".to_owned(),
        }
    }

    /// A validator for the project's schema of this shape.
    pub fn fixture_validator(self) -> jsonschema::Validator {
        let pointer = format!("/$defs/{}", self.fixture_def());
        assert!(
            self.doc().fixture().pointer(&pointer).is_some(),
            "{} has no {pointer}",
            self.doc().fixture_file()
        );
        compile(self.doc().fixture(), &pointer)
    }

    /// A validator for the published schema of this shape.
    pub fn published_validator(self, published: &Published) -> jsonschema::Validator {
        let document = published.document(self.doc());
        let pointer = self.published_pointer();
        assert!(
            document.pointer(&pointer).is_some(),
            "{} has nothing at {pointer}",
            self.doc().published_file()
        );
        compile(document, &pointer)
    }
}

/// Customer.io's published documents, found beside the checkout.
pub struct Published {
    pub dir: PathBuf,
    track: Value,
    webhooks: Value,
}

impl Published {
    pub fn document(&self, doc: Doc) -> &Value {
        match doc {
            Doc::TrackApi => &self.track,
            Doc::ReportingWebhooks => &self.webhooks,
        }
    }
}

/// Where the published documents are looked for: `$CIOSYNC_SHARED_SPECS`,
/// else `CARGO_MANIFEST_DIR/../shared/specs`.
pub fn shared_specs_dir() -> PathBuf {
    match std::env::var_os(SHARED_SPECS_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/specs"),
    }
}

/// The published documents, or `Err` with the directory that does not
/// exist. A directory that exists but lacks a document, or holds one that
/// is not JSON, is a broken setup and panics, as does a
/// `CIOSYNC_SHARED_SPECS` naming a missing directory.
pub fn published() -> Result<&'static Published, PathBuf> {
    static PUBLISHED: OnceLock<Result<Published, PathBuf>> = OnceLock::new();
    PUBLISHED.get_or_init(load_published).as_ref().map_err(Clone::clone)
}

fn load_published() -> Result<Published, PathBuf> {
    let dir = shared_specs_dir();
    if !dir.is_dir() {
        assert!(
            std::env::var_os(SHARED_SPECS_ENV).is_none_or(|v| v.is_empty()),
            "{SHARED_SPECS_ENV} names {}, which is not a directory",
            dir.display()
        );
        return Err(dir);
    }
    let read = |doc: Doc| {
        let path = dir.join(doc.published_file());
        let text = std::fs::read_to_string(&path).unwrap_or_else(|error| {
            panic!("{} exists but {} cannot be read: {error}", dir.display(), path.display())
        });
        serde_json::from_str::<Value>(&text)
            .unwrap_or_else(|error| panic!("{} is not JSON: {error}", path.display()))
    };
    Ok(Published { track: read(Doc::TrackApi), webhooks: read(Doc::ReportingWebhooks), dir })
}

/// A validator for the schema at JSON pointer `pointer` in `document`: the
/// whole document becomes the root schema plus a `$ref` to the pointer, so
/// its own `#/...` refs resolve inside it. OpenAPI-only keywords
/// (`discriminator`, `example`, `x-*`) are unknown to JSON Schema 2020-12
/// and ignored; formats are annotations only, so they are not checked.
pub fn compile(document: &Value, pointer: &str) -> jsonschema::Validator {
    let mut root = document.clone();
    // A URI fragment: `{` and `}` (in path templates) are percent-encoded.
    let fragment = pointer.replace('{', "%7B").replace('}', "%7D");
    root["$ref"] = Value::String(format!("#{fragment}"));
    jsonschema::draft202012::options()
        .build(&root)
        .unwrap_or_else(|error| panic!("the schema at {pointer} does not compile: {error}"))
}

/// Errors of `validator` on `instance`, as text.
pub fn errors(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator.iter_errors(instance).map(|e| format!("{e} (at {})", e.instance_path)).collect()
}

/// The check of one shape: ours, and the published one when available.
pub struct Check {
    shape: Shape,
    fixture: jsonschema::Validator,
    published: Option<jsonschema::Validator>,
}

/// The check of `shape`.
pub fn check(shape: Shape) -> Check {
    Check {
        shape,
        fixture: shape.fixture_validator(),
        published: published().ok().map(|published| shape.published_validator(published)),
    }
}

impl Check {
    /// Asserts `instance` is valid against both schemas.
    #[track_caller]
    pub fn assert_valid(&self, instance: &Value, what: &str) {
        let ours = errors(&self.fixture, instance);
        assert!(
            ours.is_empty(),
            "{what} breaks ciosync's schema {} in {}: {ours:?}\n{instance}",
            self.shape.fixture_def(),
            self.shape.doc().fixture_file()
        );
        if let Some(published) = &self.published {
            let theirs = errors(published, instance);
            assert!(
                theirs.is_empty(),
                "{what} breaks Customer.io's published schema at {} in {}: {theirs:?}\n{instance}",
                self.shape.published_pointer(),
                self.shape.doc().published_file()
            );
        }
    }

    /// Asserts both schemas refuse `instance`: that the check can fail.
    #[track_caller]
    pub fn assert_invalid(&self, instance: &Value, what: &str) {
        assert!(
            !self.fixture.is_valid(instance),
            "ciosync's schema {} accepts {what}: {instance}",
            self.shape.fixture_def()
        );
        if let Some(published) = &self.published {
            assert!(
                !published.is_valid(instance),
                "Customer.io's published schema at {} accepts {what}: {instance}",
                self.shape.published_pointer()
            );
        }
    }

    /// Whether `instance` is valid; panics if the two schemas disagree.
    #[track_caller]
    pub fn is_valid(&self, instance: &Value) -> bool {
        let ours = self.fixture.is_valid(instance);
        if let Some(published) = &self.published {
            let theirs = published.is_valid(instance);
            assert_eq!(
                ours,
                theirs,
                "ciosync's schema {} and the published one at {} disagree on {instance}",
                self.shape.fixture_def(),
                self.shape.published_pointer()
            );
        }
        ours
    }
}
