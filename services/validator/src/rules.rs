//! Timestamp rules, relative to when ingest received the event (not to when it is validated:
//! a backlog must not turn valid events into "future" or "too old" ones).

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use event_model::ErrorReason;
use eye_service::settings::Retention;

/// The earliest timestamp accepted at all.
pub fn floor() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).single().expect("valid date")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampRules {
    /// How far after its receipt an event may claim to have happened.
    pub future_tolerance: Duration,
    /// How long before its receipt an event may have happened; `None`: only the 2000 floor.
    pub max_age: Option<Duration>,
    /// The store's retention (`store.retention`): an event already past it when validated would
    /// be dropped with its partition, so it is quarantined instead of stored.
    pub retention: Option<Retention>,
}

impl TimestampRules {
    /// `Err` with the reason and a message if `occurred_at` breaks a rule.
    pub fn check(
        &self,
        occurred_at: DateTime<Utc>,
        received_at: DateTime<Utc>,
    ) -> Result<(), (ErrorReason, String)> {
        let tolerance =
            chrono::Duration::from_std(self.future_tolerance).unwrap_or(chrono::TimeDelta::MAX);
        if occurred_at > received_at + tolerance {
            let ahead = (occurred_at - received_at).num_milliseconds() as f64 / 1000.0;
            return Err((
                ErrorReason::TimestampInFuture,
                format!(
                    "timestamp {} is {ahead:.3} s after the event was received ({}); the tolerance is {} s",
                    occurred_at.to_rfc3339(),
                    received_at.to_rfc3339(),
                    self.future_tolerance.as_secs_f64()
                ),
            ));
        }
        if occurred_at < floor() {
            return Err((
                ErrorReason::TimestampTooOld,
                format!("timestamp {} is before 2000-01-01", occurred_at.to_rfc3339()),
            ));
        }
        if let Some(retention) = self.retention {
            let cutoff = retention.cutoff(Utc::now());
            if occurred_at < cutoff {
                return Err((
                    ErrorReason::TimestampTooOld,
                    format!(
                        "timestamp {} is before {}, the oldest time the store keeps (store.retention)",
                        occurred_at.to_rfc3339(),
                        cutoff.to_rfc3339()
                    ),
                ));
            }
        }
        if let Some(max_age) = self.max_age {
            let max_age = chrono::Duration::from_std(max_age).unwrap_or(chrono::TimeDelta::MAX);
            if received_at - occurred_at > max_age {
                return Err((
                    ErrorReason::TimestampTooOld,
                    format!(
                        "timestamp {} is older than the configured window of {} s",
                        occurred_at.to_rfc3339(),
                        max_age.num_seconds()
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339).unwrap().with_timezone(&Utc)
    }

    const RULES: TimestampRules = TimestampRules {
        future_tolerance: Duration::from_secs(60),
        max_age: None,
        retention: None,
    };

    #[test]
    fn future_is_relative_to_receipt_with_tolerance() {
        let received = at("2026-11-21T10:00:00Z");
        assert!(RULES.check(at("2026-11-21T10:01:00Z"), received).is_ok());
        let (reason, message) = RULES.check(at("2026-11-21T10:01:00.001Z"), received).unwrap_err();
        assert_eq!(reason, ErrorReason::TimestampInFuture);
        assert!(message.contains("tolerance is 60 s"), "{message}");
    }

    #[test]
    fn too_old_before_2000_or_outside_the_window() {
        let received = at("2026-11-21T10:00:00Z");
        assert!(RULES.check(at("2000-01-01T00:00:00Z"), received).is_ok());
        assert_eq!(
            RULES.check(at("1999-12-31T23:59:59Z"), received).unwrap_err().0,
            ErrorReason::TimestampTooOld
        );
        // Historical imports are fine by default...
        assert!(RULES.check(at("2003-05-01T00:00:00Z"), received).is_ok());
        // ...and refused once a window is configured.
        let windowed = TimestampRules { max_age: Some(Duration::from_secs(86_400)), ..RULES };
        let retained = TimestampRules { retention: Some(Retention::Days(30)), ..RULES };
        // The store's retention, counted from now: what it would drop is not stored.
        let now = Utc::now();
        let (reason, message) = retained.check(now - chrono::Duration::days(31), now).unwrap_err();
        assert_eq!(reason, ErrorReason::TimestampTooOld);
        assert!(message.contains("store.retention"), "{message}");
        assert!(retained.check(now - chrono::Duration::days(29), now).is_ok());
        assert!(windowed.check(at("2026-11-20T10:00:00Z"), received).is_ok());
        assert_eq!(
            windowed.check(at("2026-11-20T09:59:59Z"), received).unwrap_err().0,
            ErrorReason::TimestampTooOld
        );
    }
}
