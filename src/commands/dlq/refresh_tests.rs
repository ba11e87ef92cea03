use std::collections::VecDeque;

use serde_json::json;

use super::*;

fn letter(operation: &str, payload: serde_json::Value) -> Replayable {
    Replayable {
        operation: operation.into(),
        customer_id: "shown".into(),
        attributes: Vec::new(),
        payload: payload.to_string(),
    }
}

fn object(object_id: &str, name: &str) -> CustomerOp {
    let attributes = json!({ "name": name }).as_object().cloned().unwrap();
    CustomerOp::Object(ObjectOp::new("1", object_id.into(), ObjectAction::Identify { attributes }))
}

#[test]
fn each_kind_names_its_subject_and_its_row_key() {
    let identify = letter(
        "object_identify",
        json!({"type": "object", "identifiers": {"object_type_id": "1", "object_id": "acme"},
               "action": "identify", "attributes": {"name": "Acme"}}),
    );
    let subject = Subject::of(&identify).unwrap();
    assert_eq!(subject, Subject::Object { object_type_id: "1".into(), object_id: "acme".into() });
    assert_eq!(subject.key(), "acme");
    let related = letter(
        "delete_relationship",
        json!({"type": "person", "identifiers": {"id": "42"}, "action": "delete_relationships",
               "cio_relationships": [{"identifiers": {"object_type_id": "2", "object_id": "a\"b"}}]}),
    );
    let subject = Subject::of(&related).unwrap();
    let (customer, object_type_id) = ("42".to_owned(), "2".to_owned());
    assert_eq!(
        subject,
        Subject::Relationship { customer, object_type_id, object_id: "a\"b".into() }
    );
    assert_eq!(subject.key(), r#"["42","a\"b"]"#, "the key columns' texts as a JSON array");
    let device = letter(
        "add_device",
        json!({"type": "person", "identifiers": {"id": "7"}, "action": "add_device",
               "device": {"token": "t", "platform": "ios"}}),
    );
    let subject = Subject::of(&device).unwrap();
    assert_eq!(subject, Subject::Device { customer: "7".into(), token: "t".into() });
    assert!(Subject::of(&letter("object_delete", json!({"type": "object"}))).is_none());
    assert!(Subject::of(&letter("identify", json!({"identifiers": {"id": "7"}}))).is_none());
}

#[test]
fn only_the_same_subject_alive_counts_as_live_and_its_removal_undoes_it() {
    let acme = Subject::Object { object_type_id: "1".into(), object_id: "acme".into() };
    assert!(acme.is_live(&object("acme", "Acme")));
    assert!(!acme.is_live(&object("globex", "Globex")));
    assert!(!acme.is_live(&acme.removal()), "a soft-deleted object maps to its delete");
    let item: serde_json::Value = serde_json::from_str(&encoded(acme.removal())).unwrap();
    assert_eq!(
        item,
        json!({"type": "object", "identifiers": {"object_type_id": "1", "object_id": "acme"},
               "action": "delete"})
    );
    let member = Subject::Relationship {
        customer: "42".into(),
        object_type_id: "1".into(),
        object_id: "acme".into(),
    };
    let add = |customer: &str| {
        CustomerOp::Relationship(RelationshipOp {
            customer: customer.into(),
            object_type_id: "1".into(),
            object_id: "acme".into(),
            action: RelationshipAction::Add { attributes: Default::default() },
        })
    };
    assert!(member.is_live(&add("42")));
    assert!(!member.is_live(&add("43")));
    assert!(!member.is_live(&member.removal()));
    let item: serde_json::Value = serde_json::from_str(&encoded(member.removal())).unwrap();
    assert_eq!(item["action"], "delete_relationships");
    let device = Subject::Device { customer: "7".into(), token: "t".into() };
    assert_eq!(
        device.removal(),
        CustomerOp::DeleteDevice { customer: "7".into(), token: "t".into() }
    );
}

/// Rows that say, after each send, the next of `reads`; Customer.io
/// answers each send with the next of `answers` (accepted when none is
/// left).
#[derive(Default)]
struct Script {
    reads: VecDeque<Now>,
    answers: VecDeque<Answer>,
    sent: Vec<serde_json::Value>,
}

impl Rounds for Script {
    async fn now(&mut self) -> Result<Now, Halt> {
        Ok(self.reads.pop_front().expect("read once per accepted send"))
    }

    async fn send(&mut self, payload: &str) -> Result<Answer, Halt> {
        self.sent.push(serde_json::from_str(payload).unwrap());
        Ok(self.answers.pop_front().unwrap_or(Answer::Delivered))
    }
}

fn run(script: &mut Script, state: Now, removal: &str) -> Outcome {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    match runtime.block_on(converge(script, state, removal)) {
        Ok(outcome) => outcome,
        Err(_) => panic!("halted"),
    }
}

const REMOVAL: &str = r#"{"type":"object","identifiers":{"object_type_id":"1","object_id":"acme"},"action":"delete"}"#;

fn names(sent: &[serde_json::Value]) -> Vec<serde_json::Value> {
    sent.iter().map(|item| item["attributes"]["name"].clone()).collect()
}

#[test]
fn a_row_unchanged_after_the_send_is_settled_in_one_round() {
    let mut script = Script { reads: [Now::Live(object("acme", "A"))].into(), ..Script::default() };
    assert_eq!(run(&mut script, Now::Live(object("acme", "A")), REMOVAL), Outcome::Refreshed);
    assert_eq!(names(&script.sent), [json!("A")]);
}

#[test]
fn a_row_changed_while_it_was_sent_is_sent_again_as_it_is_now() {
    let reads = [Now::Live(object("acme", "B")), Now::Live(object("acme", "B"))];
    let mut script = Script { reads: reads.into(), ..Script::default() };
    assert_eq!(run(&mut script, Now::Live(object("acme", "A")), REMOVAL), Outcome::Refreshed);
    assert_eq!(names(&script.sent), [json!("A"), json!("B")], "the newer values went last");
}

#[test]
fn a_row_deleted_while_it_was_sent_gets_its_removal_and_one_back_its_values() {
    let mut script = Script { reads: [Now::Gone, Now::Gone].into(), ..Script::default() };
    assert_eq!(run(&mut script, Now::Live(object("acme", "A")), REMOVAL), Outcome::Refreshed);
    assert_eq!(script.sent[1]["action"], "delete");

    let reads = [Now::Live(object("acme", "C")), Now::Live(object("acme", "C"))];
    let mut script = Script { reads: reads.into(), ..Script::default() };
    assert_eq!(run(&mut script, Now::Gone, REMOVAL), Outcome::Refreshed);
    assert_eq!(script.sent[0], serde_json::from_str::<serde_json::Value>(REMOVAL).unwrap());
    assert_eq!(names(&script.sent[1..]), [json!("C")]);

    let mut script = Script { reads: [Now::Gone].into(), ..Script::default() };
    assert_eq!(run(&mut script, Now::Gone, REMOVAL), Outcome::Delivered { note: None });
}

#[test]
fn a_row_changing_after_every_send_leaves_the_letter_unsettled() {
    let reads = (0..MAX_ROUNDS).map(|i| Now::Live(object("acme", &i.to_string())));
    let mut script = Script { reads: reads.collect(), ..Script::default() };
    assert_eq!(run(&mut script, Now::Live(object("acme", "first")), REMOVAL), Outcome::Unsettled);
    assert_eq!(script.sent.len(), MAX_ROUNDS as usize);
}

#[test]
fn a_refusal_ends_the_rounds_without_reading_again() {
    let refused = Answer::RefusedAgain { status: 207, error: "invalid".into() };
    let mut script = Script { answers: [refused].into(), ..Script::default() };
    let outcome = run(&mut script, Now::Live(object("acme", "A")), REMOVAL);
    assert_eq!(outcome, Outcome::RefusedAgain { status: 207, error: "invalid".into() });
    assert_eq!(script.sent.len(), 1);
}

#[test]
fn a_row_gone_while_another_table_keeps_its_subject_is_not_removed() {
    let mut script = Script { reads: [Now::Elsewhere].into(), ..Script::default() };
    assert_eq!(run(&mut script, Now::Live(object("acme", "A")), REMOVAL), Outcome::Refreshed);
    assert_eq!(names(&script.sent), [json!("A")], "no removal went");
}

#[test]
fn a_relationships_attribute_names_are_those_of_its_relationship() {
    let add = letter(
        "add_relationship",
        json!({"type": "person", "identifiers": {"id": "42"}, "action": "add_relationships",
               "cio_relationships": [{"identifiers": {"object_type_id": "1", "object_id": "a"},
                                      "relationship_attributes": {"role": "admin"}}]}),
    );
    assert_eq!(names_of(&add), ["role"]);
    let identify =
        Replayable { attributes: vec!["name".into()], ..letter("object_identify", json!({})) };
    assert_eq!(names_of(&identify), ["name"]);
}
