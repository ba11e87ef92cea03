//! Why a change sent nothing, or an attribute was left out: the labels of
//! `ciosync_changes_skipped_total` and `ciosync_attributes_dropped_total`
//! and of the log lines that name them (never a value).

/// Why a change produced no operation although it was not a no-op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// The UPDATE changed no mapped attribute.
    NoChange,
    /// The id is NULL, empty, over 150 bytes, or not in the row at all.
    InvalidId,
    /// The table is not synced (a stale publication, say).
    UnknownTable,
    /// The row is soft-deleted (`soft_delete_column` is not NULL) and stays so.
    SoftDeleted,
    /// An insert into an event table whose event name is NULL, blank or too long.
    InvalidEvent,
    /// The row is outside a filter ciosync evaluates, and Customer.io does
    /// not hold its customer.
    FilteredOut,
    /// A `[[relationships]]` row deleted (or its ids changed) without an
    /// old row naming the person and the object: the relationship to
    /// remove is not known.
    RelationshipUnknown,
    /// A `[[devices]]` row whose platform is not `ios` or `android`.
    InvalidPlatform,
    /// A DELETE of a `[[devices]]` row whose old row lacks the customer or
    /// the token (the replica identity's key does not hold both).
    DeviceKeyUnknown,
    /// A `[[devices]]` row whose token is over
    /// [`super::devices::MAX_TOKEN_BYTES`]: too long to be accepted as a device.
    TokenTooLong,
}

impl SkipReason {
    /// Label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoChange => "no_change",
            Self::InvalidId => "invalid_id",
            Self::UnknownTable => "unknown_table",
            Self::SoftDeleted => "soft_deleted",
            Self::InvalidEvent => "invalid_event",
            Self::FilteredOut => "filtered_out",
            Self::RelationshipUnknown => "relationship_unknown",
            Self::InvalidPlatform => "invalid_platform",
            Self::DeviceKeyUnknown => "device_key_unknown",
            Self::TokenTooLong => "token_too_long",
        }
    }
}

/// Why one attribute was left out of an identify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The value is over Customer.io's 1000-byte limit.
    ValueTooLong,
    /// The text did not parse as the column's type.
    Unparseable,
    /// The mapped column is not in the table (dropped or renamed).
    MissingColumn,
}

impl DropReason {
    /// Label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ValueTooLong => "value_too_long",
            Self::Unparseable => "unparseable",
            Self::MissingColumn => "missing_column",
        }
    }
}

/// An attribute left out of an identify: names only, never the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedAttribute {
    pub attribute: String,
    pub column: String,
    pub reason: DropReason,
}
