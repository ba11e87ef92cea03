//! A dead letter Postgres refuses as it is — a NUL in the customer id, or
//! characters the database's encoding lacks — is stored escaped rather
//! than blocking the stream forever, and replays exactly what was sent; the
//! other letters of the call are stored as they are (and so is such text in
//! a replay's new refusal). One that cannot be
//! stored even so fails the whole call, quoting nothing of it, and leaves
//! the store usable. Only Postgres refusing the text is answered by
//! escaping it: any other failure to record a replay's new refusal is
//! reported, and the letter left as it was.

use ciosync::dead_letter::DeadLetterTable;
use serde_json::json;

use crate::support::daemon::config_text;
use crate::support::dead_letters::{config_with_password, identify, rows, store};
use crate::support::postgres::{cluster, connect, TestDb};

#[tokio::test]
async fn a_letter_postgres_refuses_is_stored_escaped_and_replays_as_sent() {
    let db = TestDb::new("dlq_escaped").await;
    let store = store(&config_with_password(&db, "http://127.0.0.1:9"));
    let good = identify("1", json!({"plan": "value-a"}));
    let mut bad = identify("secret-id", json!({"plan": "value-b"}));
    bad.customer_id.push('\0');

    store.record(&[good.clone(), bad.clone()]).await.expect("stored");
    let stored = rows(&db).await;
    assert_eq!(stored[0].customer_id, "1");
    assert_eq!(stored[0].error, good.error, "the others stay as they are");
    assert_eq!(stored[1].customer_id, "secret-id\\u{0}");
    assert!(stored[1].error.contains("stored escaped") && stored[1].error.contains("22021"));
    let table = DeadLetterTable::open(&db.client, &db.name).await.unwrap();
    let payload = table.payload(stored[1].id).await.unwrap().unwrap();
    assert_eq!(payload.as_bytes(), bad.payload, "replayed as it was sent");

    // Refused even escaped (a constraint someone added): nothing of the
    // call is stored, nothing of it quoted.
    db.exec("ALTER TABLE ciosync.dead_letters ADD CONSTRAINT not_9 CHECK (customer_id <> '9')")
        .await;
    let error = store
        .record(&[identify("8", json!({"plan": "value-c"})), identify("9", json!({}))])
        .await
        .unwrap_err();
    let message = ciosync::error::error_chain(&error);
    assert!(message.contains("SQLSTATE 23514"), "{message}");
    assert!(!message.contains("value-") && !message.contains('9'), "{message}");
    assert_eq!(rows(&db).await.len(), 2, "part of a failed call was stored");
    db.exec("ALTER TABLE ciosync.dead_letters DROP CONSTRAINT not_9").await;
    store.record(&[identify("9", json!({}))]).await.expect("the store is usable");
    assert_eq!(rows(&db).await.len(), 3);
}

#[tokio::test]
async fn a_letter_the_database_encoding_cannot_hold_is_stored_escaped() {
    let name = format!("t{}_dlq_latin1", rand::random::<u32>());
    let admin = connect(&cluster().url("postgres")).await;
    admin
        .batch_execute(&format!(
            "CREATE DATABASE {name} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' \
             TEMPLATE template0"
        ))
        .await
        .unwrap();
    let url = cluster().url(&name);
    let client = connect(&url).await;
    let store = store(&config_text(&url, &name, "http://127.0.0.1:9", ""));
    let latin = identify("josé", json!({"city": "Málaga"}));
    let beyond = identify("名前", json!({"mood": "😀"}));

    store.record(&[latin.clone(), beyond.clone()]).await.expect("stored");
    let table = DeadLetterTable::open(&client, &name).await.unwrap();
    let letters = table.page(0, 10, true).await.unwrap();
    let ids: Vec<&str> = letters.iter().map(|l| l.customer_id.as_str()).collect();
    assert_eq!(ids, ["josé", "\\u{540d}\\u{524d}"]);
    assert!(letters[1].error.contains("SQLSTATE 22P05"), "{}", letters[1].error);
    // As jsonb keeps it (normalised), and as it was sent, byte for byte.
    let json = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap();
    let sent = |bytes: &[u8]| serde_json::from_slice::<serde_json::Value>(bytes).unwrap();
    assert_eq!(json(letters[0].payload.as_deref().unwrap()), sent(&latin.payload));
    assert_eq!(letters[1].payload.as_deref().map(str::as_bytes), Some(&beyond.payload[..]));
    let replayed = table.payload(letters[1].id).await.unwrap().unwrap();
    assert_eq!(replayed.as_bytes(), beyond.payload);

    // A replay refused again with such text in Customer.io's answer.
    table.refused_again(letters[0].id, 400, "名前 is not allowed").await.unwrap();
    let again = table.page(0, 1, false).await.unwrap();
    assert_eq!(
        (again[0].attempts, again[0].error.as_str()),
        (2, "\\u{540d}\\u{524d} is not allowed")
    );
}

#[tokio::test]
async fn a_replay_refusal_is_escaped_only_when_postgres_refuses_its_text() {
    // Escaping answers Postgres refusing the text itself (SQLSTATE class 22
    // or 23). Any other failure to record a new refusal (here the table
    // busy once, SQLSTATE 55P03) is reported as it is, and the letter stays
    // as it was until the operator retries; text Postgres can hold is never
    // stored escaped.
    let db = TestDb::new("dlq_refused_again").await;
    let store = store(&config_with_password(&db, "http://127.0.0.1:9"));
    store.record(&[identify("1", json!({"plan": "value-a"}))]).await.expect("stored");
    let id = rows(&db).await[0].id;
    let table = DeadLetterTable::open(&db.client, &db.name).await.unwrap();
    // A sequence, not a table: nextval is not undone by the failed UPDATE.
    db.exec(
        "CREATE SEQUENCE updates_seen;
         CREATE FUNCTION busy_once() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF nextval('updates_seen') = 1 THEN
             RAISE EXCEPTION 'dead letters busy' USING ERRCODE = 'lock_not_available';
           END IF;
           RETURN NEW;
         END $$;
         CREATE TRIGGER busy_once BEFORE UPDATE ON ciosync.dead_letters
           FOR EACH ROW EXECUTE FUNCTION busy_once();",
    )
    .await;

    let error = table.refused_again(id, 422, "Málaga is not allowed").await.unwrap_err();
    let message = ciosync::error::error_chain(&error);
    assert!(message.contains("dead letters busy"), "{message}");
    assert!(!message.contains("Málaga"), "the answer was quoted: {message}");
    let untouched = &rows(&db).await[0];
    assert_eq!(
        (untouched.attempts, untouched.status, untouched.error.as_str()),
        (1, 400, "refused in the test"),
        "a failed update changed the letter"
    );

    table.refused_again(id, 422, "Málaga is not allowed").await.expect("recorded");
    let again = &rows(&db).await[0];
    assert_eq!(
        (again.attempts, again.status, again.error.as_str()),
        (2, 422, "Málaga is not allowed"),
        "text Postgres holds is stored as it is"
    );

    // A NUL, which no text column holds (SQLSTATE 22021): stored escaped.
    table.refused_again(id, 400, "nul\0here").await.expect("recorded escaped");
    let escaped = &rows(&db).await[0];
    assert_eq!((escaped.attempts, escaped.error.as_str()), (3, "nul\\u{0}here"));
}
