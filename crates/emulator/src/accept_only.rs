//! Accept-only mode (`--accept-only`, `EmulatorConfig::accept_only`), for
//! throughput runs that should measure the client, not the stand-in: v2
//! requests are authenticated (auth still runs first), framed and sized as
//! Customer.io checks them, and their items counted, but no item is
//! validated on its own or applied to the customer model, and the request
//! log keeps no bodies. A malformed body is still a 400. v1 routes are
//! served as usual. `GET /_emulator/accepted` shows the counts.

use std::sync::atomic::{AtomicU64, Ordering};

use ciosync_track_api::{MAX_BATCH_BYTES, MAX_ENTITY_BYTES};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use crate::validate::{Problem, REASON_INVALID, REASON_REQUIRED, REASON_TOO_LARGE};

/// What accept-only mode took in since start (or reset).
#[derive(Debug, Default)]
pub struct Counts {
    requests: AtomicU64,
    items: AtomicU64,
}

/// The counts as `GET /_emulator/accepted` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    /// Whether the emulator runs in accept-only mode.
    pub accept_only: bool,
    /// v2 requests accepted (answered 200) in that mode.
    pub requests: u64,
    /// Items in them (1 per `/api/v2/entity`, the array's length per batch).
    pub items: u64,
}

impl Counts {
    fn add(&self, items: u64) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.items.fetch_add(items, Ordering::Relaxed);
    }

    pub fn snapshot(&self, accept_only: bool) -> Accepted {
        Accepted {
            accept_only,
            requests: self.requests.load(Ordering::Relaxed),
            items: self.items.load(Ordering::Relaxed),
        }
    }

    pub fn reset(&self) {
        self.requests.store(0, Ordering::Relaxed);
        self.items.store(0, Ordering::Relaxed);
    }
}

#[derive(Deserialize)]
struct Batch {
    batch: Vec<IgnoredAny>,
}

/// Frames an `/api/v2/batch` body (size, JSON, a `batch` array) and counts
/// its items.
pub fn batch(counts: &Counts, body: &[u8]) -> Result<(), Problem> {
    if body.len() > MAX_BATCH_BYTES {
        return Err(Problem::new(
            REASON_TOO_LARGE,
            "batch",
            format!("batch must be smaller than {MAX_BATCH_BYTES} bytes"),
        ));
    }
    match serde_json::from_slice::<Batch>(body) {
        Ok(batch) => {
            counts.add(batch.batch.len() as u64);
            Ok(())
        }
        Err(_) if serde_json::from_slice::<IgnoredAny>(body).is_ok() => {
            Err(Problem::new(REASON_REQUIRED, "batch", "batch must be an array of items"))
        }
        Err(_) => Err(not_json()),
    }
}

/// Frames an `/api/v2/entity` body (size, a JSON object) and counts it.
pub fn entity(counts: &Counts, body: &[u8]) -> Result<(), Problem> {
    if body.len() > MAX_ENTITY_BYTES {
        return Err(Problem::new(
            REASON_TOO_LARGE,
            "body",
            format!("request must be smaller than {MAX_ENTITY_BYTES} bytes"),
        ));
    }
    serde_json::from_slice::<std::collections::HashMap<String, IgnoredAny>>(body)
        .map_err(|_| not_json())?;
    counts.add(1);
    Ok(())
}

fn not_json() -> Problem {
    Problem::new(REASON_INVALID, "body", "request body is not valid JSON")
}
