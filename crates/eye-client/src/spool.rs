//! The durable spool: tracked events are appended to a local log and fsynced (one fsync for every
//! append that arrived meanwhile) before `track` returns, and removed once the server answered
//! them, so a producer killed with `kill -9` sends them, with the same ids, after it restarts.
//!
//! # Format
//! The spool directory holds segments `NNNNNNNNNNNNNNNNNNNN.log` (numbered, 16 MiB at most).
//! Each record is `len: u32 LE, crc32(payload): u32 LE, payload` where the payload is an encoded
//! `eye.v1.Event` (id, session, type, payload, timestamp: everything a resend needs). Segments
//! are only appended to; a segment is deleted once it is sealed (a newer one was started, or the
//! client shut down) and every one of its events was answered ACCEPTED, DUPLICATE or REJECTED.
//! Events whose delivery failed stay, and are sent again by the next client that opens the
//! directory. A torn record at the end of a segment (the process died mid-append, before its
//! `track` returned) ends that segment's recovery.

use std::{
    collections::BTreeMap,
    fs::{File, OpenOptions},
    io::{self, Read, Write},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use eye_proto::v1::Event;
use prost::Message;
use tokio::sync::{Notify, mpsc, oneshot};

/// A segment is sealed, and a new one started, once it holds this many bytes.
const SEGMENT_BYTES: u64 = 16 * 1024 * 1024;
/// Bytes of a record's header (length and checksum).
const HEADER_BYTES: u64 = 8;

/// Appending to the spool failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SpoolError {
    #[error("the spool is full ({max_bytes} bytes)")]
    Full { max_bytes: u64 },
    #[error("cannot write the spool: {0}")]
    Io(#[from] io::Error),
    #[error("the spool is closed")]
    Closed,
}

#[derive(Debug, Default)]
struct Segment {
    records: u64,
    answered: u64,
    bytes: u64,
    sealed: bool,
}

#[derive(Debug, Default)]
struct State {
    segments: BTreeMap<u64, Segment>,
    /// Bytes on disk plus bytes reserved by appends under way.
    bytes: u64,
}

struct Append {
    record: Vec<u8>,
    reply: oneshot::Sender<io::Result<u64>>,
}

/// A spool directory in use. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Spool {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    max_bytes: u64,
    state: Mutex<State>,
    space: Notify,
    appends: Mutex<Option<mpsc::UnboundedSender<Append>>>,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool").field("dir", &self.inner.dir).finish_non_exhaustive()
    }
}

/// An event read back from the spool, with the segment that holds it.
pub(crate) type Recovered = (Event, u64);

impl Spool {
    /// Opens (creating) `dir`, reads back the events of earlier runs, and starts the writer.
    pub(crate) fn open(dir: &Path, max_bytes: u64) -> io::Result<(Self, Vec<Recovered>)> {
        std::fs::create_dir_all(dir)?;
        let mut state = State::default();
        let mut recovered = Vec::new();
        for (number, path) in segments(dir)? {
            let (events, bytes) = read_segment(&path)?;
            if events.is_empty() {
                std::fs::remove_file(&path)?;
                continue;
            }
            let records = events.len() as u64;
            recovered.extend(events.into_iter().map(|event| (event, number)));
            state.bytes += bytes;
            state.segments.insert(number, Segment { records, answered: 0, bytes, sealed: true });
        }
        let next = state.segments.keys().next_back().map_or(1, |n| n + 1);
        let (sender, receiver) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            dir: dir.to_owned(),
            max_bytes,
            state: Mutex::new(state),
            space: Notify::new(),
            appends: Mutex::new(Some(sender)),
        });
        let writer = inner.clone();
        std::thread::Builder::new()
            .name("eye-client-spool".into())
            .spawn(move || writer.write_loop(receiver, next))?;
        Ok((Self { inner }, recovered))
    }

    /// Appends an encoded `eye.v1.Event` and waits until it is on disk (fsynced); returns its
    /// segment. When the spool is full, waits for room (`block`) or fails with
    /// [`SpoolError::Full`].
    pub(crate) async fn append(&self, payload: &[u8], block: bool) -> Result<u64, SpoolError> {
        let size = HEADER_BYTES + payload.len() as u64;
        loop {
            let room = self.inner.space.notified();
            {
                let mut state = self.inner.state.lock().expect("spool state");
                if state.bytes + size <= self.inner.max_bytes || state.bytes == 0 {
                    state.bytes += size;
                    break;
                }
            }
            if !block {
                return Err(SpoolError::Full { max_bytes: self.inner.max_bytes });
            }
            room.await;
        }
        let mut record = Vec::with_capacity(size as usize);
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        record.extend_from_slice(payload);
        let (reply, answer) = oneshot::channel();
        let sent = self
            .inner
            .appends
            .lock()
            .expect("spool writer")
            .as_ref()
            .map(|sender| sender.send(Append { record, reply }).is_ok());
        let result = match sent {
            Some(true) => match answer.await {
                Ok(Ok(segment)) => Ok(segment),
                Ok(Err(error)) => Err(SpoolError::Io(error)),
                Err(_) => Err(SpoolError::Closed),
            },
            _ => Err(SpoolError::Closed),
        };
        if result.is_err() {
            self.inner.state.lock().expect("spool state").bytes -= size;
            self.inner.space.notify_waiters();
        }
        result
    }

    /// One event of `segment` was answered (and need not be sent again).
    pub(crate) fn answered(&self, segment: u64) {
        let mut state = self.inner.state.lock().expect("spool state");
        if let Some(entry) = state.segments.get_mut(&segment) {
            entry.answered += 1;
        }
        self.inner.collect(&mut state, segment);
    }

    /// Stops appending, seals the last segment and deletes every fully answered one.
    pub(crate) fn close(&self) {
        self.inner.appends.lock().expect("spool writer").take();
        let mut state = self.inner.state.lock().expect("spool state");
        let numbers: Vec<u64> = state.segments.keys().copied().collect();
        for number in numbers {
            if let Some(segment) = state.segments.get_mut(&number) {
                segment.sealed = true;
            }
            self.inner.collect(&mut state, number);
        }
    }
}

impl Inner {
    /// Deletes `number` if it is sealed and every event in it was answered.
    fn collect(&self, state: &mut State, number: u64) {
        let done = state
            .segments
            .get(&number)
            .is_some_and(|segment| segment.sealed && segment.answered >= segment.records);
        if !done {
            return;
        }
        let segment = state.segments.remove(&number).expect("present");
        if let Err(error) = std::fs::remove_file(segment_path(&self.dir, number)) {
            tracing::warn!(%error, segment = number, "cannot delete a delivered spool segment");
        }
        state.bytes = state.bytes.saturating_sub(segment.bytes);
        self.space.notify_waiters();
    }

    /// The writer thread: appends whatever arrived, fsyncs once, answers every append.
    fn write_loop(self: Arc<Self>, mut receiver: mpsc::UnboundedReceiver<Append>, first: u64) {
        let mut number = first;
        let mut file: Option<File> = None;
        while let Some(append) = receiver.blocking_recv() {
            let mut group = vec![append];
            while let Ok(more) = receiver.try_recv() {
                group.push(more);
            }
            let result = self.write_group(&mut file, &mut number, &group);
            for append in group {
                let _ = append.reply.send(match &result {
                    Ok(segment) => Ok(*segment),
                    Err(error) => Err(io::Error::new(error.kind(), error.to_string())),
                });
            }
        }
    }

    fn write_group(
        &self,
        file: &mut Option<File>,
        number: &mut u64,
        group: &[Append],
    ) -> io::Result<u64> {
        let full = {
            let state = self.state.lock().expect("spool state");
            state.segments.get(number).is_some_and(|segment| segment.bytes >= SEGMENT_BYTES)
        };
        if full {
            let mut state = self.state.lock().expect("spool state");
            if let Some(segment) = state.segments.get_mut(number) {
                segment.sealed = true;
            }
            self.collect(&mut state, *number);
            *number += 1;
            *file = None;
        }
        if file.is_none() {
            let path = segment_path(&self.dir, *number);
            let created = OpenOptions::new().create(true).append(true).open(&path)?;
            // The new file's name must survive a crash too.
            File::open(&self.dir)?.sync_all()?;
            *file = Some(created);
            self.state.lock().expect("spool state").segments.entry(*number).or_default();
        }
        let handle = file.as_mut().expect("opened above");
        let mut bytes = Vec::with_capacity(group.iter().map(|a| a.record.len()).sum());
        for append in group {
            bytes.extend_from_slice(&append.record);
        }
        handle.write_all(&bytes)?;
        handle.sync_data()?;
        let mut state = self.state.lock().expect("spool state");
        let segment = state.segments.entry(*number).or_default();
        segment.records += group.len() as u64;
        segment.bytes += bytes.len() as u64;
        Ok(*number)
    }
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:020}.log"))
}

/// The segments of `dir`, in order.
fn segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let number = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_suffix(".log"))
            .and_then(|stem| stem.parse::<u64>().ok());
        if let Some(number) = number {
            found.push((number, path));
        }
    }
    found.sort_unstable();
    Ok(found)
}

/// The events of a segment, up to its first torn or corrupt record, and that prefix's size.
fn read_segment(path: &Path) -> io::Result<(Vec<Event>, u64)> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let mut events = Vec::new();
    let mut at = 0usize;
    while bytes.len() - at >= HEADER_BYTES as usize {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
        let start = at + HEADER_BYTES as usize;
        let Some(payload) = bytes.get(start..start + len) else { break };
        if crc32fast::hash(payload) != crc {
            break;
        }
        let Ok(event) = Event::decode(payload) else { break };
        events.push(event);
        at = start + len;
    }
    if at < bytes.len() {
        tracing::warn!(
            segment = %path.display(),
            ignored_bytes = bytes.len() - at,
            "the spool segment ends in a torn record (its track never returned); ignored"
        );
    }
    Ok((events, at as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u32) -> Event {
        Event { event_id: format!("id-{n}"), category: "c".into(), ..Event::default() }
    }

    #[tokio::test]
    async fn events_come_back_until_answered_and_torn_tails_are_ignored() {
        let dir = std::env::temp_dir().join(format!("eye-spool-{}", uuid::Uuid::new_v4()));
        let (spool, recovered) = Spool::open(&dir, 1 << 20).unwrap();
        assert!(recovered.is_empty());
        let mut segments = Vec::new();
        for n in 0..3 {
            segments.push(spool.append(&event(n).encode_to_vec(), true).await.unwrap());
        }
        spool.answered(segments[0]);
        drop(spool); // a crash: nothing sealed, nothing deleted

        // A torn record after the three.
        let path = segment_path(&dir, segments[0]);
        OpenOptions::new().append(true).open(&path).unwrap().write_all(&[9, 0, 0, 0, 1]).unwrap();
        let (spool, recovered) = Spool::open(&dir, 1 << 20).unwrap();
        let ids: Vec<_> = recovered.iter().map(|(e, _)| e.event_id.clone()).collect();
        assert_eq!(ids, ["id-0", "id-1", "id-2"], "answered too: the ack was not durable");
        for (_, segment) in &recovered {
            spool.answered(*segment);
        }
        assert!(!path.exists(), "a sealed, fully answered segment is deleted");
        let next = spool.append(&event(3).encode_to_vec(), true).await.unwrap();
        assert!(next > segments[0], "new events go to a new segment");
        spool.answered(next);
        spool.close();
        assert!(segments_of(&dir).is_empty(), "a clean close leaves nothing behind");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_full_spool_refuses_or_waits() {
        let dir = std::env::temp_dir().join(format!("eye-spool-{}", uuid::Uuid::new_v4()));
        let (spool, _) = Spool::open(&dir, 20).unwrap();
        let first = spool.append(&event(0).encode_to_vec(), false).await.unwrap();
        let big = Event { data_json: "x".repeat(100), ..event(1) };
        assert!(matches!(
            spool.append(&big.encode_to_vec(), false).await,
            Err(SpoolError::Full { .. })
        ));
        let waiting = tokio::spawn({
            let spool = spool.clone();
            async move { spool.append(&event(2).encode_to_vec(), true).await }
        });
        spool.close_segment_for_test(first);
        spool.answered(first);
        waiting.await.unwrap().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn segments_of(dir: &Path) -> Vec<(u64, PathBuf)> {
        segments(dir).unwrap()
    }

    impl Spool {
        fn close_segment_for_test(&self, number: u64) {
            let mut state = self.inner.state.lock().unwrap();
            state.segments.get_mut(&number).unwrap().sealed = true;
        }
    }
}
