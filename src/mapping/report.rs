//! What a mapping left out, counted and logged the same way whoever mapped
//! the change: the stream, the initial copy or a backfill. Names only,
//! never values.

use super::{Mapped, SkipReason};
use crate::change::Table;
use crate::telemetry::Counters;

/// Who mapped the change; it only changes the words of the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Producer {
    /// A change read from the replication stream.
    Stream,
    /// A row read by the initial copy.
    InitialCopy,
    /// A row read by a backfill.
    Backfill,
}

impl Producer {
    fn noun(self) -> &'static str {
        match self {
            Self::Stream => "change",
            Self::InitialCopy => "row of the initial copy",
            Self::Backfill => "row of a backfill",
        }
    }
}

/// Counts `mapped`'s skip (`ciosync_changes_skipped_total{reason}`) and
/// dropped attributes (`ciosync_attributes_dropped_total`), and logs what an
/// operator has to fix. A change with nothing to send (no mapped attribute
/// changed, a row soft-deleted) is counted, not logged.
pub fn report(mapped: &Mapped, table: &Table, producer: Producer, counters: &Counters) {
    if let Some(reason) = mapped.skipped {
        Counters::add(skip_counter(reason, counters), 1);
        if let Some(why) = skip_explanation(reason) {
            tracing::error!(
                table = %table.qualified_name(),
                reason = reason.as_str(),
                "{} skipped: {why}",
                producer.noun()
            );
        }
    }
    for dropped in &mapped.dropped {
        Counters::add(&counters.attributes_dropped, 1);
        tracing::warn!(
            table = %table.qualified_name(),
            column = %dropped.column,
            attribute = %dropped.attribute,
            reason = dropped.reason.as_str(),
            "attribute left out of the call"
        );
    }
}

fn skip_counter(reason: SkipReason, counters: &Counters) -> &std::sync::atomic::AtomicU64 {
    match reason {
        SkipReason::NoChange => &counters.changes_skipped_no_change,
        SkipReason::InvalidId => &counters.changes_skipped_invalid_id,
        SkipReason::UnknownTable => &counters.changes_skipped_unknown_table,
        SkipReason::SoftDeleted => &counters.changes_skipped_soft_deleted,
        SkipReason::FilteredOut => &counters.changes_skipped_filtered_out,
        SkipReason::InvalidEvent => &counters.changes_skipped_invalid_event,
        SkipReason::RelationshipUnknown => &counters.changes_skipped_relationship_unknown,
        SkipReason::InvalidPlatform => &counters.changes_skipped_invalid_platform,
        SkipReason::DeviceKeyUnknown => &counters.changes_skipped_device_key_unknown,
        SkipReason::TokenTooLong => &counters.changes_skipped_token_too_long,
    }
}

/// What to fix, for the skips that need fixing.
fn skip_explanation(reason: SkipReason) -> Option<&'static str> {
    match reason {
        SkipReason::NoChange | SkipReason::SoftDeleted | SkipReason::FilteredOut => None,
        SkipReason::InvalidId | SkipReason::UnknownTable => Some(
            "its customer id is NULL, empty, over 150 bytes or missing from the row (a DELETE \
             needs the id column in the replica identity)",
        ),
        SkipReason::InvalidEvent => Some("its event name is NULL, blank or over 100 bytes"),
        SkipReason::RelationshipUnknown => Some(
            "the deleted membership's old row does not name the person and the object: \
             ALTER TABLE … REPLICA IDENTITY FULL (ciosync check names the table)",
        ),
        SkipReason::InvalidPlatform => {
            Some("its device platform (platform_column) is neither ios nor android, in any case")
        }
        SkipReason::DeviceKeyUnknown => Some(
            "a DELETE of a device whose old row lacks the customer id or the token: the \
             table's replica identity carries only its key; run ALTER TABLE … REPLICA \
             IDENTITY FULL, or make (customer_id_column, token_column) its primary key \
             (`ciosync check` names the statement)",
        ),
        SkipReason::TokenTooLong => Some(
            "its device token (token_column) is over 1000 bytes, longer than any push token: \
             the column holds something else",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::ReplicaIdentity;
    use crate::mapping::{DropReason, DroppedAttribute};

    fn users() -> Table {
        Table {
            oid: 1,
            schema: "public".into(),
            name: "users".into(),
            columns: Vec::new(),
            replica_identity: ReplicaIdentity::Default,
        }
    }

    #[test]
    fn each_skip_counts_under_its_reason_whoever_mapped_it() {
        let counters = Counters::default();
        let reasons = [
            SkipReason::NoChange,
            SkipReason::InvalidId,
            SkipReason::UnknownTable,
            SkipReason::SoftDeleted,
            SkipReason::FilteredOut,
            SkipReason::InvalidEvent,
            SkipReason::InvalidPlatform,
            SkipReason::DeviceKeyUnknown,
            SkipReason::TokenTooLong,
        ];
        for (reason, producer) in reasons
            .into_iter()
            .zip([Producer::Stream, Producer::InitialCopy, Producer::Backfill].into_iter().cycle())
        {
            let mapped = Mapped { skipped: Some(reason), ..Mapped::default() };
            report(&mapped, &users(), producer, &counters);
        }
        for reason in reasons {
            assert_eq!(Counters::get(skip_counter(reason, &counters)), 1, "{}", reason.as_str());
        }
        assert_eq!(Counters::get(&counters.attributes_dropped), 0);
    }

    #[test]
    fn each_dropped_attribute_counts() {
        let counters = Counters::default();
        let dropped = |attribute: &str| DroppedAttribute {
            attribute: attribute.into(),
            column: attribute.into(),
            reason: DropReason::ValueTooLong,
        };
        let mapped =
            Mapped { dropped: vec![dropped("bio"), dropped("notes")], ..Mapped::default() };
        report(&mapped, &users(), Producer::Backfill, &counters);
        assert_eq!(Counters::get(&counters.attributes_dropped), 2);
        assert_eq!(Counters::get(&counters.changes_skipped_no_change), 0);
    }

    #[test]
    fn only_skips_an_operator_can_fix_are_explained() {
        assert!(skip_explanation(SkipReason::NoChange).is_none());
        assert!(skip_explanation(SkipReason::SoftDeleted).is_none());
        assert!(skip_explanation(SkipReason::InvalidId).unwrap().contains("replica identity"));
        assert!(skip_explanation(SkipReason::InvalidEvent).unwrap().contains("event name"));
    }
}
