"""Real processes: a producer killed by SIGTERM mid-stream, and one that just returns, lose
nothing and store nothing twice."""

import json
import os
import random
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from helpers import psql, wait_until

PRODUCER = Path(__file__).resolve().parent / "producer.py"
ID_LINE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
LINE_BYTES = 37  # a UUID and a newline


def start_producer(server, tmp_path, run, *args):
    ids = tmp_path / "ids.txt"
    env = dict(os.environ, EYE_ENDPOINT=server.endpoint, EYE_API_KEY=server.api_key)
    process = subprocess.Popen(
        [sys.executable, str(PRODUCER), "--ids", str(ids), "--run", run, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return process, ids


def read_ids(path: Path) -> list:
    lines = path.read_text().splitlines()
    bad = [line for line in lines if not ID_LINE.match(line)]
    assert not bad, f"malformed lines in the ids file: {bad[:3]}"
    return lines


def stored_ids(server, run) -> list:
    out = psql(server.database_url, f"SELECT event_id FROM events WHERE data->>'run' = '{run}'")
    return out.split()


def check_stored(server, run, ids, extra_allowed):
    """Every id of the file is stored exactly once; at most `extra_allowed` other events of the
    run are (one tracked just as the signal came, before its id could be written)."""
    wait_until(
        lambda: len(stored_ids(server, run)) >= len(ids),
        60,
        f"the {len(ids)} events of run {run} to be stored",
        interval=0.2,
    )
    stored = stored_ids(server, run)
    assert len(stored) == len(set(stored)), f"{len(stored) - len(set(stored))} events stored twice"
    missing = set(ids) - set(stored)
    assert not missing, f"{len(missing)} tracked events were not stored, e.g. {sorted(missing)[:3]}"
    extra = set(stored) - set(ids)
    assert len(extra) <= extra_allowed, f"{len(extra)} stored events of the run are not in the ids file"


@pytest.mark.parametrize(
    "signum, returncode",
    [
        # close_on_signals raises SystemExit(128 + signum) for SIGTERM ...
        (signal.SIGTERM, 128 + signal.SIGTERM),
        # ... and KeyboardInterrupt for SIGINT, which Python turns into death by SIGINT.
        (signal.SIGINT, -signal.SIGINT),
    ],
    ids=["SIGTERM", "SIGINT"],
)
def test_signal_mid_stream_flushes_every_tracked_event(eye_server, tmp_path, signum, returncode):
    run = f"{signal.Signals(signum).name}-{uuid.uuid4()}"
    process, ids_path = start_producer(eye_server, tmp_path, run, "--signals", "--count", "100000")
    try:
        # Buffered writes reach the file in chunks: wait until it shows a random number of
        # thousands of ids, then signal at that moment.
        threshold = random.randint(3_000, 40_000)

        def grown():
            if process.poll() is not None:
                raise AssertionError(f"the producer exited early ({process.returncode}): {process.stderr.read()}")
            return ids_path.exists() and ids_path.stat().st_size >= threshold * LINE_BYTES

        wait_until(grown, 60, f"the producer to track {threshold} events", interval=0.01)
        process.send_signal(signum)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == returncode, (process.returncode, err)
    ids = read_ids(ids_path)
    assert threshold <= len(ids) < 100_000, f"{len(ids)} ids: the signal should have come mid-stream"
    stats = json.loads(out.strip().splitlines()[-1])
    print(f"signalled after >= {threshold} ids; {len(ids)} ids written; stats {stats}")
    assert stats["failed"] == 0 and stats["dropped"] == 0 and stats["rejected"] == 0, stats
    assert stats["queued"] == 0 and stats["in_flight"] == 0, stats
    assert stats["accepted"] + stats["duplicate"] == stats["tracked"], stats
    assert len(ids) <= stats["tracked"] <= len(ids) + 1, (len(ids), stats)
    check_stored(eye_server, run, ids, extra_allowed=stats["tracked"] - len(ids))


def test_normal_exit_flushes_through_atexit(eye_server, tmp_path):
    run = f"atexit-{uuid.uuid4()}"
    process, ids_path = start_producer(eye_server, tmp_path, run, "--count", "20000", "--no-close")
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    ids = read_ids(ids_path)
    assert len(ids) == 20_000
    stats = json.loads(out.strip().splitlines()[-1])
    assert stats["accepted"] == 20_000 and stats["queued"] == 0, stats
    check_stored(eye_server, run, ids, extra_allowed=0)
