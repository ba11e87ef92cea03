//! Choosing rows by id for the commands that act on them (`dlq retry |
//! discard`, `deletes approve | discard`): `--id N` (may repeat) or `--all`.

use clap::Args;

/// Which rows `dlq retry|discard` or `deletes approve|discard` act on.
#[derive(Debug, Clone, Args)]
pub struct Which {
    /// An id, as the `list` subcommand shows it; may repeat.
    #[arg(long = "id", value_name = "N", conflicts_with = "all")]
    pub ids: Vec<i64>,
    /// Every one of this slot.
    #[arg(long)]
    pub all: bool,
}

/// The rows chosen with `--id` or `--all`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    All,
    /// Sorted, without repeats.
    Ids(Vec<i64>),
}

impl Which {
    /// `--all`, or the `--id`s sorted without repeats; neither is bad usage
    /// (clap already refuses both), worded with the `command` ("dlq retry"),
    /// `what` it acts on ("dead letters") and the `list` command that shows
    /// the ids. Shared with `ciosync deletes`.
    pub fn selection(self, command: &str, what: &str, list: &str) -> Result<Selection, String> {
        if self.all {
            return Ok(Selection::All);
        }
        if self.ids.is_empty() {
            return Err(format!(
                "{command}: say which {what}: --id N (may repeat) or --all; `{list}` shows the ids"
            ));
        }
        let mut ids = self.ids;
        ids.sort_unstable();
        ids.dedup();
        Ok(Selection::Ids(ids))
    }
}
