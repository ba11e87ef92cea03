//! What every layer shares about errors: one line for an error and its
//! causes, and the process exit statuses the commands end with.

/// An error with its causes, `a: b: c`, for one log field.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Exit status of a runtime failure.
pub const EXIT_FAILURE: u8 = 1;
/// Exit status of bad usage or a bad config.
pub const EXIT_USAGE: u8 = 2;
/// Exit status when the replication slot is lost (dropped or invalidated):
/// restarting cannot help, so service managers should not (the systemd unit
/// sets `RestartPreventExitStatus=2 3`).
pub const EXIT_SLOT_LOST: u8 = 3;

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct Layer {
        text: &'static str,
        #[source]
        cause: Option<Box<Layer>>,
    }

    #[test]
    fn an_error_chain_names_every_cause_in_order() {
        let inner = Layer { text: "connection refused", cause: None };
        let middle = Layer { text: "connect", cause: Some(Box::new(inner)) };
        let outer = Layer { text: "postgres unreachable", cause: Some(Box::new(middle)) };
        assert_eq!(error_chain(&outer), "postgres unreachable: connect: connection refused");
        assert_eq!(error_chain(&Layer { text: "alone", cause: None }), "alone");
    }
}
