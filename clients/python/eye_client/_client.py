"""EyeClient: buffers events and sends them in batches to eye.v1.IngestService from one thread.

The life of an event: `track` validates and encodes it at once (in the caller's thread), gives it
a UUIDv7 (unless the caller passed an id) and appends it to an in-memory queue. The sender thread
takes batches off the queue and calls `SendEvents` until the server answers for every event,
retrying with the same bytes (so the same event ids) as long as that is safe and useful. Every
event tracked ends up counted in exactly one of accepted, duplicate, rejected, dropped or failed.

Locking: one re-entrant lock guards the queue, the counters and the flags; conditions on it wake
the sender (work to do), blocked `track` calls (room in the queue) and `flush` (answers). User
callbacks never run under it. See `close_on_signals` for how a signal handler that runs in the
middle of a `track` is kept from dead-locking on that lock.
"""

from __future__ import annotations

import atexit
import collections
import json
import logging
import math
import os
import random
import signal
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping, Optional, Union
from urllib.parse import urlsplit

import grpc

from ._proto.eye.v1 import ingest_pb2
from ._uuid7 import uuid7_str


log = logging.getLogger("eye_client")

# The outcomes an event can have; `on_outcome` receives one of these strings.
ACCEPTED = "accepted"
DUPLICATE = "duplicate"
REJECTED = "rejected"
DROPPED = "dropped"
FAILED = "failed"

_SEND_EVENTS = "/{}/{}".format(
    ingest_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name,
    ingest_pb2.DESCRIPTOR.services_by_name["IngestService"].methods_by_name["SendEvents"].name,
)

# Worth another attempt with the same events: the server (or the way to it) is down, busy or slow,
# or a connection broke mid-call (UNKNOWN, INTERNAL): resending is safe, the ids make a repeat
# DUPLICATE. The same set as the Rust client's (crates/eye-client/src/retry.rs).
_RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
    }
)
# The batch as a whole is refused (too many events, too many bytes): halves may pass.
_BATCH_REFUSED = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE})
# The key is wrong or lacks the ingest role: retrying cannot help.
_AUTH = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED})

_STATUS_OUTCOME = {
    ingest_pb2.EVENT_STATUS_ACCEPTED: ACCEPTED,
    ingest_pb2.EVENT_STATUS_DUPLICATE: DUPLICATE,
    ingest_pb2.EVENT_STATUS_REJECTED: REJECTED,
}

# The longest retry-after hint honoured (seconds): a hint beyond it is taken as this.
_MAX_RETRY_AFTER = 60.0
# How long `close` waits for the sender thread after abandoning what was left.
_ABANDON_GRACE = 0.5

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _code_name(code: Optional[grpc.StatusCode]) -> str:
    return code.name.lower() if code is not None else "unknown"


class _Secret:
    """Holds the API key; never shows it."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<redacted>"

    __str__ = __repr__


# A queued event: (seq, event_id, frame, size, enqueued_at). `frame` is the event already encoded
# as field 1 of SendEventsRequest, so a batch is the concatenation of its frames.
_Item = tuple


class EyeClient:
    """Sends events to The Eye's ingest service in batches, from a background thread.

    `EyeClient(endpoint, api_key)`; `track(...)` returns the event id at once; `flush()` waits
    until everything tracked so far is answered; `close()` flushes and stops. See the README of
    clients/python for every option and the guarantees.
    """

    def __init__(
        self,
        endpoint: str,
        api_key: str,
        *,
        session_id: Union[str, uuid.UUID, None] = None,
        batch_size: int = 500,
        batch_bytes: int = 1024 * 1024,
        linger: float = 0.2,
        max_queue_events: int = 100_000,
        max_queue_bytes: int = 64 * 1024 * 1024,
        overflow: str = "block",
        timeout: float = 10.0,
        max_retries: int = 10,
        retry_budget: float = 60.0,
        backoff_base: float = 0.1,
        backoff_max: float = 5.0,
        on_rejected: Optional[Callable[[str, str], Any]] = None,
        on_failed: Optional[Callable[[str, str], Any]] = None,
        on_outcome: Optional[Callable[[str, str, str], Any]] = None,
        root_certificates: Union[str, bytes, os.PathLike, None] = None,
        compression: Optional[str] = None,
        close_at_exit: bool = True,
        exit_timeout: float = 10.0,
    ):
        if not isinstance(api_key, str) or not api_key:
            raise ValueError("api_key must be a non-empty string")
        if overflow not in ("block", "drop"):
            raise ValueError(f"overflow must be 'block' or 'drop', not {overflow!r}")
        if compression not in (None, "gzip"):
            raise ValueError(f"compression must be None or 'gzip', not {compression!r}")
        for name, value in (
            ("batch_size", batch_size),
            ("batch_bytes", batch_bytes),
            ("max_queue_events", max_queue_events),
            ("max_queue_bytes", max_queue_bytes),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        if batch_bytes > max_queue_bytes:
            raise ValueError("batch_bytes must not exceed max_queue_bytes")
        for name, value in (
            ("linger", linger),
            ("timeout", timeout),
            ("retry_budget", retry_budget),
            ("backoff_base", backoff_base),
            ("backoff_max", backoff_max),
            ("exit_timeout", exit_timeout),
        ):
            if not isinstance(value, (int, float)) or value < 0 or math.isnan(value):
                raise ValueError(f"{name} must be a non-negative number of seconds, not {value!r}")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be a non-negative integer, not {max_retries!r}")

        self._endpoint = endpoint
        self._target, secure = self._parse_endpoint(endpoint)
        self._api_key = _Secret(api_key)
        self.session_id = str(session_id) if session_id is not None else str(uuid.uuid4())
        self._batch_size = batch_size
        self._batch_bytes = batch_bytes
        self._linger = float(linger)
        self._max_queue_events = max_queue_events
        self._max_queue_bytes = max_queue_bytes
        self._drop = overflow == "drop"
        self._timeout = float(timeout)
        self._max_retries = max_retries
        self._retry_budget = float(retry_budget)
        self._backoff_base = float(backoff_base)
        self._backoff_max = float(backoff_max)
        self._on_rejected = on_rejected
        self._on_failed = on_failed
        self._on_outcome = on_outcome
        self._compression = grpc.Compression.Gzip if compression == "gzip" else None
        self._exit_timeout = float(exit_timeout)

        options = [
            # Reconnect promptly after the server comes back (gRPC's default starts at 1 s and
            # grows to 120 s); our own retries already back off.
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.min_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 5000),
            # Our retries, not gRPC's, decide what is retried (and with which ids).
            ("grpc.enable_retries", 0),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ]
        if secure:
            roots = None
            if root_certificates is not None:
                if isinstance(root_certificates, bytes):
                    roots = root_certificates
                else:
                    with open(root_certificates, "rb") as file:
                        roots = file.read()
            credentials = grpc.ssl_channel_credentials(root_certificates=roots)
            self._channel = grpc.secure_channel(self._target, credentials, options=options)
        else:
            if root_certificates is not None:
                raise ValueError("root_certificates needs an https:// endpoint")
            self._channel = grpc.insecure_channel(self._target, options=options)
        self._rpc = self._channel.unary_unary(
            _SEND_EVENTS,
            request_serializer=None,  # requests are built as bytes (see _frame)
            response_deserializer=ingest_pb2.SendEventsResponse.FromString,
        )

        self._lock = threading.RLock()
        self._work = threading.Condition(self._lock)  # the sender: something to send
        self._room = threading.Condition(self._lock)  # blocked track calls: room in the queue
        self._answered = threading.Condition(self._lock)  # flush: progress
        self._queue: collections.deque = collections.deque()
        self._queued_bytes = 0
        self._seq = 0  # seq of the last event enqueued
        self._flush_through = 0  # events with seq <= this are sent without lingering
        self._inflight_first_seq: Optional[int] = None
        self._inflight_events = 0
        self._closing = False
        self._abandoned = False
        self._sender_done = False
        self._wake = threading.Event()  # interrupts backoff sleeps when abandoning
        self._current_call: Optional[grpc.Future] = None
        self._stats = {
            "tracked": 0,
            "sent": 0,
            "accepted": 0,
            "duplicate": 0,
            "rejected": 0,
            "dropped": 0,
            "failed": 0,
            "retries": 0,
            "batches": 0,
            "splits": 0,
        }
        self._batch_settled = 0
        # close_on_signals
        self._main_ident = threading.main_thread().ident
        self._deferred_signal: Optional[int] = None
        self._signal_handling = False
        self._previous_handlers: dict = {}
        self._signal_timeout = 5.0

        self._thread = threading.Thread(
            target=self._run, name=f"eye-client-sender-{id(self):x}", daemon=True
        )
        self._thread.start()
        self._close_at_exit = close_at_exit
        if close_at_exit:
            atexit.register(self._atexit_close)
        log.debug("eye client started: endpoint %s, session %s", self._endpoint, self.session_id)

    # ------------------------------------------------------------------------------------------
    # Public API

    def __repr__(self) -> str:
        state = "closed" if self._closing else "open"
        return f"<EyeClient endpoint={self._endpoint!r} session_id={self.session_id!r} {state}>"

    def __enter__(self) -> "EyeClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __getstate__(self):
        raise TypeError("EyeClient cannot be pickled (it owns a thread, a channel and a secret)")

    @property
    def endpoint(self) -> str:
        return self._endpoint

    @property
    def closed(self) -> bool:
        return self._closing

    def track(
        self,
        category: str,
        name: str,
        data: Optional[Mapping[str, Any]] = None,
        session_id: Union[str, uuid.UUID, None] = None,
        timestamp: Union[datetime, int, float, None] = None,
        event_id: Union[str, uuid.UUID, None] = None,
    ) -> Optional[str]:
        """Queues one event and returns its id (a UUIDv7 unless `event_id` is given).

        Raises TypeError for arguments of the wrong type, ValueError for data that is not JSON
        (or a naive datetime, or an event larger than `batch_bytes`), RuntimeError once the client
        is closed. With `overflow="drop"` a full queue drops the event, counts it in `dropped` and
        returns None; with `overflow="block"` (the default) this waits for room.
        """
        if not isinstance(category, str) or not isinstance(name, str):
            raise TypeError("category and name must be strings")
        if data is None:
            data = {}
        elif not isinstance(data, Mapping):
            raise TypeError(f"data must be a dict (a JSON object), not {type(data).__name__}")
        try:
            data_json = json.dumps(
                data, separators=(",", ":"), ensure_ascii=False, allow_nan=False
            )
        except (TypeError, ValueError, RecursionError) as error:
            raise ValueError(f"data is not JSON-serialisable: {error}") from None
        if timestamp is None:
            ns = time.time_ns()
            seconds, nanos = divmod(ns, 1_000_000_000)
        else:
            seconds, nanos = self._timestamp_parts(timestamp)
        if event_id is None:
            event_id = uuid7_str()
        elif isinstance(event_id, uuid.UUID):
            event_id = str(event_id)
        elif not isinstance(event_id, str):
            raise TypeError("event_id must be a string or a uuid.UUID")
        if session_id is None:
            session_id = self.session_id
        elif isinstance(session_id, uuid.UUID):
            session_id = str(session_id)
        elif not isinstance(session_id, str):
            raise TypeError("session_id must be a string or a uuid.UUID")
        try:
            event = ingest_pb2.Event(
                event_id=event_id,
                session_id=session_id,
                category=category,
                name=name,
                data_json=data_json,
            )
            event.timestamp.seconds = seconds
            event.timestamp.nanos = nanos
            raw = event.SerializeToString()
        except (ValueError, TypeError) as error:  # e.g. lone surrogates, out-of-range seconds
            raise ValueError(f"the event cannot be encoded: {error}") from None
        frame = b"\n" + _varint(len(raw)) + raw
        size = len(frame)
        if size > self._batch_bytes:
            raise ValueError(
                f"the event is {size} bytes encoded, more than batch_bytes ({self._batch_bytes}): "
                "it could never be sent"
            )

        while True:
            state = self._enqueue(event_id, frame, size)
            if self._deferred_signal is not None:
                self._run_deferred_signal()
            if state is not None:
                break
        if state != "queued":  # dropped: state is how many so far
            count = state
            if count == 1 or count % 1000 == 0:
                log.warning(
                    "eye client queue is full (%d events or %d bytes): %d events dropped so far",
                    self._max_queue_events,
                    self._max_queue_bytes,
                    count,
                )
            self._report([(event_id, DROPPED, "queue_full: the client's queue was full")])
            return None
        return event_id

    def _enqueue(self, event_id: str, frame: bytes, size: int) -> Union[str, int, None]:
        """Appends one encoded event. Returns "queued"; or, when dropped, the number of events
        dropped so far; or None when a signal deferred while this (main) thread held the lock
        must be handled first (then call again)."""
        lock = self._lock
        lock.acquire()
        try:
            if self._closing:
                raise RuntimeError("EyeClient is closed: track() after close()")
            queue = self._queue
            while (
                len(queue) >= self._max_queue_events
                or self._queued_bytes + size > self._max_queue_bytes
            ):
                if self._drop:
                    self._stats["tracked"] += 1
                    self._stats["dropped"] += 1
                    return self._stats["dropped"]
                # Bounded waits, so that a signal deferred while this thread held the lock is
                # handled soon (see close_on_signals).
                self._room.wait(0.2)
                if self._closing:
                    raise RuntimeError("EyeClient was closed while track() waited for room")
                if self._deferred_signal is not None and self._on_main_thread():
                    return None
            self._stats["tracked"] += 1
            self._seq += 1
            was_empty = not queue
            self._queued_bytes += size
            queue.append((self._seq, event_id, frame, size, time.monotonic()))
            if (
                was_empty
                or len(queue) == self._batch_size
                or self._queued_bytes >= self._batch_bytes
            ):
                self._work.notify()
            return "queued"
        finally:
            lock.release()

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Sends everything tracked before this call, without lingering, and waits until the
        server has answered for all of it (or it was given up on: failed).

        Returns True when all of it is answered, False when `timeout` (seconds) passed first.
        """
        if threading.current_thread() is self._thread:
            raise RuntimeError("flush() cannot be called from an eye_client callback")
        deadline = None if timeout is None else time.monotonic() + timeout
        result = None
        while result is None:
            with self._lock:
                target = self._seq
                if self._flush_through < target:
                    self._flush_through = target
                    self._work.notify()
                if self._answered_through(target):
                    result = True
                elif self._sender_done:
                    result = False
                else:
                    wait = 0.2
                    if deadline is not None:
                        wait = min(wait, deadline - time.monotonic())
                    if wait <= 0:
                        result = False
                    else:
                        self._answered.wait(wait)
                        if self._answered_through(target):
                            result = True
            if self._deferred_signal is not None:
                self._run_deferred_signal()
        return result

    def close(self, timeout: Optional[float] = 10.0) -> bool:
        """Flushes (up to `timeout` seconds), stops the sender thread and closes the channel.

        Idempotent. Returns True when every event was answered; False when the timeout passed:
        whatever was still queued or in flight then is counted (and reported) as failed.
        `track` raises RuntimeError from now on.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._closing = True
            self._work.notify_all()
            self._room.notify_all()
        if threading.current_thread() is self._thread:
            # From a callback: the thread finishes the queue on its own; nobody can wait here.
            return False
        if deadline is None:
            self._thread.join()
        else:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        clean = not self._thread.is_alive()
        if not clean:
            self._abandon()
            self._thread.join(_ABANDON_GRACE)
        self._channel.close()
        if self._close_at_exit:
            atexit.unregister(self._atexit_close)
        with self._lock:
            clean = clean and self._answered_through(self._seq)
        if self._deferred_signal is not None:
            self._run_deferred_signal()
        return clean

    def stats(self) -> dict:
        """Counters: tracked, sent, accepted, duplicate, rejected, dropped, failed, retries,
        queued, plus in_flight, batches and splits.

        tracked = accepted + duplicate + rejected + dropped + failed + queued + in_flight at any
        moment. `sent` counts events per attempt (an event sent twice counts twice); `batches`
        counts SendEvents calls; `retries` the calls that were retries; `splits` the batches split
        in halves after INVALID_ARGUMENT.
        """
        with self._lock:
            result = dict(self._stats)
            result["queued"] = len(self._queue)
            result["in_flight"] = self._inflight_events
        if self._deferred_signal is not None:
            self._run_deferred_signal()
        return result

    def close_on_signals(
        self,
        signals: Iterable[int] = (signal.SIGTERM, signal.SIGINT),
        timeout: float = 5.0,
    ) -> None:
        """Opt-in: on each of `signals`, flush and close this client (up to `timeout` seconds),
        then exit as the signal would have.

        Must be called from the main thread (Python delivers signals there). After the close:
        if a Python handler was installed before, it is called (chained); SIGINT with Python's
        default handler raises KeyboardInterrupt; otherwise SystemExit(128 + signum) is raised,
        so `finally` blocks, `with` blocks and atexit hooks run and the exit status is the
        shell's convention for death by that signal. A signal that was ignored (SIG_IGN) stays
        ignored. A second signal while the first one is being handled exits at once (the
        signal's default action). A library should not take over signals on its own, hence this
        is opt-in.
        """
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("close_on_signals() must be called from the main thread")
        self._signal_timeout = float(timeout)
        for signum in signals:
            previous = signal.getsignal(signum)
            if previous == signal.SIG_IGN:
                continue
            self._previous_handlers[signum] = previous
            signal.signal(signum, self._on_signal)

    # ------------------------------------------------------------------------------------------
    # Signals

    def _on_main_thread(self) -> bool:
        return threading.get_ident() == self._main_ident

    def _on_signal(self, signum, frame) -> None:
        # Python runs this in the main thread, between two bytecodes of whatever it was doing:
        # possibly inside one of our critical sections. Closing now would wait for the sender
        # thread, which needs the lock this thread holds: so defer until it is released.
        if self._lock._is_owned():
            self._deferred_signal = signum
            return
        self._handle_signal(signum, frame)

    def _run_deferred_signal(self) -> None:
        if not self._on_main_thread() or self._lock._is_owned():
            return
        signum, self._deferred_signal = self._deferred_signal, None
        if signum is not None:
            self._handle_signal(signum, None)

    def _handle_signal(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if self._signal_handling:
            log.warning("second %s while flushing: exiting without waiting", name)
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self._signal_handling = True
        try:
            log.info("%s: flushing (up to %.1f s) and closing the eye client", name, self._signal_timeout)
            if not self.close(self._signal_timeout):
                log.error("%s: the eye client could not deliver everything before exiting", name)
        finally:
            self._signal_handling = False
        previous = self._previous_handlers.get(signum, signal.SIG_DFL)
        # Later signals behave as before close_on_signals.
        try:
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        except (TypeError, ValueError):
            signal.signal(signum, signal.SIG_DFL)
        if signum == signal.SIGINT and previous is signal.default_int_handler:
            raise KeyboardInterrupt
        if callable(previous):
            previous(signum, frame)
            return
        raise SystemExit(128 + signum)

    # ------------------------------------------------------------------------------------------
    # Internals: queue state

    def _answered_through(self, target: int) -> bool:
        """Whether no event with seq <= target is still queued or in flight (lock held)."""
        if self._queue and self._queue[0][0] <= target:
            return False
        first = self._inflight_first_seq
        return first is None or first > target

    @staticmethod
    def _parse_endpoint(endpoint: str) -> tuple[str, bool]:
        if not isinstance(endpoint, str):
            raise TypeError("endpoint must be a string such as 'http://127.0.0.1:50051'")
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"endpoint must look like http://host:port or https://host:port, not {endpoint!r}"
            )
        if parts.path not in ("", "/") or parts.query or parts.username:
            raise ValueError(f"endpoint must be scheme://host:port only, not {endpoint!r}")
        secure = parts.scheme == "https"
        port = parts.port or (443 if secure else 80)
        host = parts.hostname
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        return f"{host}:{port}", secure

    @staticmethod
    def _timestamp_parts(timestamp) -> tuple[int, int]:
        if isinstance(timestamp, datetime):
            if timestamp.tzinfo is None or timestamp.utcoffset() is None:
                raise ValueError(
                    "timestamp is a naive datetime: pass an aware one, "
                    "e.g. datetime.now(timezone.utc)"
                )
            delta = timestamp - _EPOCH
            micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
            seconds, micros = divmod(micros, 1_000_000)
            return seconds, micros * 1000
        if isinstance(timestamp, bool) or not isinstance(timestamp, (int, float)):
            raise TypeError("timestamp must be a datetime or Unix seconds (int or float)")
        if isinstance(timestamp, int):
            return timestamp, 0
        if not math.isfinite(timestamp):
            raise ValueError("timestamp must be finite")
        seconds = math.floor(timestamp)
        nanos = min(int(round((timestamp - seconds) * 1e9)), 999_999_999)
        return int(seconds), nanos

    # ------------------------------------------------------------------------------------------
    # Internals: the sender thread

    def _run(self) -> None:
        try:
            while True:
                batch = self._next_batch()
                if batch is None:
                    break
                self._batch_settled = 0
                try:
                    self._deliver(batch)
                except Exception:  # a bug: fail what is not settled rather than lose it
                    log.exception("eye client failed to deliver a batch; failing its events")
                    self._settle(
                        batch[self._batch_settled :],
                        FAILED,
                        "client_error: the eye client hit an internal error",
                    )
                finally:
                    with self._lock:
                        self._inflight_first_seq = None
                        self._inflight_events = 0
                        self._answered.notify_all()
        except BaseException:  # a bug: never let events vanish with the thread
            log.exception("eye client sender thread crashed; failing what is left")
            self._abandon()
        finally:
            with self._lock:
                self._sender_done = True
                self._answered.notify_all()
                self._room.notify_all()

    def _next_batch(self) -> Optional[list]:
        with self._lock:
            queue = self._queue
            while True:
                if self._abandoned:
                    return None
                if not queue:
                    if self._closing:
                        return None
                    self._work.wait()
                    continue
                head = queue[0]
                now = time.monotonic()
                due = head[4] + self._linger
                if (
                    self._closing
                    or head[0] <= self._flush_through
                    or len(queue) >= self._batch_size
                    or self._queued_bytes >= self._batch_bytes
                    or now >= due
                ):
                    break
                self._work.wait(due - now)
            batch = []
            size = 0
            while queue and len(batch) < self._batch_size:
                item = queue[0]
                if batch and size + item[3] > self._batch_bytes:
                    break
                queue.popleft()
                batch.append(item)
                size += item[3]
            self._queued_bytes -= size
            self._inflight_first_seq = batch[0][0]
            self._inflight_events = len(batch)
            self._room.notify_all()
            return batch

    def _deliver(self, batch: list) -> None:
        """Sends `batch` until every event in it has its outcome."""
        parts = collections.deque([batch])
        while parts:
            part = parts.popleft()
            outcome = self._send(part)
            kind = outcome[0]
            if kind == "answered":
                self._settle_answers(part, outcome[1])
            elif kind == "refused":
                code, details = outcome[1], outcome[2]
                if len(part) > 1:
                    half = len(part) // 2
                    log.info(
                        "the server refused a batch of %d events as a whole (%s); "
                        "sending it in halves",
                        len(part),
                        _code_name(code),
                    )
                    with self._lock:
                        self._stats["splits"] += 1
                    parts.appendleft(part[half:])
                    parts.appendleft(part[:half])
                else:
                    reason = f"{_code_name(code)}: {details}"
                    log.warning("the server refused a single event as a batch: %s", reason)
                    self._settle(part, REJECTED, reason)
            else:  # failed
                self._settle(part, FAILED, outcome[1])

    def _send(self, part: list) -> tuple:
        """One part, with retries. Returns ("answered", response), ("refused", code, details)
        or ("failed", reason)."""
        sent_at = time.time_ns()
        stamp = b"\x08" + _varint(sent_at // 1_000_000_000) + b"\x10" + _varint(sent_at % 1_000_000_000)
        payload = b"".join(item[2] for item in part) + b"\x12" + _varint(len(stamp)) + stamp
        started = time.monotonic()
        attempt = 0
        while True:
            if self._abandoned:
                return ("failed", "client_closed: the client was closed before the server answered")
            attempt += 1
            with self._lock:
                self._stats["batches"] += 1
                self._stats["sent"] += len(part)
                if attempt > 1:
                    self._stats["retries"] += 1
            try:
                call = self._rpc.future(
                    payload,
                    timeout=self._timeout,
                    metadata=(("authorization", "Bearer " + self._api_key.reveal()),),
                    compression=self._compression,
                )
                self._current_call = call
                if self._abandoned:
                    call.cancel()
                response = call.result()
                return ("answered", response)
            except grpc.FutureCancelledError:
                return ("failed", "client_closed: the client was closed before the server answered")
            except grpc.RpcError as error:
                code = error.code() if hasattr(error, "code") else None
                details = (error.details() if hasattr(error, "details") else None) or ""
                if self._abandoned:
                    return ("failed", "client_closed: the client was closed before the server answered")
                if code in _BATCH_REFUSED:
                    return ("refused", code, details)
                if (
                    code == grpc.StatusCode.UNIMPLEMENTED
                    and self._compression is not None
                    and "compress" in details.lower()
                ):
                    # The server does not accept compressed requests (refused before reading
                    # them, so resending is safe): go on uncompressed.
                    log.warning(
                        "the server does not accept gzip-compressed requests (%s); "
                        "sending uncompressed from now on",
                        details,
                    )
                    self._compression = None
                    continue
                if code in _AUTH:
                    log.error(
                        "the server refused the API key (%s: %s): %d events failed; "
                        "check the key and its `ingest` role (not retried)",
                        code.name,
                        details,
                        len(part),
                    )
                    return ("failed", f"{_code_name(code)}: {details}")
                if code not in _RETRYABLE:
                    log.error(
                        "SendEvents failed with %s: %s; %d events failed (not retried)",
                        _code_name(code),
                        details,
                        len(part),
                    )
                    return ("failed", f"{_code_name(code)}: {details}")
                retry_after = self._retry_after(error)
                elapsed = time.monotonic() - started
                ceiling = min(self._backoff_max, self._backoff_base * (2 ** min(attempt - 1, 30)))
                delay = random.uniform(0.0, ceiling)
                if retry_after is not None:
                    delay = max(delay, retry_after)
                if attempt > self._max_retries or elapsed + delay > self._retry_budget:
                    log.error(
                        "SendEvents still failing after %d attempts over %.1f s (%s: %s); "
                        "%d events failed",
                        attempt,
                        elapsed,
                        _code_name(code),
                        details,
                        len(part),
                    )
                    return (
                        "failed",
                        f"{_code_name(code)}: {details} (gave up after {attempt} attempts)",
                    )
                log.info(
                    "SendEvents attempt %d failed (%s: %s); retrying %d events in %.2f s",
                    attempt,
                    _code_name(code),
                    details,
                    len(part),
                    delay,
                )
                if self._wake.wait(delay):
                    continue  # abandoned: the top of the loop reports it
            finally:
                self._current_call = None

    @staticmethod
    def _retry_after(error) -> Optional[float]:
        for getter in ("trailing_metadata", "initial_metadata"):
            try:
                metadata = getattr(error, getter)() or ()
            except Exception:
                continue
            for key, value in metadata:
                if key.lower() == "retry-after":
                    try:
                        seconds = float(value)
                    except (TypeError, ValueError):
                        continue
                    if math.isfinite(seconds) and seconds >= 0:
                        return min(seconds, _MAX_RETRY_AFTER)
        return None

    def _settle_answers(self, part: list, response) -> None:
        results = response.results
        reports = []
        if len(results) == len(part):
            for item, result in zip(part, results):
                outcome = _STATUS_OUTCOME.get(result.status)
                if outcome is None:
                    reports.append(
                        (item[1], FAILED, f"unknown_status: the server answered status {result.status}")
                    )
                else:
                    reports.append((item[1], outcome, result.reason if outcome == REJECTED else ""))
        else:
            # The contract says results[i] answers events[i]; match by id what we can.
            log.error(
                "the server answered %d results for %d events; matching them by event id",
                len(results),
                len(part),
            )
            by_id = {}
            for result in results:
                by_id.setdefault(result.event_id, result)
            for item in part:
                result = by_id.get(item[1])
                outcome = None if result is None else _STATUS_OUTCOME.get(result.status)
                if outcome is None:
                    reports.append((item[1], FAILED, "no_result: the server's answer lacked this event"))
                else:
                    reports.append((item[1], outcome, result.reason if outcome == REJECTED else ""))
        rejected = [reason for _, outcome, reason in reports if outcome == REJECTED]
        if rejected:
            # Only the reason codes: the messages may quote what was sent.
            codes = sorted({reason.split(":", 1)[0] for reason in rejected})
            log.warning(
                "the server rejected %d of %d events (%s); not retried",
                len(rejected),
                len(reports),
                ", ".join(codes),
            )
        self._record(reports)

    def _settle(self, part: list, outcome: str, reason: str) -> None:
        self._record([(item[1], outcome, reason) for item in part])

    def _record(self, reports: list) -> None:
        """Reports outcomes to the callbacks, then counts them (so a flush that returns has seen
        the callbacks of what it waited for)."""
        self._report(reports)
        counts = collections.Counter(outcome for _, outcome, _ in reports)
        with self._lock:
            for outcome, count in counts.items():
                self._stats[outcome] += count
            self._inflight_events -= len(reports)
            self._batch_settled += len(reports)
            self._answered.notify_all()

    def _report(self, reports: list) -> None:
        for event_id, outcome, reason in reports:
            specific = None
            if outcome == REJECTED:
                specific = self._on_rejected
            elif outcome == FAILED:
                specific = self._on_failed
            for callback, args in (
                (specific, (event_id, reason)),
                (self._on_outcome, (event_id, outcome, reason)),
            ):
                if callback is None:
                    continue
                try:
                    callback(*args)
                except Exception:
                    log.exception("an eye client callback raised (ignored)")

    def _abandon(self) -> None:
        """Gives up on what is left: queued events fail now; the call in flight is cancelled
        (the sender thread fails its events)."""
        with self._lock:
            if self._abandoned and not self._queue:
                return
            self._abandoned = True
            self._closing = True
            left = list(self._queue)
            self._queue.clear()
            self._queued_bytes = 0
            self._stats[FAILED] += len(left)
            self._work.notify_all()
            self._room.notify_all()
            self._answered.notify_all()
        self._wake.set()
        call = self._current_call
        if call is not None:
            call.cancel()
        if left:
            log.error(
                "eye client closed with %d events not sent: they are counted as failed", len(left)
            )
            self._report(
                [
                    (item[1], FAILED, "client_closed: the client was closed before this event was sent")
                    for item in left
                ]
            )

    def _atexit_close(self) -> None:
        if self._closing and not self._thread.is_alive():
            return
        if not self.close(self._exit_timeout):
            log.error("eye client: not everything was delivered before the interpreter exited")

