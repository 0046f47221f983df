"""UUIDv7 (RFC 9562, section 5.7), which the standard library of Python 3.11 lacks.

Layout (128 bits, most significant first):

    unix_ts_ms (48) | ver = 0b0111 (4) | rand_a (12) | var = 0b10 (2) | rand_b (62)

Ids made by one process are strictly increasing (RFC 9562 section 6.2, method 1): `rand_a` is a
counter, seeded with random bits (its top bit clear, leaving room to count) at every new
millisecond and incremented for every further id within the same millisecond. When the counter
overflows, or the clock steps back, the timestamp field is advanced past the last one used, so
order holds even then. `rand_b` is 62 fresh random bits for every id.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

_lock = threading.Lock()
_last_ms = 0
_counter = 0

_MAX_COUNTER = 0xFFF


def _next_fields() -> tuple[int, int]:
    """The (unix_ts_ms, counter) of the next id: strictly increasing as a pair."""
    global _last_ms, _counter
    now_ms = time.time_ns() // 1_000_000
    with _lock:
        if now_ms > _last_ms:
            _last_ms = now_ms
            # Random start, top bit clear: at least 2048 more ids fit in this millisecond.
            _counter = int.from_bytes(os.urandom(2), "big") & 0x7FF
        else:
            # Same millisecond, or the clock went back: keep counting from the last id.
            _counter += 1
            if _counter > _MAX_COUNTER:
                _last_ms += 1
                _counter = int.from_bytes(os.urandom(2), "big") & 0x7FF
        return _last_ms, _counter


def uuid7_int() -> int:
    """A new UUIDv7 as a 128-bit integer."""
    ms, counter = _next_fields()
    rand_b = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    return (
        ((ms & 0xFFFF_FFFF_FFFF) << 80)
        | (0x7 << 76)
        | (counter << 64)
        | (0b10 << 62)
        | rand_b
    )


def uuid7_str() -> str:
    """A new UUIDv7 in the canonical 8-4-4-4-12 lowercase hex form."""
    h = "%032x" % uuid7_int()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def uuid7() -> uuid.UUID:
    """A new UUIDv7 (`uuid.UUID` with `.version == 7`)."""
    return uuid.UUID(int=uuid7_int())


def uuid7_timestamp_ms(value: uuid.UUID | str) -> int:
    """The Unix timestamp in milliseconds embedded in a UUIDv7."""
    if not isinstance(value, uuid.UUID):
        value = uuid.UUID(str(value))
    return value.int >> 80
