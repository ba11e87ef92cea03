//! Whether the config file hands its secrets to every local user: readable
//! by others (the mode's `o+r` bit) while it holds the API key, the signing
//! key or the database password itself rather than leaving them to the
//! `CIOSYNC_*` environment variables. `run` logs it at start, `check`
//! reports it; neither refuses to start (a container's read-only mount may
//! not be ours to change).

use std::path::Path;

/// The secrets a config file's text holds, by field name; empty when none.
/// Text that does not parse holds none here (loading reports it).
pub fn secrets_in(text: &str) -> Vec<&'static str> {
    let Ok(doc) = toml::from_str::<toml::Table>(text) else {
        return Vec::new();
    };
    let field = |section: &str, key: &str| {
        doc.get(section).and_then(|s| s.get(key)).and_then(toml::Value::as_str).map(str::trim)
    };
    let mut secrets = Vec::new();
    if field("postgres", "url").is_some_and(has_password) {
        secrets.push("postgres.url's password");
    }
    if field("customerio", "api_key").is_some_and(|k| !k.is_empty()) {
        secrets.push("customerio.api_key");
    }
    if field("webhooks", "signing_key").is_some_and(|k| !k.is_empty()) {
        secrets.push("webhooks.signing_key");
    }
    let actions =
        doc.get("webhooks").and_then(|w| w.get("actions")).and_then(toml::Value::as_array);
    if actions.into_iter().flatten().any(|a| {
        a.get("secret").and_then(toml::Value::as_str).is_some_and(|s| !s.trim().is_empty())
    }) {
        secrets.push("webhooks.actions secrets");
    }
    secrets
}

/// Whether a connection URL (or `key=value` string) carries a password.
fn has_password(url: &str) -> bool {
    let in_userinfo = url::Url::parse(url).is_ok_and(|u| u.password().is_some());
    in_userinfo || url.split(['?', '&', ' ']).any(|part| part.trim().starts_with("password="))
}

/// What is wrong with the file at `path`, and the fix, when others may read
/// it and it holds a secret; `None` otherwise, or when its mode cannot be
/// read.
pub fn warning(path: &Path) -> Option<(String, String)> {
    let mode = mode_of(path)?;
    let text = std::fs::read_to_string(path).ok()?;
    judge(&path.display().to_string(), mode, &secrets_in(&text))
}

/// The pure half of [`warning`].
pub fn judge(path: &str, mode: u32, secrets: &[&str]) -> Option<(String, String)> {
    (mode & 0o004 != 0 && !secrets.is_empty()).then(|| {
        let problem = format!(
            "{path} holds {} and every local user can read it (mode {:03o})",
            secrets.join(", "),
            mode & 0o777
        );
        let fix = format!(
            "chmod o-r {path} (the systemd layout is 0640, owner root, group ciosync), or move \
             the secrets to CIOSYNC_POSTGRES_URL, CIOSYNC_CUSTOMERIO_API_KEY, \
             CIOSYNC_WEBHOOKS_SIGNING_KEY and CIOSYNC_WEBHOOKS_ACTIONS_<NAME>_SECRET"
        );
        (problem, fix)
    })
}

#[cfg(unix)]
fn mode_of(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).ok().map(|m| m.permissions().mode())
}

#[cfg(not(unix))]
fn mode_of(_path: &Path) -> Option<u32> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_named_only_when_the_file_itself_holds_them() {
        let all = "[postgres]\nurl = \"postgres://ciosync:pw@db/app\"\n\
                   [customerio]\nsite_id = \"s\"\napi_key = \"k\"\n\
                   [webhooks]\nsigning_key = \"sk\"\n";
        assert_eq!(
            secrets_in(all),
            ["postgres.url's password", "customerio.api_key", "webhooks.signing_key"]
        );
        let none = "[postgres]\nurl = \"postgres://ciosync@db/app\"\n\
                    [customerio]\nsite_id = \"s\"\n";
        assert!(secrets_in(none).is_empty());
        assert_eq!(
            secrets_in("[postgres]\nurl = \"host=db user=ciosync password=pw\"\n"),
            ["postgres.url's password"]
        );
        assert_eq!(
            secrets_in("[postgres]\nurl = \"postgres://db/app?user=c&password=pw\"\n"),
            ["postgres.url's password"]
        );
        assert!(secrets_in("[customerio]\napi_key = \"  \"\n").is_empty());
        assert!(secrets_in("not toml [").is_empty());
    }

    #[test]
    fn only_a_world_readable_file_with_a_secret_is_a_warning() {
        let secrets = ["customerio.api_key"];
        let (problem, fix) = judge("/etc/c.toml", 0o100644, &secrets).expect("world-readable");
        assert!(
            problem.contains("customerio.api_key") && problem.contains("mode 644"),
            "{problem}"
        );
        assert!(fix.starts_with("chmod o-r /etc/c.toml"), "{fix}");
        assert_eq!(judge("/etc/c.toml", 0o100640, &secrets), None, "group only: the unit's layout");
        assert_eq!(judge("/etc/c.toml", 0o100600, &secrets), None);
        assert_eq!(judge("/etc/c.toml", 0o100644, &[]), None, "no secret in the file");
    }
}
