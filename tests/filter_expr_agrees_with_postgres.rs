//! `FilterExpr` (ciosync's own evaluator of `[[sync]] filter`) gives what
//! Postgres gives: for hand-picked and generated expressions of the
//! supported subset, on rows with NULLs, negatives, extremes, NaN and
//! infinities, unicode and quotes, read in text form as pgoutput sends them,
//! `eval` equals `SELECT (expr)` (NULL as `None`). A result it decides on a
//! row whose text columns were not sent (unchanged TOAST) is Postgres's too.
//! And what it cannot evaluate exactly is refused.

use bytes::Bytes;
use ciosync::change::{Datum, ReplicaIdentity, Row, Table, TableColumn, ValueKind};
use ciosync::mapping::filter_expr::{FilterExpr, Truth};
use ciosync::mapping::value::builtin_kind;
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::support::postgres::TestDb;

pub(crate) const TABLE: &str = "CREATE TABLE public.t (
    id serial PRIMARY KEY, i2 smallint, i4 integer, i8 bigint, n numeric, n2 numeric(15,3), n3 numeric,
    b boolean, b2 boolean, t text, v varchar(12), \"Mixed\" integer, ts timestamptz,
    f double precision
)";

/// Each column's values, as SQL literals.
pub(crate) const VALUES: &[(&str, &[&str])] = &[
    ("i2", &["NULL", "0", "1", "-1", "2", "32767", "-32768", "5"]),
    ("i4", &["NULL", "0", "1", "-1", "2", "3", "2147483647", "-2147483648", "42"]),
    (
        "i8",
        &[
            "NULL",
            "0",
            "1",
            "-1",
            "2",
            "9223372036854775807",
            "-9223372036854775808",
            "9007199254740993",
        ],
    ),
    (
        "n",
        &[
            "NULL",
            "0",
            "0.1",
            "0.10",
            "-0.1",
            "1.5",
            "-1.5",
            "2",
            "3",
            "99999999999999999999.5",
            "123456789012345678901234567890.123456789",
            "'NaN'",
            "'Infinity'",
            "'-Infinity'",
            "0.00000000000000000001",
            "-2147483648",
        ],
    ),
    ("n2", &["NULL", "1.5", "-2.25", "0", "2", "999999999999.999", "0.001"]),
    ("n3", &["NULL", "'NaN'", "'Infinity'", "'-Infinity'", "0", "-0.5", "1e30"]),
    ("b", &["NULL", "true", "false"]),
    ("b2", &["NULL", "true", "false"]),
    (
        "t",
        &[
            "NULL",
            "''",
            "'a'",
            "'A'",
            "'pro'",
            "'team'",
            "'it''s'",
            "'Zoë'",
            "'zoë'",
            "'emoji 🎉'",
            "'a '",
            "'NULL'",
            "'日本語'",
            "'\"q\"'",
            "'back\\slash'",
        ],
    ),
    ("v", &["NULL", "'a'", "'pro'", "'Pro'", "'it''s'", "'Zoë'", "''", "'a '"]),
    ("\"Mixed\"", &["NULL", "1", "2"]),
    ("ts", &["NULL", "'2024-02-29 12:00:00+00'"]),
    ("f", &["NULL", "1.5", "'NaN'", "-0.1"]),
];

/// Hand-picked expressions, each a trap for a careless evaluator.
const EXPRESSIONS: &[&str] = &[
    "b",
    "NOT b",
    "b AND b2",
    "b OR b2",
    "NOT (b AND b2)",
    "b AND NOT b2 OR b2 AND NOT b",
    "NULL AND b",
    "NULL OR b",
    "b AND FALSE",
    "NOT NULL",
    "b = TRUE",
    "b <> FALSE",
    "b < b2",
    "b >= TRUE",
    "b = NULL",
    "b IS TRUE",
    "b IS NOT TRUE",
    "b IS FALSE",
    "b IS NOT FALSE",
    "b IS UNKNOWN",
    "b IS NOT UNKNOWN",
    "b IS NULL",
    "b2 IS NOT NULL",
    "(b AND b2) IS NULL",
    "(b OR b2) IS NOT UNKNOWN",
    "b IS DISTINCT FROM b2",
    "b IS NOT DISTINCT FROM b2",
    "b IS DISTINCT FROM NULL",
    "i4 = 1",
    "i4 <> 1",
    "i4 != 1",
    "i4 < 2.5",
    "i4 <= -1",
    "i4 > 2147483646",
    "i4 >= -2147483648",
    "i4=-1",
    "i4<-1",
    "i4<>-1",
    "i2 = 32767",
    "i2 < 100000",
    "i2 > -32768.5",
    "i8 = 9223372036854775807",
    "i8 < 9223372036854775808",
    "i8 > -9223372036854775809",
    "i8 = 9007199254740993",
    "i8 = 9007199254740992",
    "n = 0.1",
    "n = .10",
    "n = 0",
    "n = -0",
    "n > 0",
    "n < 0",
    "n > 99999999999999999999",
    "n >= 99999999999999999999.5",
    "n > 123456789012345678901234567890.12345678",
    "n = 123456789012345678901234567890.123456789000",
    "n < 0.0000000000000000001",
    "n > 1000000000000000000000000000000000000000",
    "n < -1000000000000000000000",
    "n = n",
    "n <> n",
    "n < n3",
    "n = n3",
    "n3 > n2",
    "n3 <= n",
    "n > i4",
    "n = i8",
    "n2 = 1.5",
    "n2 = 1.50000",
    "n2 < n",
    "n2 >= 2.",
    "i2 = i4",
    "i4 < i8",
    "i4 IN (1, 2, 3)",
    "i4 NOT IN (1, 2, 3)",
    "i4 IN (1, NULL)",
    "i4 NOT IN (1, NULL)",
    "i4 IN (NULL)",
    "i4 NOT IN (NULL)",
    "i4 IN (2.0, -1)",
    "n IN (0.1, 2, 1.5)",
    "n NOT IN (3, -1.5)",
    "i8 IN (9223372036854775807, 1)",
    "t = 'a'",
    "t <> 'a'",
    "t != 'A'",
    "t = ''",
    "t = 'it''s'",
    "t = 'Zoë'",
    "t = 'zoë'",
    "t = 'emoji 🎉'",
    "t = 'a '",
    "t = 'NULL'",
    "t = '日本語'",
    "t = '\"q\"'",
    "t IN ('a', 'pro', 'team')",
    "t NOT IN ('a', NULL)",
    "v IN ('Pro', 'it''s')",
    "t IS DISTINCT FROM 'a'",
    "t IS DISTINCT FROM NULL",
    "v = 'pro'",
    "v = 'a very long literal, longer than twelve'",
    "t = NULL",
    "NULL = NULL",
    "NULL IS NULL",
    "NULL IS NOT DISTINCT FROM NULL",
    "1 = 1",
    "'a' = 'a'",
    "TRUE",
    "FALSE",
    "NULL",
    "\"Mixed\" = 1",
    "\"Mixed\" IS NULL",
    "ts IS NULL",
    "f IS NOT NULL",
    "NOT i4 = 1",
    "NOT b = FALSE",
    "i4 = 1 IS TRUE",
    "i4 = 1 IS NOT FALSE",
    "i4 = 1 IS DISTINCT FROM b",
    "b IS DISTINCT FROM i4 = 1",
    "i4 IN (1) = b",
    "(i4 > 1) = (n > 1)",
    "(i4 > 1) <> b",
    "(i4 > 1) IN (TRUE, NULL)",
    "b2 OR b AND FALSE",
    "(b2 OR b) AND FALSE",
    "NOT NOT b",
    "((((b))))",
    "t = 'pro' AND b OR i4 > 1 AND NOT b2",
    "i4 IS NULL OR i4 > 1 OR n IS NULL",
    "T = 'a' OR I4 = 1",
];

/// Expressions outside the subset (valid SQL mostly, but not evaluated here).
const REFUSED: &[&str] = &[
    "t < 'b'",
    "t = v",
    "t IS NOT DISTINCT FROM v",
    "t >= v",
    "f = 1.5",
    "f > 0",
    "ts > '2024-01-01'",
    "ts IS DISTINCT FROM NULL",
    "n = '5'",
    "b = 't'",
    "b = 1",
    "lower(t) = 'a'",
    "t::text = 'a'",
    "i4 + 1 = 2",
    "t LIKE 'a%'",
    "i4 BETWEEN 1 AND 2",
    "n = 1e5",
    "t = E'a'",
    "t = 'a\\b'",
    "i4 = ANY ('{1,2}')",
    "i4",
    "t",
    "i4 = 1 = TRUE",
    "b IS NULL IS NULL",
    "user = 'x'",
    "t = 'a' COLLATE \"C\"",
    "i4 = 1 -- comment",
    "t.i4 = 1",
    "i4 IN (1, i2)",
    "i4 IN ('1')",
    "missing = 1",
];

#[tokio::test]
async fn filter_expr_agrees_with_postgres() {
    let db = TestDb::new("filter_expr_agrees").await;
    db.exec(TABLE).await;
    db.exec(&insert_rows(300)).await;
    // Every pair of numeric specials, side by side (random rows may miss one).
    db.exec(
        "INSERT INTO public.t (n, n3, i4) SELECT a::numeric, b::numeric, 1 \
         FROM unnest('{NaN,Infinity,-Infinity,1}'::text[]) a, \
              unnest('{NaN,Infinity,-Infinity,1}'::text[]) b",
    )
    .await;
    let table = table_of(&db.client).await;
    let rows = rows_of(&db.client).await;
    assert_eq!(rows.len(), 316);
    let generated = generate(400);
    let expressions = EXPRESSIONS.iter().map(|e| e.to_string()).chain(generated);
    let (mut checked, mut decided_on_toast) = (0, 0);
    let mut wrong = Vec::new();
    for expression in expressions {
        let filter = FilterExpr::parse(&expression, &table)
            .unwrap_or_else(|e| panic!("{expression:?} is refused: {e}"));
        let postgres = postgres_results(&db.client, &expression)
            .await
            .unwrap_or_else(|e| panic!("{expression:?}: {e}"));
        for (row, expected) in rows.iter().zip(&postgres) {
            checked += 1;
            if filter.eval(row) != *expected {
                wrong.push(format!(
                    "{expression}: {:?} vs Postgres {expected:?} on {row:?}",
                    filter.eval(row)
                ));
            }
            let toasted = toasted(&table, row);
            match filter.truth(&toasted) {
                Truth::Undecided => {}
                truth => {
                    decided_on_toast += 1;
                    if as_option(truth) != *expected {
                        wrong.push(format!("{expression}: {truth:?} on toast vs {expected:?}"));
                    }
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} disagreements, first: {:#?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
    assert!(checked > 150_000 && decided_on_toast > 10_000, "{checked} {decided_on_toast}");
    for expression in REFUSED {
        assert!(FilterExpr::parse(expression, &table).is_err(), "{expression:?} was accepted");
    }
}

fn as_option(truth: Truth) -> Option<bool> {
    match truth {
        Truth::True => Some(true),
        Truth::False => Some(false),
        Truth::Null | Truth::Undecided => None,
    }
}

/// The row with its non-NULL text and numeric columns unchanged TOAST
/// values: stored, so never NULL, but not sent.
fn toasted(table: &Table, row: &Row) -> Row {
    let toastable = |c: &TableColumn| ["t", "n", "v"].contains(&c.name.as_str());
    table
        .columns
        .iter()
        .zip(row)
        .map(|(column, datum)| match datum {
            Datum::Text(_) if toastable(column) => Datum::UnchangedToast,
            other => other.clone(),
        })
        .collect()
}

/// `INSERT` of `count` rows whose values are drawn from [`VALUES`].
pub(crate) fn insert_rows(count: usize) -> String {
    let mut rng = Rng(0x5eed_cafe);
    let columns: Vec<&str> = VALUES.iter().map(|(name, _)| *name).collect();
    let rows: Vec<String> = (0..count)
        .map(|_| {
            let values: Vec<&str> = VALUES.iter().map(|(_, vs)| *rng.pick(vs)).collect();
            format!("({})", values.join(", "))
        })
        .collect();
    format!("INSERT INTO public.t ({}) VALUES {}", columns.join(", "), rows.join(",\n"))
}

/// The table as pgoutput's Relation message describes it.
pub(crate) async fn table_of(client: &Client) -> Table {
    let columns = client
        .query(
            "SELECT attname::text, atttypid FROM pg_attribute \
             WHERE attrelid = 'public.t'::regclass AND attnum > 0 AND NOT attisdropped \
             ORDER BY attnum",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| {
            let type_oid: u32 = row.get(1);
            TableColumn {
                name: row.get(0),
                type_oid,
                kind: builtin_kind(type_oid).unwrap_or(ValueKind::Text),
            }
        })
        .collect();
    Table {
        oid: 0,
        schema: "public".into(),
        name: "t".into(),
        columns,
        replica_identity: ReplicaIdentity::Default,
    }
}

/// Every row in text form (each type's output function, as pgoutput sends it).
pub(crate) async fn rows_of(client: &Client) -> Vec<Row> {
    simple_rows(client, "SELECT * FROM public.t ORDER BY id")
        .await
        .unwrap()
        .into_iter()
        .map(|values| {
            values
                .into_iter()
                .map(|v| match v {
                    Some(text) => Datum::Text(Bytes::from(text)),
                    None => Datum::Null,
                })
                .collect()
        })
        .collect()
}

/// Postgres's value of `expression` on every row, in id order, or its
/// refusal of the expression.
pub(crate) async fn postgres_results(
    client: &Client,
    expression: &str,
) -> Result<Vec<Option<bool>>, tokio_postgres::Error> {
    let sql = format!("SELECT ({expression}) FROM public.t ORDER BY id");
    Ok(simple_rows(client, &sql)
        .await?
        .into_iter()
        .map(|values| match values[0].as_deref() {
            Some("t") => Some(true),
            Some("f") => Some(false),
            None => None,
            Some(other) => panic!("{expression:?} gave {other:?}"),
        })
        .collect())
}

async fn simple_rows(
    client: &Client,
    sql: &str,
) -> Result<Vec<Vec<Option<String>>>, tokio_postgres::Error> {
    let messages = client.simple_query(sql).await?;
    Ok(messages
        .into_iter()
        .filter_map(|message| match message {
            SimpleQueryMessage::Row(row) => {
                Some((0..row.len()).map(|i| row.get(i).map(str::to_owned)).collect())
            }
            _ => None,
        })
        .collect())
}

/// A small deterministic generator (xorshift).
pub(crate) struct Rng(pub u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const NUMBER_COLUMNS: &[&str] = &["i2", "i4", "i8", "n", "n2", "n3", "\"Mixed\""];
const NUMBER_LITERALS: &[&str] = &[
    "0",
    "1",
    "-1",
    "2",
    "2.0",
    "1.5",
    "-1.5",
    "0.1",
    ".1",
    "3.",
    "32767",
    "-32768",
    "2147483647",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "99999999999999999999.5",
    "0.00000000000000000001",
    "NULL",
];
const TEXT_COLUMNS: &[&str] = &["t", "v"];
const TEXT_LITERALS: &[&str] =
    &["''", "'a'", "'A'", "'pro'", "'it''s'", "'Zoë'", "'a '", "'日本語'", "NULL"];
const COMPARISONS: &[&str] = &["=", "<>", "!=", "<", "<=", ">", ">="];

/// `count` random expressions of the subset, of growing depth.
pub(crate) fn generate(count: usize) -> Vec<String> {
    let mut rng = Rng(0x0f11_e7e2);
    (0..count).map(|k| condition(&mut rng, 1 + k % 4)).collect()
}

/// A boolean expression of at most `depth` levels.
fn condition(rng: &mut Rng, depth: usize) -> String {
    if depth == 0 {
        return leaf(rng);
    }
    let sub = |rng: &mut Rng| condition(rng, depth - 1);
    match rng.below(10) {
        0 => format!("NOT {}", sub(rng)),
        1 | 2 => format!("{} AND {}", sub(rng), sub(rng)),
        3 | 4 => format!("{} OR {}", sub(rng), sub(rng)),
        5 => format!(
            "({}) IS {}{}",
            sub(rng),
            not(rng),
            rng.pick(&["TRUE", "FALSE", "UNKNOWN", "NULL"])
        ),
        6 => format!("({}) {} ({})", sub(rng), rng.pick(COMPARISONS), sub(rng)),
        7 => format!("({}) IS {}DISTINCT FROM ({})", sub(rng), not(rng), sub(rng)),
        _ => format!("({})", sub(rng)),
    }
}

fn not(rng: &mut Rng) -> &'static str {
    ["", "NOT "][rng.below(2)]
}

/// A comparison, a test or a boolean column or literal.
fn leaf(rng: &mut Rng) -> String {
    match rng.below(9) {
        0 => rng.pick(&["b", "b2", "TRUE", "FALSE", "NULL"]).to_string(),
        1 | 2 => {
            let right = match rng.below(2) {
                0 => rng.pick(NUMBER_LITERALS),
                _ => rng.pick(NUMBER_COLUMNS),
            };
            format!("{} {} {right}", rng.pick(NUMBER_COLUMNS), rng.pick(COMPARISONS))
        }
        3 => {
            let (column, literal) = (rng.pick(TEXT_COLUMNS), rng.pick(TEXT_LITERALS));
            let op = rng.pick(&["=", "<>", "!="]);
            match rng.below(3) {
                0 => format!("{literal} {op} {column}"),
                _ => format!("{column} {op} {literal}"),
            }
        }
        4 => format!(
            "{} {} {}",
            rng.pick(&["b", "b2"]),
            rng.pick(COMPARISONS),
            rng.pick(&["b", "b2", "TRUE", "FALSE", "NULL"])
        ),
        5 => {
            let all = [NUMBER_COLUMNS, TEXT_COLUMNS, &["b", "ts", "f"][..]].concat();
            format!("{} IS {}NULL", rng.pick(&all), not(rng))
        }
        6 => list(rng, NUMBER_COLUMNS, NUMBER_LITERALS),
        7 => list(rng, TEXT_COLUMNS, TEXT_LITERALS),
        _ => {
            let (columns, literals) =
                [(NUMBER_COLUMNS, NUMBER_LITERALS), (TEXT_COLUMNS, TEXT_LITERALS)][rng.below(2)];
            let mut right = [*rng.pick(columns), *rng.pick(literals)][rng.below(2)];
            if columns == TEXT_COLUMNS {
                right = *rng.pick(literals); // two text columns: refused
            }
            format!("{} IS {}DISTINCT FROM {right}", rng.pick(columns), not(rng))
        }
    }
}

/// `column [NOT] IN (literals)`.
fn list(rng: &mut Rng, columns: &[&str], literals: &[&str]) -> String {
    let items: Vec<&str> = (0..1 + rng.below(4)).map(|_| *rng.pick(literals)).collect();
    format!("{} {}IN ({})", rng.pick(columns), not(rng), items.join(", "))
}
