//! After the faults: what Customer.io (the emulator) should hold, read from
//! the tables, and the checks that compare the two.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::hash::{Hash, Hasher};

use ciosync_emulator::Emulator;
use serde_json::{json, Map, Value};
use tokio_postgres::Client;

use super::workload::FILTERED_PLAN;

/// Each synced customer's attributes as Customer.io should hold them
/// (NULLs absent), by id.
pub type Customers = BTreeMap<String, Map<String, Value>>;

/// The customers the rows call for: every user not soft-deleted and inside
/// the filter, and every member, with their mapped attributes.
pub async fn expected_customers(client: &Client) -> Customers {
    let mut customers = expected_users(client).await;
    let members = client
        .query("SELECT id::text, email FROM soak_members", &[])
        .await
        .expect("read soak_members");
    for row in members {
        let id: String = row.get(0);
        let mut attributes = Map::new();
        attributes.insert("id".into(), json!(id));
        if let Some(email) = row.get::<_, Option<String>>(1) {
            attributes.insert("email".into(), Value::from(email));
        }
        customers.insert(id, attributes);
    }
    customers
}

async fn expected_users(client: &Client) -> Customers {
    let rows = client
        .query(
            &format!(
                "SELECT id::text, email, first_name, plan, score, bio FROM users \
                 WHERE deleted_at IS NULL AND (plan <> '{FILTERED_PLAN}') IS TRUE"
            ),
            &[],
        )
        .await
        .expect("read users");
    rows.iter()
        .map(|row| {
            let id: String = row.get(0);
            let mut attributes = Map::new();
            attributes.insert("id".into(), json!(id));
            for (name, value) in [
                ("email", row.get::<_, Option<String>>(1).map(Value::from)),
                ("first_name", row.get::<_, Option<String>>(2).map(Value::from)),
                ("plan", row.get::<_, Option<String>>(3).map(Value::from)),
                ("score", row.get::<_, Option<i32>>(4).map(Value::from)),
                ("about", row.get::<_, Option<String>>(5).map(Value::from)),
            ] {
                if let Some(value) = value {
                    attributes.insert(name.into(), value);
                }
            }
            (id, attributes)
        })
        .collect()
}

/// The emulator's customers with NULL attributes left out (the emulator
/// removes them anyway; this only guards against the setting changing).
pub fn actual_customers(emulator: &Emulator) -> Customers {
    emulator
        .customers()
        .into_iter()
        .map(|(id, attributes)| {
            (id, attributes.into_iter().filter(|(_, v)| !v.is_null()).collect())
        })
        .collect()
}

/// How `actual` differs from `expected`, by id and attribute name only (no
/// values: the report goes to the test output). Empty when equal.
pub fn customer_differences(expected: &Customers, actual: &Customers) -> Vec<String> {
    let mut differences = Vec::new();
    for (id, want) in expected {
        match actual.get(id) {
            None => differences.push(format!("customer {id} is missing")),
            Some(have) if have != want => {
                let names: BTreeSet<&String> = want.keys().chain(have.keys()).collect();
                let differing: Vec<&str> = names
                    .into_iter()
                    .filter(|name| want.get(*name) != have.get(*name))
                    .map(String::as_str)
                    .collect();
                differences.push(format!("customer {id} differs in {differing:?}"));
            }
            Some(_) => {}
        }
    }
    for id in actual.keys().filter(|id| !expected.contains_key(*id)) {
        differences.push(format!("customer {id} should not exist"));
    }
    differences
}

/// One event as sent: its id, the customer it names, its name and data.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SentEvent {
    pub id: String,
    pub customer: String,
    pub name: String,
    /// The data as JSON text (keys sorted).
    pub data: String,
}

/// What each soak_events row should produce: row id → (customer, name, data).
pub type EventRows = BTreeMap<i64, (String, String, String)>;

/// The soak_events rows.
pub async fn event_rows(client: &Client) -> EventRows {
    client
        .query("SELECT id, user_id::text, kind, payload FROM soak_events", &[])
        .await
        .expect("read soak_events")
        .iter()
        .map(|row| {
            let payload: Value = row.get(3);
            (row.get(0), (row.get(1), row.get(2), payload.to_string()))
        })
        .collect()
}

/// The name of the `[[sync.events]]` event the soak configures.
pub const PLAN_CHANGED: &str = "plan_changed";

/// The `plan_changed` events the committed changes call for, as
/// (customer, data) with their count: what `soak_plan_changes` logged.
pub async fn plan_changes(client: &Client) -> BTreeMap<(String, String), u64> {
    let mut expected = BTreeMap::new();
    for row in client
        .query("SELECT user_id::text, old_plan, new_plan FROM soak_plan_changes", &[])
        .await
        .expect("read soak_plan_changes")
    {
        let data = json!({"from": row.get::<_, String>(1), "to": row.get::<_, String>(2)});
        *expected.entry((row.get(0), data.to_string())).or_default() += 1;
    }
    expected
}

/// What the emulator received, read from its request log as the run goes
/// (the log keeps only the newest 10,000 requests).
#[derive(Debug, Default)]
pub struct Calls {
    /// Track API requests by answer status.
    pub by_status: BTreeMap<u16, u64>,
    /// Batch items by action, repeats included.
    pub items: BTreeMap<String, u64>,
    /// Event row id → the distinct forms it was sent in, whatever the
    /// answer (a 500 "after apply" was applied).
    pub events_by_row: BTreeMap<i64, BTreeSet<SentEvent>>,
    /// `plan_changed` event id → the distinct (customer, data) it was sent
    /// with.
    pub plan_changes: BTreeMap<String, BTreeSet<(String, String)>>,
    /// Person items (other than events) answered 200 or 207 that had been
    /// answered so before: replays that Customer.io absorbed.
    pub repeated_items: u64,
    seen_items: HashSet<u64>,
}

impl Calls {
    /// Takes the requests logged since the last call.
    pub fn collect(&mut self, emulator: &Emulator) {
        for request in emulator.take_requests() {
            *self.by_status.entry(request.status).or_default() += 1;
            if request.path != "/api/v2/batch" {
                continue;
            }
            let Some(items) = request.body.as_ref().and_then(|b| b["batch"].as_array()) else {
                continue;
            };
            let applied = matches!(request.status, 200 | 207);
            for item in items {
                let action = item["action"].as_str().unwrap_or("?").to_owned();
                let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
                if action == "event" && item["name"] == PLAN_CHANGED {
                    let form = (text(&item["identifiers"]["id"]), item["attributes"].to_string());
                    self.plan_changes.entry(text(&item["id"])).or_default().insert(form);
                } else if action == "event" {
                    let row =
                        item["attributes"]["row"].as_i64().expect("the event carries its row");
                    let sent = SentEvent {
                        id: text(&item["id"]),
                        customer: text(&item["identifiers"]["id"]),
                        name: text(&item["name"]),
                        data: item["attributes"].to_string(),
                    };
                    self.events_by_row.entry(row).or_default().insert(sent);
                } else if applied {
                    let mut hasher = DefaultHasher::new();
                    item.to_string().hash(&mut hasher);
                    if !self.seen_items.insert(hasher.finish()) {
                        self.repeated_items += 1;
                    }
                }
                *self.items.entry(action).or_default() += 1;
            }
        }
    }

    /// Requests in all.
    pub fn requests(&self) -> u64 {
        self.by_status.values().sum()
    }
}

/// How the events Customer.io holds differ from "one per row": empty when
/// every row was sent in one form only (one stable id, its customer, name
/// and data), that id was accepted, and no event came from a row that is
/// not in the table (a rolled-back transaction).
pub fn event_differences(
    rows: &EventRows,
    plan_changes: &BTreeMap<(String, String), u64>,
    sent: &Calls,
    accepted: &BTreeSet<String>,
) -> Vec<String> {
    let mut differences = Vec::new();
    for (row, (customer, name, data)) in rows {
        let forms = sent.events_by_row.get(row).map(|f| f.iter().collect::<Vec<_>>());
        match forms.as_deref() {
            None => differences.push(format!("event row {row} was never sent")),
            Some([event]) => {
                if (&event.customer, &event.name, &event.data) != (customer, name, data) {
                    differences.push(format!(
                        "event row {row} was sent to the wrong customer, name or data"
                    ));
                }
                if !accepted.contains(&event.id) {
                    differences.push(format!("event row {row} was never accepted"));
                }
            }
            Some(forms) => differences
                .push(format!("event row {row} was sent in {} different forms", forms.len())),
        }
    }
    for row in sent.events_by_row.keys().filter(|row| !rows.contains_key(*row)) {
        differences.push(format!("an event was sent for row {row}, which was never committed"));
    }
    // plan_changed: each id sent in one form and accepted, and the accepted
    // forms are exactly the committed transitions.
    let mut delivered = BTreeMap::<(String, String), u64>::new();
    for (id, forms) in &sent.plan_changes {
        match forms.iter().collect::<Vec<_>>().as_slice() {
            [form] if accepted.contains(id) => *delivered.entry((*form).clone()).or_default() += 1,
            [_] => differences.push("a plan_changed event was never accepted".to_owned()),
            forms => differences
                .push(format!("a plan_changed event was sent in {} different forms", forms.len())),
        }
    }
    for (form, want) in plan_changes {
        let have = delivered.get(form).copied().unwrap_or(0);
        if have != *want {
            differences.push(format!(
                "customer {}: {have} plan_changed events for {want} committed changes (one \
                 from/to pair)",
                form.0
            ));
        }
    }
    for (form, have) in &delivered {
        if !plan_changes.contains_key(form) {
            differences.push(format!(
                "customer {}: {have} plan_changed events with no committed change (one from/to \
                 pair)",
                form.0
            ));
        }
    }
    let expected = rows.len() + plan_changes.values().sum::<u64>() as usize;
    if accepted.len() != expected {
        differences.push(format!("{} events accepted, {expected} expected", accepted.len()));
    }
    differences
}
