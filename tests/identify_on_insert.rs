//! An INSERT identifies the customer with every mapped attribute, each value
//! converted from its Postgres type.

use serde_json::json;

use crate::support::daemon::InProcess;
use crate::support::emulator::{self, wait_for_customers};
use crate::support::postgres::TestDb;

#[tokio::test]
async fn insert_identifies_with_every_type_converted() {
    let db = TestDb::new("identify_on_insert").await;
    db.exec(
        "CREATE TYPE mood AS ENUM ('happy', 'sad');
         CREATE DOMAIN short_text AS text;
         CREATE TABLE public.users (
             id bigint PRIMARY KEY,
             email text, first_name text, plan text, created_at timestamptz, bio text,
             c_int2 int2, c_int4 int4, c_int8 int8, c_big int8, c_float8 float8,
             c_nan float8, c_numeric numeric, c_inexact numeric, c_bool bool,
             c_varchar varchar(20), c_uuid uuid, c_enum mood, c_json json, c_jsonb jsonb,
             c_int_array int4[], c_text_array text[], c_ts timestamp, c_date date,
             c_bytea bytea, c_domain short_text, c_enum_array mood[], c_interval interval,
             c_null text
         );
         ALTER TABLE public.users REPLICA IDENTITY FULL;",
    )
    .await;
    let emulator = emulator::start().await;
    let columns = [
        "c_int2",
        "c_int4",
        "c_int8",
        "c_big",
        "c_float8",
        "c_nan",
        "c_numeric",
        "c_inexact",
        "c_bool",
        "c_varchar",
        "c_uuid",
        "c_enum",
        "c_json",
        "c_jsonb",
        "c_int_array",
        "c_text_array",
        "c_ts",
        "c_date",
        "c_bytea",
        "c_domain",
        "c_enum_array",
        "c_interval",
        "c_null",
    ];
    let extra: String = columns.iter().map(|c| format!("{c} = \"{c}\"\n")).collect();
    let daemon = InProcess::start(&db.config(&emulator.url(), &extra));
    db.wait_for_streaming().await;

    db.exec(
        "INSERT INTO users VALUES (
             42, 'ada@example.com', 'Ada', 'pro', '2024-03-01 12:34:56.789+00', NULL,
             -7, 2147483647, 9007199254740992, 9007199254740993, 0.1,
             'NaN', 12.50, 12345678901234567890.123, true,
             'short', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'happy', '{\"a\": [1, 2]}', '{\"b\": null}',
             '{1,NULL,3}', '{\"x y\",NULL,\"NULL\"}', '2024-03-01 00:00:00', '2024-03-01',
             '\\x0102ff', 'dom', '{happy,sad}', '1 day', NULL
         )",
    )
    .await;

    assert!(
        wait_for_customers(&emulator, |c| c.contains_key("42")).await,
        "customer 42 never arrived"
    );
    let customer = serde_json::Value::Object(emulator.customer("42").unwrap());
    let expected = json!({
        "email": "ada@example.com",
        "first_name": "Ada",
        "plan": "pro",
        "created_at": 1709296496,
        "c_int2": -7,
        "c_int4": 2147483647,
        "c_int8": 9007199254740992_i64,
        "c_big": "9007199254740993",
        "c_float8": 0.1,
        "c_nan": "NaN",
        "c_numeric": 12.5,
        "c_inexact": "12345678901234567890.123",
        "c_bool": true,
        "c_varchar": "short",
        "c_uuid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "c_enum": "happy",
        "c_json": {"a": [1, 2]},
        "c_jsonb": {"b": null},
        "c_int_array": [1, null, 3],
        "c_text_array": ["x y", null, "NULL"],
        "c_ts": 1709251200,
        "c_date": 1709251200,
        "c_bytea": "0102ff",
        "c_domain": "dom",
        "c_enum_array": ["happy", "sad"],
        "c_interval": "1 day",
    });
    for (key, value) in expected.as_object().unwrap() {
        assert_eq!(customer.get(key), Some(value), "attribute {key}");
    }
    assert!(customer.get("about").is_none(), "NULL columns are left out of an insert");
    assert!(customer.get("c_null").is_none(), "NULL columns are left out of an insert");
    daemon.stop().await.unwrap();
}
