//! `[[sync]] filter` evaluated by ciosync itself on a change's new row, for
//! tables whose replica identity cannot carry the filter's columns (under
//! `REPLICA IDENTITY DEFAULT` Postgres refuses UPDATEs of a table whose
//! publication row filter reads other columns; issue 20). Pure: no I/O.
//!
//! Only a subset of SQL is accepted, chosen so that every accepted
//! expression gives exactly the result Postgres gives for it (as a row
//! filter, a `WHERE`, a `SELECT`); anything else is refused at parse time
//! with an error naming what is not supported:
//!
//! - **Columns** of the table: unquoted (folded to lower case, as Postgres
//!   does; an SQL keyword such as `user` or `order` must be quoted) or
//!   `"Double-Quoted"` (exact, `""` for a quote). No `table.column`.
//! - **Literals**: `'text'` (`''` for a quote; no backslash, no `E'…'`),
//!   integers and decimals (`42`, `-7`, `3.14`, `.5`; no exponent, no
//!   `0x`, no `_`), `TRUE`, `FALSE`, `NULL`.
//! - **Logic**: `AND`, `OR`, `NOT`, parentheses, SQL three-valued logic.
//! - **Comparisons** `=`, `<>`, `!=`, `<`, `<=`, `>`, `>=` between a column,
//!   a literal or a parenthesised boolean expression, of one type:
//!   - numbers: `smallint`, `integer`, `bigint`, `numeric` columns and
//!     number literals, compared exactly as decimals (numeric `NaN` equals
//!     itself and sorts above `Infinity`, as in Postgres);
//!   - booleans: `boolean` columns, `TRUE`/`FALSE`, boolean expressions
//!     (`false < true`); a `boolean` column alone is a condition;
//!   - text: a `text` or `varchar` column with a `'…'` literal, with `=`,
//!     `<>`, `!=` only (byte equality, which is Postgres's equality under a
//!     deterministic collation; ordering depends on the collation, and two
//!     columns may have different ones: refused).
//! - `x IS [NOT] NULL` on any column or expression, of any type;
//!   `x IS [NOT] TRUE | FALSE | UNKNOWN` on a boolean;
//!   `x IS [NOT] DISTINCT FROM y` and `x [NOT] IN (literal, …)` on the types
//!   that compare with `=` above.
//!
//! Refused: functions, casts (`::`), arithmetic, `LIKE`, `BETWEEN`,
//! `ANY`/`ALL`, subqueries, comments, parameters; comparing values of two
//! types (`int_col = '5'`); comparisons of `real`/`double precision` (their
//! text form and Postgres's promotion of literals make them inexact), of
//! `char(n)` (padding), `name`, `citext`, `uuid`, enums, domains, dates,
//! timestamps and every other type (only `IS [NOT] NULL` reads them).
//!
//! Text equality is byte equality: exact under every deterministic collation
//! (the default, every libc collation); a column with a nondeterministic ICU
//! collation (`deterministic = false`, e.g. case-insensitive) is not
//! detectable from the [`Table`] and must be refused by the caller.
//!
//! A parsed filter binds columns by position: parse it again when the
//! table's schema changes. The filter text is at most [`MAX_LEN`] bytes and
//! nests at most [`MAX_DEPTH`] parentheses and `NOT`s. Errors name the
//! filter's own words (columns, operators), never a literal's text, and
//! evaluation never fails: a value it cannot read is undecided.

mod eval;
mod keywords;
mod lex;
mod num;
mod parse;

use crate::change::{Row, Table};

/// The longest filter accepted, in bytes.
pub const MAX_LEN: usize = 16_384;

/// The deepest nesting of parentheses and `NOT`s accepted.
pub const MAX_DEPTH: usize = 64;

/// What the subset is, for errors.
const SUBSET: &str = "a filter may use columns, literals ('text', numbers, TRUE, FALSE, NULL), \
     AND, OR, NOT, parentheses, = <> != < <= > >= (ordering on numbers and booleans only), \
     IS [NOT] NULL | TRUE | FALSE | UNKNOWN, IS [NOT] DISTINCT FROM, [NOT] IN (literals); \
     numbers compare with smallint, integer, bigint and numeric columns, text literals with \
     text and varchar columns";

/// A filter outside the subset, or wrong for the table: what and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{problem} (at byte {at} of the filter); {SUBSET}")]
pub struct FilterExprError {
    /// What is not supported, or wrong.
    pub problem: String,
    /// Byte offset in the filter text.
    pub at: usize,
}

impl FilterExprError {
    fn new(at: usize, problem: impl Into<String>) -> Self {
        Self { problem: problem.into(), at }
    }
}

/// The outcome of a filter on a row, in SQL's three-valued logic plus
/// "undecided": a value it reads was not sent (an unchanged TOAST value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truth {
    True,
    False,
    /// SQL NULL: the row does not match (as with FALSE).
    Null,
    /// The result depends on a value the row does not carry.
    Undecided,
}

/// A parsed, type-checked filter of one table.
#[derive(Debug, Clone)]
pub struct FilterExpr {
    root: parse::Expr,
    columns: Vec<String>,
}

impl FilterExpr {
    /// Parses `text` as a filter of `table` (see the module doc for the
    /// subset). An error says what is not supported, or which column is
    /// unknown or of the wrong type.
    pub fn parse(text: &str, table: &Table) -> Result<FilterExpr, FilterExprError> {
        let (root, mut indexes) = parse::parse(text, table)?;
        indexes.sort_unstable();
        indexes.dedup();
        let columns = indexes.into_iter().map(|i| table.columns[i].name.clone()).collect();
        Ok(FilterExpr { root, columns })
    }

    /// The filter on `row` (a row of the table it was parsed for):
    /// `Some(true)` when it is TRUE, `Some(false)` when FALSE, `None` when
    /// NULL or undecided (see [`FilterExpr::truth`] to tell them apart).
    pub fn eval(&self, row: &Row) -> Option<bool> {
        match self.truth(row) {
            Truth::True => Some(true),
            Truth::False => Some(false),
            Truth::Null | Truth::Undecided => None,
        }
    }

    /// The filter on `row`, telling NULL (no match) from undecided.
    pub fn truth(&self, row: &Row) -> Truth {
        eval::truth(&self.root, row)
    }

    /// The columns the filter reads, in the table's column order, each once.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }
}

#[cfg(test)]
mod tests;
