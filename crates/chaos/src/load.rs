//! The load: a retrying client, as a careful application would write one.
//!
//! Every batch is sent until it gets an answer, with the same event ids each time (they are the
//! idempotency keys). UNAVAILABLE, connection errors, RESOURCE_EXHAUSTED and timeouts back off
//! and retry; an event answered ACCEPTED or DUPLICATE (a retry of an event an earlier, unanswered
//! attempt had already committed) is acknowledged, and its id is kept for the final check.
//!
//! Senders are paced so that the load spreads over the fault phase; when the pipeline falls
//! behind they send as fast as answers come back.
//!
//! Answers get lost too: the first attempt of one batch in [`ABANDON_ONE_IN`] (chosen from the
//! seed) is abandoned after a few milliseconds, as a client timeout would. The server may well
//! have committed it; the retry must then be answered DUPLICATE, and nothing stored twice.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::Utc;
use eye_proto::v1::{
    Event, EventStatus, SendEventsRequest, ingest_service_client::IngestServiceClient,
};
use rand::Rng;
use tonic::{
    Code,
    transport::{Channel, Endpoint},
};
use uuid::Uuid;

/// One event in this many breaks its schema (no `path`): the validator must quarantine it.
pub(crate) const INVALID_EVERY: usize = 100;
/// The first attempt of one batch in this many is abandoned (a client timeout, a lost answer).
const ABANDON_ONE_IN: u64 = 20;
/// How long an abandoned attempt is given: about as long as a commit takes.
const ABANDON_AFTER_MS: std::ops::Range<u64> = 1..10;
/// A request that takes longer is abandoned and retried.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The events to send, built before the clock starts.
pub(crate) struct Load {
    pub batches: Vec<SendEventsRequest>,
    /// Per batch, per event: whether the event breaks its schema.
    pub invalid: Vec<Vec<bool>>,
    pub ids: Vec<Vec<Uuid>>,
}

impl Load {
    /// `events` pageviews of the last hour, 20 per session, one in [`INVALID_EVERY`] invalid.
    pub(crate) fn new(events: usize, batch: usize) -> Self {
        let now = Utc::now();
        let mut session = Uuid::new_v4();
        let (mut batches, mut invalid, mut ids) = (Vec::new(), Vec::new(), Vec::new());
        let mut current = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..events {
            if i % 20 == 0 {
                session = Uuid::new_v4();
            }
            let bad = i % INVALID_EVERY == INVALID_EVERY / 2;
            let data_json = if bad {
                format!(r#"{{"host":"shop.example","n":{i}}}"#)
            } else {
                format!(r#"{{"host":"shop.example","path":"/p/{i}"}}"#)
            };
            let at = now - chrono::Duration::milliseconds((events - i) as i64 % 3_600_000);
            let id = Uuid::now_v7();
            current.0.push(Event {
                event_id: id.to_string(),
                session_id: session.to_string(),
                category: "page interaction".into(),
                name: "pageview".into(),
                data_json,
                timestamp: Some(prost_types::Timestamp {
                    seconds: at.timestamp(),
                    nanos: at.timestamp_subsec_nanos() as i32,
                }),
            });
            current.1.push(bad);
            current.2.push(id);
            if current.0.len() == batch || i + 1 == events {
                let (events, bad, batch_ids) = std::mem::take(&mut current);
                batches.push(SendEventsRequest { events, sent_at: None });
                invalid.push(bad);
                ids.push(batch_ids);
            }
        }
        Self { batches, invalid, ids }
    }
}

/// What the senders saw.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Acknowledged events that must end up in `events`.
    pub acked_valid: Vec<Uuid>,
    /// Acknowledged events that must end up in `event_errors`.
    pub acked_invalid: Vec<Uuid>,
    pub accepted: usize,
    /// DUPLICATE answers (each for an event an earlier, unanswered attempt had committed).
    pub duplicate: usize,
    /// DUPLICATE on an event's first send: its id was never sent before, so this is a bug.
    pub duplicate_first_send: usize,
    /// REJECTED (or unknown) answers: the events are well-formed, so this is a bug.
    pub rejected: usize,
    /// Answers whose event id is not the one sent at that position.
    pub misanswered: usize,
    /// Requests made, retries included.
    pub requests: usize,
    /// First attempts abandoned on purpose before their answer came.
    pub abandoned: usize,
    /// Failed attempts that were retried, by gRPC code.
    pub retries: BTreeMap<String, usize>,
    /// Batches refused with a code that retrying cannot fix, or not answered before the deadline.
    pub failed_batches: usize,
}

impl Outcome {
    fn merge(&mut self, other: Outcome) {
        self.acked_valid.extend(other.acked_valid);
        self.acked_invalid.extend(other.acked_invalid);
        self.accepted += other.accepted;
        self.duplicate += other.duplicate;
        self.duplicate_first_send += other.duplicate_first_send;
        self.rejected += other.rejected;
        self.misanswered += other.misanswered;
        self.requests += other.requests;
        self.abandoned += other.abandoned;
        for (code, n) in other.retries {
            *self.retries.entry(code).or_default() += n;
        }
        self.failed_batches += other.failed_batches;
    }
}

/// Codes a client retries: the server (or the way to it) is down, busy, or slow.
fn transient(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::Unknown
            | Code::Cancelled
            | Code::ResourceExhausted
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::Internal
    )
}

/// How to send the load.
pub(crate) struct Plan {
    /// The run's seed: which first attempts are abandoned.
    pub seed: u64,
    /// `http://127.0.0.1:<ingest port>`.
    pub endpoint: String,
    pub key: String,
    /// Concurrent senders.
    pub senders: usize,
    /// The batches are spread over this long.
    pub span: Duration,
    /// A batch still unanswered then is given up (and the run fails).
    pub deadline: Instant,
}

/// Sends every batch; counts acknowledged events in `acknowledged` as they come.
pub(crate) async fn run(
    load: Arc<Load>,
    plan: Plan,
    acknowledged: Arc<AtomicUsize>,
) -> anyhow::Result<Outcome> {
    let Plan { seed, endpoint, key, senders, span, deadline } = plan;
    let channel = Endpoint::from_shared(endpoint)?
        .connect_timeout(Duration::from_secs(1))
        .timeout(REQUEST_TIMEOUT)
        .connect_lazy();
    let interval = span / load.batches.len().max(1) as u32;
    let start = tokio::time::Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..senders {
        let client = IngestServiceClient::new(channel.clone());
        let (load, key, next, acknowledged) =
            (load.clone(), key.clone(), next.clone(), acknowledged.clone());
        tasks.spawn(async move {
            let mut outcome = Outcome::default();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= load.batches.len() {
                    return outcome;
                }
                tokio::time::sleep_until(start + interval * index as u32).await;
                let abandon = abandon_after(seed, index);
                let acked =
                    send_batch(&client, &load, index, &key, abandon, deadline, &mut outcome).await;
                acknowledged.fetch_add(acked, Ordering::Relaxed);
            }
        });
    }
    let mut outcome = Outcome::default();
    while let Some(done) = tasks.join_next().await {
        outcome.merge(done?);
    }
    Ok(outcome)
}

/// Whether (and after how long) to abandon the first attempt of batch `index`: a function of the
/// seed and the batch alone, so that a seed replays it.
fn abandon_after(seed: u64, index: usize) -> Option<Duration> {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(
        seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
    );
    (rng.random_range(0..ABANDON_ONE_IN) == 0)
        .then(|| Duration::from_millis(rng.random_range(ABANDON_AFTER_MS)))
}

/// Sends batch `index` until it is answered; returns how many events were acknowledged.
async fn send_batch(
    client: &IngestServiceClient<Channel>,
    load: &Load,
    index: usize,
    key: &str,
    mut abandon: Option<Duration>,
    deadline: Instant,
    outcome: &mut Outcome,
) -> usize {
    let batch = &load.batches[index];
    let mut backoff = FIRST_BACKOFF;
    let mut first_send = true;
    loop {
        outcome.requests += 1;
        let mut request = tonic::Request::new(batch.clone());
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {key}").parse().expect("ascii key"));
        let mut client = client.clone();
        let call = client.send_events(request);
        let answer = match abandon.take() {
            Some(after) => match tokio::time::timeout(after, call).await {
                Ok(answer) => answer,
                Err(_) => {
                    outcome.abandoned += 1;
                    first_send = false;
                    continue;
                }
            },
            None => call.await,
        };
        let status = match answer {
            Ok(response) => {
                return record(load, index, &response.into_inner().results, first_send, outcome);
            }
            Err(status) => status,
        };
        if !transient(status.code()) {
            eprintln!("batch {index} refused: {:?} {}", status.code(), status.message());
            outcome.failed_batches += 1;
            return 0;
        }
        *outcome.retries.entry(format!("{:?}", status.code())).or_default() += 1;
        if Instant::now() + backoff > deadline {
            eprintln!("batch {index} still unanswered at the deadline: {:?}", status.code());
            outcome.failed_batches += 1;
            return 0;
        }
        let jittered = backoff / 2 + backoff.mul_f64(rand::rng().random::<f64>() / 2.0);
        tokio::time::sleep(jittered).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
        first_send = false;
    }
}

fn record(
    load: &Load,
    index: usize,
    results: &[eye_proto::v1::EventResult],
    first_send: bool,
    outcome: &mut Outcome,
) -> usize {
    let (ids, invalid) = (&load.ids[index], &load.invalid[index]);
    if results.len() != ids.len() {
        outcome.misanswered += ids.len();
        return 0;
    }
    let mut acked = 0;
    for ((result, id), bad) in results.iter().zip(ids).zip(invalid) {
        if result.event_id != id.to_string() {
            outcome.misanswered += 1;
            continue;
        }
        match result.status() {
            EventStatus::Accepted => outcome.accepted += 1,
            EventStatus::Duplicate => {
                outcome.duplicate += 1;
                if first_send {
                    outcome.duplicate_first_send += 1;
                }
            }
            EventStatus::Rejected | EventStatus::Unspecified => {
                outcome.rejected += 1;
                continue;
            }
        }
        acked += 1;
        if *bad { &mut outcome.acked_invalid } else { &mut outcome.acked_valid }.push(*id);
    }
    acked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_hold_every_event_once_and_one_in_a_hundred_is_invalid() {
        let load = Load::new(1_050, 100);
        assert_eq!(load.batches.len(), 11);
        assert_eq!(load.batches[10].events.len(), 50);
        let ids: std::collections::HashSet<Uuid> = load.ids.iter().flatten().copied().collect();
        assert_eq!(ids.len(), 1_050);
        let invalid = load.invalid.iter().flatten().filter(|bad| **bad).count();
        assert_eq!(invalid, 10);
        for (batch, ids) in load.batches.iter().zip(&load.ids) {
            let sent: Vec<String> = batch.events.iter().map(|e| e.event_id.clone()).collect();
            let kept: Vec<String> = ids.iter().map(Uuid::to_string).collect();
            assert_eq!(sent, kept);
        }
    }

    #[test]
    fn abandoned_attempts_depend_on_the_seed_and_batch_only() {
        let picks = |seed| (0..2_000).map(|i| abandon_after(seed, i)).collect::<Vec<_>>();
        assert_eq!(picks(7), picks(7));
        assert_ne!(picks(7), picks(8));
        let abandoned = picks(7).iter().flatten().count();
        assert!((50..200).contains(&abandoned), "{abandoned} of 2000");
    }
}
