//! Times and durations on the command line.
//!
//! An instant (`--from`, `--to`, `--since`) is RFC 3339 (`2026-01-31T12:00:00Z`, any offset), a
//! date (`2026-01-31`, midnight UTC), `now`, or a duration meaning that long ago (`15m`, `1h`,
//! `2d`, `1h30m`). A duration (`--window`) is one or more `<number><unit>` with units `s`, `m`,
//! `h`, `d` and `w`.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};

/// Parses a duration such as `30s`, `15m`, `1h`, `2d`, `1w` or `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("{text:?} is not a duration; use e.g. 30s, 15m, 1h, 2d, 1w or 1h30m");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(invalid)?;
        if digits == 0 {
            return Err(invalid());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        let unit = rest[digits..].chars().next().ok_or_else(invalid)?;
        let seconds = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(invalid()),
        };
        total = number
            .checked_mul(seconds)
            .and_then(|part| total.checked_add(part))
            .ok_or_else(|| format!("{text:?} is too long a duration"))?;
        rest = &rest[digits + unit.len_utf8()..];
    }
    Ok(Duration::from_secs(total))
}

/// Parses an instant relative to `now`: RFC 3339, a date, `now`, or a duration ago.
pub fn parse_instant_at(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if text == "now" {
        return Ok(now);
    }
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(date.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    let ago = parse_duration(text).map_err(|_| {
        format!(
            "{text:?} is not a time; use RFC 3339 (2026-01-31T12:00:00Z), a date (2026-01-31), \
             `now`, or how long ago (30s, 15m, 1h, 2d)"
        )
    })?;
    chrono::Duration::from_std(ago)
        .ok()
        .and_then(|ago| now.checked_sub_signed(ago))
        .ok_or_else(|| format!("{text:?} is too long ago"))
}

/// [`parse_instant_at`] relative to the current time (clap's value parser).
pub fn parse_instant(text: &str) -> Result<DateTime<Utc>, String> {
    parse_instant_at(text, Utc::now())
}

/// An instant for tables and JSON: RFC 3339 in UTC, with as many fractional digits as it has.
pub fn format_precise(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// An instant for tables: RFC 3339 in UTC, milliseconds.
pub fn format_millis(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A duration for humans, its two largest units: `0s`, `850ms`, `42s`, `3m12s`, `1h`, `2h5m`,
/// `3d4h`.
pub fn format_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    if seconds == 0 {
        let millis = duration.subsec_millis();
        return if millis == 0 { "0s".into() } else { format!("{millis}ms") };
    }
    let parts = [
        (seconds / 86_400, 'd'),
        (seconds / 3_600 % 24, 'h'),
        (seconds / 60 % 60, 'm'),
        (seconds % 60, 's'),
    ];
    let first = parts.iter().position(|(value, _)| *value > 0).expect("seconds > 0");
    let mut text = String::new();
    for (value, unit) in &parts[first..(first + 2).min(parts.len())] {
        if *value > 0 {
            text.push_str(&format!("{value}{unit}"));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-10T12:00:00Z").unwrap().with_timezone(&Utc)
    }

    fn at(text: &str) -> DateTime<Utc> {
        parse_instant_at(text, now()).unwrap()
    }

    #[test]
    fn durations_ago_are_relative_to_now() {
        assert_eq!(at("30s").to_rfc3339(), "2026-03-10T11:59:30+00:00");
        assert_eq!(at("15m").to_rfc3339(), "2026-03-10T11:45:00+00:00");
        assert_eq!(at("1h").to_rfc3339(), "2026-03-10T11:00:00+00:00");
        assert_eq!(at("2d").to_rfc3339(), "2026-03-08T12:00:00+00:00");
        assert_eq!(at("1w").to_rfc3339(), "2026-03-03T12:00:00+00:00");
        assert_eq!(at("1h30m").to_rfc3339(), "2026-03-10T10:30:00+00:00");
        assert_eq!(at("0s"), now());
        assert_eq!(at("now"), now());
    }

    #[test]
    fn absolute_times_are_rfc3339_or_dates() {
        assert_eq!(at("2026-01-31T13:00:00+01:00").to_rfc3339(), "2026-01-31T12:00:00+00:00");
        assert_eq!(at("2026-01-31T12:00:00.250Z").timestamp_subsec_millis(), 250);
        assert_eq!(at("2026-01-31").to_rfc3339(), "2026-01-31T00:00:00+00:00");
    }

    #[test]
    fn nonsense_is_refused_with_examples() {
        for bad in ["", "yesterday", "1", "h", "1x", "-1h", "1h-", "1.5h", "2026-13-01", "1 h"] {
            let error = parse_instant_at(bad, now()).unwrap_err();
            assert!(error.contains("RFC 3339") && error.contains("15m"), "{bad:?}: {error}");
        }
        assert!(parse_instant_at("99999999999w", now()).unwrap_err().contains("too long"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3_600));
        assert_eq!(parse_duration("1d12h").unwrap(), Duration::from_secs(36 * 3_600));
        assert_eq!(parse_duration(" 45s ").unwrap(), Duration::from_secs(45));
        assert!(parse_duration("").unwrap_err().contains("30s"));
        assert!(parse_duration("h1").is_err());
        assert!(parse_duration("18446744073709551615w").unwrap_err().contains("too long"));
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_millis(850)), "850ms");
        assert_eq!(format_duration(Duration::from_secs(42)), "42s");
        assert_eq!(format_duration(Duration::from_secs(192)), "3m12s");
        assert_eq!(format_duration(Duration::from_secs(3_600)), "1h");
        assert_eq!(format_duration(Duration::from_secs(3_601)), "1h");
        assert_eq!(format_duration(Duration::from_secs(7_500)), "2h5m");
        assert_eq!(format_duration(Duration::from_secs(86_400 + 59)), "1d");
        assert_eq!(format_duration(Duration::from_secs(3 * 86_400 + 4 * 3_600)), "3d4h");
    }
}
