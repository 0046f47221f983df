"""close_on_signals in this process: a signal that lands while the client's lock is held (as it
may, in the middle of track) is deferred until the lock is released instead of dead-locking, and
handling it flushes, closes and exits with 128 + signum."""

import os
import signal
import threading

import pytest

from eye_client import EyeClient


@pytest.fixture
def restore_sigterm():
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)


def test_signal_inside_the_critical_section_is_deferred_then_flushes_and_exits(
    eye_server, marker, restore_sigterm
):
    client = EyeClient(eye_server.endpoint, eye_server.api_key, linger=30)
    client.close_on_signals(signals=(signal.SIGTERM,), timeout=20)
    ids = [client.track("test", "deferred", {"m": marker, "i": i}) for i in range(10)]
    with client._lock:
        # Python runs the handler at the next bytecode of this (main) thread, lock held.
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):
            if client._deferred_signal is not None:
                break
        assert client._deferred_signal == signal.SIGTERM, "the handler should have deferred"
        assert not client.closed
    # The next call that releases the lock handles it: flush, close, SystemExit(143).
    with pytest.raises(SystemExit) as exited:
        client.stats()
    assert exited.value.code == 128 + signal.SIGTERM
    assert client.closed
    stats = client.stats()
    assert stats["accepted"] == 10 and stats["queued"] == 0, stats
    # The previous handler is back for later signals.
    assert signal.getsignal(signal.SIGTERM) != client._on_signal
    eye_server.wait_stored(f"data->>'m' = '{marker}'", len(ids))


def test_close_on_signals_needs_the_main_thread(eye_server):
    with EyeClient(eye_server.endpoint, eye_server.api_key) as client:
        errors = []

        def install():
            try:
                client.close_on_signals()
            except RuntimeError as error:
                errors.append(error)

        thread = threading.Thread(target=install)
        thread.start()
        thread.join()
        assert errors and "main thread" in str(errors[0])
