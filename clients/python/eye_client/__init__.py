"""Python client of The Eye: `EyeClient(endpoint, api_key).track(category, name, data)`.

See clients/python/README.md for the options, the defaults and the delivery guarantees.
"""

from ._client import ACCEPTED, DROPPED, DUPLICATE, FAILED, REJECTED, EyeClient
from ._uuid7 import uuid7, uuid7_str, uuid7_timestamp_ms

__version__ = "0.1.0"

__all__ = [
    "EyeClient",
    "ACCEPTED",
    "DUPLICATE",
    "REJECTED",
    "DROPPED",
    "FAILED",
    "uuid7",
    "uuid7_str",
    "uuid7_timestamp_ms",
    "__version__",
]
