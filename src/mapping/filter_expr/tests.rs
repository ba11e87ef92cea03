use bytes::Bytes;

use super::num::Num;
use super::{FilterExpr, Truth, MAX_DEPTH, MAX_LEN};
use crate::change::{Datum, ReplicaIdentity, Row, Table, TableColumn, ValueKind};

/// A value not sent: an unchanged TOAST value.
const TOAST: &str = "<toast>";

fn table() -> Table {
    let column = |name: &str, type_oid: u32| TableColumn {
        name: name.to_owned(),
        type_oid,
        kind: crate::mapping::value::builtin_kind(type_oid).unwrap_or(ValueKind::Text),
    };
    Table {
        oid: 1,
        schema: "public".into(),
        name: "users".into(),
        columns: vec![
            column("id", 20),
            column("n", 1700),
            column("i", 23),
            column("s", 21),
            column("b", 16),
            column("b2", 16),
            column("t", 25),
            column("v", 1043),
            column("f", 701),
            column("ts", 1184),
            column("c", 90_001),
            column("Mixed", 23),
            column("user", 25),
            column("bio", 25),
            column("ch", 1042),
        ],
        replica_identity: ReplicaIdentity::Default,
    }
}

/// A row with the named values (text form; [`TOAST`] for an unchanged
/// TOAST value), NULL elsewhere.
fn row(cells: &[(&str, &str)]) -> Row {
    let table = table();
    let mut row = vec![Datum::Null; table.columns.len()];
    for (name, text) in cells {
        let index = table.column_index(name).expect("a column of the test table");
        row[index] = match *text {
            TOAST => Datum::UnchangedToast,
            text => Datum::Text(Bytes::copy_from_slice(text.as_bytes())),
        };
    }
    row
}

fn parse(text: &str) -> FilterExpr {
    FilterExpr::parse(text, &table()).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

fn eval(text: &str, cells: &[(&str, &str)]) -> Option<bool> {
    parse(text).eval(&row(cells))
}

fn truth(text: &str, cells: &[(&str, &str)]) -> Truth {
    parse(text).truth(&row(cells))
}

#[test]
fn columns_are_folded_quoted_and_listed_once_in_table_order() {
    let filter = parse(r#""Mixed" > 2 AND ID = 1 AND "id" <> 3 AND "user" = 'x'"#);
    assert_eq!(filter.columns(), ["id", "Mixed", "user"]);
    let error = FilterExpr::parse("mixed = 1", &table()).unwrap_err();
    assert!(error.problem.contains("no column `mixed` in public.users"), "{error}");
    let error = FilterExpr::parse(r#""ID" = 1"#, &table()).unwrap_err();
    assert!(error.problem.contains("no column `ID`"), "{error}");
}

#[test]
fn and_or_not_follow_three_valued_logic() {
    let cases = [
        ("NULL AND FALSE", Some(false)),
        ("FALSE AND NULL", Some(false)),
        ("NULL AND TRUE", None),
        ("NULL OR TRUE", Some(true)),
        ("NULL OR FALSE", None),
        ("NOT NULL", None),
        ("NOT b", None),
        ("b AND b2", None),
        ("b OR b2", Some(true)),
        ("NOT b2", Some(false)),
        ("NOT NOT b2", Some(true)),
    ];
    for (text, expected) in cases {
        assert_eq!(eval(text, &[("b2", "t")]), expected, "{text}");
    }
}

#[test]
fn precedence_is_postgres_precedence() {
    // NOT binds looser than `=`; AND tighter than OR; IS looser than `=`.
    assert_eq!(eval("NOT b = FALSE", &[("b", "f")]), Some(false));
    assert_eq!(eval("b2 OR b AND FALSE", &[("b2", "t"), ("b", "t")]), Some(true));
    assert_eq!(eval("(b2 OR b) AND FALSE", &[("b2", "t"), ("b", "t")]), Some(false));
    assert_eq!(eval("i = 1 IS TRUE", &[]), Some(false));
    assert_eq!(eval("i = 1 IS NULL", &[]), Some(true));
    assert_eq!(eval("NOT i IS NULL", &[]), Some(false));
    assert_eq!(eval("i IN (1) = TRUE", &[("i", "1")]), Some(true));
    assert_eq!(eval("b IS DISTINCT FROM i = 1", &[("i", "1"), ("b", "t")]), Some(false));
}

#[test]
fn in_and_not_in_follow_three_valued_logic() {
    let cases = [
        ("i IN (1, NULL)", "1", Some(true)),
        ("i IN (1, NULL)", "2", None),
        ("i NOT IN (1, NULL)", "1", Some(false)),
        ("i NOT IN (1, NULL)", "2", None),
        ("i NOT IN (1, 3)", "2", Some(true)),
        ("i IN (1, 2.0, -3)", "2", Some(true)),
        ("i IN (1, 2.5, -3)", "-3", Some(true)),
        ("i IN (1)", "NULL", None),
    ];
    for (text, i, expected) in cases {
        let cells: &[(&str, &str)] = if i == "NULL" { &[] } else { &[("i", i)] };
        assert_eq!(eval(text, cells), expected, "{text} with i = {i}");
    }
    assert_eq!(eval("t IN ('a', 'it''s')", &[("t", "it's")]), Some(true));
    assert_eq!(eval("b IN (TRUE)", &[("b", "f")]), Some(false));
}

#[test]
fn numbers_compare_exactly_as_decimals() {
    let cases = [
        ("n = 0.1", "0.1000", Some(true)),
        ("n = .1", "0.1", Some(true)),
        ("n = 0", "0.000", Some(true)),
        ("n = -0", "0", Some(true)),
        ("n > 99999999999999999999.5", "100000000000000000000", Some(true)),
        ("n < 99999999999999999999.5", "99999999999999999999.49999", Some(true)),
        ("n < -1.5", "-1.50001", Some(true)),
        ("n > -1.5", "-1.49", Some(true)),
        ("n < -10", "-9", Some(false)),
        ("n > 1000000", "NaN", Some(true)),
        ("n = 5", "NaN", Some(false)),
        ("n > 1", "Infinity", Some(true)),
        ("n < -1", "-Infinity", Some(true)),
        ("n = 0.30000000000000000001", "0.3", Some(false)),
        ("n >= 2.", "2", Some(true)),
    ];
    for (text, n, expected) in cases {
        assert_eq!(eval(text, &[("n", n)]), expected, "{text} with n = {n}");
    }
    assert_eq!(eval("n = n", &[("n", "NaN")]), Some(true));
    assert_eq!(eval("n > n", &[("n", "Infinity")]), Some(false));
    assert_eq!(eval("id = 9223372036854775807", &[("id", "9223372036854775807")]), Some(true));
    assert_eq!(eval("id < 9223372036854775808", &[("id", "9223372036854775807")]), Some(true));
    assert_eq!(eval("i < 2.5 AND s >= -32768", &[("i", "2"), ("s", "-32768")]), Some(true));
    assert_eq!(eval("i=-5", &[("i", "-5")]), Some(true));
    assert_eq!(eval("i<-4", &[("i", "-5")]), Some(true));
    assert_eq!(eval("i<>-5", &[("i", "-5")]), Some(false));
    assert_eq!(eval("i = n", &[("i", "3"), ("n", "3.0")]), Some(true));
}

#[test]
fn text_compares_bytes_and_booleans_order_false_first() {
    assert_eq!(eval("t = 'Zoë ''q'''", &[("t", "Zoë 'q'")]), Some(true));
    assert_eq!(eval("t = 'zoë'", &[("t", "Zoë")]), Some(false));
    assert_eq!(eval("'a' != v", &[("v", "a")]), Some(false));
    assert_eq!(eval("v = 'a '", &[("v", "a")]), Some(false));
    assert_eq!(eval("'a' = 'a'", &[]), Some(true));
    assert_eq!(eval("b < TRUE", &[("b", "f")]), Some(true));
    assert_eq!(eval("b >= b2", &[("b", "f"), ("b2", "t")]), Some(false));
    assert_eq!(eval("(i > 1) = (i > 2)", &[("i", "3")]), Some(true));
    assert_eq!(eval("b", &[("b", "t")]), Some(true));
}

#[test]
fn is_tests_are_never_null() {
    let cases = [
        ("b IS TRUE", None, Some(false)),
        ("b IS NOT TRUE", None, Some(true)),
        ("b IS FALSE", Some("f"), Some(true)),
        ("b IS NOT FALSE", None, Some(true)),
        ("b IS UNKNOWN", None, Some(true)),
        ("b IS NOT UNKNOWN", Some("t"), Some(true)),
        ("b IS NULL", None, Some(true)),
        ("b IS NOT NULL", Some("f"), Some(true)),
        ("b IS DISTINCT FROM NULL", None, Some(false)),
        ("b IS DISTINCT FROM TRUE", None, Some(true)),
        ("b IS NOT DISTINCT FROM FALSE", Some("f"), Some(true)),
        ("b IS DISTINCT FROM b2", Some("t"), Some(true)),
        ("NULL IS NOT DISTINCT FROM NULL", None, Some(true)),
    ];
    for (text, b, expected) in cases {
        let cells: Vec<(&str, &str)> = b.map(|b| ("b", b)).into_iter().collect();
        assert_eq!(eval(text, &cells), expected, "{text} with b = {b:?}");
    }
    // Any type may be tested for NULL.
    assert_eq!(eval("ts IS NULL AND f IS NOT NULL", &[("f", "1.5")]), Some(true));
    assert_eq!(eval("c IS NOT NULL", &[("c", "x")]), Some(true));
}

#[test]
fn a_value_not_sent_leaves_undecided_only_what_depends_on_it() {
    let cases = [
        ("bio = 'x'", Truth::Undecided),
        ("bio <> 'x'", Truth::Undecided),
        ("bio IN ('x')", Truth::Undecided),
        ("NOT bio IN ('x')", Truth::Undecided),
        ("bio IS NULL", Truth::False),
        ("bio IS NOT NULL", Truth::True),
        ("FALSE AND bio = 'x'", Truth::False),
        ("bio = 'x' OR TRUE", Truth::True),
        ("bio = 'x' AND NULL", Truth::Undecided),
        ("bio = NULL", Truth::Null),
        ("bio IN (NULL)", Truth::Null),
        ("bio IS DISTINCT FROM NULL", Truth::True),
        ("bio IS DISTINCT FROM 'x'", Truth::Undecided),
        ("(bio = 'x') IS NULL", Truth::False),
        ("(bio = 'x') IS UNKNOWN", Truth::False),
        ("(bio = 'x') IS TRUE", Truth::Undecided),
        ("(bio = 'x' AND NULL) IS NULL", Truth::Undecided),
        ("ts IS NULL", Truth::False),
        ("(bio = 'x' AND TRUE) IS NULL", Truth::False),
        ("((bio = 'x' AND NULL) AND TRUE) IS NULL", Truth::Undecided),
        ("((bio = 'x' AND NULL) = TRUE) IS NULL", Truth::Undecided),
        ("(bio = 'x' AND NULL) IS DISTINCT FROM NULL", Truth::Undecided),
    ];
    for (text, expected) in cases {
        assert_eq!(truth(text, &[("bio", TOAST), ("ts", TOAST)]), expected, "{text}");
    }
    assert_eq!(parse("bio = 'x'").eval(&row(&[("bio", TOAST)])), None);
    // A row shorter than the table: not known, not even whether NULL.
    assert_eq!(parse("bio IS NULL").truth(&Vec::new()), Truth::Undecided);
}

#[test]
fn what_is_outside_the_subset_is_refused_with_what_and_where() {
    let refused = [
        ("t < 'a'", "ordering text"),
        ("t >= 'a'", "ordering text"),
        ("t = v", "two text columns"),
        ("(t) IS DISTINCT FROM (v)", "two text columns"),
        (
            "f = 1.5",
            "comparing column `f` (a type the filter reads only with IS [NOT] NULL) is not",
        ),
        ("f IS DISTINCT FROM 1", "column `f`"),
        ("ts > '2020-01-01'", "comparing column `ts`"),
        ("c = 'x'", "comparing column `c`"),
        ("ch = 'x'", "comparing column `ch`"),
        ("n = '5'", "comparing column `n` (number) with a text literal"),
        ("b = 1", "comparing column `b` (boolean) with a number literal"),
        ("b = 't'", "comparing column `b` (boolean) with a text literal"),
        ("i IN ('1')", "comparing column `i`"),
        ("lower(t) = 'a'", "functions"),
        ("t::text = 'a'", "casts"),
        ("i + 1 = 2", "the operator `+`"),
        ("i = +1", "the operator `+`"),
        ("i - 1 = 2", "`-` (expected"),
        ("i = - i", "`-` other than before a number"),
        ("i !=- 1", "the operator `!=-`"),
        ("i => 1", "the operator `=>`"),
        ("t LIKE 'a%'", "`like`"),
        ("i BETWEEN 1 AND 2", "`between`"),
        ("i ISNULL", "`isnull`"),
        ("i = ANY('{1}')", "functions"),
        ("user = 'x'", "`user` is an SQL keyword"),
        ("order = 'x'", "`order` is an SQL keyword"),
        ("1e5 = i", "exponents"),
        ("i = 0x10", "exponents"),
        ("i = 1_000", "exponents"),
        ("i = 1.2.3", "exponents"),
        ("t = E'a'", "prefixed or typed string"),
        ("t = 'a\\b'", "backslash"),
        ("t = 'a", "unterminated string"),
        ("\"t = 'a'", "unterminated quoted identifier"),
        ("\"\" = 1", "empty quoted identifier"),
        ("i = 1 -- c", "comments"),
        ("i = 1 /* c */", "comments"),
        ("i", "the filter needs a boolean, not column `i` (number)"),
        ("t AND b", "AND needs a boolean, not column `t` (text)"),
        ("NOT 1", "NOT needs a boolean, not a number literal"),
        ("'t'", "the filter needs a boolean, not a text literal"),
        ("i IS TRUE", "IS TRUE/FALSE/UNKNOWN needs a boolean, not column `i`"),
        ("i = 1 = 2", "`=` (expected"),
        ("i NOT = 1", "unexpected `not`"),
        ("b AND AND b", "`and` where a value should be"),
        ("b IS NULL IS NULL", "a second IS test"),
        ("b IS NORMALIZED", "`normalized` (expected NULL"),
        ("users.i = 1", "qualified names"),
        ("i = $1", "parameters"),
        ("i IN (1, i)", "IN lists of other than literals"),
        ("i IN ()", "`)` (expected a column"),
        ("i IN 1", "`(` after IN"),
        ("i = ", "the filter ends"),
        ("", "the filter is empty"),
        ("  \n ", "the filter is empty"),
        ("(b", "the filter ends where `)` should be"),
        ("b)", "`)` (expected AND, OR"),
        ("i = 1; DROP TABLE users", "the character `;`"),
        ("t = 'a' COLLATE \"C\"", "`collate`"),
        ("EXISTS (SELECT 1)", "functions"),
        ("b\u{0b}", "control character"),
    ];
    let wrong: Vec<String> = refused
        .iter()
        .filter_map(|(text, problem)| match FilterExpr::parse(text, &table()) {
            Ok(parsed) => Some(format!("{text:?} was accepted: {parsed:?}")),
            Err(e) if !e.problem.contains(problem) => Some(format!("{text:?}: {e:?}")),
            Err(_) => None,
        })
        .collect();
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn errors_say_what_is_supported_and_never_quote_a_literal() {
    let error = FilterExpr::parse("t < 'secret@example.com'", &table()).unwrap_err();
    let text = error.to_string();
    assert!(!text.contains("secret"), "{text}");
    assert!(text.contains("IS [NOT] DISTINCT FROM") && text.contains("at byte 0"), "{text}");
    let error = FilterExpr::parse("t = 'a\0b'", &table()).unwrap_err();
    assert_eq!((error.problem.as_str(), error.at), ("NUL characters are not supported", 6));
    let error = FilterExpr::parse("\"x\0\" = 1", &table()).unwrap_err();
    assert_eq!((error.problem.as_str(), error.at), ("NUL characters are not supported", 2));
    let error = FilterExpr::parse("b AND 'secret' AND b", &table()).unwrap_err();
    assert!(!error.to_string().contains("secret"), "{error}");
    assert_eq!(error.at, 6);
}

#[test]
fn length_and_nesting_are_bounded() {
    let nested =
        |depth: usize, core: &str| format!("{}{core}{}", "(".repeat(depth), ")".repeat(depth));
    assert_eq!(eval(&nested(MAX_DEPTH, "b"), &[("b", "t")]), Some(true));
    let error = FilterExpr::parse(&nested(MAX_DEPTH + 1, "b"), &table()).unwrap_err();
    assert!(error.problem.contains("nesting deeper"), "{error}");
    assert!(FilterExpr::parse(&"(".repeat(MAX_LEN), &table()).is_err());
    let nots = format!("{}b", "NOT ".repeat(MAX_DEPTH));
    assert_eq!(eval(&nots, &[("b", "t")]), Some(true));
    let error = FilterExpr::parse(&format!("NOT {nots}"), &table()).unwrap_err();
    assert!(error.problem.contains("nesting deeper"), "{error}");
    let error = FilterExpr::parse(&"NOT ".repeat(MAX_LEN), &table()).unwrap_err();
    assert!(error.problem.contains(&format!("over {MAX_LEN} bytes")), "{error}");
    // Depth is nesting, not count: siblings do not add up.
    for sibling in ["NOT b", "(b)", "NOT (NOT b)"] {
        let siblings = vec![sibling; 2 * MAX_DEPTH].join(" OR ");
        assert!(FilterExpr::parse(&siblings, &table()).is_ok(), "{sibling}");
    }
    let exactly = format!("b{}", " ".repeat(MAX_LEN - 1));
    assert_eq!(eval(&exactly, &[("b", "t")]), Some(true));
    assert!(FilterExpr::parse(&format!("{exactly} "), &table()).is_err());
    let long = format!("b{}", " OR b".repeat((MAX_LEN - 1) / 5));
    assert_eq!(eval(&long, &[("b", "t")]), Some(true));
    let error = FilterExpr::parse(&format!("\"{}\" = 1", "x".repeat(64)), &table()).unwrap_err();
    assert!(error.problem.contains("over 63 bytes"), "{error}");
    let error = FilterExpr::parse(&format!("{} = 1", "x".repeat(63)), &table()).unwrap_err();
    assert!(error.problem.starts_with("no column"), "{error}");
}

#[test]
fn a_value_that_does_not_parse_as_its_type_is_undecided() {
    for n in ["abc", "1a", "a1", ".", "-", "1.2.3", "1e5", ""] {
        assert_eq!(truth("n = 1 OR n <> 1", &[("n", n)]), Truth::Undecided, "{n:?}");
        assert_eq!(truth("n IS NULL", &[("n", n)]), Truth::False, "{n:?}");
    }
    assert_eq!(truth("b OR NOT b", &[("b", "true")]), Truth::Undecided);
}

#[test]
fn numbers_order_as_postgres_numerics() {
    let order = ["-Infinity", "-10", "-9.99", "-0.5", "0", "0.05", "0.5", "1", "10", "Infinity"];
    let nums: Vec<Num> = order.iter().map(|n| Num::parse(n).unwrap()).collect();
    assert!(nums.windows(2).all(|w| w[0] < w[1]), "{nums:?}");
    let nan = Num::parse("NaN").unwrap();
    assert!(nums.iter().all(|n| *n < nan) && nan == Num::parse("NaN").unwrap());
    assert_eq!(Num::parse("-0.000"), Num::parse("0"));
    assert_eq!(Num::parse("007.100"), Num::parse("7.1"));
}
