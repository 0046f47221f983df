"""UUIDv7 as RFC 9562 lays it out, and in order."""

import re
import threading
import time
import uuid

from eye_client import uuid7, uuid7_str, uuid7_timestamp_ms

CANONICAL = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def test_layout_version_variant_and_timestamp():
    before = time.time_ns() // 1_000_000
    value = uuid7()
    text = uuid7_str()
    after = time.time_ns() // 1_000_000
    assert isinstance(value, uuid.UUID)
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    assert CANONICAL.match(str(value)), str(value)
    assert CANONICAL.match(text), text
    # The 48-bit timestamp is the Unix time in ms (the counter may borrow a ms or two ahead).
    for sample in (value, text):
        assert before <= uuid7_timestamp_ms(sample) <= after + 2


def test_strictly_increasing_and_unique_within_a_millisecond():
    ids = [uuid7_str() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids), "ids of one process must be in creation order"
    # Many ids share a millisecond, so order there comes from the counter, not luck.
    per_ms = {}
    for value in ids:
        per_ms.setdefault(uuid7_timestamp_ms(value), 0)
        per_ms[uuid7_timestamp_ms(value)] += 1
    assert max(per_ms.values()) > 1


def test_random_bits_differ():
    a, b = uuid7().int, uuid7().int
    mask = (1 << 62) - 1
    assert (a & mask) != (b & mask), "rand_b must be fresh random bits for every id"


def test_unique_across_threads():
    out = []

    def make():
        out.extend(uuid7_str() for _ in range(5_000))

    threads = [threading.Thread(target=make) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(out)) == 20_000
