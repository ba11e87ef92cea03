//! The size of the record of what Customer.io accepted per customer
//! (issue 20 item 5): `BENCH_RECORD_CUSTOMERS` (default 100,000) customers
//! inserted in one transaction into an empty Django `auth_user` with the
//! record on, delivered to the accept-only emulator; then
//! `pg_total_relation_size('ciosync.accepted')` (table, indexes, TOAST,
//! free-space and visibility maps) less what it was before, over the
//! customers. At three widths: the 5 attributes of the `record` scenario,
//! 15 (10 more text columns mapped), and 5 with a `when_changed` event
//! watching `is_active` (the record keeps its value too). The WAL of the
//! INSERT (one transaction, decoded only once committed, so nothing of
//! ciosync's is in it) and of what ciosync wrote after it are printed per
//! customer as well.

use std::time::Duration;

use tokio_postgres::Client;

use crate::harness::{
    current_lsn, progress, thousands, wait_for_ack, wal_bytes, CpuMeter, Daemon, Emulator, Pg, Res,
    Settings, SLOT,
};
use crate::record::{
    create_auth_user, env_number, insert_users, METRICS_ANY_PORT, POSTGRES_EXTRA, SYNC_5,
};
use crate::scenarios::Ctx;

/// One width's figures, in bytes over `customers`.
pub struct Size {
    pub label: &'static str,
    pub customers: i64,
    pub total: i64,
    pub table: i64,
    pub index: i64,
    pub app_wal: i64,
    pub record_wal: i64,
    /// The total after `VACUUM FULL`.
    pub compacted: i64,
    /// Requests the emulator accepted for the customers.
    pub requests: u64,
    /// Average bytes of a row's `attributes` and `watched` (jsonb, as stored).
    pub columns: (f64, f64),
    /// Rows inserted, updated, dead in `ciosync.accepted` (pg_stat_user_tables).
    pub writes: [i64; 3],
}

impl Size {
    pub fn per_customer(&self, bytes: i64) -> f64 {
        bytes as f64 / self.customers as f64
    }
}

const EVENT: &str = r#"
[[sync.events]]
name = "active_changed"
when_changed = "is_active"
"#;

pub async fn record_sizes(ctx: &Ctx) -> Res<Vec<Size>> {
    let customers = env_number("BENCH_RECORD_CUSTOMERS", 100_000);
    let wide: String = (1..=10).map(|i| format!("p{i} = \"p{i}\"\n")).collect();
    let variants = [
        ("5 attributes", 0, SYNC_5.to_owned()),
        ("15 attributes", 10, format!("{SYNC_5}{wide}")),
        ("5 attributes + 1 when_changed event", 0, format!("{SYNC_5}{EVENT}")),
    ];
    let mut out = Vec::new();
    for (label, extra, sync) in variants {
        progress(&format!("record: size, {label}, {} customers", thousands(customers as f64)));
        out.push(measure(ctx, label, extra, &sync, customers).await?);
    }
    Ok(out)
}

async fn measure(
    ctx: &Ctx,
    label: &'static str,
    extra: usize,
    sync: &str,
    customers: i64,
) -> Res<Size> {
    let dir = ctx.scenario_dir(&format!("record-size-{}", label.replace([' ', '+'], "")))?;
    let pg = Pg::start().await?;
    let db = pg.connect().await?;
    create_auth_user(&db, extra, false).await?;
    let emulator = Emulator::start_with(&dir, &ctx.api_key, 0, true)?;
    let env = [("CIOSYNC_PIPELINE_RECORD_ACCEPTED", "true"), METRICS_ANY_PORT];
    let settings =
        Settings { postgres_extra: POSTGRES_EXTRA, sync, env: &env, ..Settings::on(SLOT) };
    let mut daemon = Daemon::spawn(&dir, &pg, &emulator, &ctx.api_key, &settings)?;
    daemon.wait_streaming(&db).await?;
    let empty = sizes(&db).await?;
    let before = current_lsn(&db).await?;
    insert_users(&db, 1, customers).await?;
    let after = current_lsn(&db).await?;
    let mut cpu = CpuMeter::start(&pg);
    wait_for_ack(&db, SLOT, &after, &mut daemon, &mut cpu, Duration::from_secs(900)).await?;
    let end = current_lsn(&db).await?;
    let _ = daemon.stop().await;
    let full = sizes(&db).await?;
    let row = db
        .query_one(
            "SELECT count(*), avg(pg_column_size(attributes))::float8, \
             avg(pg_column_size(watched))::float8 FROM ciosync.accepted WHERE customer_id <> ''",
            &[],
        )
        .await?;
    let recorded: i64 = row.get(0);
    // Written by ciosync's sessions, ended with it: their counts are flushed.
    let writes = db
        .query_one(
            "SELECT n_tup_ins, n_tup_upd, n_dead_tup FROM pg_stat_user_tables \
             WHERE relid = 'ciosync.accepted'::regclass",
            &[],
        )
        .await?;
    // Without dead row versions and with full pages: the live rows' size.
    db.batch_execute("VACUUM FULL ciosync.accepted").await?;
    let compacted = sizes(&db).await?[0];
    let accepted = emulator.accepted().await?;
    if recorded != customers || accepted.items as i64 != customers {
        return Err(format!(
            "{label}: {recorded} customers recorded and {} items accepted, {customers} expected",
            accepted.items
        )
        .into());
    }
    Ok(Size {
        label,
        customers,
        total: full[0] - empty[0],
        table: full[1] - empty[1],
        index: full[2] - empty[2],
        app_wal: wal_bytes(&db, &before, &after).await?,
        record_wal: wal_bytes(&db, &after, &end).await?,
        compacted: compacted - empty[0],
        requests: accepted.requests,
        columns: (row.get(1), row.get(2)),
        writes: [writes.get(0), writes.get(1), writes.get(2)],
    })
}

/// `ciosync.accepted`'s total size, its main fork, its indexes.
async fn sizes(db: &Client) -> Res<[i64; 3]> {
    let row = db
        .query_one(
            "SELECT pg_total_relation_size('ciosync.accepted'), \
             pg_relation_size('ciosync.accepted'), pg_indexes_size('ciosync.accepted')",
            &[],
        )
        .await?;
    Ok([row.get(0), row.get(1), row.get(2)])
}
