"""`eye export` read back by independent readers: DuckDB on a folder, pyarrow on S3 (moto's S3
server). The export's own tests (byte-identical reruns, kill -9 mid-hour, --follow, replay) are in
services/cli/tests/cli/export.rs; these check that other tools read what it writes, with the
values the database holds."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import boto3
import duckdb
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pytest

from eye_client import EyeClient
from helpers import eye_bin, free_port, psql, wait_until

EVENTS = 3 * 4 * 25  # three days, four hours a day, 25 events an hour


@pytest.fixture(scope="module")
def store(eye_server):
    """Events over three days, tagged with a marker of this module; their rows as the database
    has them: {event_id: (data, occurred_at in microseconds)}."""
    marker = str(uuid.uuid4())
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=123456)
    client = EyeClient(eye_server.endpoint, eye_server.api_key)
    for day in range(1, 4):
        for hour in (1, 7, 13, 19):
            for i in range(25):
                at = now - dt.timedelta(days=day, hours=hour) + dt.timedelta(seconds=i)
                data = {"marker": marker, "i": i, "text": "café ☕", "nested": {"a": [1, 2.5, None]}}
                client.track("export", "row", data, timestamp=at)
    client.flush()
    client.close()
    eye_server.wait_stored(f"data->>'marker' = '{marker}'", EVENTS)
    out = psql(
        eye_server.database_url,
        "SELECT event_id, data::text, (extract(epoch FROM occurred_at) * 1000000)::bigint "
        f"FROM events WHERE data->>'marker' = '{marker}'",
    )
    rows = {}
    for line in out.splitlines():
        event_id, data, micros = line.split("|")
        rows[event_id] = (json.loads(data), int(micros))
    return marker, rows


def export(eye_server, destination: str, env: dict | None = None) -> dict:
    result = subprocess.run(
        [str(eye_bin()), "export", destination, "--json"],
        env=dict(os.environ, DATABASE_URL=eye_server.database_url, **(env or {})),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def check_rows(table, marker: str, rows: dict) -> None:
    """Every event of the marker exactly once, with the database's values."""
    seen = {}
    for record in table.to_pylist():
        data = json.loads(record["data"])
        if data.get("marker") != marker:
            continue
        assert record["event_id"] not in seen, f"{record['event_id']} twice"
        occurred = record["occurred_at"]
        micros = int(occurred.timestamp()) * 1_000_000 + occurred.microsecond
        seen[record["event_id"]] = (data, micros)
    assert seen == rows


def test_duckdb_reads_a_folder_export_in_one_line(eye_server, store):
    marker, rows = store
    folder = Path(tempfile.mkdtemp(prefix="eye-export-duckdb-"))
    try:
        summary = export(eye_server, str(folder))
        assert summary["summary"]["rows"] >= EVENTS
        db = duckdb.connect()
        # The one line the docs give.
        count, distinct, days = db.execute(
            f"SELECT count(*), count(DISTINCT event_id), count(DISTINCT dt) "
            f"FROM read_parquet('{folder}/dt=*/hour=*/*.parquet', hive_partitioning = true) "
            f"WHERE json_extract_string(data, '$.marker') = '{marker}'"
        ).fetchone()
        assert (count, distinct) == (EVENTS, EVENTS)
        assert days >= 3
        table = db.execute(
            f"SELECT event_id, data, occurred_at FROM read_parquet('{folder}/dt=*/hour=*/*.parquet')"
        ).to_arrow_table()
        check_rows(table, marker, rows)
        # Times are UTC microseconds; the hive hour is the occurrence hour.
        mismatched = db.execute(
            f"SELECT count(*) FROM read_parquet('{folder}/dt=*/hour=*/*.parquet', hive_partitioning = true) "
            "WHERE hour::int != extract(hour FROM occurred_at AT TIME ZONE 'UTC')"
        ).fetchone()[0]
        assert mismatched == 0
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def s3_server():
    """moto's S3 server on a free port, with the bucket `warehouse`."""
    port = free_port()
    server = subprocess.Popen(
        [shutil.which("moto_server") or "moto_server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    s3 = boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
        region_name="us-east-1",
    )

    def bucket_made():
        try:
            s3.create_bucket(Bucket="warehouse")
            return True
        except Exception:  # the server is still starting
            return False

    wait_until(bucket_made, 30, "moto's S3 server", interval=0.2)
    yield endpoint
    server.terminate()
    server.wait(timeout=10)


def test_pyarrow_reads_an_s3_export_with_the_databases_values(eye_server, store, s3_server):
    marker, rows = store
    env = {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": s3_server,
    }
    first = export(eye_server, "s3://warehouse/eye/raw", env)
    assert first["summary"]["hours"] >= 12
    again = export(eye_server, "s3://warehouse/eye/raw", env)
    assert again["summary"]["hours"] == 0, "a rerun of an unchanged store writes nothing"
    s3 = pafs.S3FileSystem(
        access_key="test", secret_key="test", region="us-east-1",
        endpoint_override=s3_server.removeprefix("http://"), scheme="http",
    )
    dataset = ds.dataset("warehouse/eye/raw", filesystem=s3, format="parquet", partitioning="hive")
    table = dataset.to_table(columns=["event_id", "data", "occurred_at", "dt", "hour"])
    check_rows(table, marker, rows)
    assert str(dataset.schema.field("occurred_at").type) == "timestamp[us, tz=UTC]"
    manifests = [
        info for info in s3.get_file_info(pafs.FileSelector("warehouse/eye/raw", recursive=True))
        if info.base_name == "_manifest.json"
    ]
    assert len(manifests) >= 12
    with s3.open_input_stream(manifests[0].path) as stream:
        manifest = json.load(stream)
    assert manifest["files"] and all(len(f["sha256"]) == 64 for f in manifest["files"])
