"""The API key never shows: not in repr, not in str, not in any log record, and payloads stay
out of the logs too, through success, refusal, retries, drops and close."""

import logging
import pickle

import pytest

from eye_client import EyeClient
from helpers import free_port


def test_key_and_payload_never_appear_in_repr_or_logs(eye_server, marker, caplog):
    caplog.set_level(logging.DEBUG, logger="eye_client")
    secret_payload = f"payload-{marker}"
    bad_key = "eye_" + "ab" * 32
    clients = [
        EyeClient(eye_server.endpoint, eye_server.api_key),  # accepted
        EyeClient(eye_server.endpoint, bad_key),  # unauthenticated
        EyeClient(  # unreachable: retries, then given up at close
            f"http://127.0.0.1:{free_port()}", bad_key, backoff_base=0.01, overflow="drop", max_queue_events=1
        ),
    ]
    for client in clients:
        for key in (eye_server.api_key, bad_key):
            assert key not in repr(client) and key not in str(client)
            assert key not in repr(vars(client)), "the key should sit only in a redacting holder"
        for i in range(3):
            client.track("test", "secrets", {"m": marker, "secret": secret_payload, "i": i})
        client.track("test", "secrets", {"secret": secret_payload}, session_id="bad-session")
    for client in clients:
        client.flush(timeout=2)
        client.close(timeout=1)
        assert eye_server.api_key not in repr(client)

    records = caplog.records
    assert records, "expected the client to log something at DEBUG"
    assert any(r.levelno >= logging.ERROR for r in records), "the bad key should be logged as an error"
    for record in records:
        text = record.getMessage() + repr(record.args) + (record.exc_text or "")
        for secret in (eye_server.api_key, bad_key, bad_key[4:], eye_server.api_key[4:], secret_payload):
            assert secret not in text, f"{secret[:10]}... leaked into a log record: {text}"


def test_client_cannot_be_pickled(eye_server):
    with EyeClient(eye_server.endpoint, eye_server.api_key) as client:
        with pytest.raises(TypeError):
            pickle.dumps(client)
