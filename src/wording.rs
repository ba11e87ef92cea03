//! Counts in what ciosync prints: `1 row`, `2 rows`, never `1 rows`.

use std::fmt::Display;

/// `one` when `n` is 1, else `many`: the word (or verb) that agrees with
/// the count, as in `plural(n, "exists", "exist")`.
pub fn plural<'a>(n: impl Display, one: &'a str, many: &'a str) -> &'a str {
    if n.to_string() == "1" {
        one
    } else {
        many
    }
}

/// `n` and `noun` agreeing with it, the plural by an `s`: `count(1, "row")`
/// is `1 row`, `count(0, "held removal")` is `0 held removals`.
pub fn count(n: impl Display, noun: &str) -> String {
    count_of(n, noun, &format!("{noun}s"))
}

/// As [`count`], with the plural given: `count_of(2, "identify", "identifies")`.
pub fn count_of(n: impl Display, one: &str, many: &str) -> String {
    format!("{n} {}", plural(&n, one, many))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_is_singular_and_every_other_count_plural() {
        assert_eq!(count(1_u64, "row"), "1 row");
        assert_eq!(count(1_i64, "mapped column"), "1 mapped column");
        assert_eq!(count(1_usize, "dead letter"), "1 dead letter");
        for (n, said) in [(0_i64, "0 rows"), (2, "2 rows"), (11, "11 rows"), (21, "21 rows")] {
            assert_eq!(count(n, "row"), said);
        }
        assert_eq!(count(-1_i64, "row"), "-1 rows");
        assert_eq!(count_of(1, "identify", "identifies"), "1 identify");
        assert_eq!(count_of(2, "identify", "identifies"), "2 identifies");
        assert_eq!((plural(1, "is", "are"), plural(3, "is", "are")), ("is", "are"));
    }
}
