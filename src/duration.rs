//! Durations written the way Go's `time.ParseDuration` reads them (`8760h`, `90m`, `1h30m`,
//! `1.5h`), so flags and config values copied from Nebula mean the same thing here.

use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DurationError {
    #[error("invalid duration {0:?}: expected a number followed by a unit (ns, us, ms, s, m, h), e.g. 8760h or 1h30m")]
    Invalid(String),
    #[error("invalid duration {0:?}: negative durations are not allowed")]
    Negative(String),
    #[error("invalid duration {0:?}: too large")]
    Overflow(String),
}

/// Parses a Go duration. `0` (without a unit) is accepted, as in Go.
pub fn parse(input: &str) -> Result<Duration, DurationError> {
    let invalid = || DurationError::Invalid(input.to_string());
    let mut s = input.trim();
    if let Some(rest) = s.strip_prefix('-') {
        if rest.trim_start_matches(['0', '.']).chars().any(|c| c.is_ascii_digit()) {
            return Err(DurationError::Negative(input.to_string()));
        }
        s = rest;
    } else if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut total: u128 = 0; // nanoseconds
    while !s.is_empty() {
        let num_len = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(invalid)?;
        let (num, rest) = s.split_at(num_len);
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let (unit, rest) = rest.split_at(unit_len);
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(invalid()),
        };
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
            return Err(invalid());
        }
        let overflow = || DurationError::Overflow(input.to_string());
        let int: u128 = if int.is_empty() { 0 } else { int.parse().map_err(|_| overflow())? };
        let mut value = int.checked_mul(scale).ok_or_else(overflow)?;
        let mut place = scale;
        for digit in frac.bytes().take(18) {
            place /= 10;
            value += u128::from(digit - b'0') * place;
        }
        total = total.checked_add(value).ok_or_else(overflow)?;
        s = rest;
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| DurationError::Overflow(input.to_string()))?;
    Ok(Duration::new(secs, (total % 1_000_000_000) as u32))
}

/// Formats whole seconds the way Go prints a duration (`8760h0m0s`).
pub fn format(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}h{}m{}s", s / 3600, (s / 60) % 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        let h = 3600;
        let cases = [
            ("8760h", Duration::from_secs(8760 * h)),
            ("90m", Duration::from_secs(5400)),
            ("1h30m", Duration::from_secs(5400)),
            ("1.5h", Duration::from_secs(5400)),
            ("0", Duration::ZERO),
            ("10s", Duration::from_secs(10)),
            ("300ms", Duration::from_millis(300)),
            ("2us", Duration::from_micros(2)),
            ("1h0m0s", Duration::from_secs(h)),
            (".5s", Duration::from_millis(500)),
        ];
        for (input, want) in cases {
            assert_eq!(parse(input), Ok(want), "{input}");
        }
    }

    #[test]
    fn rejects_bad_durations() {
        for bad in ["", "h", "10", "10x", "1..5h", "abc", "5 h", "."] {
            assert!(matches!(parse(bad), Err(DurationError::Invalid(_))), "{bad:?}");
        }
        assert!(matches!(parse("-1h"), Err(DurationError::Negative(_))));
        assert!(matches!(parse("99999999999999999999999999999h"), Err(DurationError::Overflow(_))));
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format(Duration::from_secs(8760 * 3600)), "8760h0m0s");
        assert_eq!(format(Duration::from_secs(5401)), "1h30m1s");
    }
}
