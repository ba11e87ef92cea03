//! The config the unit tests of publication setup and `ciosync check` build
//! on, so they describe one database: publication `cio`, `public.users`
//! (id `id`, maps `email`) and `crm.accounts` (id `id`, maps `name`).

use super::Config;

/// The test config, with `postgres_lines` added to `[postgres]` (say
/// `failover_slot = "on"`) and `users_lines` to the `public.users` `[[sync]]`
/// (say `filter = "NOT is_staff"`); either may be empty.
pub fn two_tables(postgres_lines: &str, users_lines: &str) -> Config {
    let text = format!(
        r#"
[postgres]
url = "postgres://ciosync@127.0.0.1:5432/app"
publication = "cio"
{postgres_lines}

[customerio]
site_id = "s"
api_key = "k"

[[sync]]
table = "users"
id_column = "id"
{users_lines}

[sync.attributes]
email = "email"

[[sync]]
table = "crm.accounts"
id_column = "id"

[sync.attributes]
name = "name"
"#
    );
    Config::from_toml(&text, Vec::new()).expect("the test config is valid")
}

/// A config of `public.users` (id `id`, maps `email`) and the devices table
/// `public.push_tokens` (every device `ios`), for the commands' unit tests.
pub fn users_and_devices() -> Config {
    let text = r#"
[postgres]
url = "postgres://ciosync@127.0.0.1:5432/app"
[customerio]
site_id = "s"
api_key = "k"
[[sync]]
table = "users"
id_column = "id"
[sync.attributes]
email = "email"
[[devices]]
table = "push_tokens"
customer_id_column = "user_id"
token_column = "token"
platform = "ios"
"#;
    Config::from_toml(text, Vec::new()).expect("the test config is valid")
}
