//! The lag in seconds: how old the oldest transaction received and not yet
//! acknowledged is. The pipeline records each commit and each ack here; the
//! gauge is 0 when everything received is acknowledged, so a quiet database
//! shows no lag without needing heartbeats.

use std::collections::VecDeque;

use pgwire_replication::Lsn;

/// Entries [`UnackedCommits`] keeps at most (about 320 KB): over two hours
/// of seconds with commits.
const MAX_ENTRIES: usize = 10_000;

/// Commits received and not yet acknowledged, oldest first. Commits of the
/// same second share one entry (the newest LSN), so a long wait behind a
/// stuck request holds one entry per second, not one per transaction; past
/// [`MAX_ENTRIES`] seconds, later commits join the newest entry, so an
/// outage of any length holds a bounded amount (the lag then reads a little
/// high once acknowledgements reach that entry, never low).
#[derive(Debug, Default)]
pub struct UnackedCommits {
    commits: VecDeque<(Lsn, i64)>,
}

impl UnackedCommits {
    /// Records a commit ending at `end_lsn`, committed at `commit_time`
    /// (Unix seconds).
    pub fn commit(&mut self, end_lsn: Lsn, commit_time: i64) {
        let full = self.commits.len() >= MAX_ENTRIES;
        match self.commits.back_mut() {
            Some((lsn, time)) if *time == commit_time || full => *lsn = (*lsn).max(end_lsn),
            _ => self.commits.push_back((end_lsn, commit_time)),
        }
    }

    /// Forgets every commit that acknowledging `lsn` covers.
    pub fn acked(&mut self, lsn: Lsn) {
        while self.commits.front().is_some_and(|(end, _)| *end <= lsn) {
            self.commits.pop_front();
        }
    }

    /// Commit time (Unix seconds) of the oldest commit not acknowledged; 0 if none.
    pub fn oldest(&self) -> u64 {
        self.commits.front().map_or(0, |(_, time)| (*time).max(1) as u64)
    }
}

/// The lag in seconds at `now` (Unix seconds) for [`UnackedCommits::oldest`].
pub fn lag_seconds(oldest: u64, now: f64) -> f64 {
    if oldest == 0 {
        0.0
    } else {
        (now - oldest as f64).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lsn(n: u64) -> Lsn {
        Lsn::from_u64(n)
    }

    #[test]
    fn the_oldest_unacked_commit_sets_the_lag() {
        let mut unacked = UnackedCommits::default();
        assert_eq!(unacked.oldest(), 0);
        unacked.commit(lsn(10), 100);
        unacked.commit(lsn(20), 105);
        unacked.commit(lsn(30), 109);
        assert_eq!(unacked.oldest(), 100);
        unacked.acked(lsn(20));
        assert_eq!(unacked.oldest(), 109);
        assert_eq!(lag_seconds(unacked.oldest(), 112.5), 3.5);
        unacked.acked(lsn(35));
        assert_eq!(unacked.oldest(), 0);
        assert_eq!(lag_seconds(0, 1e9), 0.0);
    }

    #[test]
    fn a_long_outage_holds_a_bounded_number_of_entries() {
        let mut unacked = UnackedCommits::default();
        let seconds = 3 * MAX_ENTRIES as u64;
        for second in 1..=seconds {
            unacked.commit(lsn(second), second as i64);
        }
        assert_eq!(unacked.commits.len(), MAX_ENTRIES);
        assert_eq!(unacked.oldest(), 1);
        unacked.acked(lsn(MAX_ENTRIES as u64 - 1));
        // The newest entry stands for every later second, from its first.
        assert_eq!(unacked.oldest(), MAX_ENTRIES as u64);
        unacked.acked(lsn(seconds - 1));
        assert_eq!(unacked.oldest(), MAX_ENTRIES as u64, "high, never low");
        unacked.acked(lsn(seconds));
        assert_eq!(unacked.oldest(), 0);
    }

    #[test]
    fn commits_of_one_second_share_an_entry() {
        let mut unacked = UnackedCommits::default();
        for i in 1..=1000 {
            unacked.commit(lsn(i), 100);
        }
        unacked.commit(lsn(1001), 101);
        assert_eq!(unacked.commits.len(), 2);
        unacked.acked(lsn(999));
        assert_eq!(unacked.oldest(), 100, "commit 1000 of that second is not acked yet");
        unacked.acked(lsn(1000));
        assert_eq!(unacked.oldest(), 101);
    }
}
