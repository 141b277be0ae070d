//! Seconds since the Unix epoch, as certificates store them, with RFC 3339 display.
//!
//! Pure modules take time as a parameter; this is the value they take for wall-clock decisions
//! (certificate validity). Monotonic decisions (timers, conntrack) use `std::time::Instant`.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct UnixTime(pub i64);

impl UnixTime {
    pub fn now() -> Self {
        Self::from_system_time(SystemTime::now())
    }

    pub fn from_system_time(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => UnixTime(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
            Err(e) => UnixTime(-i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX)),
        }
    }

    pub fn seconds(self) -> i64 {
        self.0
    }

    /// `self + d`, saturating at the representable range.
    pub fn plus(self, d: Duration) -> Self {
        UnixTime(self.0.saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)))
    }

    pub fn add_secs(self, s: i64) -> Self {
        UnixTime(self.0.saturating_add(s))
    }

    /// RFC 3339 in UTC (`2026-11-21T20:59:02Z`), as `nebula-cert print -json` shows times.
    pub fn rfc3339(self) -> String {
        let (y, mo, d, h, mi, s) = self.civil();
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
    }

    /// Human form (`2026-11-21 20:59:02 UTC`).
    pub fn human(self) -> String {
        let (y, mo, d, h, mi, s) = self.civil();
        format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} UTC")
    }

    /// Proleptic Gregorian calendar fields (Howard Hinnant's days-from-civil inverse).
    fn civil(self) -> (i64, u32, u32, u32, u32, u32) {
        let secs = self.0;
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let y = yoe + era * 400 + i64::from(m <= 2);
        (y, m, d, (rem / 3600) as u32, ((rem / 60) % 60) as u32, (rem % 60) as u32)
    }
}

impl fmt::Display for UnixTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        let cases = [
            (0, "1970-01-01T00:00:00Z"),
            (1_795_294_742, "2026-11-21T20:59:02Z"),
            (2_110_654_741, "2036-11-18T20:59:01Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (-1, "1969-12-31T23:59:59Z"),
        ];
        for (secs, want) in cases {
            assert_eq!(UnixTime(secs).rfc3339(), want, "{secs}");
        }
        // Extremes must not panic.
        let _ = UnixTime(i64::MAX).rfc3339();
        let _ = UnixTime(i64::MIN).rfc3339();
    }
}
