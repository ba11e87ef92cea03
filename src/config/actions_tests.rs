use super::*;

const BASE: &str = r#"
[postgres]
url = "postgres://u@127.0.0.1/db"
[customerio]
site_id = "s"
api_key = "k"
[[sync]]
table = "public.users"
id_column = "id"
[sync.attributes]
email = "email"
score = "lead_score"
[[events]]
table = "public.audit"
customer_id_column = "user_id"
name = "audit"
[webhooks]
listen = "127.0.0.1:8080"
"#;

const SECRET: &str = "0123456789abcdef0123";

fn load(actions: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
    Config::from_toml(&format!("{BASE}{actions}"), env.collect::<Vec<_>>())
}

fn error(actions: &str) -> String {
    match load(actions, &[]) {
        Ok(_) => panic!("loaded: {actions}"),
        Err(e) => e.to_string(),
    }
}

const SEGMENT: &str =
    "[[webhooks.actions]]\nname = \"vip\"\nkind = \"segment\"\ndirection = \"enter\"\n";

/// Write-backs and update actions set a column of a person's row: an
/// `[[objects]]` or `[[relationships]]` table is not one, named or not.
#[test]
fn write_backs_and_actions_act_on_people_tables_only() {
    let accounts = "[[objects]]\ntable = \"public.accounts\"\nobject_type_id = \"1\"\n\
                    id_column = \"id\"\n[objects.attributes]\nname = \"name\"\n";
    let write_back = format!(
        "signing_key = \"{SECRET}\"\n[[webhooks.write_back]]\nmetric = \"bounced\"\n\
         column = \"c\"\nvalue = \"true\"\n"
    );
    let load_with = |config: String| Config::from_toml(&config, Vec::<(String, String)>::new());
    let named = format!("{BASE}{write_back}table = \"public.accounts\"\n{accounts}");
    let error = load_with(named).expect_err("an objects table").to_string();
    assert!(error.contains("webhooks.write_back[0].table"), "{error}");
    let config = load_with(format!("{BASE}{write_back}{accounts}")).expect("people's table");
    let resolved = crate::config::webhooks::resolve(&config).expect("resolved");
    assert!(resolved[0].statement.contains("\"users\""), "{}", resolved[0].statement);
    // Without a [[sync]] table, none: not the objects table.
    let head = BASE.split("[[sync]]").next().expect("the head");
    let objects_only =
        format!("{head}[webhooks]\nlisten = \"127.0.0.1:8080\"\n{write_back}{accounts}");
    let error = load_with(objects_only).expect_err("no people's table").to_string();
    assert!(error.contains("webhooks.write_back[0].table"), "{error}");
    let update = "[[webhooks.actions]]\nname = \"score\"\nkind = \"update\"\n\
                  table = \"public.accounts\"\n[webhooks.actions.columns]\nname = \"x\"\n";
    let env = [("CIOSYNC_WEBHOOKS_ACTIONS_SCORE_SECRET", SECRET)];
    let error = load(&format!("{update}{accounts}"), &env).expect_err("objects").to_string();
    assert!(error.contains("webhooks.actions[0].table"), "{error}");
}

#[test]
fn actions_alone_need_no_signing_key_and_take_their_secret_from_the_environment() {
    let config = load(SEGMENT, &[("CIOSYNC_WEBHOOKS_ACTIONS_VIP_SECRET", SECRET)]).unwrap();
    let actions = resolve(&config).unwrap();
    assert_eq!(actions[0].secret.expose(), SECRET);
    assert_eq!(actions[0].username, "ciosync");
    assert_eq!(actions[0].customer.as_str(), "customer_id");
    assert_eq!(actions[0].dedupe_window, Duration::from_secs(DEFAULT_DEDUPE_WINDOW_SECS));
    let Effect::Segment { table, segment, which } = &actions[0].effect else { panic!() };
    assert_eq!(table.to_string(), DEFAULT_SEGMENT_TABLE);
    assert_eq!(segment.as_str(), "segment");
    assert_eq!(*which, Which::Always(Direction::Enter));
    assert!(config.webhooks.unwrap().signing_key.is_none());
    // Without the secret: named, with the variable to set.
    assert!(error(SEGMENT).contains("webhooks.actions[0].secret"), "{}", error(SEGMENT));
    assert!(error(SEGMENT).contains("CIOSYNC_WEBHOOKS_ACTIONS_VIP_SECRET"));
    // Without actions, the signing key is still required; write-backs
    // (of reporting webhooks) need it whatever else is configured.
    assert!(error("").contains("webhooks.signing_key"));
    let write_back = format!(
        "{SEGMENT}secret = \"{SECRET}\"\n[[webhooks.write_back]]\nmetric = \"bounced\"\n\
         column = \"c\"\nvalue = \"true\"\n"
    );
    assert!(error(&write_back).contains("webhooks.signing_key"), "{}", error(&write_back));
}

#[test]
fn a_secret_for_an_action_the_file_lacks_is_refused() {
    let error =
        load(SEGMENT, &[("CIOSYNC_WEBHOOKS_ACTIONS_VIPS_SECRET", SECRET)]).unwrap_err().to_string();
    assert!(error.contains("CIOSYNC_WEBHOOKS_ACTIONS_VIPS_SECRET"), "{error}");
    assert_eq!(secret_variable("lead-score"), "CIOSYNC_WEBHOOKS_ACTIONS_LEAD_SCORE_SECRET");
}

#[test]
fn bad_actions_name_the_field() {
    let with = |extra: &str| format!("{SEGMENT}secret = \"{SECRET}\"\n{extra}");
    let cases = [
        (with("name = \"a b\"").replace("name = \"vip\"\n", ""), "webhooks.actions[0].name"),
        (SEGMENT.replace("vip", "VIP") + &format!("secret = \"{SECRET}\"\n"), ".name"),
        (format!("{SEGMENT}secret = \"short\"\n"), "webhooks.actions[0].secret"),
        (with("direction_field = \"change\""), "webhooks.actions[0].direction"),
        (with("customer_id = \"a..b\""), "webhooks.actions[0].customer_id"),
        (with("columns = { a = \"b\" }"), "webhooks.actions[0].columns"),
        (with("dedupe_window_secs = 1"), "webhooks.actions[0].dedupe_window_secs"),
        (with("username = \"a:b\""), "webhooks.actions[0].username"),
        (
            format!("{0}secret = \"{SECRET}\"\n{0}secret = \"{SECRET}\"\n", SEGMENT),
            "webhooks.actions[1].name",
        ),
        (
            format!(
                "{}secret = \"{SECRET}\"\n{}secret = \"{SECRET}\"\n",
                SEGMENT.replace("vip", "a-b"),
                SEGMENT.replace("vip", "a_b")
            ),
            "webhooks.actions[1].name",
        ),
        (
            format!(
                "[[webhooks.actions]]\nname = \"u\"\nkind = \"update\"\nsecret = \"{SECRET}\"\n"
            ),
            "webhooks.actions[0].columns",
        ),
        (
            format!(
                "[[webhooks.actions]]\nname = \"u\"\nkind = \"update\"\nsecret = \"{SECRET}\"\n\
                 table = \"public.other\"\ncolumns = {{ a = \"b\" }}\n"
            ),
            "webhooks.actions[0].table",
        ),
        (
            format!(
                "[[webhooks.actions]]\nname = \"u\"\nkind = \"update\"\nsecret = \"{SECRET}\"\n\
                 columns = {{ id = \"b\" }}\n"
            ),
            "webhooks.actions[0].columns",
        ),
        (
            format!(
                "[[webhooks.actions]]\nname = \"u\"\nkind = \"update\"\nsecret = \"{SECRET}\"\n\
                 match_by = \"email\"\ncolumns = {{ a = \"b\" }}\n"
            ),
            "webhooks.actions[0].email_column",
        ),
        (
            format!(
                "[[webhooks.actions]]\nname = \"i\"\nkind = \"insert\"\nsecret = \"{SECRET}\"\n"
            ),
            "webhooks.actions[0].table",
        ),
    ];
    for (text, field) in cases {
        let error = error(&text);
        assert!(error.contains(field), "expected {field} in: {error}\n{text}");
        assert!(!error.contains(SECRET), "{error}");
    }
}

#[test]
fn an_update_sets_only_changed_values_and_the_record_forgets_them() {
    let text = format!(
        "[[webhooks.actions]]\nname = \"score\"\nkind = \"update\"\nsecret = \"{SECRET}\"\n\
         customer_id = \"customer.id\"\ncolumns = {{ lead_score = \"score\", stage = \"stage\" }}\n"
    );
    let config = load(&text, &[]).unwrap();
    let actions = resolve(&config).unwrap();
    let Effect::Update { statement, columns, .. } = &actions[0].effect else { panic!() };
    assert_eq!(columns.len(), 2);
    assert!(statement.contains("jsonb_populate_record(NULL::\"public\".\"users\", $2::jsonb)"));
    assert!(statement.contains("\"lead_score\" = CASE WHEN $2::jsonb ? 'lead_score' THEN v.\"lead_score\" ELSE t.\"lead_score\" END"), "{statement}");
    assert!(
        statement.contains("t.\"id\" = (jsonb_populate_record(NULL::\"public\".\"users\", jsonb_build_object('id', $1::text))).\"id\""),
        "{statement}"
    );
    assert!(statement.contains("IS DISTINCT FROM"), "{statement}");
    // lead_score is mapped to the attribute `score`: the record forgets it,
    // only when the body wrote it.
    assert!(
        statement.contains(
            "attributes = a.attributes - ARRAY[CASE WHEN $2::jsonb ? 'lead_score' THEN 'score' END]::text[]"
        ),
        "{statement}"
    );
    assert!(actions[0].writes_streamed_table(&config));
    assert_eq!(config.actions_origin().as_deref(), Some("ciosync_actions_ciosync"));
    assert_eq!(config.own_origins(), vec!["ciosync_actions_ciosync".to_owned()]);
}

#[test]
fn only_writes_to_streamed_tables_carry_the_origin() {
    let segment = load(&format!("{SEGMENT}secret = \"{SECRET}\"\n"), &[]).unwrap();
    assert_eq!(segment.actions_origin(), None);
    let insert = |table: &str| {
        format!(
            "[[webhooks.actions]]\nname = \"log\"\nkind = \"insert\"\nsecret = \"{SECRET}\"\n\
             table = \"{table}\"\ncolumns = {{ user_id = \"customer_id\" }}\n"
        )
    };
    let journal = load(&insert("public.journey_log"), &[]).unwrap();
    assert_eq!(journal.actions_origin(), None);
    let Effect::Insert { body_column, .. } = &resolve(&journal).unwrap()[0].effect else {
        panic!()
    };
    assert_eq!(body_column.as_deref(), Some("payload"));
    let events = load(&insert("public.audit"), &[]).unwrap();
    assert!(events.actions_origin().is_some(), "an [[events]] table is streamed");
}

#[test]
fn field_paths_walk_objects_and_arrays() {
    let body = serde_json::json!({"a": {"b": [10, {"c": "x"}]}, "d.e": 1});
    let find = |p: &str| FieldPath::parse(p).unwrap().find(&body).cloned();
    assert_eq!(find("a.b.0"), Some(serde_json::json!(10)));
    assert_eq!(find("a.b.1.c"), Some(serde_json::json!("x")));
    assert_eq!(find("a.b.2"), None);
    assert_eq!(find("a.x"), None);
    assert_eq!(find("d"), None);
    assert!(FieldPath::parse("").is_err());
    assert!(FieldPath::parse("a.").is_err());
}
