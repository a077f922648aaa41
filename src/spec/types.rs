//! Small value types of the pipeline format: durations, dates, months and cron schedules.
//! Each parses from a YAML string with a message that says what was expected.

use std::fmt;
use std::str::FromStr;

use chrono::{Datelike, NaiveDate};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Implements Deserialize through `FromStr` and Serialize through `Display`.
macro_rules! string_serde {
    ($t:ty) => {
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    };
}

/// A duration written like `500ms`, `30s`, `5m`, `1h`, `1h30m` or `2d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct Duration(pub(crate) std::time::Duration);

impl Duration {
    pub(crate) fn from_secs(s: u64) -> Self {
        Duration(std::time::Duration::from_secs(s))
    }
    pub(crate) fn std(self) -> std::time::Duration {
        self.0
    }
}

impl FromStr for Duration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid duration `{s}`: write it like `30s`, `5m`, `1h` or `1h30m`");
        let text = s.trim();
        if text.is_empty() {
            return Err(bad());
        }
        let mut total = std::time::Duration::ZERO;
        let mut rest = text;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            if digits == 0 {
                return Err(bad());
            }
            let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            rest = &rest[unit_len..];
            let part = match unit {
                "ms" => std::time::Duration::from_millis(n),
                "s" => std::time::Duration::from_secs(n),
                "m" => std::time::Duration::from_secs(n * 60),
                "h" => std::time::Duration::from_secs(n * 3600),
                "d" => std::time::Duration::from_secs(n * 86400),
                _ => return Err(bad()),
            };
            total += part;
        }
        Ok(Duration(total))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        if ms % 1000 != 0 {
            return write!(f, "{ms}ms");
        }
        let mut s = (ms / 1000) as u64;
        for (unit, size) in [("d", 86400), ("h", 3600), ("m", 60), ("s", 1)] {
            if s >= size {
                write!(f, "{}{unit}", s / size)?;
                s %= size;
            }
        }
        Ok(())
    }
}

string_serde!(Duration);

impl JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^([0-9]+(ms|s|m|h|d))+$",
            "description": "A duration like `30s`, `5m`, `1h` or `1h30m`.",
        })
    }
}

/// A calendar date written `YYYY-MM-DD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Date(pub(crate) NaiveDate);

impl FromStr for Date {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
            .map(Date)
            .map_err(|_| format!("invalid date `{s}`: expected a real date written YYYY-MM-DD"))
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%d"))
    }
}

string_serde!(Date);

impl JsonSchema for Date {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Date".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
            "description": "A date written YYYY-MM-DD.",
        })
    }
}

/// A calendar month written `YYYY-MM`: the key of a monthly partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Month {
    pub(crate) year: i32,
    pub(crate) month: u32,
}

const MONTH_NAMES: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

impl Month {
    pub(crate) fn first_day(self) -> NaiveDate {
        NaiveDate::from_ymd_opt(self.year, self.month, 1).unwrap_or_default()
    }
    pub(crate) fn next(self) -> Month {
        if self.month == 12 {
            Month {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Month {
                year: self.year,
                month: self.month + 1,
            }
        }
    }
    pub(crate) fn days(self) -> u32 {
        (self.next().first_day() - self.first_day()).num_days() as u32
    }
    /// The month a date falls in.
    pub(crate) fn of(date: NaiveDate) -> Month {
        Month {
            year: date.year(),
            month: date.month(),
        }
    }
    /// `2019-Oct`, as in the e-commerce dataset's file names.
    pub(crate) fn name(self) -> String {
        format!("{}-{}", self.year, MONTH_NAMES[(self.month - 1) as usize])
    }
}

impl FromStr for Month {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid month `{s}`: expected YYYY-MM, like `2019-10`");
        let (y, m) = s.trim().split_once('-').ok_or_else(bad)?;
        if y.len() != 4 || m.len() != 2 {
            return Err(bad());
        }
        let year: i32 = y.parse().map_err(|_| bad())?;
        let month: u32 = m.parse().map_err(|_| bad())?;
        if !(1..=12).contains(&month) {
            return Err(bad());
        }
        Ok(Month { year, month })
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

string_serde!(Month);

impl JsonSchema for Month {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Month".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[0-9]{4}-(0[1-9]|1[0-2])$",
            "description": "A month written YYYY-MM.",
        })
    }
}

/// A cron schedule: 5 fields (minute granularity) or 6 (with seconds first), or an alias such as
/// `@hourly`. Parsed with croner, the parser tokio-cron-scheduler uses.
#[derive(Clone)]
pub(crate) struct CronSchedule {
    pub(crate) expr: String,
    pub(crate) cron: croner::Cron,
}

impl CronSchedule {
    /// The first tick strictly after `t`.
    pub(crate) fn next_after(
        &self,
        t: chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        // Ticks fall on whole seconds; croner keeps the input's fraction, so drop it first.
        self.cron.find_next_occurrence(&whole_second(t), false).ok()
    }
    /// The last tick at or before `t`.
    pub(crate) fn prev_at_or_before(
        &self,
        t: chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        self.cron
            .find_previous_occurrence(&whole_second(t), true)
            .ok()
    }
    /// The last tick strictly before `t`.
    pub(crate) fn prev_before(
        &self,
        t: chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        self.cron
            .find_previous_occurrence(&whole_second(t), false)
            .ok()
    }
    /// The expression with a seconds field, as tokio-cron-scheduler requires.
    pub(crate) fn with_seconds(&self) -> String {
        let fields = self.expr.split_whitespace().count();
        if self.expr.trim_start().starts_with('@') || fields >= 6 {
            self.expr.clone()
        } else {
            format!("0 {}", self.expr.trim())
        }
    }
}

fn whole_second(t: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    use chrono::Timelike;
    t.with_nanosecond(0).unwrap_or(t)
}

impl fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CronSchedule({:?})", self.expr)
    }
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.expr == other.expr
    }
}

impl FromStr for CronSchedule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let fields = s.split_whitespace().count();
        if !s.trim_start().starts_with('@') && !(5..=6).contains(&fields) {
            return Err(format!(
                "invalid cron schedule `{s}`: expected 5 fields (minute hour day month weekday) or 6 with seconds first, found {fields}"
            ));
        }
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .build()
            .parse(s)
            .map_err(|e| format!("invalid cron schedule `{s}`: {e}"))?;
        Ok(CronSchedule {
            expr: s.trim().to_string(),
            cron,
        })
    }
}

impl fmt::Display for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expr)
    }
}

string_serde!(CronSchedule);

impl JsonSchema for CronSchedule {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "CronSchedule".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A cron expression: 5 fields (`0 */3 * * *`), 6 with seconds first, or an alias like `@hourly`.",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!("30s".parse::<Duration>().unwrap(), Duration::from_secs(30));
        assert_eq!(
            "1h30m".parse::<Duration>().unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(
            "250ms".parse::<Duration>().unwrap().0,
            std::time::Duration::from_millis(250)
        );
        assert!("30".parse::<Duration>().is_err());
        assert!("5 minutes".parse::<Duration>().is_err());
        assert!("s".parse::<Duration>().is_err());
        assert_eq!(Duration::from_secs(5400).to_string(), "1h30m");
    }

    #[test]
    fn months() {
        let m: Month = "2019-10".parse().unwrap();
        assert_eq!(m.name(), "2019-Oct");
        assert_eq!(m.days(), 31);
        assert_eq!(m.next().to_string(), "2019-11");
        assert_eq!(
            "2019-12".parse::<Month>().unwrap().next().to_string(),
            "2020-01"
        );
        assert_eq!("2020-02".parse::<Month>().unwrap().days(), 29);
        assert!("2019-13".parse::<Month>().is_err());
        assert!("2019-1".parse::<Month>().is_err());
    }

    #[test]
    fn cron() {
        let c: CronSchedule = "0 */3 * * *".parse().unwrap();
        assert_eq!(c.with_seconds(), "0 0 */3 * * *");
        let t = chrono::DateTime::parse_from_rfc3339("2019-10-01T01:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(
            c.next_after(t).unwrap().to_rfc3339(),
            "2019-10-01T03:00:00+00:00"
        );
        assert!("* * *".parse::<CronSchedule>().is_err());
        assert!("61 * * * *".parse::<CronSchedule>().is_err());
        assert!("* * * * * *".parse::<CronSchedule>().is_ok());
    }
}
