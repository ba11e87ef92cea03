//! What every layer shares about errors: one line for an error and its
//! causes, and the process exit statuses the commands end with.

/// An error with its causes, `a: b: c`, for one log field; a Postgres
/// error among them without what it quotes of the data ([`database_error`]).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = String::new();
    let mut next = Some(error);
    while let Some(cause) = next {
        if !text.is_empty() {
            text.push_str(": ");
        }
        match cause.downcast_ref::<tokio_postgres::error::DbError>() {
            Some(db) => text.push_str(&database_error(db)),
            None => text.push_str(&cause.to_string()),
        }
        next = cause.source();
    }
    text
}

/// A Postgres error as a log line or an answer may show it: severity,
/// message, hint and SQLSTATE, never its DETAIL, which quotes the failing
/// row or key. For a refused value (class 22, `invalid input syntax for
/// type integer: "…"`) and for an error a function raised (class P0, whose
/// text its author wrote) only the SQLSTATE is kept: their message can
/// quote a value too.
fn database_error(db: &tokio_postgres::error::DbError) -> String {
    let code = db.code().code();
    let withheld = match &code[..2] {
        "22" => Some("the server refused a value"),
        "P0" => Some("a function or trigger raised an error"),
        _ => None,
    };
    if let Some(what) = withheld {
        return format!("{}: {what} (SQLSTATE {code})", db.severity());
    }
    let hint = db.hint().map(|h| format!(" (hint: {h})")).unwrap_or_default();
    format!("{}: {}{hint} (SQLSTATE {code})", db.severity(), db.message())
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
