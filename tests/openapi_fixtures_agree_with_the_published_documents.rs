//! The project's own schemas of Customer.io's shapes
//! (`tests/fixtures/*.schema.json`) keep the strength of Customer.io's
//! published OpenAPI documents:
//!
//! - always: every sample in `tests/fixtures/samples/` gets its expected
//!   verdict from the fixtures (each shape has valid and invalid samples, so
//!   a fixture that accepts everything fails), and every webhook the
//!   emulator sends has a valid sample;
//! - where the published documents are available (see `support::spec`):
//!   the published schema gives every sample the same verdict, except the
//!   samples marked `stricter`, which the fixtures refuse on purpose and the
//!   published schema accepts; and each fixture schema marked `x-published`,
//!   and each webhook per object type and metric, matches the published
//!   schema at the same place: the same required fields, every published
//!   property declared, the same `type`/`action`/`object_type`/`metric`/other
//!   enum values, the same alternatives (which identifier, which origin of a
//!   message), no looser types, and any extra requirement or limit explained
//!   by an `x-stricter` note. Without the documents this part prints one
//!   line saying it was skipped, and fails in CI (`CI=true`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;

use ciosync_emulator::WEBHOOK_METRICS;
use serde_json::Value;

use crate::support::spec::{self, Doc, Published, Shape};
use crate::support::tools::in_ci;

/// One sample of a shape.
struct Sample {
    what: String,
    /// The fixture's verdict.
    valid: bool,
    /// Why the fixture refuses what the published schema accepts.
    stricter: Option<String>,
    instance: Value,
}

fn samples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/samples")
}

fn samples(shape: Shape) -> Vec<Sample> {
    let path = samples_dir().join(format!("{}.json", shape.name()));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    let list: Vec<Value> = serde_json::from_str(&text)
        .unwrap_or_else(|error| panic!("{} is not a JSON list: {error}", path.display()));
    list.into_iter()
        .map(|sample| {
            let field = |name: &str| sample.get(name).cloned();
            let what = field("what").and_then(|w| w.as_str().map(str::to_owned));
            let valid = field("valid").and_then(|v| v.as_bool());
            let stricter = field("stricter").map(|s| s.as_str().map(str::to_owned));
            let instance = field("instance");
            match (what, valid, stricter, instance) {
                (Some(what), Some(valid), stricter, Some(instance))
                    if stricter.as_ref().is_none_or(Option::is_some) =>
                {
                    Sample { what, valid, stricter: stricter.flatten(), instance }
                }
                _ => panic!(
                    "{}: a sample needs what (text), valid (bool), instance, and may have \
                     stricter (text): {sample}",
                    path.display()
                ),
            }
        })
        .collect()
}

#[test]
fn every_shape_has_a_samples_file_and_every_samples_file_a_shape() {
    let mut files: BTreeSet<String> = std::fs::read_dir(samples_dir())
        .expect("tests/fixtures/samples")
        .map(|entry| entry.expect("dir entry").file_name().to_string_lossy().into_owned())
        .collect();
    for shape in Shape::ALL {
        let file = format!("{}.json", shape.name());
        assert!(files.remove(&file), "no tests/fixtures/samples/{file} for {shape:?}");
    }
    assert!(files.is_empty(), "samples of no shape: {files:?}");
}

#[test]
fn the_fixtures_give_every_sample_its_expected_verdict() {
    let mut failures = Vec::new();
    for shape in Shape::ALL {
        let validator = shape.fixture_validator();
        let samples = samples(shape);
        for verdict in [true, false] {
            assert!(
                samples.iter().any(|s| s.valid == verdict && s.stricter.is_none()),
                "{} needs a sample that is {} on both sides",
                shape.name(),
                if verdict { "valid" } else { "invalid" }
            );
        }
        for sample in samples {
            assert!(
                !(sample.valid && sample.stricter.is_some()),
                "{}: \"{}\" is valid, so it cannot be stricter",
                shape.name(),
                sample.what
            );
            let errors = spec::errors(&validator, &sample.instance);
            if errors.is_empty() != sample.valid {
                failures.push(format!(
                    "{} \"{}\": expected {}, the fixture says {}",
                    shape.name(),
                    sample.what,
                    verdict(sample.valid),
                    if errors.is_empty() { "valid".to_owned() } else { format!("{errors:?}") }
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{} samples:\n{}", failures.len(), failures.join("\n"));
}

fn verdict(valid: bool) -> &'static str {
    if valid {
        "valid"
    } else {
        "invalid"
    }
}

/// Every `object_type`/`metric` the emulator sends has a valid sample, so
/// the fixture is checked on each (push `attempted` is its own shape).
#[test]
fn every_webhook_the_emulator_sends_has_a_valid_sample() {
    let covered: BTreeSet<(String, String)> = [Shape::ReportingWebhook, Shape::PushAttempted]
        .into_iter()
        .flat_map(samples)
        .filter(|s| s.valid)
        .map(|s| {
            let text = |name: &str| s.instance[name].as_str().unwrap_or_default().to_owned();
            (text("object_type"), text("metric"))
        })
        .collect();
    for (object_type, metrics) in WEBHOOK_METRICS {
        for metric in *metrics {
            assert!(
                covered.contains(&(object_type.to_string(), metric.to_string())),
                "no valid sample of the {object_type} {metric} webhook the emulator sends"
            );
        }
    }
}

#[test]
fn the_fixtures_agree_with_the_published_documents() {
    let published = match spec::published() {
        Ok(published) => published,
        Err(dir) => {
            let what = format!(
                "Customer.io's published OpenAPI documents are not at {} (set {} to their \
                 directory)",
                dir.display(),
                spec::SHARED_SPECS_ENV
            );
            assert!(!in_ci(), "{what}: CI must check the fixtures against them");
            // Straight to stderr, past the test harness's capture: one line.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: {what}, so the fixtures in tests/fixtures/ were not cross-checked \
                 against them"
            );
            return;
        }
    };
    let mut failures = Vec::new();
    same_verdicts(published, &mut failures);
    let mut compared = 0;
    for doc in Doc::ALL {
        compared += marked_schemas_match(doc, published, &mut failures);
    }
    compared += webhooks_match_per_metric(published, &mut failures);
    assert!(compared > 30, "only {compared} schemas were compared");
    assert!(
        failures.is_empty(),
        "the fixtures and the published documents in {} disagree ({}):\n{}",
        published.dir.display(),
        failures.len(),
        failures.join("\n")
    );
}

/// The published schema's verdict on each sample is the fixture's, or
/// `valid` for a sample the fixture refuses on purpose.
fn same_verdicts(published: &Published, failures: &mut Vec<String>) {
    for shape in Shape::ALL {
        let validator = shape.published_validator(published);
        for sample in samples(shape) {
            let expected = sample.valid || sample.stricter.is_some();
            let errors = spec::errors(&validator, &sample.instance);
            if errors.is_empty() != expected {
                let why = match &sample.stricter {
                    Some(why) => format!(" (marked stricter: {why})"),
                    None => String::new(),
                };
                failures.push(format!(
                    "{} \"{}\"{why}: the published schema at {} should find it {}, it says {}",
                    shape.name(),
                    sample.what,
                    shape.published_pointer(),
                    verdict(expected),
                    if errors.is_empty() { "valid".to_owned() } else { format!("{errors:?}") }
                ));
            }
        }
    }
}

/// Compares every fixture schema carrying `x-published` with the published
/// schema(s) it names; returns how many pairs were compared.
fn marked_schemas_match(doc: Doc, published: &Published, failures: &mut Vec<String>) -> usize {
    let fixture = doc.fixture();
    let mut marked = Vec::new();
    find_marked(fixture, "", &mut marked);
    let theirs = Schemas { root: published.document(doc) };
    let ours = Schemas { root: fixture };
    let mut compared = 0;
    for (path, schema) in marked {
        let pointers = match &schema["x-published"] {
            Value::String(one) => vec![one.clone()],
            Value::Array(many) => {
                many.iter().filter_map(|p| p.as_str().map(str::to_owned)).collect()
            }
            other => panic!("{}#{path}: x-published is {other}", doc.fixture_file()),
        };
        for pointer in pointers {
            let Some(target) = theirs.root.pointer(&pointer) else {
                failures.push(format!(
                    "{}#{path}: x-published {pointer} is not in {}",
                    doc.fixture_file(),
                    doc.published_file()
                ));
                continue;
            };
            let at = format!("{}#{path} vs {pointer}", doc.fixture_file());
            compare(&ours.flat(&[schema]), &theirs.flat(&[target]), &ours, &theirs, &at, failures);
            compared += 1;
        }
    }
    compared
}

fn find_marked<'a>(value: &'a Value, path: &str, out: &mut Vec<(String, &'a Value)>) {
    match value {
        Value::Object(map) => {
            if map.contains_key("x-published") {
                out.push((path.to_owned(), value));
            }
            for (key, child) in map {
                find_marked(child, &format!("{path}/{key}"), out);
            }
        }
        Value::Array(list) => {
            for (index, child) in list.iter().enumerate() {
                find_marked(child, &format!("{path}/{index}"), out);
            }
        }
        _ => {}
    }
}

/// The published webhook body lists, per object type, one schema per
/// metric; the fixture, per object type, one branch per metric (one schema
/// per metric for `customer`). Each pair must match, and neither side may
/// have a metric the other lacks. Returns how many pairs were compared.
fn webhooks_match_per_metric(published: &Published, failures: &mut Vec<String>) -> usize {
    let theirs = Schemas { root: published.document(Doc::ReportingWebhooks) };
    let ours = Schemas { root: Doc::ReportingWebhooks.fixture() };

    let mut their_leaves: BTreeMap<(String, String), (String, Flat)> = BTreeMap::new();
    let body = theirs.root.pointer(&Shape::ReportingWebhook.published_pointer()).expect("body");
    for group in body["oneOf"].as_array().expect("the published body is a oneOf") {
        let group_name = ref_name(group);
        let object_type = group_name.trim_end_matches("_event").to_owned();
        let group = theirs.resolve(group);
        for leaf in group["oneOf"].as_array().expect("each object type is a oneOf") {
            let leaf_name = ref_name(leaf);
            if leaf_name == "push_drafted" {
                // Its metric enum says `attempted` (a mistake in the published
                // document): no push `drafted` validates, and push `attempted`
                // is compared with push_attempted below.
                continue;
            }
            let flat = theirs.flat(&[leaf]);
            let metric = single_value(&flat, "metric", &theirs)
                .unwrap_or_else(|| panic!("{leaf_name} has no single metric"));
            let previous = their_leaves.insert((object_type.clone(), metric), (leaf_name, flat));
            assert!(previous.is_none(), "two published schemas for one {object_type} metric");
        }
    }

    let mut our_leaves: BTreeMap<(String, String), (String, Flat)> = BTreeMap::new();
    let defs = &ours.root["$defs"];
    let body = defs["reporting_webhook"]["oneOf"].as_array().expect("reporting_webhook is a oneOf");
    let mut parts: Vec<(String, String)> = body
        .iter()
        .map(|branch| {
            let name = ref_name(branch);
            let object_type = match name.strip_prefix("customer_") {
                Some(_) => "customer".to_owned(),
                None => name.trim_end_matches("_message").to_owned(),
            };
            (object_type, name)
        })
        .collect();
    parts.push(("push".to_owned(), "push_attempted".to_owned()));
    for (object_type, name) in parts {
        let branch = &defs[&name];
        let mut flat = ours.flat(&[branch]);
        let per_metric = std::mem::take(&mut flat.alternatives);
        let leaves = match per_metric.as_slice() {
            [] => vec![flat],
            [metrics] => metrics.iter().map(|m| flat.clone().merge(m.clone())).collect(),
            _ => panic!("{name}: more than one list of metrics"),
        };
        for leaf in leaves {
            let metric = single_value(&leaf, "metric", &ours)
                .unwrap_or_else(|| panic!("a branch of {name} has no single metric"));
            let key = (object_type.clone(), metric);
            let previous = our_leaves.insert(key.clone(), (name.clone(), leaf));
            assert!(previous.is_none(), "the fixture has two schemas for {key:?}");
        }
    }

    let mut compared = 0;
    for (key, (their_name, theirs_flat)) in &their_leaves {
        match our_leaves.get(key) {
            Some((our_name, ours_flat)) => {
                let at = format!(
                    "{} {} webhook: {}#/$defs/{our_name} vs /components/schemas/{their_name}",
                    key.0,
                    key.1,
                    Doc::ReportingWebhooks.fixture_file()
                );
                compare(ours_flat, theirs_flat, &ours, &theirs, &at, failures);
                compared += 1;
            }
            None => failures.push(format!(
                "the published document has a {} {} webhook ({their_name}); the fixture does not",
                key.0, key.1
            )),
        }
    }
    for key in our_leaves.keys().filter(|key| !their_leaves.contains_key(key)) {
        failures.push(format!(
            "the fixture has a {} {} webhook; the published document does not",
            key.0, key.1
        ));
    }
    compared
}

fn ref_name(schema: &Value) -> String {
    let reference = schema["$ref"].as_str().unwrap_or_else(|| panic!("not a $ref: {schema}"));
    reference.rsplit('/').next().unwrap_or_default().to_owned()
}

/// The one value a flattened schema allows for `property`, if it allows one.
fn single_value(flat: &Flat, property: &str, schemas: &Schemas) -> Option<String> {
    let declared = flat.properties.get(property)?;
    let values = schemas.flat(&declared.iter().collect::<Vec<_>>()).values?;
    let mut values = values.into_iter();
    match (values.next(), values.next()) {
        (Some(one), None) => serde_json::from_str::<Value>(&one).ok()?.as_str().map(str::to_owned),
        _ => None,
    }
}

/// The keywords that narrow what a schema accepts beyond types, enums and
/// required fields; a fixture using one the published schema does not
/// must say why (`x-stricter`).
const LIMITS: [&str; 13] = [
    "maxLength",
    "minLength",
    "pattern",
    "maxProperties",
    "minProperties",
    "propertyNames",
    "maxItems",
    "minItems",
    "uniqueItems",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
];

/// A schema reduced to what the comparison reads: `$ref` resolved and
/// `allOf` merged; `oneOf`/`anyOf` kept as alternatives, except a choice
/// between bare types, which becomes a list of types.
#[derive(Debug, Clone, Default)]
struct Flat {
    /// `false`: refuses everything.
    refuses_all: bool,
    required: BTreeSet<String>,
    /// Each property's schemas, from every merged part.
    properties: BTreeMap<String, Vec<Value>>,
    types: Option<BTreeSet<String>>,
    /// `const`/`enum` values, as JSON text.
    values: Option<BTreeSet<String>>,
    items: Vec<Value>,
    /// Constraining `additionalProperties` schemas.
    additional: Vec<Value>,
    limits: BTreeSet<&'static str>,
    alternatives: Vec<Vec<Flat>>,
    /// An `x-stricter` note on any merged part.
    stricter: bool,
}

impl Flat {
    fn merge(mut self, other: Flat) -> Flat {
        self.refuses_all |= other.refuses_all;
        self.required.extend(other.required);
        for (name, schemas) in other.properties {
            self.properties.entry(name).or_default().extend(schemas);
        }
        self.types = intersect(self.types, other.types);
        self.values = intersect(self.values, other.values);
        self.items.extend(other.items);
        self.additional.extend(other.additional);
        self.limits.extend(other.limits);
        self.alternatives.extend(other.alternatives);
        self.stricter |= other.stricter;
        self
    }

    /// Only types: a branch of a choice between types.
    fn is_bare_type(&self) -> bool {
        self.types.is_some()
            && !self.refuses_all
            && self.required.is_empty()
            && self.properties.is_empty()
            && self.values.is_none()
            && self.items.is_empty()
            && self.additional.is_empty()
            && self.limits.is_empty()
            && self.alternatives.is_empty()
    }

    /// The types it allows: declared, or those of its enum values.
    fn allowed_types(&self) -> Option<BTreeSet<String>> {
        self.types.clone().or_else(|| {
            self.values.as_ref().map(|values| {
                values
                    .iter()
                    .map(|text| json_type(&serde_json::from_str(text).expect("JSON")))
                    .collect()
            })
        })
    }

    /// Required outright, or by every alternative of a choice.
    fn effectively_required(&self) -> BTreeSet<String> {
        let mut required = self.required.clone();
        for alternatives in &self.alternatives {
            let mut each = alternatives.iter().map(Flat::effectively_required);
            if let Some(first) = each.next() {
                required.extend(each.fold(first, |a, b| a.intersection(&b).cloned().collect()));
            }
        }
        required
    }

    /// Whether its alternatives are simple choices: none has alternatives
    /// of its own (a choice between operations does; between identifiers not).
    fn plain(&self) -> bool {
        self.alternatives.iter().flatten().all(|branch| branch.alternatives.is_empty())
    }
}

fn intersect<T: Ord + Clone>(
    a: Option<BTreeSet<T>>,
    b: Option<BTreeSet<T>>,
) -> Option<BTreeSet<T>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.intersection(&b).cloned().collect()),
        (a, b) => a.or(b),
    }
}

fn json_type(value: &Value) -> String {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
    .to_owned()
}

/// A document whose `#/…` refs resolve inside it.
struct Schemas<'a> {
    root: &'a Value,
}

impl Schemas<'_> {
    fn resolve<'v>(&'v self, mut schema: &'v Value) -> &'v Value {
        while let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            let pointer = reference.trim_start_matches('#').replace("%7B", "{").replace("%7D", "}");
            schema = self.root.pointer(&pointer).unwrap_or_else(|| panic!("no {reference}"));
        }
        schema
    }

    /// The parts, each flattened, merged.
    fn flat(&self, parts: &[&Value]) -> Flat {
        parts.iter().map(|part| self.flat_one(part)).fold(Flat::default(), Flat::merge)
    }

    fn flat_one(&self, schema: &Value) -> Flat {
        let mut flat = Flat::default();
        let Some(map) = schema.as_object() else {
            flat.refuses_all = schema == &Value::Bool(false);
            return flat;
        };
        if map.contains_key("$ref") {
            flat = flat.merge(self.flat_one(self.resolve(schema)));
        }
        for name in map.get("required").and_then(Value::as_array).into_iter().flatten() {
            flat.required.insert(name.as_str().expect("required names").to_owned());
        }
        for (name, property) in
            map.get("properties").and_then(Value::as_object).into_iter().flatten()
        {
            flat.properties.entry(name.clone()).or_default().push(property.clone());
        }
        match map.get("type") {
            Some(Value::String(one)) => flat.types = Some([one.clone()].into()),
            Some(Value::Array(many)) => {
                flat.types =
                    Some(many.iter().filter_map(|t| t.as_str().map(str::to_owned)).collect())
            }
            _ => {}
        }
        if let Some(one) = map.get("const") {
            flat.values = Some([one.to_string()].into());
        }
        if let Some(Value::Array(many)) = map.get("enum") {
            flat.values = intersect(flat.values, Some(many.iter().map(Value::to_string).collect()));
        }
        if let Some(items) = map.get("items") {
            flat.items.push(items.clone());
        }
        if let Some(additional) = map.get("additionalProperties") {
            if constrains(additional) {
                flat.additional.push(additional.clone());
            }
        }
        flat.limits.extend(LIMITS.iter().filter(|limit| map.contains_key(**limit)));
        flat.stricter |= map.contains_key("x-stricter");
        for part in map.get("allOf").and_then(Value::as_array).into_iter().flatten() {
            flat = flat.merge(self.flat_one(part));
        }
        for choice in ["oneOf", "anyOf"] {
            let Some(Value::Array(branches)) = map.get(choice) else { continue };
            let branches: Vec<Flat> = branches.iter().map(|b| self.flat_one(b)).collect();
            if branches.iter().all(Flat::is_bare_type) {
                let types = branches.iter().filter_map(|b| b.types.clone()).flatten().collect();
                flat.types = intersect(flat.types, Some(types));
            } else {
                flat.alternatives.push(branches);
            }
        }
        flat
    }
}

/// Whether an `additionalProperties` schema constrains anything (the
/// published documents use `{x-additionalPropertiesName: …}` to allow all).
fn constrains(schema: &Value) -> bool {
    match schema {
        Value::Bool(allowed) => !allowed,
        Value::Object(map) => map.keys().any(|key| {
            !key.starts_with("x-")
                && !matches!(key.as_str(), "description" | "title" | "example" | "$comment")
        }),
        _ => true,
    }
}

fn names(set: &BTreeSet<String>) -> String {
    set.iter().cloned().collect::<Vec<_>>().join(", ")
}

/// Compares the fixture's `ours` with the published `theirs` at `at`,
/// pushing each disagreement onto `failures`.
fn compare(
    ours: &Flat,
    theirs: &Flat,
    os: &Schemas,
    ts: &Schemas,
    at: &str,
    failures: &mut Vec<String>,
) {
    if ours.refuses_all || theirs.refuses_all {
        return;
    }
    // Disagreements at this level; those below are pushed by the recursion.
    let mut here: Vec<String> = Vec::new();
    let unexplained = |what: String| format!("{what}, without an x-stricter note saying why");

    let our_required = ours.effectively_required();
    let their_required = theirs.effectively_required();
    let missing: BTreeSet<String> = their_required.difference(&our_required).cloned().collect();
    if !missing.is_empty() {
        here.push(format!(
            "the published schema requires {}, the fixture does not",
            names(&missing)
        ));
    }
    let extra: BTreeSet<String> = our_required.difference(&their_required).cloned().collect();
    if !extra.is_empty() && !ours.stricter {
        here.push(unexplained(format!("the fixture also requires {}", names(&extra))));
    }

    if let Some(their_types) = &theirs.allowed_types() {
        match ours.allowed_types() {
            None => here.push(format!(
                "the published schema allows only type {}, the fixture any",
                names(their_types)
            )),
            Some(our_types) => {
                let allowed = |t: &String| {
                    their_types.contains(t) || (t == "integer" && their_types.contains("number"))
                };
                let looser: BTreeSet<String> =
                    our_types.iter().filter(|t| !allowed(t)).cloned().collect();
                if !looser.is_empty() {
                    here.push(format!(
                        "the fixture allows type {}, the published schema only {}",
                        names(&looser),
                        names(their_types)
                    ));
                } else if &our_types != their_types && !ours.stricter {
                    here.push(unexplained(format!(
                        "the fixture allows only type {} of {}",
                        names(&our_types),
                        names(their_types)
                    )));
                }
            }
        }
    }

    match (&ours.values, &theirs.values) {
        (None, Some(their_values)) => here.push(format!(
            "the published schema allows only {their_values:?}, the fixture any value"
        )),
        (Some(our_values), Some(their_values)) => {
            let looser: Vec<&String> = our_values.difference(their_values).collect();
            if !looser.is_empty() {
                here.push(format!(
                    "the fixture allows {looser:?}, which the published schema does not \
                     ({their_values:?})"
                ));
            } else if our_values != their_values && !ours.stricter {
                here.push(unexplained(format!(
                    "the fixture allows only {our_values:?} of {their_values:?}"
                )));
            }
        }
        (Some(our_values), None) if !ours.stricter => {
            here.push(unexplained(format!("the fixture allows only {our_values:?}")))
        }
        _ => {}
    }

    let our_limits: BTreeSet<&str> = ours.limits.difference(&theirs.limits).copied().collect();
    if !our_limits.is_empty() && !ours.stricter {
        here.push(unexplained(format!("the fixture adds {our_limits:?}")));
    }

    // Every property the published schema declares, in its alternatives
    // too, is declared by the fixture and no looser there.
    let mut our_declarations = BTreeMap::new();
    collect_declarations(ours, &mut our_declarations);
    let mut their_declarations = BTreeMap::new();
    collect_declarations(theirs, &mut their_declarations);
    for (name, declarations) in &their_declarations {
        let Some(our_parts) = our_declarations.get(name) else {
            here.push(format!("the published schema declares {name}, the fixture does not"));
            continue;
        };
        let our_property = os.flat(&our_parts.iter().collect::<Vec<_>>());
        if our_property.refuses_all {
            if !ours.stricter {
                here.push(unexplained(format!("the fixture refuses {name}")));
            }
            continue;
        }
        for declaration in declarations {
            let their_property = ts.flat(&[declaration]);
            compare(&our_property, &their_property, os, ts, &format!("{at}/{name}"), failures);
        }
    }

    for (keyword, our_parts, their_parts) in [
        ("items", &ours.items, &theirs.items),
        ("additionalProperties", &ours.additional, &theirs.additional),
    ] {
        match (our_parts.is_empty(), their_parts.is_empty()) {
            (false, false) => compare(
                &os.flat(&our_parts.iter().collect::<Vec<_>>()),
                &ts.flat(&their_parts.iter().collect::<Vec<_>>()),
                os,
                ts,
                &format!("{at}/{keyword}"),
                failures,
            ),
            (true, false) => here
                .push(format!("the published schema constrains {keyword}, the fixture does not")),
            (false, true) if !ours.stricter => {
                here.push(unexplained(format!("the fixture constrains {keyword}")))
            }
            _ => {}
        }
    }

    // A choice (which identifier, which origin of a message) offers the
    // same alternatives, told apart by what each requires beyond what all do.
    match (ours.alternatives.as_slice(), theirs.alternatives.as_slice()) {
        ([our_choice], [their_choice]) if ours.plain() && theirs.plain() => {
            let our_options = options(our_choice, &our_required);
            let their_options = options(their_choice, &their_required);
            let extra: Vec<_> = our_options.difference(&their_options).collect();
            let missing: Vec<_> = their_options.difference(&our_options).collect();
            if !extra.is_empty() {
                here.push(format!(
                    "the fixture offers the alternatives {extra:?}, which the published schema \
                     does not ({their_options:?})"
                ));
            } else if !missing.is_empty() && !ours.stricter {
                here.push(unexplained(format!(
                    "the fixture lacks the published alternatives {missing:?}"
                )));
            }
        }
        ([], [their_choice]) if theirs.plain() => here.push(format!(
            "the published schema offers the alternatives {:?}, the fixture none",
            options(their_choice, &their_required)
        )),
        ([_], []) if !ours.stricter => {
            here.push(unexplained("the fixture adds alternatives".to_owned()))
        }
        _ => {}
    }

    failures.extend(here.into_iter().map(|what| format!("{at}: {what}")));
}

/// What each alternative requires beyond `common`.
fn options(choice: &[Flat], common: &BTreeSet<String>) -> BTreeSet<BTreeSet<String>> {
    choice
        .iter()
        .map(|branch| branch.effectively_required().difference(common).cloned().collect())
        .collect()
}

/// The properties `flat` declares, with those of its alternatives when they
/// are simple choices (see `Flat::plain`); a choice between whole shapes,
/// such as the published batch item's operations, is compared shape by
/// shape through the fixture's `x-published` marks instead.
fn collect_declarations(flat: &Flat, out: &mut BTreeMap<String, Vec<Value>>) {
    for (name, schemas) in &flat.properties {
        out.entry(name.clone()).or_default().extend(schemas.iter().cloned());
    }
    if flat.plain() {
        for alternative in flat.alternatives.iter().flatten() {
            collect_declarations(alternative, out);
        }
    }
}
