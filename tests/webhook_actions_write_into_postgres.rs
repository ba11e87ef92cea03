//! `[[webhooks.actions]]`: campaign webhook actions write into Postgres,
//! each request applied once. A segment action keeps the memberships table
//! exact (enter, leave, a repeat, a late retry of an older change); an
//! update action sets the synced row once and is never echoed to
//! Customer.io; an insert action appends once per key; wrong credentials,
//! bad bodies and values Postgres refuses change nothing.

use ciosync::telemetry::actions::ActionOutcome;
use serde_json::{json, Value};

use crate::support::daemon::InProcess;
use crate::support::emulator::{self, identifies_of, wait_for_attribute};
use crate::support::endpoint::wait_for_status;
use crate::support::postgres::{TestDb, USERS_TABLE};

use crate::support::webhooks::ACTION_SECRET as SECRET;

/// The actions of these tests; `secret` is [`SECRET`].
pub const ACTIONS: &str = r#"
[webhooks]
listen = "127.0.0.1:0"

[[webhooks.actions]]
name = "segments"
kind = "segment"
secret = "action-secret-8c1f2e9d"
customer_id = "customer.id"
segment = "segment"
direction_field = "change"
occurred_at = "at"

[[webhooks.actions]]
name = "score"
kind = "update"
secret = "action-secret-8c1f2e9d"
customer_id = "customer.id"
columns = { lead_score = "score", stage = "stage", plan = "plan" }

[[webhooks.actions]]
name = "journey"
kind = "insert"
secret = "action-secret-8c1f2e9d"
table = "public.journey_log"
idempotency_key = "key"
columns = { user_id = "customer.id", step = "step" }
"#;

pub const JOURNEY_LOG: &str = "CREATE TABLE public.journey_log (
    id bigserial PRIMARY KEY, user_id text, step text NOT NULL,
    logged_at timestamptz NOT NULL DEFAULT now(), payload jsonb)";

/// Sends `body` to the action `name` with `auth` as the Authorization
/// header and `key` as X-CIO-Idempotency-Key: the status and the answer.
pub async fn call(
    base: &str,
    name: &str,
    auth: Option<&str>,
    key: Option<&str>,
    body: &Value,
) -> (u16, String) {
    let mut request = reqwest::Client::new()
        .post(format!("{base}/webhooks/customerio/actions/{name}"))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    if let Some(key) = key {
        request = request.header("x-cio-idempotency-key", key);
    }
    let response = request.send().await.expect("the receiver answers");
    (response.status().as_u16(), response.text().await.unwrap_or_default())
}

/// Basic auth as Customer.io sends it for `https://ciosync:<secret>@…`.
pub fn basic() -> String {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("ciosync:{SECRET}"));
    format!("Basic {encoded}")
}

/// A database for these tests: `users` with the columns the actions
/// write, and the journey log.
pub async fn prepared(test: &str) -> TestDb {
    let db = TestDb::new(test).await;
    db.exec(USERS_TABLE).await;
    db.exec("ALTER TABLE users ADD COLUMN lead_score int, ADD COLUMN stage text").await;
    db.exec(JOURNEY_LOG).await;
    db
}

/// The daemon with [`ACTIONS`] (and `lead_score` mapped when
/// `map_score`), streaming (its state schema created) and ready.
pub async fn started(
    db: &TestDb,
    emulator: &ciosync_emulator::Emulator,
    map_score: bool,
) -> InProcess {
    let mut text = db.config(&emulator.url(), ACTIONS);
    if map_score {
        text =
            text.replacen("about = \"bio\"\n", "about = \"bio\"\nlead_score = \"lead_score\"\n", 1);
    }
    let daemon = InProcess::start_with_webhooks(&text);
    db.wait_for_streaming().await;
    assert!(wait_for_status(&daemon.webhook_url("/readyz"), 200).await);
    daemon
}

async fn memberships(db: &TestDb) -> Vec<(String, String, bool, bool)> {
    let rows = db
        .client
        .query(
            "SELECT customer_id, segment, entered_at IS NOT NULL, left_at IS NOT NULL \
             FROM ciosync.segment_memberships ORDER BY 1, 2",
            &[],
        )
        .await
        .unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect()
}

#[test]
fn the_section_carries_the_suite_secret() {
    assert_eq!(ACTIONS.matches(&format!("secret = \"{SECRET}\"")).count(), 3);
}

#[tokio::test]
async fn actions_apply_once_and_never_echo() {
    let db = prepared("webhook_actions").await;
    let emulator = emulator::start().await;
    let daemon = started(&db, &emulator, true).await;
    db.exec("INSERT INTO users (id, email, lead_score) VALUES (1, 'a@x.io', 1), (2, 'b@x.io', 1)")
        .await;
    assert!(wait_for_attribute(&emulator, "2", "lead_score", json!(1)).await);
    let base = daemon.webhook_url("");
    let auth = basic();
    let bearer = format!("Bearer {SECRET}");
    let counted = |name: &str, outcome| daemon.counters.actions.get(name, outcome);

    // Segments: enter, a repeat of the same delivery, leave, then a late
    // retry of an older enter (a new delivery, so a new key): ignored.
    let enter = json!({"customer": {"id": "1"}, "segment": "vip", "change": "entered", "at": 100});
    assert_eq!(
        call(&base, "segments", Some(&auth), Some("d-1"), &enter).await,
        (200, "applied\n".into())
    );
    assert_eq!(
        call(&base, "segments", Some(&auth), Some("d-1"), &enter).await,
        (200, "duplicate\n".into())
    );
    let other = json!({"customer": {"id": 2}, "segment": "vip", "change": true, "at": 100});
    assert_eq!(call(&base, "segments", Some(&bearer), None, &other).await.0, 200);
    let leave = json!({"customer": {"id": "1"}, "segment": "vip", "change": "left", "at": 200});
    assert_eq!(call(&base, "segments", Some(&auth), Some("d-2"), &leave).await.1, "applied\n");
    let late = json!({"customer": {"id": "1"}, "segment": "vip", "change": "enter", "at": 150});
    assert_eq!(call(&base, "segments", Some(&auth), Some("d-3"), &late).await.1, "unchanged\n");
    // A leave for someone never seen in: recorded as out.
    let never = json!({"customer": {"id": "3"}, "segment": "trial", "change": "leave", "at": 10});
    assert_eq!(call(&base, "segments", Some(&auth), Some("d-4"), &never).await.0, 200);
    assert_eq!(
        memberships(&db).await,
        vec![
            ("1".into(), "vip".into(), true, true),
            ("2".into(), "vip".into(), true, false),
            ("3".into(), "trial".into(), false, true)
        ]
    );
    assert_eq!(counted("segments", ActionOutcome::Applied), 4);
    assert_eq!(counted("segments", ActionOutcome::Duplicate), 1);
    assert_eq!(counted("segments", ActionOutcome::Unchanged), 1);

    // Update: once, and a repeat of the same body (no key: its hash) is a
    // duplicate; a row that does not exist changes nothing.
    let version = "SELECT xmin::text, lead_score, stage FROM users WHERE id = 1";
    let score = json!({"customer": {"id": 1}, "score": 42, "stage": "activated"});
    assert_eq!(call(&base, "score", Some(&auth), None, &score).await.1, "applied\n");
    let row = db.client.query_one(version, &[]).await.unwrap();
    let xmin: String = row.get(0);
    assert_eq!(
        (row.get::<_, Option<i32>>(1), row.get::<_, Option<String>>(2)),
        (Some(42), Some("activated".into()))
    );
    assert_eq!(call(&base, "score", Some(&auth), None, &score).await.1, "duplicate\n");
    // The same values under a new key: nothing to write, the row untouched.
    assert_eq!(call(&base, "score", Some(&auth), Some("k"), &score).await.1, "unchanged\n");
    assert_eq!(db.client.query_one(version, &[]).await.unwrap().get::<_, String>(0), xmin);
    let nobody = json!({"customer": {"id": 99}, "score": 1});
    assert_eq!(call(&base, "score", Some(&auth), None, &nobody).await.1, "unchanged\n");
    // Only the fields the body has are set: stage stays. And the record
    // forgets only what was written: lead_score, not plan.
    let recorded = |attribute: &'static str| {
        let db = &db;
        async move {
            let sql =
                "SELECT count(*) FROM ciosync.accepted WHERE customer_id = '1' AND attributes ? $1";
            db.client.query_one(sql, &[&attribute]).await.unwrap().get::<_, i64>(0) == 1
        }
    };
    db.exec("UPDATE users SET lead_score = 7 WHERE id = 1").await;
    let deadline = tokio::time::Instant::now() + crate::support::CONVERGE;
    while !(recorded("lead_score").await && recorded("plan").await) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the record never held lead_score and plan"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let partial = json!({"customer": {"id": 1}, "score": 43});
    assert_eq!(call(&base, "score", Some(&auth), None, &partial).await.1, "applied\n");
    assert!(!recorded("lead_score").await, "the written attribute stayed in the record");
    assert!(recorded("plan").await, "an attribute the action did not write left the record");
    let row = db.client.query_one(version, &[]).await.unwrap();
    assert_eq!(
        (row.get::<_, Option<i32>>(1), row.get::<_, Option<String>>(2)),
        (Some(43), Some("activated".into()))
    );
    // Text into an integer column: Postgres refuses, nothing changes, 422.
    // (An email: the suite's tripwire fails the test if the refusal logs it.)
    let refused = json!({"customer": {"id": 1}, "score": "refused-value@x.io"});
    assert_eq!(call(&base, "score", Some(&auth), None, &refused).await.0, 422);
    assert_eq!(counted("score", ActionOutcome::Refused), 1);
    // Never echoed: a later change of another row passes the write, and no
    // identify ever carried 42 or 43.
    db.exec("UPDATE users SET plan = 'marker' WHERE id = 2").await;
    assert!(wait_for_attribute(&emulator, "2", "plan", json!("marker")).await);
    let echoed = identifies_of(&emulator, "1")
        .iter()
        .any(|a| a.get("lead_score").is_some_and(|v| v == &json!(42) || v == &json!(43)));
    assert!(!echoed, "the action's write echoed to Customer.io");
    // The record forgot lead_score, so the application's write of the old
    // value is sent (Customer.io may hold a campaign's value).
    db.exec("UPDATE users SET lead_score = 1 WHERE id = 1").await;
    let sent_one = |e: &ciosync_emulator::Emulator| {
        identifies_of(e, "1").iter().filter(|a| a.get("lead_score") == Some(&json!(1))).count()
    };
    assert!(emulator::wait_for(&emulator, |e| sent_one(e) == 2).await);

    // Insert: once per key, the body kept beside the mapped columns.
    for (key, step) in [("j-1", "welcome"), ("j-2", "nudge"), ("j-1", "welcome")] {
        let body = json!({"key": key, "customer": {"id": 1, "email": "journey-person@x.io"},
            "step": step, "extra": {"n": 1}});
        assert_eq!(call(&base, "journey", Some(&auth), None, &body).await.0, 200);
    }
    let rows = db
        .client
        .query("SELECT user_id, step, payload->'extra'->>'n' FROM journey_log ORDER BY id", &[])
        .await
        .unwrap();
    let rows: Vec<(String, String, String)> =
        rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    assert_eq!(
        rows,
        vec![("1".into(), "welcome".into(), "1".into()), ("1".into(), "nudge".into(), "1".into())]
    );
    // A NOT NULL column the body lacks: refused, no row, no key kept.
    let missing = json!({"key": "j-3", "customer": {"id": 1}});
    assert_eq!(call(&base, "journey", Some(&auth), None, &missing).await.0, 422);
    let keys = "SELECT count(*) FROM ciosync.webhook_action_keys WHERE action = 'journey'";
    assert_eq!(db.client.query_one(keys, &[]).await.unwrap().get::<_, i64>(0), 2);
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn bad_requests_change_nothing() {
    let db = prepared("webhook_actions_bad").await;
    let emulator = emulator::start().await;
    let daemon = started(&db, &emulator, false).await;
    let base = daemon.webhook_url("");
    let body = json!({"customer": {"id": "1"}, "segment": "vip", "change": "enter"});
    let wrong = format!("Bearer {SECRET}x");
    assert_eq!(call(&base, "segments", None, None, &body).await, (401, "unauthorized\n".into()));
    assert_eq!(call(&base, "segments", Some(&wrong), None, &body).await.0, 401);
    assert_eq!(call(&base, "nope", Some(&basic()), None, &body).await.0, 404);
    let no_field = json!({"customer": {"id": "1"}, "change": "enter"});
    let (status, answer) = call(&base, "segments", Some(&basic()), None, &no_field).await;
    assert_eq!((status, answer.as_str()), (400, "malformed\n"));
    // The reporting path is not served without a signing key.
    let reporting = reqwest::Client::new()
        .post(format!("{base}/webhooks/customerio"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(reporting.status().as_u16(), 404);
    let client = reqwest::Client::new();
    let url = format!("{base}/webhooks/customerio/actions/segments");
    let get = client.get(&url).header("authorization", basic()).send().await.unwrap();
    assert_eq!(get.status().as_u16(), 405);
    let text = client
        .post(&url)
        .header("authorization", basic())
        .header("content-type", "text/plain")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(text.status().as_u16(), 415);
    let huge = client
        .post(&url)
        .header("authorization", basic())
        .header("content-type", "application/json")
        .body(format!("{{\"pad\": \"{}\"}}", "x".repeat(2 * 1024 * 1024)))
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status().as_u16(), 413);
    let broken = client
        .post(&url)
        .header("authorization", basic())
        .header("content-type", "application/json")
        .body("{\"customer\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(broken.status().as_u16(), 400);
    assert!(memberships(&db).await.is_empty(), "a refused request changed the table");
    let counted = |outcome| daemon.counters.actions.get("segments", outcome);
    assert_eq!(counted(ActionOutcome::Unauthorized), 2);
    assert_eq!(counted(ActionOutcome::Malformed), 2);
    assert_eq!(counted(ActionOutcome::Method), 1);
    assert_eq!(counted(ActionOutcome::ContentType), 1);
    assert_eq!(counted(ActionOutcome::TooLarge), 1);
    let (ok, metrics) = crate::support::endpoint::wait_for_metrics(&daemon.url("/metrics"), |m| {
        m.contains("ciosync_webhook_actions_total{action=\"segments\",outcome=\"unauthorized\"} 2")
    })
    .await;
    assert!(ok, "{metrics}");
    daemon.stop().await.unwrap();
}

/// `check` tries each action's writes (rolled back) and prints the fix:
/// the table an insert action needs, the column an update action lacks,
/// and the least-privilege role's GRANTs.
#[tokio::test]
async fn check_names_what_each_action_lacks() {
    let db = TestDb::new("webhook_actions_check").await;
    db.exec(USERS_TABLE).await;
    db.exec("ALTER TABLE users ADD COLUMN lead_score int").await;
    let emulator = emulator::start().await;
    let text = db.config(&emulator.url(), ACTIONS);
    let check = |text: String| async move {
        let file = crate::support::daemon::config_file(&text);
        let output = crate::support::daemon::run_binary(&["check"], file.path()).await;
        (output.status.code(), String::from_utf8_lossy(&output.stdout).into_owned())
    };
    let (code, out) = check(text.clone()).await;
    assert_eq!(code, Some(1), "{out}");
    for expected in [
        "ok      webhooks.actions segments: segment action can write",
        "webhooks.actions score: cannot write",
        "webhooks.actions journey: cannot write",
        "CREATE TABLE \"public\".\"journey_log\"",
        "\"step\" text, \"user_id\" text, \"payload\" jsonb",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    assert!(!out.contains(SECRET), "check printed the secret");
    assert!(!out.contains("webhooks.table"), "no reporting line without a signing key:\n{out}");
    let tables = "SELECT count(*) FROM pg_tables WHERE schemaname = 'ciosync'";
    assert_eq!(
        db.client.query_one(tables, &[]).await.unwrap().get::<_, i64>(0),
        0,
        "check created a table"
    );
    db.exec("ALTER TABLE users ADD COLUMN stage text").await;
    db.exec(JOURNEY_LOG).await;
    let (code, out) = check(text).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("ok      webhooks.actions journey: insert action can write"), "{out}");
}

/// An origin is active in one session at a time: with the action origin
/// held elsewhere (a second instance, say), the actions' session binds the
/// next name of its pool, and its writes are still skipped by the stream.
#[tokio::test]
async fn a_held_origin_falls_back_to_the_next_and_still_never_echoes() {
    let db = prepared("webhook_actions_pool").await;
    let origin = format!("ciosync_actions_{}", db.name);
    let holder = db.reconnected().await;
    ciosync::webhooks::write_back::bind_origin(&holder.client, &origin).await.unwrap();
    let emulator = emulator::start().await;
    let daemon = started(&db, &emulator, true).await;
    db.exec("INSERT INTO users (id, email) VALUES (1, 'a@x.io')").await;
    assert!(wait_for_attribute(&emulator, "1", "email", json!("a@x.io")).await);
    let base = daemon.webhook_url("");
    let score = json!({"customer": {"id": 1}, "score": 5});
    assert_eq!(call(&base, "score", Some(&basic()), None, &score).await.1, "applied\n");
    let active = "SELECT count(*) FROM pg_replication_origin_status s \
                  JOIN pg_replication_origin o ON o.roident = s.local_id WHERE o.roname = $1";
    let pooled = format!("{origin}#1");
    assert_eq!(db.client.query_one(active, &[&pooled]).await.unwrap().get::<_, i64>(0), 1);
    db.exec("UPDATE users SET plan = 'marker' WHERE id = 1").await;
    assert!(wait_for_attribute(&emulator, "1", "plan", json!("marker")).await);
    let echoed =
        identifies_of(&emulator, "1").iter().any(|a| a.get("lead_score") == Some(&json!(5)));
    assert!(!echoed, "a write under the pool's second origin echoed");
    daemon.stop().await.unwrap();
    drop(holder);
}

/// A key that is a hash of the body counts for 10 minutes only, so the
/// same body sent again later on purpose (a score set back to an earlier
/// value) is applied; a key Customer.io or the body named counts for the
/// whole `dedupe_window_secs`.
#[tokio::test]
async fn a_body_hash_key_expires_before_a_named_key() {
    let db = prepared("webhook_actions_hash").await;
    db.exec("INSERT INTO users (id, email, lead_score) VALUES (1, 'a@x.io', 0)").await;
    let emulator = emulator::start().await;
    let daemon = started(&db, &emulator, false).await;
    let base = daemon.webhook_url("");
    let auth = basic();
    let ten = json!({"customer": {"id": 1}, "score": 10});
    let twenty = json!({"customer": {"id": 1}, "score": 20});
    assert_eq!(call(&base, "score", Some(&auth), None, &ten).await.1, "applied\n");
    assert_eq!(call(&base, "score", Some(&auth), Some("d-1"), &twenty).await.1, "applied\n");
    // Within the window the same body is a retry.
    assert_eq!(call(&base, "score", Some(&auth), None, &ten).await.1, "duplicate\n");
    // Eleven minutes later it is a new request; a named key still holds.
    db.exec("UPDATE ciosync.webhook_action_keys SET received_at = now() - interval '11 minutes'")
        .await;
    assert_eq!(call(&base, "score", Some(&auth), None, &ten).await.1, "applied\n");
    assert_eq!(call(&base, "score", Some(&auth), Some("d-1"), &twenty).await.1, "duplicate\n");
    let score = "SELECT lead_score FROM users WHERE id = 1";
    assert_eq!(db.client.query_one(score, &[]).await.unwrap().get::<_, Option<i32>>(0), Some(10));
    daemon.stop().await.unwrap();
}

/// `check` plans the keys table's statements as `run` runs them: a role
/// that may insert keys but not update or delete them is told so.
#[tokio::test]
async fn check_needs_every_privilege_the_keys_table_takes() {
    let db = TestDb::new("webhook_actions_keys_grants").await;
    db.exec(USERS_TABLE).await;
    let role = format!("{}_role", db.name);
    db.exec(&format!(
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN \
         CREATE ROLE {role} LOGIN; END IF; END $$; \
         CREATE SCHEMA ciosync; GRANT USAGE ON SCHEMA ciosync TO {role}; \
         CREATE TABLE ciosync.webhook_action_keys (action text NOT NULL, key text NOT NULL, \
           received_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (action, key)); \
         GRANT SELECT, INSERT ON ciosync.webhook_action_keys TO {role}; \
         CREATE TABLE ciosync.segment_memberships (customer_id text NOT NULL, segment text NOT NULL, \
           entered_at timestamptz, left_at timestamptz, changed_at timestamptz NOT NULL, \
           PRIMARY KEY (customer_id, segment)); \
         GRANT SELECT, INSERT, UPDATE ON ciosync.segment_memberships TO {role};"
    ))
    .await;
    let emulator = emulator::start().await;
    let text = db
        .config(&emulator.url(), ACTIONS)
        .replace("postgres://postgres@", &format!("postgres://{role}@"));
    let check = |text: String| async move {
        let file = crate::support::daemon::config_file(&text);
        let output = crate::support::daemon::run_binary(&["check"], file.path()).await;
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let out = check(text.clone()).await;
    let line = out.lines().skip_while(|l| !l.contains("webhooks.actions segments")).take(2);
    let line: String = line.collect::<Vec<_>>().join("\n");
    assert!(line.contains("cannot write"), "{out}");
    assert!(
        line.contains("GRANT SELECT, INSERT, UPDATE, DELETE ON ciosync.webhook_action_keys"),
        "{out}"
    );
    db.exec(&format!("GRANT UPDATE, DELETE ON ciosync.webhook_action_keys TO {role}")).await;
    let out = check(text).await;
    assert!(out.contains("ok      webhooks.actions segments: segment action can write"), "{out}");
}
