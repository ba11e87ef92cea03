//! What `ciosync dlq` prints, as pure functions over stored letters: a table
//! for people, one JSON object per line for scripts, and the retry summary.
//!
//! This output is for the operator, so customer ids, event names and
//! Customer.io's error texts appear; attribute values (the payload) only
//! when asked for. Never a credential: nothing here sees the config.
//!
//! Each kind reads as what it did: `identify`, `delete`, `suppress`,
//! `merge 5 into 4` (the customer is the primary), `event "signed_up"`,
//! `anonymous event "viewed_pricing"` (the customer is the anonymous id).

use serde_json::{json, Value};

use super::StoredLetter;
use crate::track_api::Route;

const HEADERS: [&str; 9] = [
    "ID",
    "CUSTOMER",
    "OPERATION",
    "ATTRIBUTES",
    "STATUS",
    "ATTEMPTS",
    "FIRST ATTEMPT (UTC)",
    "LAST ATTEMPT (UTC)",
    "ERROR",
];

/// The letters as an aligned table with a header, or a sentence when there are none.
pub fn table(letters: &[StoredLetter], slot: &str) -> String {
    if letters.is_empty() {
        return format!("no dead letters for slot {slot}\n");
    }
    let rows: Vec<[String; 9]> = letters.iter().map(cells).collect();
    let mut widths = HEADERS.map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(HEADERS.map(str::to_owned)).chain(rows) {
        let last = row.len() - 1;
        for (i, cell) in row.iter().enumerate() {
            if i == last {
                // The error is free text of any length: last and unpadded.
                out.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                out.push_str(cell);
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push('\n');
    }
    out
}

fn cells(letter: &StoredLetter) -> [String; 9] {
    [
        letter.id.to_string(),
        printable(&letter.customer_id),
        operation_cell(letter),
        attributes_cell(&letter.attributes),
        letter.status.to_string(),
        letter.attempts.to_string(),
        time(letter.first_attempt_at, ' '),
        time(letter.last_attempt_at, ' '),
        printable(&letter.error),
    ]
}

/// Widest event name or merged id in the table, in characters.
const MAX_NAME_CHARS: usize = 40;

/// What the letter did, by kind: an event with its name (and whether it is
/// anonymous), a merge with both ids, anything else its operation.
fn operation_cell(letter: &StoredLetter) -> String {
    let outline = &letter.outline;
    let short = |text: &str| {
        let text = printable(text);
        if text.chars().count() <= MAX_NAME_CHARS {
            return text;
        }
        let cut: String = text.chars().take(MAX_NAME_CHARS - 1).collect();
        cut + "…"
    };
    let anonymous = if outline.route == Route::AnonymousEvent { "anonymous " } else { "" };
    match (letter.operation.as_str(), &outline.event_name, &outline.secondary_id) {
        ("event", Some(name), _) => format!("{anonymous}event \"{}\"", short(name)),
        ("event", None, _) => format!("{anonymous}event"),
        ("merge", _, Some(secondary)) => {
            format!("merge {} into {}", short(secondary), short(&letter.customer_id))
        }
        (operation, _, _) => printable(operation),
    }
}

/// Widest attribute-name list in the table, in characters.
const MAX_ATTRIBUTES_CHARS: usize = 40;

/// The attribute names, cut to fit a column (an identify may carry 300
/// names of 150 bytes each); `--json` lists them all.
fn attributes_cell(names: &[String]) -> String {
    if names.is_empty() {
        return "-".to_owned();
    }
    let all = printable(&names.join(","));
    if all.chars().count() <= MAX_ATTRIBUTES_CHARS {
        return all;
    }
    let cut: String = all.chars().take(MAX_ATTRIBUTES_CHARS - 1).collect();
    let noun = if names.len() == 1 { "name" } else { "names" };
    format!("{cut}… ({} {noun})", names.len())
}

/// One letter as one line of JSON; the payload (parsed) only when loaded.
/// An event adds `event_name` and `anonymous`, a merge `secondary_id`.
pub fn json_line(letter: &StoredLetter) -> String {
    let mut object = json!({
        "id": letter.id,
        "customer_id": letter.customer_id,
        "operation": letter.operation,
        "attributes": letter.attributes,
        "status": letter.status,
        "error": letter.error,
        "attempts": letter.attempts,
        "first_attempt_at": time(letter.first_attempt_at, 'T') + "Z",
        "last_attempt_at": time(letter.last_attempt_at, 'T') + "Z",
    });
    let outline = &letter.outline;
    if let Some(map) = object.as_object_mut() {
        if letter.operation == "event" {
            map.insert("event_name".to_owned(), json!(outline.event_name));
            map.insert("anonymous".to_owned(), json!(outline.route == Route::AnonymousEvent));
        }
        if let Some(secondary) = &outline.secondary_id {
            map.insert("secondary_id".to_owned(), json!(secondary));
        }
    }
    if let (Some(payload), Some(map)) = (&letter.payload, object.as_object_mut()) {
        let value =
            serde_json::from_str(payload).unwrap_or_else(|_| Value::String(payload.clone()));
        map.insert("payload".to_owned(), value);
    }
    object.to_string()
}

/// One letter replayed and refused again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub id: i64,
    pub status: u16,
    pub error: String,
}

/// Why `dlq retry` sent nothing for a letter (and deleted it): sending it
/// would set its customer, object, relationship or device back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// An add (an identify, an `object_identify`, an `add_relationship`,
    /// an `add_device`) whose row is gone, or no longer syncs (filtered
    /// out, soft-deleted): its removal went, or goes, through the stream.
    RowGone,
    /// A removal (a customer's delete or suppression, an `object_delete`,
    /// a `delete_relationship`, a `delete_device`) whose row exists again
    /// and syncs: the removal is stale.
    RowBack,
}

impl Skip {
    fn reason(self) -> &'static str {
        match self {
            Skip::RowGone => {
                "the row is gone or no longer syncs; its removal goes through the stream"
            }
            Skip::RowBack => "its row exists again and syncs; the removal is stale",
        }
    }
}

/// What one `dlq retry` did, letter by letter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetrySummary {
    /// Sent as they were refused (events, merges, checked removals).
    pub delivered: usize,
    /// Identifies sent with the row's current values instead.
    pub refreshed: usize,
    pub skipped: Vec<(i64, Skip)>,
    pub refused: Vec<Refusal>,
    /// Kept because the row changed after every send, with why.
    pub kept: Vec<(i64, &'static str)>,
    /// Delivered as they were although they are identifies, with why.
    pub sent_as_refused: Vec<(i64, &'static str)>,
}

/// `retried N: delivered D, refreshed from the row R, skipped S, refused
/// again F` (`, kept K` when some were), then one line per letter that was
/// not simply delivered.
pub fn retry_summary(summary: &RetrySummary) -> String {
    let s = summary;
    let total = s.delivered + s.refreshed + s.skipped.len() + s.refused.len() + s.kept.len();
    let mut out = format!(
        "retried {total}: delivered {}, refreshed from the row {}, skipped {}, refused again {}",
        s.delivered,
        s.refreshed,
        s.skipped.len(),
        s.refused.len()
    );
    if !s.kept.is_empty() {
        out.push_str(&format!(", kept {}", s.kept.len()));
    }
    out.push('\n');
    for (id, skip) in &s.skipped {
        out.push_str(&format!("  #{id} skipped: {}\n", skip.reason()));
    }
    for (id, why) in &s.sent_as_refused {
        out.push_str(&format!("  #{id} sent as it was refused: {why}\n"));
    }
    for refusal in &s.refused {
        out.push_str(&format!(
            "  #{} refused again (HTTP {}): {}\n",
            refusal.id,
            refusal.status,
            printable(&refusal.error)
        ));
    }
    for (id, why) in &s.kept {
        out.push_str(&format!("  #{id} kept: {why}\n"));
    }
    out
}

/// `YYYY-MM-DD?HH:MM:SS` in UTC, `sep` between date and time.
pub(crate) fn time(unix_secs: i64, sep: char) -> String {
    match chrono::DateTime::from_timestamp(unix_secs, 0) {
        Some(t) => t.format(&format!("%Y-%m-%d{sep}%H:%M:%S")).to_string(),
        None => unix_secs.to_string(),
    }
}

/// Text with control characters escaped, so a stored id or error cannot
/// break the table or send escape sequences to the terminal.
pub(crate) fn printable(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars()
        .map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::Outline;
    use super::*;

    fn letter(id: i64, customer_id: &str, attributes: &[&str], error: &str) -> StoredLetter {
        StoredLetter {
            id,
            customer_id: customer_id.to_owned(),
            operation: "identify".to_owned(),
            attributes: attributes.iter().map(|a| a.to_string()).collect(),
            status: 207,
            error: error.to_owned(),
            attempts: 1,
            first_attempt_at: 1_700_000_000,
            last_attempt_at: 1_700_000_060,
            outline: Outline { route: Route::Batch, event_name: None, secondary_id: None },
            payload: None,
        }
    }

    /// A letter of `operation` whose payload is `payload`, outlined as `dlq` reads it.
    fn of_kind(operation: &str, customer_id: &str, payload: Value) -> StoredLetter {
        StoredLetter {
            operation: operation.to_owned(),
            outline: Outline::of(operation, &payload),
            ..letter(1, customer_id, &[], "refused")
        }
    }

    #[test]
    fn each_kind_reads_as_what_it_did_without_values() {
        let cases = [
            (of_kind("identify", "1", json!({"action": "identify"})), "identify"),
            (of_kind("delete", "2", json!({"action": "delete"})), "delete"),
            (of_kind("suppress", "3", json!({"action": "suppress"})), "suppress"),
            (
                of_kind("merge", "4", json!({"primary": {"id": "4"}, "secondary": {"id": "5"}})),
                "merge 5 into 4",
            ),
            (
                of_kind("event", "6", json!({"action": "event", "name": "signed_up"})),
                "event \"signed_up\"",
            ),
            (
                of_kind("event", "cookie-7", json!({"anonymous_id": "cookie-7", "name": "viewed"})),
                "anonymous event \"viewed\"",
            ),
            (of_kind("event", "8", json!({})), "event"),
            (
                of_kind("event", "9", json!({"name": format!("n\n{}", "x".repeat(60))})),
                "event \"n\\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…\"",
            ),
        ];
        for (letter, expected) in &cases {
            assert_eq!(operation_cell(letter), *expected);
        }
        let text = table(&cases.iter().map(|(l, _)| l.clone()).collect::<Vec<_>>(), "s");
        assert!(text.lines().nth(4).unwrap().contains("  merge 5 into 4  "), "{text}");

        let json = |l: &StoredLetter| serde_json::from_str::<Value>(&json_line(l)).unwrap();
        let anonymous = json(&cases[5].0);
        assert_eq!(
            (&anonymous["event_name"], &anonymous["anonymous"]),
            (&json!("viewed"), &json!(true))
        );
        assert_eq!(json(&cases[4].0)["anonymous"], json!(false));
        assert_eq!(json(&cases[3].0)["secondary_id"], json!("5"));
        assert!(json(&cases[0].0).get("event_name").is_none());
    }

    #[test]
    fn an_empty_table_says_so() {
        assert_eq!(table(&[], "ciosync"), "no dead letters for slot ciosync\n");
    }

    #[test]
    fn the_table_aligns_columns_and_puts_the_error_last() {
        let text = table(
            &[letter(3, "42", &["email", "plan"], "bad email"), letter(12, "7", &[], "gone")],
            "s",
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("ID  CUSTOMER  OPERATION  ATTRIBUTES  "), "{text}");
        assert!(lines[1].starts_with("3   42        identify   email,plan  207 "), "{text}");
        assert!(lines[1].contains("2023-11-14 22:13:20  2023-11-14 22:14:20  bad email"), "{text}");
        assert!(lines[2].starts_with("12  7         identify   -  "), "{text}");
        assert!(lines[2].ends_with("  gone"), "{text}");
    }

    #[test]
    fn long_attribute_lists_are_cut_in_the_table() {
        let names: Vec<String> = (0..30).map(|i| format!("attribute_{i}")).collect();
        let cell = attributes_cell(&names);
        assert!(cell.starts_with("attribute_0,attribute_1,"), "{cell}");
        assert!(cell.ends_with("… (30 names)"), "{cell}");
        assert_eq!(cell.chars().count(), MAX_ATTRIBUTES_CHARS + " (30 names)".len());
        assert_eq!(attributes_cell(&["a".into(), "b".into()]), "a,b");
        assert!(attributes_cell(&["n".repeat(151)]).ends_with("… (1 name)"));
    }

    #[test]
    fn control_characters_are_escaped_in_the_table() {
        let text = table(&[letter(1, "a\nb\x1b[31m", &[], "x\ty")], "s");
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.contains("a\\nb\\u{1b}[31m") && text.contains("x\\ty"), "{text}");
    }

    #[test]
    fn json_lines_hold_the_names_and_no_payload_unless_loaded() {
        let mut stored = letter(3, "42", &["plan"], "bad");
        let value: Value = serde_json::from_str(&json_line(&stored)).unwrap();
        assert_eq!(
            value,
            json!({"id": 3, "customer_id": "42", "operation": "identify", "attributes": ["plan"],
                   "status": 207, "error": "bad", "attempts": 1,
                   "first_attempt_at": "2023-11-14T22:13:20Z",
                   "last_attempt_at": "2023-11-14T22:14:20Z"})
        );
        stored.payload = Some(r#"{"action": "identify", "attributes": {"plan": "pro"}}"#.into());
        let value: Value = serde_json::from_str(&json_line(&stored)).unwrap();
        assert_eq!(value["payload"]["attributes"]["plan"], "pro");
        assert!(!json_line(&stored).contains('\n'));
    }

    #[test]
    fn the_summary_counts_and_lists_each_refusal() {
        let summary = RetrySummary {
            delivered: 2,
            refreshed: 3,
            skipped: vec![(4, Skip::RowGone), (5, Skip::RowBack)],
            refused: vec![Refusal { id: 9, status: 207, error: "too long".into() }],
            kept: vec![(10, "changing")],
            sent_as_refused: vec![(11, "two tables")],
        };
        assert_eq!(
            retry_summary(&summary),
            "retried 9: delivered 2, refreshed from the row 3, skipped 2, refused again 1, kept 1\n\
             \x20 #4 skipped: the row is gone or no longer syncs; its removal goes through the stream\n\
             \x20 #5 skipped: its row exists again and syncs; the removal is stale\n\
             \x20 #11 sent as it was refused: two tables\n\
             \x20 #9 refused again (HTTP 207): too long\n\
             \x20 #10 kept: changing\n"
        );
        assert_eq!(
            retry_summary(&RetrySummary::default()),
            "retried 0: delivered 0, refreshed from the row 0, skipped 0, refused again 0\n"
        );
    }
}
