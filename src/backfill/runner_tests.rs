use super::*;
use serde_json::json;

#[test]
fn only_the_listed_attributes_are_kept() {
    let identify = |attrs: serde_json::Value| CustomerOp::Identify {
        id: "1".into(),
        attributes: attrs.as_object().unwrap().clone(),
        timestamp: 1,
    };
    let ops = vec![identify(json!({"plan": "pro", "email": "a@x.io"}))];
    assert_eq!(select_attributes(ops.clone(), None), ops);
    assert_eq!(
        select_attributes(ops.clone(), Some(&["plan".to_owned()])),
        vec![identify(json!({"plan": "pro"}))]
    );
    assert!(select_attributes(ops, Some(&["nickname".to_owned()])).is_empty());
}

fn wide_rows(count: usize, value_bytes: usize) -> Vec<(String, Vec<CustomerOp>)> {
    (0..count)
        .map(|key| {
            let attributes = json!({"bio": "b".repeat(value_bytes)});
            let op = CustomerOp::Identify {
                id: key.to_string(),
                attributes: attributes.as_object().unwrap().clone(),
                timestamp: 1,
            };
            (key.to_string(), vec![op])
        })
        .collect()
}

#[test]
fn a_page_is_cut_to_the_rows_that_fit() {
    let mut rows = wide_rows(100, 5000);
    let one = estimated_bytes(&rows[0].1[0]);
    let (bytes, cut) = fit(&mut rows, one * 10 + one / 2);
    assert!(cut);
    assert_eq!(rows.len(), 10, "the rows that fit, in key order");
    assert_eq!(rows.last().unwrap().0, "9");
    assert_eq!(bytes, one * 10);

    let mut rows = wide_rows(10, 5000);
    assert_eq!(fit(&mut rows, one * 10), (one * 10, false), "exactly full is not cut");
    assert_eq!(rows.len(), 10);
}

#[test]
fn a_row_wider_than_the_limit_still_goes_alone() {
    let mut rows = wide_rows(3, 50_000);
    let (bytes, cut) = fit(&mut rows, 1000);
    assert_eq!(rows.len(), 1, "a chunk always makes progress");
    assert!(cut && bytes > 1000);
    let mut none = Vec::new();
    assert_eq!(fit(&mut none, 1000), (0, false));
}

#[test]
fn the_next_page_reads_as_many_rows_as_fit() {
    let mut size = ChunkSize::new(256 * 1024);
    assert_eq!(size.rows, FIRST_CHUNK_ROWS, "the width is not known yet");
    size.learn(40, 40 * 6500);
    assert_eq!(size.rows, 256 * 1024 / 6500);
    size.learn(10, 10 * 10);
    assert_eq!(size.rows, CHUNK_ROWS, "narrow rows: never more than CHUNK_ROWS");
    size.learn(1, 1_000_000);
    assert_eq!(size.rows, 1, "never less than one row");
    size.learn(0, 0);
    assert_eq!(size.rows, 1, "an empty chunk says nothing about width");
    size.learn(5, 0);
    assert_eq!(size.rows, CHUNK_ROWS, "rows without operations");
}

#[test]
fn a_backfill_never_removes_anyone() {
    let ops = vec![CustomerOp::Delete { id: "1".into() }, CustomerOp::Suppress { id: "2".into() }];
    assert!(select_attributes(ops.clone(), None).is_empty());
    assert!(select_attributes(ops, Some(&["plan".to_owned()])).is_empty());
}
