//! Exact decimal numbers, ordered as Postgres orders `numeric`: every
//! integer and numeric value (and number literal) compares exactly, whatever
//! its size or scale, because Postgres compares them as `numeric` too.

use std::cmp::Ordering;

/// A number as Postgres's `numeric` holds it. Finite values are
/// normalised (no leading zeros in `int`, no trailing zeros in `frac`, zero
/// is not negative), so equal numbers are equal structurally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Num {
    NegInfinity,
    Finite {
        negative: bool,
        int: String,
        frac: String,
    },
    Infinity,
    /// Equal to itself and above every other value, as in Postgres.
    NaN,
}

impl Num {
    /// Reads an integer's or numeric's text form (`-12.50`, `NaN`,
    /// `Infinity`, `-Infinity`), or a number literal with its sign.
    pub(super) fn parse(text: &str) -> Option<Num> {
        match text {
            "NaN" => return Some(Num::NaN),
            "Infinity" => return Some(Num::Infinity),
            "-Infinity" => return Some(Num::NegInfinity),
            _ => {}
        }
        let (negative, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if int.len() + frac.len() == 0 || !all_digits(int) || !all_digits(frac) {
            return None;
        }
        let int = int.trim_start_matches('0');
        let frac = frac.trim_end_matches('0');
        let zero = int.is_empty() && frac.is_empty();
        Some(Num::Finite {
            negative: negative && !zero,
            int: int.to_owned(),
            frac: frac.to_owned(),
        })
    }

    /// Position of the kind of value in Postgres's order.
    fn rank(&self) -> u8 {
        match self {
            Num::NegInfinity => 0,
            Num::Finite { .. } => 1,
            Num::Infinity => 2,
            Num::NaN => 3,
        }
    }
}

impl Ord for Num {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (
                Num::Finite { negative: a_neg, int: a_int, frac: a_frac },
                Num::Finite { negative: b_neg, int: b_int, frac: b_frac },
            ) => match (a_neg, b_neg) {
                (false, true) => Ordering::Greater,
                (true, false) => Ordering::Less,
                (false, false) => magnitude(a_int, a_frac, b_int, b_frac),
                (true, true) => magnitude(b_int, b_frac, a_int, a_frac),
            },
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for Num {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Compares two normalised magnitudes: the longer integer part is larger,
/// then digit by digit (fractions without trailing zeros compare as text).
fn magnitude(a_int: &str, a_frac: &str, b_int: &str, b_frac: &str) -> Ordering {
    a_int.len().cmp(&b_int.len()).then_with(|| a_int.cmp(b_int)).then_with(|| a_frac.cmp(b_frac))
}
