use std::sync::Arc;

use bytes::Bytes;
use serde_json::json;

use super::*;
use crate::change::TableColumn;
use crate::change::ValueKind;

// Columns: id, user_id, token, platform, last_used, app_version, push, revoked_at.
fn table(identity: ReplicaIdentity) -> Arc<Table> {
    let col = |name: &str, kind: ValueKind| TableColumn { name: name.into(), type_oid: 0, kind };
    Arc::new(Table {
        oid: 1,
        schema: "public".into(),
        name: "devices".into(),
        columns: vec![
            col("id", ValueKind::Int),
            col("user_id", ValueKind::Text),
            col("token", ValueKind::Text),
            col("platform", ValueKind::Text),
            col("last_used", ValueKind::TimestampTz),
            col("app_version", ValueKind::Text),
            col("push", ValueKind::Bool),
            col("revoked_at", ValueKind::TimestampTz),
        ],
        replica_identity: identity,
    })
}

fn config() -> DevicesConfig {
    let text = r#"
        table = "devices"
        customer_id_column = "user_id"
        token_column = "token"
        platform_column = "platform"
        last_used_column = "last_used"
        soft_delete_column = "revoked_at"
        [attributes]
        app_version = "app_version"
        push_enabled = "push"
    "#;
    toml::from_str(text).unwrap()
}

fn t(s: &str) -> Datum {
    Datum::Text(Bytes::copy_from_slice(s.as_bytes()))
}

const N: Datum = Datum::Null;

fn row(user: &str, token: &str, platform: &str) -> Row {
    vec![t("7"), t(user), t(token), t(platform), t("2023-11-14 22:13:20+00"), t("1.2"), t("t"), N]
}

fn map_as(identity: ReplicaIdentity, op: RowOp) -> Mapped {
    let change =
        RowChange { table: table(identity), op, commit_time: 1, position: Default::default() };
    super::map(&config(), &change)
}

fn map(op: RowOp) -> Mapped {
    map_as(ReplicaIdentity::Full, op)
}

fn add(user: &str, token: &str, platform: &'static str) -> CustomerOp {
    let attributes = json!({"app_version": "1.2", "push_enabled": "true"});
    CustomerOp::AddDevice(Box::new(Device {
        customer: user.into(),
        token: token.into(),
        platform,
        last_used: Some(1_700_000_000),
        attributes: attributes.as_object().unwrap().clone(),
    }))
}

fn delete(user: &str, token: &str) -> CustomerOp {
    CustomerOp::DeleteDevice { customer: user.into(), token: token.into() }
}

fn update(old: Option<Row>, key_only: bool, new: Row) -> RowOp {
    RowOp::Update { old, old_is_key_only: key_only, new }
}

#[test]
fn an_insert_adds_the_device_with_its_platform_time_and_string_attributes() {
    let mapped = map(RowOp::Insert { new: row("42", "tok", "iOS") });
    assert_eq!(mapped.ops, vec![add("42", "tok", "ios")]);
    assert_eq!(mapped.skipped, None);
}

#[test]
fn an_update_adds_the_row_again_and_an_unchanged_one_sends_nothing() {
    let mut new = row("42", "tok", "android");
    new[5] = t("1.3");
    let mapped = map(update(Some(row("42", "tok", "android")), false, new));
    let CustomerOp::AddDevice(device) = &mapped.ops[0] else { panic!("{mapped:?}") };
    assert_eq!(device.attributes["app_version"], "1.3");
    assert_eq!(mapped.ops.len(), 1);
    let same = map(update(Some(row("42", "tok", "android")), false, row("42", "tok", "android")));
    assert_eq!(same.skipped, Some(SkipReason::NoChange));
    assert!(same.ops.is_empty());
    // Without the old row, every update is an upsert.
    let blind = map_as(ReplicaIdentity::Default, update(None, false, row("42", "tok", "ios")));
    assert_eq!(blind.ops, vec![add("42", "tok", "ios")]);
}

#[test]
fn a_device_moving_to_another_customer_is_deleted_first() {
    // No barrier: the sink orders one token's operations across customers.
    let mapped = map(update(Some(row("1", "tok", "ios")), false, row("2", "tok", "ios")));
    assert_eq!(mapped.ops, vec![delete("1", "tok"), add("2", "tok", "ios")]);
    let mapped = map(update(Some(row("1", "old", "ios")), false, row("1", "new", "ios")));
    assert_eq!(mapped.ops, vec![delete("1", "old"), add("1", "new", "ios")]);
}

#[test]
fn a_key_on_customer_and_token_tells_the_old_pair_under_default_identity() {
    let mut key = vec![N; 8];
    key[1] = t("1");
    key[2] = t("tok");
    let moved = update(Some(key.clone()), true, row("2", "tok", "ios"));
    let mapped = map_as(ReplicaIdentity::Default, moved);
    assert_eq!(mapped.ops, vec![delete("1", "tok"), add("2", "tok", "ios")]);
    let deleted = map_as(ReplicaIdentity::Default, RowOp::Delete { old: key });
    assert_eq!(deleted.ops, vec![delete("1", "tok")]);
}

#[test]
fn a_delete_without_customer_and_token_in_the_old_row_is_skipped_as_unknown() {
    let mut surrogate = vec![N; 8];
    surrogate[0] = t("7");
    let mapped = map_as(ReplicaIdentity::Default, RowOp::Delete { old: surrogate.clone() });
    assert!(mapped.ops.is_empty());
    assert_eq!(mapped.skipped, Some(SkipReason::DeviceKeyUnknown));
    // The key changed (a surrogate key): the old pair is unknown, the new row is added.
    let mapped =
        map_as(ReplicaIdentity::Default, update(Some(surrogate), true, row("1", "t", "ios")));
    assert_eq!(mapped.ops, vec![add("1", "t", "ios")]);
    // Under FULL a NULL is a NULL: an unusable id.
    let mut old = row("1", "t", "ios");
    old[1] = N;
    assert_eq!(map(RowOp::Delete { old }).skipped, Some(SkipReason::InvalidId));
}

#[test]
fn a_delete_removes_the_device() {
    let mapped = map(RowOp::Delete { old: row("42", "tok", "ios") });
    assert_eq!(mapped.ops, vec![delete("42", "tok")]);
}

#[test]
fn a_soft_delete_removes_the_device_once_and_clearing_it_adds_it_back() {
    let mut revoked = row("42", "tok", "ios");
    revoked[7] = t("2024-01-01 00:00:00+00");
    let mapped = map(update(Some(row("42", "tok", "ios")), false, revoked.clone()));
    assert_eq!(mapped.ops, vec![delete("42", "tok")]);
    let mut later = revoked.clone();
    later[5] = t("9.9");
    let again = map(update(Some(revoked.clone()), false, later));
    assert_eq!(again.skipped, Some(SkipReason::SoftDeleted));
    let cleared = map(update(Some(revoked.clone()), false, row("42", "tok", "ios")));
    assert_eq!(cleared.ops, vec![add("42", "tok", "ios")]);
    let inserted = map(RowOp::Insert { new: revoked });
    assert_eq!(inserted.ops, vec![delete("42", "tok")]);
}

#[test]
fn a_platform_other_than_ios_or_android_skips_the_row() {
    for platform in ["web", "", "i os"] {
        let mapped = map(RowOp::Insert { new: row("42", "tok", platform) });
        assert!(mapped.ops.is_empty(), "{platform}");
        assert_eq!(mapped.skipped, Some(SkipReason::InvalidPlatform));
    }
    let mut null = row("42", "tok", "ios");
    null[3] = N;
    assert_eq!(map(RowOp::Insert { new: null }).skipped, Some(SkipReason::InvalidPlatform));
}

#[test]
fn null_ids_tokens_and_attributes() {
    let mut no_token = row("42", "", "ios");
    assert_eq!(map(RowOp::Insert { new: no_token.clone() }).skipped, Some(SkipReason::InvalidId));
    no_token[2] = N;
    assert_eq!(map(RowOp::Insert { new: no_token }).skipped, Some(SkipReason::InvalidId));
    let mut sparse = row("42", "tok", "ios");
    sparse[4] = N;
    sparse[5] = N;
    let mapped = map(RowOp::Insert { new: sparse });
    let CustomerOp::AddDevice(device) = &mapped.ops[0] else { panic!("{mapped:?}") };
    assert_eq!(device.last_used, None);
    assert_eq!(
        serde_json::Value::Object(device.attributes.clone()),
        json!({"push_enabled": "true"})
    );
}

#[test]
fn a_fixed_platform_goes_for_every_row() {
    let mut config = config();
    config.platform_column = None;
    config.platform = Some("android".into());
    let change = RowChange {
        table: table(ReplicaIdentity::Full),
        op: RowOp::Insert { new: row("42", "tok", "whatever") },
        commit_time: 1,
        position: Default::default(),
    };
    let mapped = super::map(&config, &change);
    let CustomerOp::AddDevice(device) = &mapped.ops[0] else { panic!("{mapped:?}") };
    assert_eq!(device.platform, "android");
}

#[test]
fn a_row_whose_customer_or_token_is_set_to_null_deletes_the_old_device() {
    let mut logged_out = row("42", "tok", "ios");
    logged_out[1] = N;
    let mapped = map(update(Some(row("42", "tok", "ios")), false, logged_out.clone()));
    assert_eq!(mapped.ops, vec![delete("42", "tok")]);
    assert_eq!(mapped.skipped, None);
    // Without the old row there is nothing to delete: skipped as before.
    let blind = map_as(ReplicaIdentity::Default, update(None, false, logged_out));
    assert!(blind.ops.is_empty());
    assert_eq!(blind.skipped, Some(SkipReason::InvalidId));
}

#[test]
fn a_token_over_the_limit_is_skipped_and_counted_never_sent() {
    let longest = "t".repeat(MAX_TOKEN_BYTES);
    let fits = map(RowOp::Insert { new: row("42", &longest, "ios") });
    assert_eq!(fits.ops, vec![add("42", &longest, "ios")]);
    let over = "t".repeat(MAX_TOKEN_BYTES + 1);
    let inserted = map(RowOp::Insert { new: row("42", &over, "ios") });
    assert!(inserted.ops.is_empty(), "{inserted:?}");
    assert_eq!(inserted.skipped, Some(SkipReason::TokenTooLong));
    assert_eq!(SkipReason::TokenTooLong.as_str(), "token_too_long");
    let deleted = map(RowOp::Delete { old: row("42", &over, "ios") });
    assert!(deleted.ops.is_empty());
    assert_eq!(deleted.skipped, Some(SkipReason::TokenTooLong));
    // A token grown past the limit: the old device goes, the new is counted.
    let grown = map(update(Some(row("42", "tok", "ios")), false, row("42", &over, "ios")));
    assert_eq!(grown.ops, vec![delete("42", "tok")]);
    assert_eq!(grown.skipped, Some(SkipReason::TokenTooLong));
    // Without the old row, only the skip.
    let blind = map_as(ReplicaIdentity::Default, update(None, false, row("42", &over, "ios")));
    assert!(blind.ops.is_empty());
    assert_eq!(blind.skipped, Some(SkipReason::TokenTooLong));
    // A NULL token of a new row stays an invalid id under DEFAULT identity.
    let mut null = row("42", "tok", "ios");
    null[2] = N;
    let insert = map_as(ReplicaIdentity::Default, RowOp::Insert { new: null });
    assert_eq!(insert.skipped, Some(SkipReason::InvalidId));
}

#[test]
fn an_attribute_value_over_1000_bytes_is_left_out_by_name() {
    let mut long = row("42", "tok", "ios");
    long[5] = t(&"v".repeat(1001));
    let mapped = map(RowOp::Insert { new: long.clone() });
    let CustomerOp::AddDevice(device) = &mapped.ops[0] else { panic!("{mapped:?}") };
    assert_eq!(
        serde_json::Value::Object(device.attributes.clone()),
        json!({"push_enabled": "true"})
    );
    assert_eq!(
        mapped.dropped,
        vec![DroppedAttribute {
            attribute: "app_version".into(),
            column: "app_version".into(),
            reason: DropReason::ValueTooLong
        }]
    );
    long[5] = t(&"v".repeat(1000));
    let kept = map(RowOp::Insert { new: long });
    assert!(kept.dropped.is_empty(), "{kept:?}");
}

/// While a backfill's window is open the stream notes each change under
/// the keys a backfill pages the table by: its primary key once known,
/// the customer and token before, as JSON for several columns; both the
/// old and the new row's, and a key-only old row without those columns
/// names none of its own.
#[test]
fn a_change_is_noted_under_the_key_a_backfill_pages_by() {
    let change = |identity, op| RowChange {
        table: table(identity),
        op,
        commit_time: 1,
        position: Default::default(),
    };
    let mut mapper = Mapper::new(&[]).with_device_tables(&[config()]);
    let long = "f".repeat(400);
    let moved = RowOp::Update {
        old: Some(row("41", "tok", "ios")),
        old_is_key_only: false,
        new: row("42", &long, "ios"),
    };
    let keys = mapper.customer_ids(&change(ReplicaIdentity::Full, moved.clone())).unwrap();
    let pair = |c: &str, t: &str| serde_json::to_string(&[c, t]).unwrap();
    assert_eq!(keys, [pair("41", "tok"), pair("42", &long)], "a token of any length");

    let key = |columns: &[&str]| columns.iter().map(|c| c.to_string()).collect();
    mapper.set_device_keys(vec![(("public".into(), "devices".into()), key(&["id"]))]);
    let mut old = vec![N; 8];
    old[0] = t("9");
    let deleted = RowOp::Delete { old };
    let ids = |identity, op| mapper.customer_ids(&change(identity, op)).unwrap();
    assert_eq!(ids(ReplicaIdentity::Default, deleted), ["9"]);
    assert_eq!(ids(ReplicaIdentity::Full, moved), ["7"], "one id");
    let mut unread = row("1", "a", "ios");
    unread[0] = N;
    assert!(ids(ReplicaIdentity::Full, RowOp::Insert { new: unread }).is_empty(), "never read");
    mapper.set_device_keys(vec![(("public".into(), "devices".into()), key(&["user_id", "x"]))]);
    let added = RowOp::Insert { new: row("1", "a", "ios") };
    assert_eq!(mapper.customer_ids(&change(ReplicaIdentity::Full, added)), None);
}

/// Under `REPLICA IDENTITY USING INDEX (user_id, token)` beside a surrogate
/// primary key `id` (the paging key), a DELETE's old row holds no id: the
/// change is noted under its device's alias, which a chunk's row sending
/// that device matches (else the chunk would add back the device the
/// stream just deleted). An UPDATE moving the pair carries the same
/// key-only old row; one that does not move it carries none, and its new
/// row's id is its key. An old row without the pair tells nothing.
#[test]
fn a_key_only_old_row_without_the_paging_key_is_noted_under_its_device() {
    let change = |op| RowChange {
        table: table(ReplicaIdentity::Index),
        op,
        commit_time: 1,
        position: Default::default(),
    };
    let mut mapper = Mapper::new(&[]).with_device_tables(&[config()]);
    let key = vec!["id".to_owned()];
    mapper.set_device_keys(vec![(("public".into(), "devices".into()), key)]);
    let mut old = vec![N; 8];
    old[1] = t("1");
    old[2] = t("tok");
    let alias = device_alias("1", "tok");
    let deleted = RowOp::Delete { old: old.clone() };
    assert_eq!(mapper.customer_ids(&change(deleted)), Some(vec![alias.clone()]));
    let moved = update(Some(old), true, row("2", "tok", "ios"));
    assert_eq!(mapper.customer_ids(&change(moved)), Some(vec![alias, "7".to_owned()]));
    let mut no_token = vec![N; 8];
    no_token[1] = t("1");
    assert_eq!(mapper.customer_ids(&change(RowOp::Delete { old: no_token })), None);
    let updated = update(None, false, row("1", "tok", "ios"));
    assert_eq!(mapper.customer_ids(&change(updated)), Some(vec!["7".to_owned()]));
}
