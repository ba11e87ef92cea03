//! The small part of Liquid that campaign webhook actions need: output tags
//! `{{ … }}` over `customer` and `event`, with a few filters. Pure: the
//! caller passes the person, the event and the time.
//!
//! What it takes (Customer.io docs, Send and receive data with webhooks, and
//! its Liquid syntax list):
//!
//! - `{{ customer.X }}`, `{{ event.X }}`, nested as `event.a.b`; a missing
//!   variable renders empty, as Liquid does.
//! - `{{ 'now' | date: '%s' }}`: `date` formats `'now'`, Unix seconds or an
//!   RFC 3339 string with strftime codes; anything else passes unchanged.
//! - `| default: 'x'`: `x` when the value is missing, `null`, `""` or
//!   `false` (Customer.io's syntax list shows `default`).
//! - `| json`: the value JSON-encoded (`null` when missing), so a template
//!   like `{"name": {{ customer.name | json }}}` stays valid JSON whatever
//!   the name holds. An emulator convenience: Customer.io's Liquid syntax
//!   list, as far as it was searched, shows no such filter (UNCONFIRMED).
//! - `{{-` and `-}}` trim the whitespace before or after the tag.
//!
//! Anything else (`{% … %}` tags, other filters, `[…]` lookups) is refused
//! when the campaign is registered, with a message naming it, rather than
//! rendered wrongly. An array or object printed without `| json` comes out
//! as JSON (Liquid would print it differently).

use std::fmt::Write as _;

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

/// A parsed template, ready to render any number of times.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Output(Output),
}

#[derive(Debug, Clone, PartialEq)]
struct Output {
    expr: Expr,
    filters: Vec<Filter>,
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Literal(Value),
    Path(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
enum Filter {
    Date(String),
    Default(Expr),
    Json,
}

/// What a template can refer to.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// The person's attributes (`id` and `email` among them when set).
    pub customer: &'a Map<String, Value>,
    /// The triggering event's properties (empty when none).
    pub event: &'a Map<String, Value>,
    /// The time `'now'` stands for, Unix seconds.
    pub now_secs: i64,
}

impl Template {
    /// Parses `source`, naming the first thing it cannot render.
    pub fn parse(source: &str) -> Result<Self, String> {
        if source.contains("{%") {
            return Err("Liquid tags ({% … %}) are not emulated; use {{ … }} outputs".to_owned());
        }
        let mut parts = Vec::new();
        let mut rest = source;
        let mut trim_next = false;
        while let Some(start) = rest.find("{{") {
            let Some(length) = rest[start..].find("}}") else {
                return Err(format!("unclosed {{{{ at {:?}", excerpt(&rest[start..])));
            };
            let mut inner = &rest[start + 2..start + length];
            let mut text = &rest[..start];
            if trim_next {
                text = text.trim_start();
            }
            if let Some(stripped) = inner.strip_prefix('-') {
                text = text.trim_end();
                inner = stripped;
            }
            trim_next = inner.ends_with('-');
            inner = inner.strip_suffix('-').unwrap_or(inner);
            push_text(&mut parts, text);
            parts.push(Part::Output(parse_output(inner)?));
            rest = &rest[start + length + 2..];
        }
        push_text(&mut parts, if trim_next { rest.trim_start() } else { rest });
        Ok(Self { parts })
    }

    /// The text with every output filled in from `scope`.
    pub fn render(&self, scope: &Scope<'_>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Output(output) => out.push_str(&to_text(&output.evaluate(scope))),
            }
        }
        out
    }
}

fn push_text(parts: &mut Vec<Part>, text: &str) {
    if !text.is_empty() {
        parts.push(Part::Text(text.to_owned()));
    }
}

fn excerpt(text: &str) -> String {
    text.chars().take(30).collect()
}

impl Output {
    fn evaluate(&self, scope: &Scope<'_>) -> Option<Value> {
        let mut value = self.expr.evaluate(scope);
        for filter in &self.filters {
            value = filter.apply(value, scope);
        }
        value
    }
}

impl Expr {
    fn evaluate(&self, scope: &Scope<'_>) -> Option<Value> {
        match self {
            Expr::Literal(value) => Some(value.clone()),
            Expr::Path(path) => {
                let (root, rest) = path.split_first()?;
                let map = match root.as_str() {
                    "customer" => scope.customer,
                    "event" => scope.event,
                    _ => return None,
                };
                let (first, rest) = rest.split_first()?;
                let mut value = map.get(first)?;
                for name in rest {
                    value = value.get(name)?;
                }
                Some(value.clone())
            }
        }
    }
}

impl Filter {
    fn apply(&self, value: Option<Value>, scope: &Scope<'_>) -> Option<Value> {
        match self {
            Filter::Json => Some(Value::String(value.unwrap_or(Value::Null).to_string())),
            Filter::Default(fallback) => match value {
                None | Some(Value::Null | Value::Bool(false)) => fallback.evaluate(scope),
                Some(Value::String(text)) if text.is_empty() => fallback.evaluate(scope),
                present => present,
            },
            Filter::Date(format) => {
                let time = value.as_ref().and_then(|value| as_time(value, scope.now_secs));
                match time {
                    Some(time) => format_time(time, format).map(Value::String).or(value),
                    None => value,
                }
            }
        }
    }
}

fn as_time(value: &Value, now_secs: i64) -> Option<DateTime<Utc>> {
    let secs = match value {
        Value::String(text) if text == "now" || text == "today" => now_secs,
        Value::String(text) => return DateTime::parse_from_rfc3339(text).ok().map(Into::into),
        Value::Number(number) => number.as_i64()?,
        _ => return None,
    };
    DateTime::from_timestamp(secs, 0)
}

/// strftime; `None` (never a panic) if the format is bad, though `parse`
/// already refused bad ones.
fn format_time(time: DateTime<Utc>, format: &str) -> Option<String> {
    let mut out = String::new();
    write!(out, "{}", time.format(format)).ok()?;
    Some(out)
}

/// How Liquid prints a value: nothing for `nil`, strings as they are.
fn to_text(value: &Option<Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Literal(Value),
    Path(Vec<String>),
    Pipe,
    Colon,
    Comma,
}

fn parse_output(inner: &str) -> Result<Output, String> {
    let tokens = tokenize(inner)?;
    let mut groups = tokens.split(|token| *token == Token::Pipe);
    let expr = match groups.next() {
        Some([Token::Literal(value)]) => Expr::Literal(value.clone()),
        Some([Token::Path(path)]) => Expr::Path(path.clone()),
        _ => return Err(format!("{{{{{inner}}}}}: expected one variable or literal")),
    };
    let filters = groups.map(|group| parse_filter(group, inner)).collect::<Result<_, _>>()?;
    Ok(Output { expr, filters })
}

fn parse_filter(tokens: &[Token], inner: &str) -> Result<Filter, String> {
    let name = match tokens.first() {
        Some(Token::Path(path)) if path.len() == 1 => path[0].as_str(),
        _ => return Err(format!("{{{{{inner}}}}}: expected a filter name after |")),
    };
    let argument = match tokens.get(1..) {
        Some([]) | None => None,
        Some([Token::Colon, Token::Literal(value)]) => Some(Expr::Literal(value.clone())),
        Some([Token::Colon, Token::Path(path)]) => Some(Expr::Path(path.clone())),
        Some(_) => {
            return Err(format!("{{{{{inner}}}}}: filter {name} takes at most one argument"))
        }
    };
    match (name, argument) {
        ("json", None) => Ok(Filter::Json),
        ("default", Some(fallback)) => Ok(Filter::Default(fallback)),
        ("date", Some(Expr::Literal(Value::String(format)))) => {
            if StrftimeItems::new(&format).any(|item| item == Item::Error) {
                return Err(format!("{{{{{inner}}}}}: {format:?} is not a strftime format"));
            }
            Ok(Filter::Date(format))
        }
        ("json" | "default" | "date", _) => {
            Err(format!("{{{{{inner}}}}}: wrong arguments for {name} (json takes none, default one value, date one format string)"))
        }
        _ => Err(format!(
            "{{{{{inner}}}}}: filter {name:?} is not emulated (only date, default and json)"
        )),
    }
}

fn tokenize(inner: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = inner.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '|' => tokens.push(Token::Pipe),
            ':' => tokens.push(Token::Colon),
            ',' => tokens.push(Token::Comma),
            '\'' | '"' => {
                let end = inner[start + 1..]
                    .find(c)
                    .ok_or_else(|| format!("{{{{{inner}}}}}: unclosed string"))?;
                tokens.push(Token::Literal(Value::String(
                    inner[start + 1..start + 1 + end].to_owned(),
                )));
                while chars.next_if(|(at, _)| *at <= start + 1 + end).is_some() {}
            }
            c if c.is_ascii_digit() || c == '-' => {
                let mut end = start + c.len_utf8();
                while let Some((at, d)) = chars.next_if(|(_, d)| d.is_ascii_digit() || *d == '.') {
                    end = at + d.len_utf8();
                }
                let number = serde_json::from_str::<serde_json::Number>(&inner[start..end])
                    .map_err(|_| {
                        format!("{{{{{inner}}}}}: {:?} is not a number", &inner[start..end])
                    })?;
                tokens.push(Token::Literal(Value::Number(number)));
            }
            c if c.is_alphabetic() || c == '_' => {
                let mut end = start + c.len_utf8();
                while let Some((at, d)) = chars.next_if(|(_, d)| is_name_char(*d)) {
                    end = at + d.len_utf8();
                }
                tokens.push(word(&inner[start..end]));
            }
            other => return Err(format!("{{{{{inner}}}}}: unexpected {other:?}")),
        }
    }
    Ok(tokens)
}

fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '?')
}

fn word(text: &str) -> Token {
    match text {
        "true" => Token::Literal(Value::Bool(true)),
        "false" => Token::Literal(Value::Bool(false)),
        "nil" | "null" => Token::Literal(Value::Null),
        _ => Token::Path(text.split('.').map(str::to_owned).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(source: &str, customer: Value, event: Value) -> String {
        let template = Template::parse(source).expect("parses");
        let customer = customer.as_object().cloned().unwrap_or_default();
        let event = event.as_object().cloned().unwrap_or_default();
        template.render(&Scope { customer: &customer, event: &event, now_secs: 1_700_000_000 })
    }

    #[test]
    fn customer_and_event_variables_render_and_missing_ones_are_empty() {
        let customer = json!({"id": "42", "email": "a@x.io", "plan": {"tier": "gold"}, "n": 3});
        let event = json!({"order": {"total": 9.5}});
        assert_eq!(
            render("{{customer.id}}/{{ customer.email }}/{{ customer.plan.tier }}/{{customer.n}}/{{ event.order.total }}", customer, event),
            "42/a@x.io/gold/3/9.5"
        );
        assert_eq!(
            render("[{{ customer.nope }}|{{ event.x.y }}|{{ other.id }}]", json!({}), json!({})),
            "[||]"
        );
    }

    #[test]
    fn now_formats_with_date_and_strftime() {
        assert_eq!(render("{{ 'now' | date: '%s' }}", json!({}), json!({})), "1700000000");
        assert_eq!(
            render("{{ \"now\" | date: \"%Y-%m-%d\" }}", json!({}), json!({})),
            "2023-11-14"
        );
        assert_eq!(render("{{ customer.at | date: '%Y' }}", json!({"at": 0}), json!({})), "1970");
        assert_eq!(
            render("{{ customer.at | date: '%s' }}", json!({"at": "soon"}), json!({})),
            "soon",
            "what is no time passes unchanged"
        );
    }

    #[test]
    fn json_filter_keeps_the_body_valid_json_whatever_the_value() {
        let customer = json!({"name": "Bob \"the\" \\ <b>\n", "tags": ["a"], "ok": true});
        let body = render(
            r#"{"name": {{ customer.name | json }}, "tags": {{ customer.tags | json }}, "ok": {{customer.ok | json}}, "gone": {{ customer.gone | json }}}"#,
            customer.clone(),
            json!({}),
        );
        let parsed: Value = serde_json::from_str(&body).expect("valid JSON");
        assert_eq!(
            parsed,
            json!({"name": customer["name"], "tags": ["a"], "ok": true, "gone": null})
        );
    }

    #[test]
    fn default_fills_missing_null_empty_and_false() {
        let customer = json!({"empty": "", "null": null, "no": false, "zero": 0});
        let source = "{{ customer.gone | default: 'x' }}{{ customer.empty | default: 'x' }}{{ customer.null | default: \"x\" }}{{ customer.no | default: 'x' }}{{ customer.zero | default: 'x' }}";
        assert_eq!(render(source, customer, json!({})), "xxxx0");
        assert_eq!(
            render("{{ customer.a | default: customer.b | json }}", json!({"b": "q\""}), json!({})),
            "\"q\\\"\""
        );
    }

    #[test]
    fn whitespace_control_trims_around_the_tag() {
        assert_eq!(render("a  {{- customer.id -}}  b", json!({"id": 1}), json!({})), "a1b");
        assert_eq!(render("a {{ customer.id }} b", json!({"id": 1}), json!({})), "a 1 b");
    }

    #[test]
    fn what_is_not_emulated_is_refused_with_a_reason() {
        let refused = |source: &str| Template::parse(source).expect_err(source);
        assert!(refused("{% if customer.id %}x{% endif %}").contains("tags"));
        assert!(refused("{{ customer.id | upcase }}").contains("\"upcase\" is not emulated"));
        assert!(refused("{{ customer.id ").contains("unclosed"));
        assert!(refused("{{ 'now' | date: '%Q' }}").contains("strftime"));
        assert!(refused("{{ 'now' | date }}").contains("wrong arguments"));
        assert!(refused("{{ customer.tags[0] }}").contains("unexpected"));
        assert!(refused("{{ }}").contains("expected one variable"));
        assert_eq!(Template::parse("no tags at all").map(|t| t.parts.len()), Ok(1));
    }
}
