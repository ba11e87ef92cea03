//! Tokens → a type-checked expression tree, with Postgres's precedence
//! (lowest first): `OR`, `AND`, `NOT`, `IS …`, comparisons (not chained),
//! `[NOT] IN`, unary minus. Whatever Postgres would read otherwise, or
//! evaluate in a way the evaluator does not copy exactly, is refused.

use super::keywords::KEYWORDS;
use super::lex::{lex, CmpOp, Tok, Token};
use super::num::Num;
use super::{FilterExprError, MAX_DEPTH};
use crate::change::Table;

/// What a value is, for the type rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ty {
    Bool,
    Number,
    Text,
    /// A column type the filter only tests with `IS [NOT] NULL`.
    Other,
    /// The `NULL` literal: fits any type.
    Unknown,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::Bool => "boolean",
            Ty::Number => "number",
            Ty::Text => "text",
            Ty::Other => "a type the filter reads only with IS [NOT] NULL",
            Ty::Unknown => "NULL",
        }
    }
}

/// The type of a column, from its type OID: built-in types only (a domain,
/// `citext`, an enum has its own OID, so it is `Other`).
pub(super) fn column_type(type_oid: u32) -> Ty {
    match type_oid {
        16 => Ty::Bool,
        20 | 21 | 23 | 1700 => Ty::Number,
        25 | 1043 => Ty::Text,
        _ => Ty::Other,
    }
}

/// A literal value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Lit {
    Null,
    Bool(bool),
    Num(Num),
    Text(String),
}

impl Lit {
    fn ty(&self) -> Ty {
        match self {
            Lit::Null => Ty::Unknown,
            Lit::Bool(_) => Ty::Bool,
            Lit::Num(_) => Ty::Number,
            Lit::Text(_) => Ty::Text,
        }
    }
}

/// A type-checked expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Expr {
    Column {
        index: usize,
        ty: Ty,
    },
    Lit(Lit),
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Cmp {
        op: CmpOp,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    IsNull {
        expr: Box<Expr>,
        negated: bool,
    },
    /// `IS [NOT] TRUE | FALSE | UNKNOWN` (`test: None`).
    IsBool {
        expr: Box<Expr>,
        test: Option<bool>,
        negated: bool,
    },
    Distinct {
        left: Box<Expr>,
        right: Box<Expr>,
        negated: bool,
    },
    In {
        expr: Box<Expr>,
        list: Vec<Lit>,
        negated: bool,
    },
}

impl Expr {
    fn ty(&self) -> Ty {
        match self {
            Expr::Column { ty, .. } => *ty,
            Expr::Lit(lit) => lit.ty(),
            _ => Ty::Bool,
        }
    }
}

/// Parses `text` against `table`: the tree and the indexes of the columns
/// it reads (in order of appearance, repeated).
pub(super) fn parse(text: &str, table: &Table) -> Result<(Expr, Vec<usize>), FilterExprError> {
    let tokens = lex(text)?;
    if tokens.is_empty() {
        return Err(FilterExprError::new(0, "the filter is empty"));
    }
    let mut parser = Parser { tokens, pos: 0, end: text.len(), table, depth: 0, columns: vec![] };
    let expr = parser.or()?;
    if let Some(token) = parser.tokens.get(parser.pos) {
        return Err(unexpected(token, "AND, OR or the end of the filter"));
    }
    parser.boolean(&expr, 0, "the filter")?;
    Ok((expr, parser.columns))
}

fn unexpected(token: &Token, expected: &str) -> FilterExprError {
    FilterExprError::new(
        token.at,
        format!("unexpected {} (expected {expected})", token.tok.describe()),
    )
}

struct Parser<'a> {
    tokens: Vec<Token>,
    pos: usize,
    /// The text's length: where an error at the end points.
    end: usize,
    table: &'a Table,
    depth: usize,
    columns: Vec<usize>,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos).map(|t| &t.tok)
    }

    fn here(&self) -> usize {
        self.tokens.get(self.pos).map_or(self.end, |t| t.at)
    }

    fn next(&mut self, expected: &str) -> Result<Token, FilterExprError> {
        let token = self.tokens.get(self.pos).cloned().ok_or_else(|| {
            FilterExprError::new(self.end, format!("the filter ends where {expected} should be"))
        })?;
        self.pos += 1;
        Ok(token)
    }

    fn eat_keyword(&mut self, word: &str) -> bool {
        let found = self.peek().is_some_and(|t| t.is_keyword(word));
        self.pos += usize::from(found);
        found
    }

    fn expect(&mut self, tok: &Tok, expected: &str) -> Result<(), FilterExprError> {
        let token = self.next(expected)?;
        if token.tok != *tok {
            return Err(unexpected(&token, expected));
        }
        Ok(())
    }

    /// One more level of nesting, refused past [`MAX_DEPTH`].
    fn enter(&mut self, at: usize) -> Result<(), FilterExprError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(FilterExprError::new(
                at,
                format!("nesting deeper than {MAX_DEPTH} parentheses and NOTs is not supported"),
            ));
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Expr, FilterExprError> {
        self.chain("or", "OR", Self::and, Expr::Or)
    }

    fn and(&mut self) -> Result<Expr, FilterExprError> {
        self.chain("and", "AND", Self::not, Expr::And)
    }

    /// `operand (word operand)*`, each operand a condition.
    fn chain(
        &mut self,
        word: &str,
        what: &str,
        operand: fn(&mut Self) -> Result<Expr, FilterExprError>,
        build: fn(Vec<Expr>) -> Expr,
    ) -> Result<Expr, FilterExprError> {
        let mut items = Vec::new();
        loop {
            let at = self.here();
            items.push((operand(self)?, at));
            if !self.eat_keyword(word) {
                break;
            }
        }
        if items.len() == 1 {
            return Ok(items.remove(0).0);
        }
        for (item, at) in &items {
            self.boolean(item, *at, what)?;
        }
        Ok(build(items.into_iter().map(|(item, _)| item).collect()))
    }

    fn not(&mut self) -> Result<Expr, FilterExprError> {
        let mut nots = 0;
        while self.peek().is_some_and(|t| t.is_keyword("not")) {
            self.enter(self.here())?;
            self.pos += 1;
            nots += 1;
        }
        let at = self.here();
        let mut expr = self.is()?;
        for _ in 0..nots {
            self.boolean(&expr, at, "NOT")?;
            expr = Expr::Not(Box::new(expr));
            self.depth -= 1;
        }
        Ok(expr)
    }

    /// `comparison [IS [NOT] NULL | TRUE | FALSE | UNKNOWN | DISTINCT FROM comparison]`.
    fn is(&mut self) -> Result<Expr, FilterExprError> {
        let at = self.here();
        let expr = self.comparison()?;
        if !self.eat_keyword("is") {
            return Ok(expr);
        }
        let negated = self.eat_keyword("not");
        let expected = "NULL, TRUE, FALSE, UNKNOWN or DISTINCT FROM after IS [NOT]";
        let token = self.next(expected)?;
        let expr = Box::new(expr);
        let test = match &token.tok {
            t if t.is_keyword("null") => return self.after_is(Expr::IsNull { expr, negated }),
            t if t.is_keyword("true") => Some(true),
            t if t.is_keyword("false") => Some(false),
            t if t.is_keyword("unknown") => None,
            t if t.is_keyword("distinct") => {
                self.expect(&Tok::Ident { name: "from".into(), quoted: false }, "FROM")?;
                let right_at = self.here();
                let right = self.comparison()?;
                self.comparable(CmpOp::Eq, (&expr, at), (&right, right_at))?;
                let right = Box::new(right);
                return self.after_is(Expr::Distinct { left: expr, right, negated });
            }
            _ => return Err(unexpected(&token, expected)),
        };
        self.boolean(&expr, at, "IS TRUE/FALSE/UNKNOWN")?;
        self.after_is(Expr::IsBool { expr, test, negated })
    }

    /// Refuses a second `IS` test on the first without parentheses.
    fn after_is(&self, expr: Expr) -> Result<Expr, FilterExprError> {
        if self.peek().is_some_and(|t| t.is_keyword("is")) {
            return Err(FilterExprError::new(
                self.here(),
                "a second IS test in a row is not supported (add parentheses)",
            ));
        }
        Ok(expr)
    }

    /// `operand [op operand]`: Postgres does not chain comparisons either.
    fn comparison(&mut self) -> Result<Expr, FilterExprError> {
        let at = self.here();
        let left = self.membership()?;
        let Some(Tok::Cmp(op)) = self.peek() else { return Ok(left) };
        let op = *op;
        self.pos += 1;
        let right_at = self.here();
        let right = self.membership()?;
        self.comparable(op, (&left, at), (&right, right_at))?;
        Ok(Expr::Cmp { op, left: Box::new(left), right: Box::new(right) })
    }

    /// `operand [[NOT] IN (literal, …)]`.
    fn membership(&mut self) -> Result<Expr, FilterExprError> {
        let at = self.here();
        let expr = self.operand()?;
        let not_in = self.peek().is_some_and(|t| t.is_keyword("not"))
            && self.tokens.get(self.pos + 1).is_some_and(|t| t.tok.is_keyword("in"));
        if not_in {
            self.pos += 1;
        }
        if !self.eat_keyword("in") {
            return Ok(expr);
        }
        self.expect(&Tok::LParen, "`(` after IN")?;
        let mut list = Vec::new();
        loop {
            let lit_at = self.here();
            let lit = self.literal()?;
            self.comparable(CmpOp::Eq, (&expr, at), (&Expr::Lit(lit.clone()), lit_at))?;
            list.push(lit);
            let token = self.next("`,` or `)`")?;
            match token.tok {
                Tok::Comma => continue,
                Tok::RParen => break,
                _ => return Err(unexpected(&token, "`,` or `)` in an IN list")),
            }
        }
        Ok(Expr::In { expr: Box::new(expr), list, negated: not_in })
    }

    /// A literal of an IN list.
    fn literal(&mut self) -> Result<Lit, FilterExprError> {
        let at = self.here();
        match self.operand()? {
            Expr::Lit(lit) => Ok(lit),
            _ => Err(FilterExprError::new(at, "IN lists of other than literals are not supported")),
        }
    }

    /// A column, a literal, `-number` or `( expression )`.
    fn operand(&mut self) -> Result<Expr, FilterExprError> {
        let expected = "a column, a literal or `(`";
        let token = self.next(expected)?;
        match token.tok {
            Tok::LParen => {
                self.enter(token.at)?;
                let expr = self.or()?;
                self.expect(&Tok::RParen, "`)`")?;
                self.depth -= 1;
                Ok(expr)
            }
            Tok::Str(text) => Ok(Expr::Lit(Lit::Text(text))),
            Tok::Num(digits) => Ok(Expr::Lit(Lit::Num(number(&digits, token.at)?))),
            Tok::Minus => match self.next("a number after `-`")?.tok {
                Tok::Num(digits) => {
                    Ok(Expr::Lit(Lit::Num(number(&format!("-{digits}"), token.at)?)))
                }
                _ => Err(FilterExprError::new(
                    token.at,
                    "`-` other than before a number (arithmetic) is not supported",
                )),
            },
            Tok::Ident { name, quoted } => self.name(name, quoted, token.at),
            _ => Err(unexpected(&token, expected)),
        }
    }

    /// A keyword literal or a column.
    fn name(&mut self, name: String, quoted: bool, at: usize) -> Result<Expr, FilterExprError> {
        if !quoted {
            match name.as_str() {
                "true" => return Ok(Expr::Lit(Lit::Bool(true))),
                "false" => return Ok(Expr::Lit(Lit::Bool(false))),
                "null" => return Ok(Expr::Lit(Lit::Null)),
                _ => {}
            }
        }
        if self.peek() == Some(&Tok::LParen) {
            return Err(FilterExprError::new(
                at,
                "functions and function-like syntax are not supported",
            ));
        }
        if !quoted && ["and", "or", "not", "is", "in", "distinct", "from"].contains(&name.as_str())
        {
            return Err(FilterExprError::new(at, format!("`{name}` where a value should be")));
        }
        if !quoted && KEYWORDS.contains(&name.as_str()) {
            return Err(FilterExprError::new(
                at,
                format!("`{name}` is an SQL keyword; a column of that name must be quoted"),
            ));
        }
        let Some(index) = self.table.column_index(&name) else {
            return Err(FilterExprError::new(
                at,
                format!("no column `{name}` in {}", self.table.qualified_name()),
            ));
        };
        self.columns.push(index);
        Ok(Expr::Column { index, ty: column_type(self.table.columns[index].type_oid) })
    }

    /// What an error says `expr` is.
    fn describe(&self, expr: &Expr) -> String {
        match expr {
            Expr::Column { index, ty } => {
                format!("column `{}` ({})", self.table.columns[*index].name, ty.name())
            }
            Expr::Lit(lit) => format!("a {} literal", lit.ty().name()),
            _ => "a condition".to_owned(),
        }
    }

    /// Refuses a non-boolean operand of `what`.
    fn boolean(&self, expr: &Expr, at: usize, what: &str) -> Result<(), FilterExprError> {
        match expr.ty() {
            Ty::Bool | Ty::Unknown => Ok(()),
            _ => Err(FilterExprError::new(
                at,
                format!("{what} needs a boolean, not {}", self.describe(expr)),
            )),
        }
    }

    /// Refuses comparing values of two types, or of a type `op` does not
    /// compare exactly.
    fn comparable(
        &self,
        op: CmpOp,
        (left, left_at): (&Expr, usize),
        (right, right_at): (&Expr, usize),
    ) -> Result<(), FilterExprError> {
        for (side, at) in [(left, left_at), (right, right_at)] {
            if side.ty() == Ty::Other {
                return Err(FilterExprError::new(
                    at,
                    format!(
                        "comparing {} is not supported: real, double precision, char(n), name, \
                         citext, uuid, enums, domains, dates, timestamps and other types allow \
                         IS [NOT] NULL only",
                        self.describe(side)
                    ),
                ));
            }
        }
        let ty = match (left.ty(), right.ty()) {
            (Ty::Unknown, ty) | (ty, Ty::Unknown) => ty,
            (a, b) if a == b => a,
            _ => {
                let (l, r) = (self.describe(left), self.describe(right));
                return Err(FilterExprError::new(
                    left_at,
                    format!("comparing {l} with {r} is not supported (one type on both sides)"),
                ));
            }
        };
        let column = |e: &Expr| matches!(e, Expr::Column { .. });
        if ty == Ty::Text && column(left) && column(right) {
            return Err(FilterExprError::new(
                left_at,
                "comparing two text columns is not supported: their collations may differ",
            ));
        }
        if ty == Ty::Text && op.orders() {
            return Err(FilterExprError::new(
                left_at,
                "ordering text (`<`, `<=`, `>`, `>=`) is not supported: it depends on the collation",
            ));
        }
        Ok(())
    }
}

fn number(text: &str, at: usize) -> Result<Num, FilterExprError> {
    Num::parse(text).ok_or_else(|| FilterExprError::new(at, "a malformed number"))
}
