//! ciosync's own logical messages (`pg_logical_emit_message`) as they come
//! back in the stream: the keeper's heartbeats and the backfill's
//! watermarks. Each carries the slot, so daemons of other slots on the same
//! database ignore them; the source turns them into typed events.

/// The prefix of heartbeat messages in the WAL.
pub const HEARTBEAT_PREFIX: &str = "ciosync.heartbeat";

/// The logical message prefix of backfill watermarks.
pub const WATERMARK_PREFIX: &str = "ciosync.backfill";

/// One chunk of one backfill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkId {
    pub backfill: i64,
    pub chunk: u64,
}

/// A watermark read back from the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watermark {
    /// Before the chunk's SELECT.
    Low(ChunkId),
    /// After it.
    High(ChunkId),
}

/// The message content of a watermark: `L|H <slot> <backfill> <chunk>`. The
/// slot is part of it so daemons of other slots on the same database ignore it.
pub fn watermark_content(slot: &str, watermark: Watermark) -> String {
    let (kind, id) = match watermark {
        Watermark::Low(id) => ("L", id),
        Watermark::High(id) => ("H", id),
    };
    format!("{kind} {slot} {} {}", id.backfill, id.chunk)
}

/// Parses a watermark for `slot`; `None` for anything else.
pub fn parse_watermark(slot: &str, content: &[u8]) -> Option<Watermark> {
    let text = std::str::from_utf8(content).ok()?;
    let mut parts = text.split(' ');
    let kind = parts.next()?;
    if parts.next()? != slot {
        return None;
    }
    let id = ChunkId { backfill: parts.next()?.parse().ok()?, chunk: parts.next()?.parse().ok()? };
    if parts.next().is_some() {
        return None;
    }
    match kind {
        "L" => Some(Watermark::Low(id)),
        "H" => Some(Watermark::High(id)),
        _ => None,
    }
}

/// One of ciosync's messages for `slot`, or `None` for anything else (another
/// slot's, another application's).
pub fn recognize(slot: &str, prefix: &str, content: &[u8]) -> Option<Own> {
    match prefix {
        HEARTBEAT_PREFIX if content == slot.as_bytes() => Some(Own::Heartbeat),
        WATERMARK_PREFIX => parse_watermark(slot, content).map(Own::Watermark),
        _ => None,
    }
}

/// A message of this slot's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Own {
    /// The keeper's heartbeat: its transaction moves the slot while the
    /// synced tables are quiet.
    Heartbeat,
    /// A backfill chunk's low or high watermark.
    Watermark(Watermark),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermarks_round_trip_and_ignore_other_slots() {
        let id = ChunkId { backfill: 7, chunk: 3 };
        for w in [Watermark::Low(id), Watermark::High(id)] {
            assert_eq!(parse_watermark("s", watermark_content("s", w).as_bytes()), Some(w));
            assert_eq!(parse_watermark("other", watermark_content("s", w).as_bytes()), None);
        }
        assert_eq!(parse_watermark("s", b"X s 1 2"), None);
        assert_eq!(parse_watermark("s", b"L s 1"), None);
        assert_eq!(parse_watermark("s", b"L s 1 2 3"), None);
        assert_eq!(parse_watermark("s", &[0xff]), None);
    }

    #[test]
    fn only_this_slots_messages_are_recognized() {
        assert_eq!(recognize("s", HEARTBEAT_PREFIX, b"s"), Some(Own::Heartbeat));
        assert_eq!(recognize("s", HEARTBEAT_PREFIX, b"other"), None);
        let low = Watermark::Low(ChunkId { backfill: 1, chunk: 2 });
        let content = watermark_content("s", low);
        assert_eq!(recognize("s", WATERMARK_PREFIX, content.as_bytes()), Some(Own::Watermark(low)));
        assert_eq!(recognize("s", "app.audit", b"s"), None);
    }
}
