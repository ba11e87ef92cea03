//! The Customer.io emulator, in-process on a free port.

use std::collections::BTreeMap;
use std::time::Duration;

use ciosync_emulator::{Emulator, EmulatorConfig, Faults};
use serde_json::{Map, Value};

use super::daemon::{API_KEY, SITE_ID};

/// Starts an emulator with the test credentials.
pub async fn start() -> Emulator {
    super::leaks::init_logging();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let config = EmulatorConfig {
        site_id: SITE_ID.to_owned(),
        api_key: API_KEY.to_owned(),
        ..EmulatorConfig::default()
    };
    Emulator::start(listener, config).await.expect("emulator starts")
}

/// Customer.io applies the next request but answers it 429 with a
/// `Retry-After` of minutes (the answer lost, as it were): a command then
/// waits, what it sent applied, until a test interrupts it.
pub fn applied_then_wait() -> Faults {
    Faults {
        fail_next: 1,
        fail_status: 429,
        retry_after_secs: Some(300),
        fail_after_apply: true,
        ..Faults::default()
    }
}

/// Waits until `cond` holds for the emulator's customers; false on timeout.
pub async fn wait_for_customers(
    emulator: &Emulator,
    cond: impl Fn(&BTreeMap<String, Map<String, Value>>) -> bool,
) -> bool {
    wait_for(emulator, |e| cond(&e.customers())).await
}

/// Waits until customer `id` has attribute `name` equal to `value`.
pub async fn wait_for_attribute(emulator: &Emulator, id: &str, name: &str, value: Value) -> bool {
    wait_for_customers(emulator, |c| c.get(id).is_some_and(|a| a.get(name) == Some(&value))).await
}

/// Waits until `cond` holds for the emulator (polled, so `cond` may read
/// anything); false on timeout.
pub async fn wait_for(emulator: &Emulator, cond: impl Fn(&Emulator) -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + super::CONVERGE;
    loop {
        if cond(emulator) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The person items of every batch request the emulator received, in order.
pub fn batch_items(emulator: &Emulator) -> Vec<Value> {
    emulator
        .requests()
        .into_iter()
        .filter(|r| r.path == "/api/v2/batch" && r.status == 200)
        .filter_map(|r| r.body)
        .flat_map(|b| b.get("batch").and_then(Value::as_array).cloned().unwrap_or_default())
        .collect()
}

/// The identify items for customer `id`, in order.
pub fn identifies_of(emulator: &Emulator, id: &str) -> Vec<Map<String, Value>> {
    batch_items(emulator)
        .into_iter()
        .filter(|i| i["action"] == "identify" && i["identifiers"]["id"] == id)
        .filter_map(|i| i.get("attributes").and_then(Value::as_object).cloned())
        .collect()
}
