//! The retry policy, in one place (mirrored by the Python client's): which answers are worth
//! another attempt, how long to wait
//! (exponential backoff with full jitter, never shorter than the server's `retry-after`), and
//! when to give up.

use std::time::Duration;

use rand::Rng;
use tonic::{Code, Status};

/// How failed calls are retried.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// The first backoff ceiling; doubles with each further attempt.
    pub backoff_base: Duration,
    /// The largest backoff ceiling.
    pub backoff_max: Duration,
    /// Retries of one batch before its events count as failed.
    pub max_retries: u32,
    /// Longest time from a batch's first attempt to its last retry.
    pub budget: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            max_retries: 10,
            budget: Duration::from_secs(60),
        }
    }
}

/// What to do after a call failed as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Send the same batch again, no sooner than `at_least` (the server's hint, if any).
    Retry { at_least: Duration },
    /// The batch as a whole broke a limit: send its halves; a single event is rejected.
    Split,
    /// Retrying cannot help (a refused key, an unexpected answer): the events fail.
    Fail,
}

/// Reads a failed call's status.
pub(crate) fn verdict(status: &Status) -> Verdict {
    match status.code() {
        Code::Unavailable | Code::ResourceExhausted | Code::DeadlineExceeded | Code::Aborted => {
            Verdict::Retry { at_least: retry_after(status) }
        }
        // A connection that broke mid-call (the server killed, a proxy resetting the stream)
        // surfaces as UNKNOWN, INTERNAL or CANCELLED: the batch may or may not have been stored,
        // and resending it is safe because its ids make a repeat DUPLICATE.
        Code::Unknown | Code::Internal | Code::Cancelled => {
            Verdict::Retry { at_least: Duration::ZERO }
        }
        Code::InvalidArgument | Code::OutOfRange => Verdict::Split,
        _ => Verdict::Fail,
    }
}

/// The `retry-after` metadata (whole seconds), if the server sent it.
fn retry_after(status: &Status) -> Duration {
    status
        .metadata()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map_or(Duration::ZERO, |seconds| Duration::from_secs(seconds.min(300)))
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1 for the first): uniform in
    /// `[0, min(max, base * 2^(retry-1))]` ("full jitter"), but at least `at_least`.
    pub(crate) fn delay(&self, retry: u32, at_least: Duration, rng: &mut impl Rng) -> Duration {
        let exponent = retry.saturating_sub(1).min(30);
        let ceiling = self.backoff_base.saturating_mul(1 << exponent).min(self.backoff_max);
        rng.random_range(Duration::ZERO..=ceiling).max(at_least)
    }
}

#[cfg(test)]
mod tests {
    use tonic::metadata::MetadataMap;

    use super::*;

    #[test]
    fn answers_are_read_as_the_policy_says() {
        let mut metadata = MetadataMap::new();
        metadata.insert("retry-after", "2".parse().unwrap());
        let busy = Status::with_metadata(Code::ResourceExhausted, "backlog", metadata);
        assert_eq!(verdict(&busy), Verdict::Retry { at_least: Duration::from_secs(2) });
        assert_eq!(
            verdict(&Status::unavailable("down")),
            Verdict::Retry { at_least: Duration::ZERO }
        );
        assert_eq!(verdict(&Status::invalid_argument("too big")), Verdict::Split);
        assert_eq!(verdict(&Status::unauthenticated("no")), Verdict::Fail);
        assert_eq!(verdict(&Status::permission_denied("no")), Verdict::Fail);
        let broken = Verdict::Retry { at_least: Duration::ZERO };
        assert_eq!(verdict(&Status::unknown("h2 protocol error")), broken);
        assert_eq!(verdict(&Status::internal("stream reset")), broken);
        assert_eq!(verdict(&Status::unimplemented("no such method")), Verdict::Fail);
    }

    #[test]
    fn delays_are_jittered_below_the_ceiling_and_above_the_hint() {
        let policy = RetryPolicy::default();
        let mut rng = rand::rng();
        for retry in 1..20 {
            for _ in 0..50 {
                let delay = policy.delay(retry, Duration::ZERO, &mut rng);
                assert!(delay <= policy.backoff_max);
                assert!(delay <= policy.backoff_base * 2u32.pow((retry - 1).min(20)));
            }
        }
        let hinted = policy.delay(1, Duration::from_secs(1), &mut rng);
        assert!(hinted >= Duration::from_secs(1));
    }
}
