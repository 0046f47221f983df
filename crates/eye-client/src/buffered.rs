//! [`EyeClient`]: the buffered, batching, retrying client an application embeds.
//!
//! `track` gives the event its id (a UUIDv7) at once and queues it; a background task sends
//! batches (at `batch_events`, at `batch_bytes`, or `linger` after the oldest queued event),
//! up to `max_in_flight` at a time, and retries what is safe to retry with the same ids, so a
//! retry answered DUPLICATE counts as delivered. Every tracked event ends in exactly one of
//! accepted, duplicate, rejected, dropped or failed, and [`Stats`] says how many of each.

use std::{
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use eye_proto::v1::{self as pb, EventStatus};
use prost::Message;
use secrecy::SecretString;
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch},
    task::{JoinHandle, JoinSet},
};
use uuid::Uuid;

use crate::{
    connection::{ConnectError, ConnectOptions, Connection},
    ingest::{Client, EncodedRequest, to_timestamp},
    retry::{RetryPolicy, Verdict, verdict},
    spool::{Spool, SpoolError},
};

/// What a full queue does to `track`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// `track` waits for room (back-pressure).
    #[default]
    Block,
    /// `track` drops the new event, counts it (`dropped`) and returns [`TrackError::QueueFull`].
    Drop,
}

/// How an [`EyeClient`] batches, bounds, retries and (optionally) spools. Defaults in
/// [`Config::new`].
#[derive(Clone)]
pub struct Config {
    /// The ingest endpoint, e.g. `http://127.0.0.1:50051` (`https://` for TLS).
    pub endpoint: String,
    pub api_key: SecretString,
    /// Send when this many events are queued (ingest takes at most 1,000 per call).
    pub batch_events: usize,
    /// ... or when a batch would pass this many encoded bytes (ingest takes at most 4 MiB).
    pub batch_bytes: usize,
    /// ... or this long after the oldest queued event was tracked.
    pub linger: Duration,
    /// Most events tracked but not yet answered (queued and in flight).
    pub max_queue_events: usize,
    /// Most encoded bytes tracked but not yet answered.
    pub max_queue_bytes: usize,
    pub overflow: Overflow,
    /// Batches sent at once.
    pub max_in_flight: usize,
    pub retry: RetryPolicy,
    pub connect: ConnectOptions,
    /// Spool tracked events to this directory (fsynced before `track` returns), so that they
    /// survive the process; `None`: memory only.
    pub spool_dir: Option<PathBuf>,
    /// Most bytes the spool may hold; when full it acts as `overflow` says.
    pub spool_max_bytes: u64,
    /// The session of events tracked without one; `None`: one random session per client.
    pub session_id: Option<Uuid>,
    /// Called with every event's outcome (from the client's tasks: keep it quick).
    pub on_outcome: Option<OutcomeCallback>,
}

/// Never shows the key.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("endpoint", &self.endpoint)
            .field("batch_events", &self.batch_events)
            .field("batch_bytes", &self.batch_bytes)
            .field("linger", &self.linger)
            .field("max_queue_events", &self.max_queue_events)
            .field("max_queue_bytes", &self.max_queue_bytes)
            .field("overflow", &self.overflow)
            .field("max_in_flight", &self.max_in_flight)
            .field("retry", &self.retry)
            .field("spool_dir", &self.spool_dir)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// The defaults: batches of 500 events / 1 MiB / 200 ms, a queue of 100,000 events or
    /// 64 MiB that blocks `track` when full, 4 batches in flight, up to 10 retries within 60 s,
    /// a 10 s deadline per call, no spool (1 GiB when one is set).
    pub fn new(endpoint: impl Into<String>, api_key: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            api_key: SecretString::from(api_key.into()),
            batch_events: 500,
            batch_bytes: 1024 * 1024,
            linger: Duration::from_millis(200),
            max_queue_events: 100_000,
            max_queue_bytes: 64 * 1024 * 1024,
            overflow: Overflow::Block,
            max_in_flight: 4,
            retry: RetryPolicy::default(),
            connect: ConnectOptions::default(),
            spool_dir: None,
            spool_max_bytes: 1024 * 1024 * 1024,
            session_id: None,
            on_outcome: None,
        }
    }
}

/// A callback receiving every event's outcome.
pub type OutcomeCallback = Arc<dyn Fn(&Outcome) + Send + Sync>;

/// What became of one tracked event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub event_id: Uuid,
    pub kind: OutcomeKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutcomeKind {
    /// Stored (durable) for the first time.
    Accepted,
    /// Already stored: a retry, or an id sent before. Delivered all the same.
    Duplicate,
    /// Refused by the server with this reason (`invalid_session_id: ...`); never retried.
    Rejected(String),
    /// Never sent: the queue (or spool) was full under [`Overflow::Drop`].
    Dropped(String),
    /// Delivery was not confirmed (a refused key, retries exhausted, shutdown): the server may
    /// or may not have it. With a spool, it is sent again by the next client of that spool.
    Failed(String),
}

/// The client's counters. At any moment `tracked == accepted + duplicate + rejected + dropped
/// + failed + queued`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub tracked: u64,
    /// Events included in calls, once per attempt.
    pub sent: u64,
    pub accepted: u64,
    pub duplicate: u64,
    pub rejected: u64,
    pub dropped: u64,
    pub failed: u64,
    /// Calls that were retries.
    pub retries: u64,
    /// Events written to the spool.
    pub spooled: u64,
    /// Events read back from the spool of an earlier run, and sent again.
    pub recovered: u64,
    /// Events tracked (or recovered) and not answered yet.
    pub queued: u64,
}

/// Why `track` did not take an event.
#[derive(Debug, thiserror::Error)]
pub enum TrackError {
    #[error("the client is shut down")]
    Closed,
    #[error("the queue is full; the event was dropped (counted)")]
    QueueFull,
    #[error("the event's data is not valid JSON: {0}")]
    InvalidData(String),
    #[error("the spool is full; the event was dropped (counted)")]
    SpoolFull,
    #[error("cannot spool the event: {0}")]
    Spool(#[source] std::io::Error),
}

/// An event to track, with everything optional but its type and payload.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub category: String,
    pub name: String,
    /// The payload, a JSON object as text.
    pub data_json: String,
    /// `None`: the client's session.
    pub session_id: Option<Uuid>,
    /// `None`: now.
    pub timestamp: Option<DateTime<Utc>>,
    /// `None`: a fresh UUIDv7. Give your own to make retries across restarts idempotent.
    pub event_id: Option<Uuid>,
}

impl NewEvent {
    pub fn new(
        category: impl Into<String>,
        name: impl Into<String>,
        data: &serde_json::Value,
    ) -> Self {
        Self {
            category: category.into(),
            name: name.into(),
            data_json: data.to_string(),
            session_id: None,
            timestamp: None,
            event_id: None,
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    tracked: AtomicU64,
    sent: AtomicU64,
    accepted: AtomicU64,
    duplicate: AtomicU64,
    rejected: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    retries: AtomicU64,
    spooled: AtomicU64,
    recovered: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// One queued event, encoded once (`eye.v1.Event`): every attempt sends these bytes.
#[derive(Debug)]
struct Item {
    encoded: bytes::Bytes,
    id: Uuid,
    size: usize,
    /// The spool segment holding it.
    segment: Option<u64>,
}

enum Command {
    Item(Item),
    Flush(oneshot::Sender<()>),
}

struct Shared {
    config: Config,
    counters: Counters,
    queue_events: Arc<Semaphore>,
    /// Units of [`BYTE_UNIT`] bytes.
    queue_bytes: Arc<Semaphore>,
    spool: Option<Spool>,
    /// Set when the shutdown grace is over: retries stop and what is left fails.
    give_up: watch::Sender<bool>,
    /// One "the key was refused" log line per client, not one per batch.
    refusal_logged: AtomicBool,
}

/// Queue byte accounting granularity.
const BYTE_UNIT: usize = 1024;

fn byte_units(size: usize) -> u32 {
    size.div_ceil(BYTE_UNIT).max(1).min(u32::MAX as usize) as u32
}

impl Shared {
    fn stats(&self) -> Stats {
        let c = &self.counters;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let tracked = get(&c.tracked) + get(&c.recovered);
        let settled = get(&c.accepted)
            + get(&c.duplicate)
            + get(&c.rejected)
            + get(&c.dropped)
            + get(&c.failed);
        Stats {
            tracked: get(&c.tracked),
            sent: get(&c.sent),
            accepted: get(&c.accepted),
            duplicate: get(&c.duplicate),
            rejected: get(&c.rejected),
            dropped: get(&c.dropped),
            failed: get(&c.failed),
            retries: get(&c.retries),
            spooled: get(&c.spooled),
            recovered: get(&c.recovered),
            queued: tracked.saturating_sub(settled),
        }
    }

    fn report(&self, event_id: Uuid, kind: OutcomeKind) {
        if let Some(callback) = &self.config.on_outcome {
            callback(&Outcome { event_id, kind });
        }
    }

    /// The end of one event: counted, forgotten by the spool (unless it failed), its room in
    /// the queue given back.
    fn settle(&self, item: &Item, kind: OutcomeKind) {
        let c = &self.counters;
        match &kind {
            OutcomeKind::Accepted => add(&c.accepted, 1),
            OutcomeKind::Duplicate => add(&c.duplicate, 1),
            OutcomeKind::Rejected(_) => add(&c.rejected, 1),
            OutcomeKind::Dropped(_) => add(&c.dropped, 1),
            OutcomeKind::Failed(_) => add(&c.failed, 1),
        }
        if let (Some(spool), Some(segment)) = (&self.spool, item.segment)
            && !matches!(kind, OutcomeKind::Failed(_))
        {
            spool.answered(segment);
        }
        self.queue_events.add_permits(1);
        self.queue_bytes.add_permits(byte_units(item.size) as usize);
        self.report(item.id, kind);
    }
}

/// The buffered client. Share it (`Arc<EyeClient>`) between tasks; end it with
/// [`shutdown`](Self::shutdown).
pub struct EyeClient {
    shared: Arc<Shared>,
    commands: Mutex<Option<mpsc::UnboundedSender<Command>>>,
    task: Mutex<Option<JoinHandle<()>>>,
    session_id: Uuid,
}

impl std::fmt::Debug for EyeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EyeClient")
            .field("endpoint", &self.shared.config.endpoint)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl EyeClient {
    /// Starts a client (inside a tokio runtime). It connects lazily: a server that is down now
    /// is retried like any other failure. With a spool, the events an earlier run left there
    /// are sent first, with their ids.
    pub fn start(config: Config) -> Result<Self, StartError> {
        let connection = Connection::lazy(&config.endpoint, &config.api_key, &config.connect)?;
        let (spool, recovered) = match &config.spool_dir {
            Some(dir) => {
                let (spool, recovered) = Spool::open(dir, config.spool_max_bytes)
                    .map_err(|source| StartError::Spool { dir: dir.clone(), source })?;
                (Some(spool), recovered)
            }
            None => (None, Vec::new()),
        };
        let session_id = config.session_id.unwrap_or_else(Uuid::new_v4);
        let shared = Arc::new(Shared {
            queue_events: Arc::new(Semaphore::new(config.max_queue_events.max(1))),
            queue_bytes: Arc::new(Semaphore::new(
                (config.max_queue_bytes / BYTE_UNIT).clamp(1, Semaphore::MAX_PERMITS),
            )),
            counters: Counters::default(),
            spool,
            give_up: watch::channel(false).0,
            refusal_logged: AtomicBool::new(false),
            config,
        });
        let recovered: Vec<Item> = recovered
            .into_iter()
            .map(|(event, segment)| {
                let encoded = bytes::Bytes::from(event.encode_to_vec());
                Item {
                    id: Uuid::parse_str(&event.event_id).unwrap_or_default(),
                    size: encoded.len(),
                    encoded,
                    segment: Some(segment),
                }
            })
            .collect();
        if !recovered.is_empty() {
            tracing::info!(events = recovered.len(), "sending events left in the spool");
        }
        add(&shared.counters.recovered, recovered.len() as u64);
        let (commands, receiver) = mpsc::unbounded_channel();
        let client = Client::from_connection(connection);
        let task = tokio::spawn(send_loop(shared.clone(), client, receiver, recovered));
        Ok(Self {
            shared,
            commands: Mutex::new(Some(commands)),
            task: Mutex::new(Some(task)),
            session_id,
        })
    }

    /// The session of events tracked without one.
    pub fn session_id(&self) -> Uuid {
        self.session_id
    }

    /// Tracks an event of `category`/`name` with payload `data` (a JSON object) in the client's
    /// session, happening now; returns its id.
    pub async fn track(
        &self,
        category: &str,
        name: &str,
        data: &serde_json::Value,
    ) -> Result<Uuid, TrackError> {
        self.track_event(NewEvent::new(category, name, data)).await
    }

    /// Tracks `event`; returns its id once the event is queued (and, with a spool, on disk).
    pub async fn track_event(&self, event: NewEvent) -> Result<Uuid, TrackError> {
        if self.commands.lock().expect("commands").is_none() {
            return Err(TrackError::Closed);
        }
        if !event.data_json.trim_start().starts_with('{') {
            return Err(TrackError::InvalidData("the payload must be a JSON object".into()));
        }
        let id = event.event_id.unwrap_or_else(Uuid::now_v7);
        let wire = pb::Event {
            event_id: id.to_string(),
            session_id: event.session_id.unwrap_or(self.session_id).to_string(),
            category: event.category,
            name: event.name,
            data_json: event.data_json,
            timestamp: Some(to_timestamp(event.timestamp.unwrap_or_else(Utc::now))),
        };
        let encoded = bytes::Bytes::from(wire.encode_to_vec());
        let size = encoded.len();
        let shared = &self.shared;
        let block = shared.config.overflow == Overflow::Block;
        let permits = match acquire(shared, size, block).await {
            Some(permits) => permits,
            None => return Err(self.drop_event(id, TrackError::QueueFull)),
        };
        let segment = match &shared.spool {
            None => None,
            Some(spool) => match spool.append(&encoded, block).await {
                Ok(segment) => Some(segment),
                Err(SpoolError::Full { .. }) => {
                    return Err(self.drop_event(id, TrackError::SpoolFull));
                }
                Err(SpoolError::Io(error)) => return Err(TrackError::Spool(error)),
                Err(SpoolError::Closed) => return Err(TrackError::Closed),
            },
        };
        // The room is given back when the event is settled, not when this permit drops.
        permits.0.forget();
        permits.1.forget();
        add(&shared.counters.tracked, 1);
        if segment.is_some() {
            add(&shared.counters.spooled, 1);
        }
        let item = Item { encoded, id, size, segment };
        let sent = self
            .commands
            .lock()
            .expect("commands")
            .as_ref()
            .is_some_and(|commands| commands.send(Command::Item(item)).is_ok());
        match sent {
            true => Ok(id),
            false => {
                // Shut down meanwhile: the event was counted; it fails (and stays spooled).
                add(&shared.counters.failed, 1);
                shared.report(id, OutcomeKind::Failed("the client shut down".into()));
                Err(TrackError::Closed)
            }
        }
    }

    fn drop_event(&self, id: Uuid, error: TrackError) -> TrackError {
        let counters = &self.shared.counters;
        add(&counters.tracked, 1);
        let dropped = counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if dropped == 1 || dropped.is_multiple_of(1_000) {
            tracing::warn!(dropped, "eye client queue full; dropping events");
        }
        self.shared.report(id, OutcomeKind::Dropped(error.to_string()));
        error
    }

    /// Returns once everything tracked before the call has an outcome.
    pub async fn flush(&self) -> Result<(), TrackError> {
        let (reply, done) = oneshot::channel();
        {
            let commands = self.commands.lock().expect("commands");
            let commands = commands.as_ref().ok_or(TrackError::Closed)?;
            commands.send(Command::Flush(reply)).map_err(|_| TrackError::Closed)?;
        }
        done.await.map_err(|_| TrackError::Closed)
    }

    /// The counters now.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Stops taking events, sends everything queued within `grace` (retries included), then
    /// stops; what is still unanswered then counts as failed (and stays in the spool). Returns
    /// the final counters.
    pub async fn shutdown(self, grace: Duration) -> Stats {
        self.commands.lock().expect("commands").take();
        let task = self.task.lock().expect("task").take();
        if let Some(mut task) = task
            && tokio::time::timeout(grace, &mut task).await.is_err()
        {
            {
                let _ = self.shared.give_up.send(true);
                // Retries stop at once now; a call on the wire ends by its deadline at most.
                let bound = self.shared.config.connect.timeout.unwrap_or(Duration::from_secs(10));
                if tokio::time::timeout(bound, &mut task).await.is_err() {
                    task.abort();
                }
            }
        }
        // Whatever did not settle (a call aborted on the wire) fails, counted.
        let left = self.shared.stats().queued;
        if left > 0 {
            add(&self.shared.counters.failed, left);
        }
        if let Some(spool) = &self.shared.spool {
            spool.close();
        }
        let stats = self.shared.stats();
        tracing::info!(
            tracked = stats.tracked,
            accepted = stats.accepted,
            duplicate = stats.duplicate,
            rejected = stats.rejected,
            dropped = stats.dropped,
            failed = stats.failed,
            retries = stats.retries,
            "eye client shut down"
        );
        stats
    }
}

/// Dropping a client that was not shut down: a warning, and a best effort (the background task
/// goes on sending what is queued for as long as the runtime runs).
impl Drop for EyeClient {
    fn drop(&mut self) {
        let open = self.commands.lock().map(|mut c| c.take().is_some()).unwrap_or(false);
        if open {
            let queued = self.shared.stats().queued;
            if queued > 0 {
                tracing::warn!(
                    queued,
                    "EyeClient dropped without shutdown(); sending what is queued while the \
                     runtime lasts (call shutdown to wait for it)"
                );
            }
        }
    }
}

/// Why a client could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("cannot open the spool {dir}: {source}", dir = dir.display())]
    Spool { dir: PathBuf, source: std::io::Error },
}

/// Room in the queue for one event of `size` bytes: waits (`block`) or gives up.
async fn acquire(
    shared: &Shared,
    size: usize,
    block: bool,
) -> Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)> {
    let units = byte_units(size);
    if block {
        let events = shared.queue_events.clone().acquire_owned().await.ok()?;
        let bytes = shared.queue_bytes.clone().acquire_many_owned(units).await.ok()?;
        Some((events, bytes))
    } else {
        let events = shared.queue_events.clone().try_acquire_owned().ok()?;
        let bytes = shared.queue_bytes.clone().try_acquire_many_owned(units).ok()?;
        Some((events, bytes))
    }
}

/// The batch being filled.
#[derive(Default)]
struct Batch {
    items: Vec<Item>,
    bytes: usize,
    since: Option<Instant>,
}

impl Batch {
    fn push(&mut self, item: Item) {
        self.since.get_or_insert_with(Instant::now);
        self.bytes += item.size;
        self.items.push(item);
    }

    fn take(&mut self) -> Vec<Item> {
        self.bytes = 0;
        self.since = None;
        std::mem::take(&mut self.items)
    }
}

/// The background task's state: the batch being filled and the batches in flight.
struct Sender {
    shared: Arc<Shared>,
    client: Client,
    in_flight: Arc<Semaphore>,
    tasks: JoinSet<()>,
    batch: Batch,
}

impl Sender {
    /// Adds `item` to the batch, sending the batch first if `item` would take it past the byte
    /// budget, and after if it is full.
    async fn add(&mut self, item: Item) {
        let config = &self.shared.config;
        if !self.batch.items.is_empty() && self.batch.bytes + item.size > config.batch_bytes {
            self.dispatch().await;
        }
        self.batch.push(item);
        if self.batch.items.len() >= self.shared.config.batch_events {
            self.dispatch().await;
        }
    }

    /// Sends the batch (if any) once fewer than `max_in_flight` batches are on their way.
    async fn dispatch(&mut self) {
        if self.batch.items.is_empty() {
            return;
        }
        let permit = self.in_flight.clone().acquire_owned().await.expect("never closed");
        let items = self.batch.take();
        let (shared, client) = (self.shared.clone(), self.client.clone());
        self.tasks.spawn(async move {
            deliver(&shared, &client, items).await;
            drop(permit);
        });
    }

    /// Sends the batch and waits until every batch sent has its outcomes.
    async fn drain(&mut self) {
        self.dispatch().await;
        while self.tasks.join_next().await.is_some() {}
    }
}

/// The background task: fills batches, dispatches them (at most `max_in_flight` at once),
/// answers flushes once everything before them is settled, and drains on close.
async fn send_loop(
    shared: Arc<Shared>,
    client: Client,
    mut commands: mpsc::UnboundedReceiver<Command>,
    recovered: Vec<Item>,
) {
    let linger = shared.config.linger;
    let mut sender = Sender {
        in_flight: Arc::new(Semaphore::new(shared.config.max_in_flight.max(1))),
        shared,
        client,
        tasks: JoinSet::new(),
        batch: Batch::default(),
    };
    for item in recovered {
        sender.add(item).await;
    }
    loop {
        let deadline = sender.batch.since.map(|since| since + linger);
        let lingered = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Item(item)) => sender.add(item).await,
                Some(Command::Flush(reply)) => {
                    sender.drain().await;
                    let _ = reply.send(());
                }
                None => {
                    sender.drain().await;
                    return;
                }
            },
            () = lingered => sender.dispatch().await,
            Some(_) = sender.tasks.join_next(), if !sender.tasks.is_empty() => {}
        }
    }
}

/// Sends `items` until each has an outcome: retried with the same ids while the policy allows,
/// split in halves when the batch as a whole breaks a limit.
async fn deliver(shared: &Shared, client: &Client, items: Vec<Item>) {
    let mut pending = vec![items];
    while let Some(items) = pending.pop() {
        if let Some((first, second)) = deliver_once(shared, client, items).await {
            // In order: the first half first.
            pending.push(second);
            pending.push(first);
        }
    }
}

/// One batch through its retries. Returns its halves when it has to be split.
async fn deliver_once(
    shared: &Shared,
    client: &Client,
    mut items: Vec<Item>,
) -> Option<(Vec<Item>, Vec<Item>)> {
    let policy = &shared.config.retry;
    let started = Instant::now();
    let mut retries = 0u32;
    let mut give_up = shared.give_up.subscribe();
    let body = EncodedRequest::body(items.iter().map(|item| &item.encoded));
    loop {
        if *give_up.borrow() {
            return fail(shared, &items, "the client shut down before delivery was confirmed");
        }
        let request =
            EncodedRequest { body: body.clone(), sent_at: Some(to_timestamp(Utc::now())) };
        add(&shared.counters.sent, items.len() as u64);
        let status = match client.send_encoded(request).await {
            Ok(response) if response.results.len() == items.len() => {
                for (item, result) in items.iter().zip(response.results) {
                    let kind = match result.status() {
                        EventStatus::Accepted => OutcomeKind::Accepted,
                        EventStatus::Duplicate => OutcomeKind::Duplicate,
                        EventStatus::Rejected | EventStatus::Unspecified => {
                            OutcomeKind::Rejected(result.reason)
                        }
                    };
                    shared.settle(item, kind);
                }
                return None;
            }
            Ok(response) => {
                let reason = format!(
                    "the server answered {} results for {} events",
                    response.results.len(),
                    items.len()
                );
                return fail(shared, &items, &reason);
            }
            Err(status) => status,
        };
        match verdict(&status) {
            Verdict::Split if items.len() > 1 => {
                let second = items.split_off(items.len() / 2);
                return Some((items, second));
            }
            Verdict::Split => {
                let reason = format!("{}: {}", code_name(status.code()), status.message());
                shared.settle(&items[0], OutcomeKind::Rejected(reason));
                return None;
            }
            Verdict::Fail => {
                if matches!(
                    status.code(),
                    tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
                ) && !shared.refusal_logged.swap(true, Ordering::Relaxed)
                {
                    tracing::error!(status = %status.message(), "the server refused the api key; events fail");
                }
                let reason = format!("{}: {}", code_name(status.code()), status.message());
                return fail(shared, &items, &reason);
            }
            Verdict::Retry { at_least } => {
                retries += 1;
                let delay = policy.delay(retries, at_least, &mut rand::rng());
                if retries > policy.max_retries || started.elapsed() + delay > policy.budget {
                    let reason = format!(
                        "gave up after {} retries: {}: {}",
                        retries - 1,
                        code_name(status.code()),
                        status.message()
                    );
                    return fail(shared, &items, &reason);
                }
                add(&shared.counters.retries, 1);
                tracing::info!(
                    events = items.len(),
                    retry = retries,
                    delay_ms = delay.as_millis() as u64,
                    code = code_name(status.code()),
                    "retrying a batch"
                );
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    _ = give_up.wait_for(|given_up| *given_up) => {}
                }
            }
        }
    }
}

fn fail(shared: &Shared, items: &[Item], reason: &str) -> Option<(Vec<Item>, Vec<Item>)> {
    for item in items {
        shared.settle(item, OutcomeKind::Failed(reason.to_owned()));
    }
    None
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}
