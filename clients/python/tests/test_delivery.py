"""Events tracked are stored exactly once, as tracked, against the real pipeline."""

import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import grpc
import pytest

from eye_client import EyeClient
from eye_client._proto.eye.v1 import query_pb2, query_pb2_grpc
from helpers import psql


def list_events(server, session_id: str) -> list:
    """All stored events of a session, read back through QueryService (all pages)."""
    events = []
    token = ""
    with grpc.insecure_channel(server.query_endpoint.split("://", 1)[1]) as channel:
        stub = query_pb2_grpc.QueryServiceStub(channel)
        while True:
            answer = stub.ListEvents(
                query_pb2.ListEventsRequest(
                    filter=query_pb2.EventFilter(session_id=session_id),
                    page_size=1000,
                    page_token=token,
                ),
                metadata=[("authorization", f"Bearer {server.api_key}")],
                timeout=30,
            )
            events.extend(answer.events)
            token = answer.next_page_token
            if not token:
                return events


def test_track_flush_stores_each_event_once_with_its_id_and_session(eye_server, marker):
    outcomes = []
    with EyeClient(
        eye_server.endpoint,
        eye_server.api_key,
        on_outcome=lambda event_id, outcome, reason: outcomes.append((event_id, outcome)),
    ) as client:
        uuid.UUID(client.session_id)  # a random UUID per client by default
        ids = [client.track("test", "delivery", {"m": marker, "i": i}) for i in range(1200)]
        assert len(set(ids)) == 1200
        assert all(uuid.UUID(event_id).version == 7 for event_id in ids)
        assert client.flush(timeout=60) is True
        stats = client.stats()
        assert stats["accepted"] == 1200, stats
        assert stats["queued"] == 0 and stats["in_flight"] == 0
        assert sorted(outcomes) == sorted((event_id, "accepted") for event_id in ids)
        # Default batching: at most 500 events a call.
        assert stats["batches"] >= 3

    eye_server.wait_stored(f"data->>'m' = '{marker}'", 1200)
    rows = psql(
        eye_server.database_url,
        f"SELECT event_id, session_id, category, name, data->>'i' FROM events "
        f"WHERE data->>'m' = '{marker}'",
    ).splitlines()
    stored = {row.split("|")[0]: row.split("|")[1:] for row in rows}
    assert set(stored) == set(ids)
    for i, event_id in enumerate(ids):
        assert stored[event_id] == [client.session_id, "test", "delivery", str(i)]

    # And the read path sees the same events, in time order.
    read = list_events(eye_server, client.session_id)
    assert [event.event_id for event in read] == ids


def test_explicit_session_timestamp_and_event_id(eye_server, marker):
    session = uuid.uuid4()
    event_id = uuid.uuid4()
    when = datetime.now(timezone.utc).replace(microsecond=123456) - timedelta(minutes=5)
    with EyeClient(eye_server.endpoint, eye_server.api_key) as client:
        returned = client.track(
            "test", "explicit", {"m": marker}, session_id=session, timestamp=when, event_id=event_id
        )
        assert returned == str(event_id)
        epoch = client.track("test", "explicit", {"m": marker}, session_id=str(session), timestamp=1_700_000_000.25)
        assert client.flush(30)
    eye_server.wait_stored(f"data->>'m' = '{marker}'", 2)
    rows = dict(
        line.split("|", 1)
        for line in psql(
            eye_server.database_url,
            f"SELECT event_id, session_id || '|' || "
            f"to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') "
            f"FROM events WHERE data->>'m' = '{marker}'",
        ).splitlines()
    )
    assert rows[str(event_id)] == f"{session}|{when.strftime('%Y-%m-%d %H:%M:%S.%f')}"
    assert rows[epoch] == f"{session}|2023-11-14 22:13:20.250000"


def test_many_threads_track_concurrently(eye_server, marker):
    ids = []
    lock = threading.Lock()
    client = EyeClient(eye_server.endpoint, eye_server.api_key, batch_size=200)

    def produce(worker):
        mine = [client.track("test", "threads", {"m": marker, "w": worker, "i": i}) for i in range(500)]
        with lock:
            ids.extend(mine)

    threads = [threading.Thread(target=produce, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert client.close(timeout=60) is True
    assert len(set(ids)) == 4000
    stats = client.stats()
    assert stats["tracked"] == 4000 and stats["accepted"] == 4000, stats
    eye_server.wait_stored(f"data->>'m' = '{marker}'", 4000)
    stored = set(psql(eye_server.database_url, f"SELECT event_id FROM events WHERE data->>'m' = '{marker}'").split())
    assert stored == set(ids)


def test_linger_sends_a_lone_event_without_flush(eye_server, marker):
    with EyeClient(eye_server.endpoint, eye_server.api_key, linger=0.05) as client:
        client.track("test", "linger", {"m": marker})
        # No flush: the linger alone must get it sent.
        eye_server.wait_stored(f"data->>'m' = '{marker}'", 1, timeout=30)
        assert client.stats()["accepted"] == 1


def test_context_manager_closes_and_close_is_idempotent(eye_server, marker):
    with EyeClient(eye_server.endpoint, eye_server.api_key, linger=10) as client:
        client.track("test", "ctx", {"m": marker})
    # The long linger did not matter: leaving the block flushed.
    assert client.stats()["accepted"] == 1
    assert client.closed
    started = time.monotonic()
    assert client.close() is True
    assert client.close(timeout=0) is True
    assert time.monotonic() - started < 1
    with pytest.raises(RuntimeError, match="closed"):
        client.track("test", "ctx", {"m": marker})
    eye_server.wait_stored(f"data->>'m' = '{marker}'", 1)


def test_local_errors_raise_at_once_and_count_nothing(eye_server):
    with EyeClient(eye_server.endpoint, eye_server.api_key) as client:
        with pytest.raises(ValueError, match="JSON"):
            client.track("test", "bad", {"x": object()})
        with pytest.raises(ValueError, match="JSON"):
            client.track("test", "bad", {"x": float("nan")})
        with pytest.raises(ValueError, match="JSON"):
            client.track("test", "bad", {1j: 1})
        with pytest.raises(TypeError, match="dict"):
            client.track("test", "bad", ["not", "an", "object"])
        with pytest.raises(TypeError):
            client.track(None, "bad", {})
        with pytest.raises(ValueError, match="naive"):
            client.track("test", "bad", {}, timestamp=datetime.now())
        with pytest.raises(ValueError, match="batch_bytes"):
            client.track("test", "bad", {"blob": "x" * (1024 * 1024)})
        assert client.stats()["tracked"] == 0
