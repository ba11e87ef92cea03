//! The filter's words, split as Postgres's lexer splits them for the
//! accepted subset; whatever would lex differently (comments, `E'…'`,
//! `1e5`, `::`, operators Postgres reads as one, such as `!=-`) is refused.

use super::{FilterExprError, MAX_LEN};

/// Postgres truncates longer identifiers (NAMEDATALEN - 1 bytes).
const MAX_IDENTIFIER: usize = 63;

/// Characters Postgres reads as parts of an operator.
const OPERATOR_CHARS: &str = "~!@#^&|`?+-*/%<>=";

/// Operator characters after which Postgres keeps a trailing `+`/`-` in the
/// operator rather than splitting it off.
const KEEPS_TRAILING_SIGN: &str = "~!@#^&|`?%";

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    /// Whether the operator orders its operands (as opposed to `=`, `<>`).
    pub(super) fn orders(self) -> bool {
        !matches!(self, Self::Eq | Self::Ne)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Tok {
    /// An identifier or keyword: unquoted ones folded to lower case.
    Ident {
        name: String,
        quoted: bool,
    },
    /// A string literal's value.
    Str(String),
    /// An unsigned number literal as written (digits and at most one `.`).
    Num(String),
    Cmp(CmpOp),
    Minus,
    LParen,
    RParen,
    Comma,
}

impl Tok {
    /// The token as an error shows it: never a literal's value.
    pub(super) fn describe(&self) -> String {
        match self {
            Tok::Ident { name, quoted: false } => format!("`{name}`"),
            Tok::Ident { name, quoted: true } => format!("`\"{name}\"`"),
            Tok::Str(_) => "a string literal".to_owned(),
            Tok::Num(_) => "a number".to_owned(),
            Tok::Cmp(op) => format!("`{}`", cmp_symbol(*op)),
            Tok::Minus => "`-`".to_owned(),
            Tok::LParen => "`(`".to_owned(),
            Tok::RParen => "`)`".to_owned(),
            Tok::Comma => "`,`".to_owned(),
        }
    }

    /// Whether this is the unquoted keyword `word` (lower case).
    pub(super) fn is_keyword(&self, word: &str) -> bool {
        matches!(self, Tok::Ident { name, quoted: false } if name == word)
    }
}

fn cmp_symbol(op: CmpOp) -> &'static str {
    match op {
        CmpOp::Eq => "=",
        CmpOp::Ne => "<>",
        CmpOp::Lt => "<",
        CmpOp::Le => "<=",
        CmpOp::Gt => ">",
        CmpOp::Ge => ">=",
    }
}

/// A token and its byte offset in the filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Token {
    pub tok: Tok,
    pub at: usize,
}

/// Splits `text` into tokens.
pub(super) fn lex(text: &str) -> Result<Vec<Token>, FilterExprError> {
    if text.len() > MAX_LEN {
        return Err(FilterExprError::new(
            0,
            format!("filters over {MAX_LEN} bytes are not supported"),
        ));
    }
    let mut lexer = Lexer { text, at: 0, tokens: Vec::new() };
    // Each turn reads at least one byte, so the text ends within its length
    // in turns; bounded anyway, so a bug cannot spin or fill the memory.
    for _ in 0..=text.len() {
        let Some(c) = lexer.peek() else { return Ok(lexer.tokens) };
        lexer.next_token(c)?;
    }
    Err(FilterExprError::new(lexer.at, "the filter could not be read"))
}

struct Lexer<'a> {
    text: &'a str,
    at: usize,
    tokens: Vec<Token>,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.text[self.at..].chars().next()
    }

    fn push(&mut self, at: usize, tok: Tok) {
        self.tokens.push(Token { tok, at });
    }

    fn next_token(&mut self, c: char) -> Result<(), FilterExprError> {
        let at = self.at;
        let next = self.text[at + c.len_utf8()..].chars().next();
        match c {
            ' ' | '\t' | '\n' | '\r' | '\x0c' => self.at += 1,
            '(' | ')' | ',' => {
                self.at += 1;
                let tok = match c {
                    '(' => Tok::LParen,
                    ')' => Tok::RParen,
                    _ => Tok::Comma,
                };
                self.push(at, tok);
            }
            '\'' => self.string()?,
            '"' => self.quoted_identifier()?,
            '0'..='9' => self.number()?,
            '.' if next.is_some_and(|n| n.is_ascii_digit()) => self.number()?,
            c if starts_identifier(c) => self.identifier()?,
            c if OPERATOR_CHARS.contains(c) => self.operator()?,
            '.' => {
                return Err(FilterExprError::new(
                    at,
                    "qualified names (`t.column`) are not supported",
                ))
            }
            ':' => return Err(FilterExprError::new(at, "casts (`::`) are not supported")),
            '$' => {
                return Err(FilterExprError::new(
                    at,
                    "parameters and dollar quoting are not supported",
                ))
            }
            c if c.is_control() => {
                return Err(FilterExprError::new(at, "control characters are not supported"))
            }
            c => {
                return Err(FilterExprError::new(
                    at,
                    format!("the character `{c}` is not supported"),
                ))
            }
        }
        Ok(())
    }

    /// `'…'` with `''` for a quote. A backslash is refused: its meaning
    /// depends on `standard_conforming_strings`.
    fn string(&mut self) -> Result<(), FilterExprError> {
        let start = self.at;
        let value = self.delimited('\'', "string literal")?;
        if value.contains('\\') {
            return Err(FilterExprError::new(
                start,
                "backslashes in string literals are not supported (their meaning depends on \
                 standard_conforming_strings)",
            ));
        }
        self.push(start, Tok::Str(value));
        Ok(())
    }

    /// `"…"` with `""` for a quote: exact, not folded.
    fn quoted_identifier(&mut self) -> Result<(), FilterExprError> {
        let start = self.at;
        let name = self.delimited('"', "quoted identifier")?;
        if name.is_empty() {
            return Err(FilterExprError::new(start, "empty quoted identifier"));
        }
        check_identifier_length(start, &name)?;
        self.push(start, Tok::Ident { name, quoted: true });
        Ok(())
    }

    /// The text between `quote`s from the current position, a doubled
    /// quote standing for one.
    fn delimited(&mut self, quote: char, what: &str) -> Result<String, FilterExprError> {
        let start = self.at;
        let mut value = String::new();
        let mut chars = self.text[start + 1..].char_indices();
        while let Some((i, c)) = chars.next() {
            if c == '\0' {
                return Err(FilterExprError::new(
                    start + 1 + i,
                    "NUL characters are not supported",
                ));
            }
            if c != quote {
                value.push(c);
                continue;
            }
            if self.text[start + 1 + i + 1..].starts_with(quote) {
                value.push(quote);
                chars.next();
                continue;
            }
            self.at = start + 1 + i + 1;
            return Ok(value);
        }
        Err(FilterExprError::new(start, format!("unterminated {what}")))
    }

    /// Digits with at most one `.`; anything that would make Postgres read
    /// a different number (an exponent, `0x`, `_`, a second `.`) is refused.
    fn number(&mut self) -> Result<(), FilterExprError> {
        let start = self.at;
        let rest = &self.text[start..];
        let mut end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if rest[end..].starts_with('.') {
            end += 1;
            end += rest[end..].find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len() - end);
        }
        if rest[end..].starts_with(|c: char| c == '.' || continues_identifier(c)) {
            return Err(FilterExprError::new(
                start,
                "numbers other than digits with an optional `.` (exponents, `0x`, `_`) are not \
                 supported",
            ));
        }
        self.at += end;
        self.push(start, Tok::Num(rest[..end].to_owned()));
        Ok(())
    }

    /// An unquoted identifier or keyword, folded to lower case (ASCII only,
    /// as Postgres does in a UTF-8 database).
    fn identifier(&mut self) -> Result<(), FilterExprError> {
        let start = self.at;
        let rest = &self.text[start..];
        let end = rest.find(|c: char| !continues_identifier(c)).unwrap_or(rest.len());
        let name = rest[..end].to_ascii_lowercase();
        if rest[end..].starts_with('\'') {
            return Err(FilterExprError::new(
                start,
                "prefixed or typed string literals (`E'…'`, `text '…'`) are not supported",
            ));
        }
        check_identifier_length(start, &name)?;
        self.at += end;
        self.push(start, Tok::Ident { name, quoted: false });
        Ok(())
    }

    /// A run of operator characters, split as Postgres splits it: a
    /// trailing `+`/`-` is its own token unless the run has one of
    /// [`KEEPS_TRAILING_SIGN`].
    fn operator(&mut self) -> Result<(), FilterExprError> {
        let start = self.at;
        let rest = &self.text[start..];
        let run_end = rest.find(|c: char| !OPERATOR_CHARS.contains(c)).unwrap_or(rest.len());
        let run = &rest[..run_end];
        if run.contains("--") || run.contains("/*") {
            return Err(FilterExprError::new(start, "comments are not supported"));
        }
        let mut op = run;
        if !op.contains(|c: char| KEEPS_TRAILING_SIGN.contains(c)) {
            while op.len() > 1 && op.ends_with(['+', '-']) {
                op = &op[..op.len() - 1];
            }
        }
        let tok = match op {
            "=" => Tok::Cmp(CmpOp::Eq),
            "<>" | "!=" => Tok::Cmp(CmpOp::Ne),
            "<" => Tok::Cmp(CmpOp::Lt),
            "<=" => Tok::Cmp(CmpOp::Le),
            ">" => Tok::Cmp(CmpOp::Gt),
            ">=" => Tok::Cmp(CmpOp::Ge),
            "-" => Tok::Minus,
            other => {
                return Err(FilterExprError::new(
                    start,
                    format!("the operator `{other}` is not supported"),
                ));
            }
        };
        self.at += op.len();
        self.push(start, tok);
        Ok(())
    }
}

fn starts_identifier(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || !c.is_ascii()
}

fn continues_identifier(c: char) -> bool {
    starts_identifier(c) || c.is_ascii_digit() || c == '$'
}

fn check_identifier_length(at: usize, name: &str) -> Result<(), FilterExprError> {
    if name.len() > MAX_IDENTIFIER {
        return Err(FilterExprError::new(
            at,
            format!("identifiers over {MAX_IDENTIFIER} bytes are not supported (Postgres truncates them)"),
        ));
    }
    Ok(())
}
