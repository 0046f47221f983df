"""Load producer for the shutdown tests: tracks events as fast as it can and appends each id to
a file once `track` has returned it.

    EYE_ENDPOINT=... EYE_API_KEY=... python producer.py --ids FILE --run RUN [--count N]
        [--signals] [--no-close]

--signals: `client.close_on_signals()` (SIGTERM/SIGINT flush, close, then exit 128+signum).
--no-close: never call close(): the atexit hook must flush.
The client's stats are printed as JSON on stdout at exit, after the client has closed.
"""

import argparse
import atexit
import json
import os
import sys

from eye_client import EyeClient


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ids", required=True)
    parser.add_argument("--run", required=True, help="put in every event's data, to find them")
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--signals", action="store_true")
    parser.add_argument("--no-close", action="store_true")
    options = parser.parse_args()

    holder = {}
    # Registered before the client's own hook, so it runs after it (atexit is LIFO).
    atexit.register(lambda: print(json.dumps(holder["client"].stats()), flush=True))
    client = EyeClient(os.environ["EYE_ENDPOINT"], os.environ["EYE_API_KEY"])
    holder["client"] = client
    if options.signals:
        client.close_on_signals()
    with open(options.ids, "w") as ids:
        for i in range(options.count):
            event_id = client.track("load", "tick", {"run": options.run, "i": i})
            ids.write(event_id + "\n")
    if not options.no_close:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
