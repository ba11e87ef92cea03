//! The acknowledged position of the slot (see the [`super`] module doc).

use pgwire_replication::Lsn;

/// The acknowledged position: only ever moves forward.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    acked: Lsn,
}

impl Progress {
    /// The last acknowledged LSN.
    pub fn acked(&self) -> Lsn {
        self.acked
    }

    /// Forgets the position: the server's WAL history changed (a standby
    /// was promoted), so LSNs of the old history say nothing about the new
    /// one, whose own acknowledgements may be lower. The only way back.
    pub fn start_over(&mut self) {
        self.acked = Lsn::from_u64(0);
    }

    /// Moves the position to `lsn` if that is forward; returns whether it moved.
    pub fn advance(&mut self, lsn: Lsn) -> bool {
        if lsn > self.acked {
            self.acked = lsn;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_only_moves_forward() {
        let mut p = Progress::default();
        assert!(p.advance(Lsn::from_u64(10)));
        assert!(!p.advance(Lsn::from_u64(5)));
        assert!(!p.advance(Lsn::from_u64(10)));
        assert_eq!(p.acked(), Lsn::from_u64(10));
    }

    #[test]
    fn starting_over_lets_a_lower_position_be_acknowledged() {
        let mut p = Progress::default();
        assert!(p.advance(Lsn::from_u64(500)));
        p.start_over();
        assert_eq!(p.acked(), Lsn::from_u64(0));
        assert!(p.advance(Lsn::from_u64(20)), "the new history's positions are lower");
        assert_eq!(p.acked(), Lsn::from_u64(20));
    }
}
