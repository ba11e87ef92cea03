//! A parsed filter on a row, in SQL's three-valued logic, plus values the
//! row does not carry (an unchanged TOAST value): a result that depends on
//! one is undecided, one that does not (`FALSE AND x`, `x IS NULL` of a
//! stored value) is decided, as Postgres would decide it whatever the value.

use std::borrow::Cow;
use std::cmp::Ordering;

use super::lex::CmpOp;
use super::num::Num;
use super::parse::{Expr, Lit, Ty};
use super::Truth;
use crate::change::{Datum, Row};

/// A value while evaluating.
#[derive(Debug, Clone)]
enum Val<'r> {
    Null,
    /// Not known; `not_null` when it is known not to be NULL (an unchanged
    /// TOAST value is a stored value, so never NULL).
    Unknown {
        not_null: bool,
    },
    Bool(bool),
    Num(Cow<'r, Num>),
    Text(&'r [u8]),
    /// A value of a type that is only tested with `IS [NOT] NULL`.
    Other,
}

const UNKNOWN_NOT_NULL: Val<'static> = Val::Unknown { not_null: true };

/// The filter `expr` on `row`.
pub(super) fn truth(expr: &Expr, row: &Row) -> Truth {
    match value(expr, row) {
        Val::Bool(true) => Truth::True,
        Val::Bool(false) => Truth::False,
        Val::Null => Truth::Null,
        _ => Truth::Undecided,
    }
}

fn value<'r>(expr: &'r Expr, row: &'r Row) -> Val<'r> {
    match expr {
        Expr::Column { index, ty } => column(row.get(*index), *ty),
        Expr::Lit(lit) => literal(lit),
        Expr::And(items) => and(items.iter().map(|e| value(e, row))),
        // a OR b = NOT (NOT a AND NOT b), in three-valued logic too.
        Expr::Or(items) => not(and(items.iter().map(|e| not(value(e, row))))),
        Expr::Not(inner) => not(value(inner, row)),
        Expr::Cmp { op, left, right } => compare(*op, value(left, row), value(right, row)),
        Expr::IsNull { expr, negated } => negate_if(*negated, is_null(value(expr, row))),
        Expr::IsBool { expr, test, negated } => {
            negate_if(*negated, is_bool(value(expr, row), *test))
        }
        Expr::Distinct { left, right, negated } => {
            negate_if(*negated, distinct(value(left, row), value(right, row)))
        }
        Expr::In { expr, list, negated } => {
            let left = value(expr, row);
            let any = list.iter().map(|lit| not(compare(CmpOp::Eq, left.clone(), literal(lit))));
            negate_if(*negated, not(and(any)))
        }
    }
}

/// A column's value from its text form.
fn column(datum: Option<&Datum>, ty: Ty) -> Val<'_> {
    let bytes = match datum {
        None => return Val::Unknown { not_null: false },
        Some(Datum::Null) => return Val::Null,
        Some(Datum::UnchangedToast) => return UNKNOWN_NOT_NULL,
        Some(Datum::Text(bytes)) => bytes,
    };
    match ty {
        Ty::Bool => match &bytes[..] {
            b"t" => Val::Bool(true),
            b"f" => Val::Bool(false),
            _ => UNKNOWN_NOT_NULL,
        },
        Ty::Number => match std::str::from_utf8(bytes).ok().and_then(Num::parse) {
            Some(num) => Val::Num(Cow::Owned(num)),
            None => UNKNOWN_NOT_NULL,
        },
        Ty::Text => Val::Text(bytes),
        Ty::Other | Ty::Unknown => Val::Other,
    }
}

fn literal(lit: &Lit) -> Val<'_> {
    match lit {
        Lit::Null => Val::Null,
        Lit::Bool(b) => Val::Bool(*b),
        Lit::Num(num) => Val::Num(Cow::Borrowed(num)),
        Lit::Text(text) => Val::Text(text.as_bytes()),
    }
}

/// Whether `val` is known not to be NULL (`Null` itself is not asked).
fn not_null(val: &Val) -> bool {
    !matches!(val, Val::Unknown { not_null: false })
}

fn not(val: Val) -> Val {
    match val {
        Val::Bool(b) => Val::Bool(!b),
        other => other,
    }
}

fn negate_if(negated: bool, val: Val) -> Val {
    if negated {
        not(val)
    } else {
        val
    }
}

/// FALSE if any is FALSE; else undecided if any is; else NULL if any is.
fn and<'r>(items: impl Iterator<Item = Val<'r>>) -> Val<'r> {
    let (mut null, mut unknown, mut maybe_null) = (false, false, false);
    for item in items {
        match item {
            Val::Bool(false) => return Val::Bool(false),
            Val::Bool(true) => {}
            Val::Null => null = true,
            other => {
                unknown = true;
                maybe_null |= !not_null(&other);
            }
        }
    }
    match (unknown, null) {
        (true, _) => Val::Unknown { not_null: !null && !maybe_null },
        (false, true) => Val::Null,
        (false, false) => Val::Bool(true),
    }
}

/// NULL if either side is NULL; operands of one type (the parser saw to it).
fn compare<'r>(op: CmpOp, left: Val<'r>, right: Val<'r>) -> Val<'r> {
    let ordering: Ordering = match (&left, &right) {
        (Val::Null, _) | (_, Val::Null) => return Val::Null,
        (Val::Bool(a), Val::Bool(b)) => a.cmp(b),
        (Val::Num(a), Val::Num(b)) => a.as_ref().cmp(b.as_ref()),
        // Only `=` and `<>` reach here for text: byte equality.
        (Val::Text(a), Val::Text(b)) => a.cmp(b),
        _ => return Val::Unknown { not_null: not_null(&left) && not_null(&right) },
    };
    Val::Bool(match op {
        CmpOp::Eq => ordering.is_eq(),
        CmpOp::Ne => ordering.is_ne(),
        CmpOp::Lt => ordering.is_lt(),
        CmpOp::Le => ordering.is_le(),
        CmpOp::Gt => ordering.is_gt(),
        CmpOp::Ge => ordering.is_ge(),
    })
}

fn is_null(val: Val) -> Val {
    match val {
        Val::Null => Val::Bool(true),
        Val::Unknown { not_null: false } => UNKNOWN_NOT_NULL,
        _ => Val::Bool(false),
    }
}

/// `IS TRUE` (`Some(true)`), `IS FALSE`, `IS UNKNOWN` (`None`).
fn is_bool(val: Val, test: Option<bool>) -> Val {
    match val {
        Val::Null => Val::Bool(test.is_none()),
        Val::Bool(b) => Val::Bool(test == Some(b)),
        Val::Unknown { not_null: true } if test.is_none() => Val::Bool(false),
        _ => UNKNOWN_NOT_NULL,
    }
}

/// `IS DISTINCT FROM`: `<>` with NULL as a value, never NULL itself.
fn distinct<'r>(left: Val<'r>, right: Val<'r>) -> Val<'r> {
    match (&left, &right) {
        (Val::Null, Val::Null) => Val::Bool(false),
        (Val::Null, other) | (other, Val::Null) => match not_null(other) {
            true => Val::Bool(true),
            false => UNKNOWN_NOT_NULL,
        },
        _ => match compare(CmpOp::Ne, left, right) {
            Val::Bool(b) => Val::Bool(b),
            _ => UNKNOWN_NOT_NULL,
        },
    }
}
