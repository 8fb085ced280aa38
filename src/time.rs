//! UTC calendar time from the system clock, without a date crate: backup file names and
//! the `updated_at` values the writer binds (the same text as SQLite's CURRENT_TIMESTAMP).

use std::time::SystemTime;

/// A moment in UTC, to the second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct UtcTime {
    pub year: i64,
    pub month: i64,
    pub day: i64,
    pub hour: u64,
    pub minute: u64,
    pub second: u64,
}

impl UtcTime {
    pub fn at(at: SystemTime) -> UtcTime {
        let secs = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        UtcTime::from_unix(secs)
    }

    /// Days to civil date: Howard Hinnant's algorithm.
    pub fn from_unix(secs: u64) -> UtcTime {
        let days = (secs / 86_400) as i64;
        let rem = secs % 86_400;
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        UtcTime {
            year: yoe + era * 400 + i64::from(month <= 2),
            month,
            day,
            hour: rem / 3600,
            minute: rem / 60 % 60,
            second: rem % 60,
        }
    }

    /// `YYYY-MM-DD HH:MM:SS`, as SQLite's CURRENT_TIMESTAMP writes it.
    pub fn sql(&self) -> String {
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_seconds_become_utc_calendar_dates() {
        assert_eq!(UtcTime::from_unix(0).sql(), "1970-01-01 00:00:00");
        assert_eq!(UtcTime::from_unix(951_782_400).sql(), "2000-02-29 00:00:00");
        assert_eq!(
            UtcTime::from_unix(1_795_737_599).sql(),
            "2026-11-26 23:59:59"
        );
    }

    #[test]
    fn the_text_matches_sqlite_current_timestamp() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let (sqlite, unix): (String, i64) = conn
            .query_row(
                "SELECT CURRENT_TIMESTAMP, unixepoch(CURRENT_TIMESTAMP)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(UtcTime::from_unix(unix as u64).sql(), sqlite);
    }
}
