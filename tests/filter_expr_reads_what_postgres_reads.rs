//! `FilterExpr` reads a filter's text as Postgres reads it: every text it
//! accepts, Postgres accepts and evaluates to the same value on every row,
//! however its tokens are spaced or combined (random word sequences, and
//! generated expressions with words dropped, swapped or glued: the accepted
//! ones checked against `SELECT (text)`), and a column named like
//! an SQL keyword is accepted only quoted, as Postgres requires.

use std::collections::BTreeSet;

use ciosync::change::{ReplicaIdentity, Table, TableColumn, ValueKind};
use ciosync::mapping::filter_expr::FilterExpr;

use crate::filter_expr_agrees_with_postgres::{
    generate, insert_rows, postgres_results, rows_of, table_of, Rng, TABLE,
};
use crate::support::postgres::TestDb;

/// How many distinct accepted texts of each source are checked against
/// Postgres: random words, and mutants of generated expressions.
const ACCEPTED: usize = 400;

/// Words of filters, a few invalid among them.
const OPERANDS: &[&str] = &[
    "b",
    "b2",
    "i4",
    "n",
    "n3",
    "t",
    "v",
    "\"Mixed\"",
    "I4",
    "\"b\"",
    "f",
    "ts",
    "1",
    "-1",
    "-",
    "2.5",
    ".5",
    "3.",
    "0",
    "'a'",
    "'it''s'",
    "''",
    "TRUE",
    "FALSE",
    "NULL",
    "(",
    "(",
    "NOT",
];
const CONNECTORS: &[&str] = &[
    "=", "<>", "!=", "<", "<=", ">", ">=", "AND", "OR", "IS", "IS", "IN", "NOT", "DISTINCT",
    "FROM", "UNKNOWN", "NULL", "TRUE", "FALSE", ")", ")", ",", "-",
];

/// What goes between two words.
const SEPARATORS: &[&str] = &[" ", " ", " ", "", "\n"];

#[tokio::test]
async fn token_soup_is_read_as_postgres_reads_it() {
    let db = TestDb::new("filter_expr_soup").await;
    db.exec(TABLE).await;
    db.exec(&insert_rows(300)).await;
    let table = table_of(&db.client).await;
    let rows = rows_of(&db.client).await;
    let mut rng = Rng(0x0050_0b5e);
    let mut accepted = accept(&table, || soup(&mut rng));
    let sources = generate(ACCEPTED * 4);
    let mut rng = Rng(0x0bad_5eed);
    accepted.extend(accept(&table, || mutant(&mut rng, &sources)));
    let mut wrong = Vec::new();
    for text in &accepted {
        let filter = FilterExpr::parse(text, &table).unwrap();
        match postgres_results(&db.client, text).await {
            Err(e) => wrong.push(format!("{text:?}: accepted, Postgres refuses it: {e}")),
            Ok(postgres) => {
                let ours: Vec<Option<bool>> = rows.iter().map(|row| filter.eval(row)).collect();
                if ours != postgres {
                    wrong.push(format!("{text:?}: evaluated otherwise"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{} of {} wrong: {wrong:#?}", wrong.len(), accepted.len());
}

/// [`ACCEPTED`] distinct texts from `source` that the parser accepts.
fn accept(table: &Table, mut source: impl FnMut() -> String) -> BTreeSet<String> {
    let mut accepted = BTreeSet::new();
    let mut tried = 0;
    while accepted.len() < ACCEPTED && tried < 3_000_000 {
        tried += 1;
        let text = source();
        if FilterExpr::parse(&text, table).is_ok() {
            accepted.insert(text);
        }
    }
    assert_eq!(accepted.len(), ACCEPTED, "after {tried} tries");
    accepted
}

/// A generated expression with one to three words (parentheses apart)
/// dropped, swapped with the next, or glued to it: dropped parentheses
/// change what binds to what, which is where a reader differs.
fn mutant(rng: &mut Rng, sources: &[String]) -> String {
    let source = rng.pick(sources).replace('(', " ( ").replace(')', " ) ");
    let mut words: Vec<String> = source.split_whitespace().map(str::to_owned).collect();
    for _ in 0..1 + rng.below(3) {
        let i = rng.below(words.len());
        match rng.below(4) {
            0 | 1 => {
                words.remove(i);
            }
            2 if i + 1 < words.len() => words.swap(i, i + 1),
            _ if i + 1 < words.len() => {
                let next = words.remove(i + 1);
                words[i].push_str(&next);
            }
            _ => {}
        }
        if words.is_empty() {
            break;
        }
    }
    words.join(" ")
}

/// 3 to 16 words, each mostly of the kind that may follow the one before,
/// joined by a space, nothing or a newline.
fn soup(rng: &mut Rng) -> String {
    let mut text = String::new();
    let mut after_operand = false;
    for _ in 0..3 + rng.below(14) {
        let expected = if after_operand { CONNECTORS } else { OPERANDS };
        let word = match rng.below(10) {
            0..=6 => *rng.pick(expected),
            _ => *rng.pick(if after_operand { OPERANDS } else { CONNECTORS }),
        };
        if !text.is_empty() {
            let separator = *rng.pick(SEPARATORS);
            text.push_str(separator);
        }
        text.push_str(word);
        after_operand = !["(", "NOT", "-", "=", "<>", "!=", "<", "<=", ">", ">=", "AND", "OR"]
            .contains(&word)
            && !["IS", "IN", "DISTINCT", "FROM", ","].contains(&word);
    }
    text
}

/// Every keyword the server does not read as a column name unquoted
/// (`pg_get_keywords()`, not unreserved) is refused as one, and accepted
/// quoted; `TRUE`, `FALSE` and `NULL` are their literals, as in Postgres.
#[tokio::test]
async fn keywords_are_column_names_only_quoted() {
    let db = TestDb::new("filter_expr_keywords").await;
    let words: Vec<String> = db
        .client
        .query("SELECT word FROM pg_get_keywords() WHERE catcode <> 'U'", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(words.len() > 100, "{words:?}");
    let columns = words
        .iter()
        .map(|word| TableColumn { name: word.clone(), type_oid: 23, kind: ValueKind::Int })
        .collect();
    let table = Table {
        oid: 0,
        schema: "public".into(),
        name: "t".into(),
        columns,
        replica_identity: ReplicaIdentity::Default,
    };
    for word in &words {
        let quoted = FilterExpr::parse(&format!("\"{word}\" IS NULL"), &table).unwrap();
        assert_eq!(quoted.columns(), std::slice::from_ref(word));
        let unquoted = FilterExpr::parse(&format!("{word} IS NULL"), &table);
        match word.as_str() {
            "true" | "false" | "null" => assert!(unquoted.unwrap().columns().is_empty()),
            _ => assert!(unquoted.is_err(), "unquoted {word:?} is read as a column"),
        }
    }
}
