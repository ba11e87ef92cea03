//! A publication's row filter is compared with `[[sync]] filter` as Postgres
//! reads both, not as text: spelling, case, spacing and parentheses do not
//! matter, a different expression does. It works for a least-privilege role
//! (no CREATE on the database, not the table's owner).

use ciosync::config::Config;
use ciosync::source::setup::publication_misfit;

use crate::support::emulator;
use crate::support::postgres::{connect, TestDb};
use crate::sync_filter_syncs_only_matching_rows::config_with_filter;

#[tokio::test]
async fn filters_are_compared_as_postgres_reads_them() {
    let db = TestDb::new("sync_filter_compare").await;
    db.exec(
        "CREATE TABLE public.users (
             id bigint PRIMARY KEY, dropped int, email text, first_name text, plan text,
             created_at timestamptz, bio text, email_verified boolean, is_staff boolean,
             deleted_at timestamptz
         );
         ALTER TABLE public.users DROP COLUMN dropped;
         ALTER TABLE public.users REPLICA IDENTITY FULL;",
    )
    .await;
    let role = format!("r{}", &db.name[1..db.name.find('_').unwrap()]);
    db.exec(&format!(
        "CREATE ROLE {role} LOGIN REPLICATION; GRANT SELECT ON public.users TO {role};"
    ))
    .await;
    let as_role =
        connect(&db.url.replace("postgres://postgres@", &format!("postgres://{role}@"))).await;
    let can_create: bool = as_role
        .query_one("SELECT has_database_privilege(current_database(), 'CREATE')", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!can_create, "the role should have least privilege");
    let emulator = emulator::start().await;

    // (configured, published, same rows?)
    let cases = [
        ("email_verified AND NOT is_staff", "(email_verified) and (not (is_staff))", true),
        ("email_verified AND NOT is_staff", "email_verified", false),
        ("email_verified AND NOT is_staff", "NOT is_staff AND email_verified", false),
        ("deleted_at IS NULL", "deleted_at   is   null", true),
        ("deleted_at IS NULL", "deleted_at IS NOT NULL", false),
        ("plan = 'pro'", "PLAN = 'pro'::TEXT", true),
        ("plan = 'pro'", "plan = 'Pro'", false),
        (
            "plan IN ('pro', 'team') OR plan IS NULL",
            "plan = ANY (ARRAY['pro', 'team']) OR (plan IS NULL)",
            true,
        ),
        (
            "plan = 'pro' OR email_verified AND NOT is_staff",
            "(plan = 'pro' OR email_verified) AND NOT is_staff",
            false,
        ),
    ];
    for (configured, published, same) in cases {
        db.exec(&format!(
            "DROP PUBLICATION IF EXISTS {0}; CREATE PUBLICATION {0} FOR TABLE users WHERE ({published})",
            db.name
        ))
        .await;
        let config =
            Config::from_toml(&config_with_filter(&db, &emulator.url(), configured), Vec::new())
                .unwrap();
        let misfit = publication_misfit(&as_role, &config, &[]).await.unwrap();
        assert_eq!(misfit.is_none(), same, "{configured:?} vs {published:?}: {misfit:?}");
    }
    // The probe leaves nothing behind, and the session is usable after it.
    let temp: i64 = as_role
        .query_one("SELECT count(*) FROM pg_class WHERE relname = 'ciosync_filter_probe'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(temp, 0);
}
