"""Rejections, duplicates, lost answers, refused batches, overflow, bad keys, unreachable servers
and back-pressure: every event ends up counted exactly once, and nothing hangs."""

import time
import uuid

import grpc

from eye_client import EyeClient
from helpers import (
    LostAnswerProxy,
    Service,
    free_port,
    issue_key,
    psql,
    run_eye,
    start_ingest,
    wait_until,
    with_database,
)

OUTCOMES = ("accepted", "duplicate", "rejected", "dropped", "failed")


def settled(stats: dict) -> int:
    return sum(stats[outcome] for outcome in OUTCOMES)


def assert_balanced(client: EyeClient) -> dict:
    stats = client.stats()
    assert stats["tracked"] == settled(stats) + stats["queued"] + stats["in_flight"], stats
    return stats


def test_rejected_events_are_reported_with_their_reason_and_not_retried(eye_server, marker):
    rejected = []
    outcomes = {}
    with EyeClient(
        eye_server.endpoint,
        eye_server.api_key,
        on_rejected=lambda event_id, reason: rejected.append((event_id, reason)),
        on_outcome=lambda event_id, outcome, reason: outcomes.__setitem__(event_id, outcome),
    ) as client:
        good = client.track("test", "rejection", {"m": marker})
        bad_session = client.track("test", "rejection", {"m": marker}, session_id="not-a-uuid")
        empty_name = client.track("test", "", {"m": marker})
        assert client.flush(30)
        stats = assert_balanced(client)
    assert stats["accepted"] == 1 and stats["rejected"] == 2, stats
    assert stats["retries"] == 0 and stats["batches"] == 1, stats
    reasons = dict(rejected)
    assert set(reasons) == {bad_session, empty_name}
    assert reasons[bad_session].startswith("invalid_session_id: "), reasons[bad_session]
    assert "not-a-uuid" in reasons[bad_session]
    assert reasons[empty_name].startswith("missing_name: "), reasons[empty_name]
    assert outcomes == {good: "accepted", bad_session: "rejected", empty_name: "rejected"}
    eye_server.wait_stored(f"data->>'m' = '{marker}'", 1)
    assert psql(eye_server.database_url, f"SELECT event_id FROM events WHERE data->>'m' = '{marker}'") == good


def test_resending_an_event_id_answers_duplicate_counted_as_delivered(eye_server, marker):
    event_id = str(uuid.uuid4())
    with EyeClient(eye_server.endpoint, eye_server.api_key) as first:
        first.track("test", "dup", {"m": marker}, event_id=event_id)
        assert first.flush(30)
        assert first.stats()["accepted"] == 1
    outcomes = []
    with EyeClient(
        eye_server.endpoint,
        eye_server.api_key,
        on_outcome=lambda e, outcome, reason: outcomes.append((e, outcome)),
    ) as second:
        second.track("test", "dup", {"m": marker}, event_id=event_id)
        assert second.flush(30)
        stats = assert_balanced(second)
    assert stats["duplicate"] == 1 and stats["failed"] == 0 and stats["rejected"] == 0, stats
    assert outcomes == [(event_id, "duplicate")]
    eye_server.wait_stored(f"data->>'m' = '{marker}'", 1)


def test_retry_after_a_lost_answer_gets_duplicate_and_stores_once(eye_server, marker):
    port = int(eye_server.endpoint.rsplit(":", 1)[1])
    proxy = LostAnswerProxy(port, lose=1)
    try:
        with EyeClient(proxy.endpoint, eye_server.api_key, backoff_base=0.05) as client:
            ids = [client.track("test", "lost", {"m": marker, "i": i}) for i in range(50)]
            assert client.flush(60)
            stats = assert_balanced(client)
    finally:
        proxy.close()
    assert proxy.lost == 1, "the proxy should have cut exactly one answer"
    # The first attempt was stored but its answer lost; the retry (same ids) is DUPLICATE.
    assert stats["retries"] >= 1, stats
    assert stats["duplicate"] == 50 and stats["accepted"] == 0 and stats["failed"] == 0, stats
    eye_server.wait_stored(f"data->>'m' = '{marker}'", 50)
    stored = set(psql(eye_server.database_url, f"SELECT event_id FROM events WHERE data->>'m' = '{marker}'").split())
    assert stored == set(ids)


def test_a_deadline_exceeded_answer_is_retried_with_the_same_ids(eye_server, marker):
    port = int(eye_server.endpoint.rsplit(":", 1)[1])
    proxy = LostAnswerProxy(port, lose=1, mode="stall")
    try:
        with EyeClient(proxy.endpoint, eye_server.api_key, timeout=1.0, backoff_base=0.05) as client:
            ids = [client.track("test", "deadline", {"m": marker, "i": i}) for i in range(20)]
            started = time.monotonic()
            assert client.flush(60)
            elapsed = time.monotonic() - started
            stats = assert_balanced(client)
    finally:
        proxy.close()
    assert proxy.lost == 1 and proxy.connections == 1, "one answer swallowed, one connection"
    assert elapsed >= 1.0, "the first attempt should have waited out its 1 s deadline"
    assert stats["retries"] >= 1 and stats["duplicate"] == 20 and stats["failed"] == 0, stats
    eye_server.wait_stored(f"data->>'m' = '{marker}'", 20)
    stored = set(psql(eye_server.database_url, f"SELECT event_id FROM events WHERE data->>'m' = '{marker}'").split())
    assert stored == set(ids)


def test_events_tracked_while_the_server_is_down_are_delivered_once_it_is_up(eye_server, marker):
    port = free_port()
    target = int(eye_server.endpoint.rsplit(":", 1)[1])
    with EyeClient(f"http://127.0.0.1:{port}", eye_server.api_key, backoff_base=0.05, backoff_max=0.5) as client:
        for i in range(30):
            client.track("test", "comes-up", {"m": marker, "i": i})
        wait_until(lambda: client.stats()["retries"] >= 2, 30, "the client to retry against nothing")
        assert client.stats()["accepted"] == 0
        proxy = LostAnswerProxy(target, lose=0, port=port)  # the server "comes up" on that port
        try:
            assert client.flush(30)
            stats = assert_balanced(client)
        finally:
            proxy.close()
    assert stats["accepted"] == 30 and stats["failed"] == 0, stats
    eye_server.wait_stored(f"data->>'m' = '{marker}'", 30)


def test_a_raising_callback_does_not_stop_delivery(eye_server, marker, caplog):
    def explode(*args):
        raise RuntimeError("callback bug")

    with EyeClient(
        eye_server.endpoint, eye_server.api_key, on_rejected=explode, on_outcome=explode
    ) as client:
        client.track("test", "callback", {"m": marker}, session_id="nope")
        assert client.flush(30)
        for i in range(5):
            client.track("test", "callback", {"m": marker, "i": i})
        assert client.flush(30)
        stats = assert_balanced(client)
    assert stats["rejected"] == 1 and stats["accepted"] == 5, stats
    assert any("callback raised" in record.getMessage() for record in caplog.records)
    eye_server.wait_stored(f"data->>'m' = '{marker}'", 5)


def test_a_batch_over_the_server_limits_is_split_until_it_passes(eye_server, marker):
    # 2,500 events in batches of up to 2,000: the server allows 1,000 per call.
    with EyeClient(eye_server.endpoint, eye_server.api_key, batch_size=2000, linger=5) as client:
        for i in range(2500):
            client.track("test", "split", {"m": marker, "i": i})
        assert client.flush(60)
        stats = assert_balanced(client)
    assert stats["accepted"] == 2500 and stats["rejected"] == 0 and stats["failed"] == 0, stats
    assert stats["splits"] >= 1, stats
    eye_server.wait_stored(f"data->>'m' = '{marker}'", 2500)


def test_a_batch_over_the_byte_limit_is_split_too(eye_server, marker):
    # ~60 KB events (under the 64 KiB per-event limit), 100 in one 6 MB batch: over 4 MiB.
    blob = "x" * 60_000
    with EyeClient(
        eye_server.endpoint, eye_server.api_key, batch_bytes=8 * 1024 * 1024, linger=5
    ) as client:
        for i in range(100):
            client.track("test", "split-bytes", {"m": marker, "i": i, "blob": blob})
        assert client.flush(60)
        stats = assert_balanced(client)
    assert stats["accepted"] == 100 and stats["splits"] >= 1, stats
    eye_server.wait_stored(f"data->>'m' = '{marker}'", 100)


def test_a_single_event_refused_as_a_batch_is_reported_rejected_with_the_servers_message(
    eye_server, marker
):
    rejected = []
    with EyeClient(
        eye_server.endpoint,
        eye_server.api_key,
        batch_bytes=8 * 1024 * 1024,
        on_rejected=lambda event_id, reason: rejected.append((event_id, reason)),
    ) as client:
        huge = client.track("test", "huge", {"m": marker, "blob": "x" * (5 * 1024 * 1024)})
        small = client.track("test", "huge", {"m": marker})
        assert client.flush(60)
        stats = assert_balanced(client)
    assert stats["rejected"] == 1 and stats["accepted"] == 1, stats
    assert len(rejected) == 1 and rejected[0][0] == huge
    reason = rejected[0][1]
    assert reason.startswith("invalid_argument: "), reason
    assert "the limit is 4194304" in reason, reason  # the server's own message
    eye_server.wait_stored(f"data->>'m' = '{marker}'", 1)
    assert psql(eye_server.database_url, f"SELECT event_id FROM events WHERE data->>'m' = '{marker}'") == small


def test_drop_overflow_with_the_server_unreachable_counts_every_drop():
    dropped = []
    client = EyeClient(
        f"http://127.0.0.1:{free_port()}",
        "eye_" + "0" * 64,
        overflow="drop",
        max_queue_events=10,
        batch_size=5,
        on_outcome=lambda event_id, outcome, reason: outcome == "dropped" and dropped.append(event_id),
    )
    returned = [client.track("test", "drop", {"i": i}, event_id=str(uuid.uuid4())) for i in range(100)]
    nones = returned.count(None)
    stats = assert_balanced(client)
    # At most 10 queued plus one batch of 5 in flight can have been kept.
    assert nones >= 85, stats
    assert stats["dropped"] == nones == len(dropped), stats
    started = time.monotonic()
    assert client.close(timeout=1.0) is False
    assert time.monotonic() - started < 2.5
    stats = assert_balanced(client)
    assert stats["tracked"] == 100 and stats["accepted"] == 0, stats
    assert stats["dropped"] + stats["failed"] == 100, stats


def test_block_overflow_waits_for_room_then_delivers(eye_server, marker):
    with EyeClient(
        eye_server.endpoint, eye_server.api_key, max_queue_events=20, batch_size=10, linger=0.01
    ) as client:
        ids = [client.track("test", "block", {"m": marker, "i": i}) for i in range(300)]
        assert None not in ids
        assert client.flush(60)
        stats = assert_balanced(client)
    assert stats["accepted"] == 300 and stats["dropped"] == 0, stats
    eye_server.wait_stored(f"data->>'m' = '{marker}'", 300)


def test_unknown_key_fails_the_events_once_without_retrying(eye_server, marker, caplog):
    failed = []
    started = time.monotonic()
    with EyeClient(
        eye_server.endpoint,
        "eye_" + "0" * 64,
        on_failed=lambda event_id, reason: failed.append(reason),
    ) as client:
        for i in range(10):
            client.track("test", "badkey", {"m": marker, "i": i})
        assert client.flush(30) is True  # answered: with a refusal
        stats = assert_balanced(client)
    assert time.monotonic() - started < 10
    assert stats["failed"] == 10 and stats["retries"] == 0, stats
    assert len(failed) == 10 and all(reason.startswith("unauthenticated: ") for reason in failed), failed
    assert any("refused the API key" in record.getMessage() for record in caplog.records)
    assert eye_server.count(f"data->>'m' = '{marker}'") == (0, 0)


def test_key_without_the_ingest_role_fails_with_permission_denied(eye_server, marker):
    key = issue_key(eye_server.database_url, eye_server.workdir, f"readonly-{uuid.uuid4().hex[:8]}", ["read"])
    failed = []
    with EyeClient(eye_server.endpoint, key, on_failed=lambda e, reason: failed.append(reason)) as client:
        client.track("test", "readonly", {"m": marker})
        assert client.flush(30)
        stats = assert_balanced(client)
    assert stats["failed"] == 1 and stats["retries"] == 0, stats
    assert failed[0].startswith("permission_denied: ") and "ingest" in failed[0], failed


def test_flush_times_out_and_close_keeps_to_its_timeout_when_unreachable():
    client = EyeClient(f"http://127.0.0.1:{free_port()}", "eye_" + "0" * 64, backoff_base=0.05)
    for i in range(5):
        client.track("test", "unreachable", {"i": i})
    started = time.monotonic()
    assert client.flush(timeout=0.5) is False
    assert 0.5 <= time.monotonic() - started < 1.5
    assert client.stats()["retries"] >= 1  # it kept trying meanwhile
    started = time.monotonic()
    assert client.close(timeout=1.0) is False
    assert time.monotonic() - started < 2.0
    stats = assert_balanced(client)
    assert stats["failed"] == 5 and stats["queued"] == 0 and stats["in_flight"] == 0, stats


def test_retries_give_up_within_the_retry_budget():
    failed = []
    client = EyeClient(
        f"http://127.0.0.1:{free_port()}",
        "eye_" + "0" * 64,
        backoff_base=0.05,
        backoff_max=0.2,
        retry_budget=1.0,
        on_failed=lambda event_id, reason: failed.append(reason),
    )
    client.track("test", "budget", {})
    started = time.monotonic()
    assert client.flush(timeout=10) is True
    assert time.monotonic() - started < 3
    stats = assert_balanced(client)
    client.close()
    assert stats["failed"] == 1 and stats["retries"] >= 1, stats
    assert failed[0].startswith("unavailable: ") and "gave up after" in failed[0], failed


def test_back_pressure_retries_honour_retry_after_then_deliver(eye_server, marker):
    """A standalone eye-ingest with no validator behind it and a backlog limit of 0 answers
    RESOURCE_EXHAUSTED (retry-after: 1) once one batch waits; the client must wait at least that
    long between attempts, and deliver once a validator drains the backlog."""
    database = f"eye_bp_{uuid.uuid4().hex[:12]}"
    psql(eye_server.database_url, f"CREATE DATABASE {database}")
    url = with_database(eye_server.database_url, database)
    services = []
    try:
        run_eye(["migrate"], url, eye_server.workdir)
        key = issue_key(url, eye_server.workdir, "bp", ["ingest"])
        ingest, port = start_ingest(
            {
                "DATABASE_URL": url,
                "EYE__INGEST__MAX_BACKLOG_ROWS": "0",
                "EYE__INGEST__BACKLOG_CHECK_MS": "50",
            },
            eye_server.workdir,
        )
        services.append(ingest)
        endpoint = f"http://127.0.0.1:{port}"
        client = EyeClient(endpoint, key, backoff_base=0.001, backoff_max=0.01, retry_budget=60)
        client.track("test", "bp", {"m": marker})
        assert client.flush(30) and client.stats()["accepted"] == 1

        # Wait for ingest to notice the backlog: an empty batch is then refused for it (the
        # back-pressure check comes before the emptiness check) instead of as empty.
        def refused_for_backlog():
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                call = channel.unary_unary("/eye.v1.IngestService/SendEvents")
                try:
                    call(b"", timeout=5, metadata=[("authorization", f"Bearer {key}")])
                except grpc.RpcError as error:
                    if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                        return dict(error.trailing_metadata()).get("retry-after")
            return None

        assert wait_until(refused_for_backlog, 30, "ingest to refuse for its backlog") == "1"
        started = time.monotonic()
        client.track("test", "bp", {"m": marker})
        wait_until(lambda: client.stats()["retries"] >= 2, 30, "two retries")
        # Backoff alone (<= 10 ms) would have made two retries at once: retry-after (1 s) rules.
        assert time.monotonic() - started >= 2.0
        assert client.stats()["accepted"] == 1

        services.append(Service("eye-validator", {"DATABASE_URL": url}, eye_server.workdir))
        assert client.flush(60)
        stats = assert_balanced(client)
        client.close()
        assert stats["accepted"] == 2 and stats["failed"] == 0, stats
    finally:
        for service in services:
            service.stop()
        psql(eye_server.database_url, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def test_gzip_compressed_batches_are_accepted(eye_server, marker, caplog):
    with EyeClient(eye_server.endpoint, eye_server.api_key, compression="gzip") as client:
        for i in range(3):
            client.track("test", "gzip", {"m": marker, "i": i})
        assert client.flush(30)
        stats = assert_balanced(client)
    assert stats["accepted"] == 3 and stats["failed"] == 0, stats
    # Ingest accepts gzip: one call, no fallback (a server that refused it would get a warning
    # and the batch resent uncompressed).
    refused = [r for r in caplog.records if "does not accept gzip" in r.getMessage()]
    assert not refused and stats["batches"] == 1, (stats, refused)
    eye_server.wait_stored(f"data->>'m' = '{marker}'", 3)
