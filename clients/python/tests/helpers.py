"""Helpers shared by the tests: waiting for conditions, psql, ports, and the extra server
processes (a standalone eye-ingest) some tests need."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit, urlunsplit

import grpc

REPO_ROOT = Path(__file__).resolve().parents[3]


def eye_bin() -> Path:
    path = Path(os.environ.get("EYE_BIN") or REPO_ROOT / "target" / "debug" / "eye")
    if not path.is_file() or not os.access(path, os.X_OK):
        raise RuntimeError(
            f"the eye binary {path} does not exist or is not executable: build it "
            "(cargo build: the tests also need eye-ingest and eye-validator next to it) or point EYE_BIN at one"
        )
    return path


def wait_until(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.1):
    """Polls `condition` until it returns something truthy; returns that. Fails after `timeout`
    seconds with `what` (and the last value) in the message."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = condition()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def psql(database_url: str, sql: str) -> str:
    result = subprocess.run(
        ["psql", database_url, "-At", "-v", "ON_ERROR_STOP=1", "-c", sql],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0:
        raise RuntimeError(f"psql failed ({result.returncode}): {result.stderr.strip()}\nSQL: {sql}")
    return result.stdout.strip()


def free_port() -> int:
    """A port nothing listens on (bound and released at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def health_serving(endpoint: str, service: str) -> bool:
    """grpc.health.v1 Check, encoded by hand (no health stubs needed): True when SERVING."""
    target = endpoint.split("://", 1)[1]
    request = b"\n" + bytes([len(service)]) + service.encode()
    with grpc.insecure_channel(target) as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check")
        try:
            answer = check(request, timeout=2)
        except grpc.RpcError:
            return False
    return answer == b"\x08\x01"


def pg_ctl_stop(data_dir: str) -> None:
    """Stops the PostgreSQL server of `data_dir` (fast mode), as its owner when we are root."""
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl is None:
        candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
        if not candidates:
            raise RuntimeError("pg_ctl not found on PATH nor under /usr/lib/postgresql/*/bin")
        pg_ctl = str(candidates[-1])
    command = [pg_ctl, "-D", data_dir, "stop", "-m", "fast", "-w", "-t", "60"]
    if os.geteuid() == 0:
        owner = Path(data_dir).owner()
        command = ["runuser", "-u", owner, "--", *command]
    result = subprocess.run(command, capture_output=True, text=True, cwd="/", timeout=90)
    if result.returncode != 0 and "PID file" not in result.stderr:
        raise RuntimeError(f"{' '.join(command)} failed: {result.stderr.strip()}")




def sibling_binary(name: str) -> Path:
    """Another binary of the workspace (eye-ingest, eye-validator): next to the `eye` binary."""
    path = eye_bin().parent / name
    if not path.is_file() or not os.access(path, os.X_OK):
        raise RuntimeError(f"{path} does not exist: build the workspace or copy {name} next to EYE_BIN")
    return path


def with_database(database_url: str, name: str) -> str:
    """`database_url` pointing at database `name` instead."""
    parts = urlsplit(database_url)
    return urlunsplit(parts._replace(path="/" + name))


def run_eye(args: list[str], database_url: str, cwd: Path) -> str:
    """Runs an `eye` admin command against `database_url`; returns its stdout."""
    env = dict(os.environ, DATABASE_URL=database_url)
    result = subprocess.run(
        [str(eye_bin()), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        raise RuntimeError(f"eye {' '.join(args)} failed ({result.returncode}): {result.stderr[-2000:]}")
    return result.stdout


def issue_key(database_url: str, cwd: Path, app: str, roles: list[str]) -> str:
    """Creates application `app` with a key holding `roles`; returns the key."""
    args = ["apps", "create", app]
    for role in roles:
        args += ["--role", role]
    out = run_eye(args, database_url, cwd)
    key = out.strip().splitlines()[-1]
    assert re.match(r"^eye_[0-9a-f]{64}$", key), f"no key on the last line of: {out!r}"
    return key


class Service:
    """A standalone service binary (eye-ingest, eye-validator) with its JSON logs in a file."""

    def __init__(self, binary: str, env_extra: dict, workdir: Path):
        self.name = binary
        env = dict(os.environ)
        env.update(EYE__METRICS__PORT="0", EYE__TELEMETRY__LOG_FORMAT="json")
        env.update(env_extra)
        self.log_path = workdir / f"{binary}-{time.time_ns()}.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [str(sibling_binary(binary))],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, pattern: str, timeout: float = 60.0) -> re.Match:
        regex = re.compile(pattern)

        def found():
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited ({self.process.returncode}):\n{self.log_text()[-3000:]}")
            return regex.search(self.log_text())

        return wait_until(found, timeout, f"{self.name} to log {pattern!r}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()


def start_ingest(env_extra: dict, workdir: Path) -> tuple[Service, int]:
    """A standalone eye-ingest on a free port; returns it and its port once it is SERVING."""
    service = Service("eye-ingest", dict(EYE__INGEST__PORT="0", EYE__INGEST__HTTP_PORT="0", **env_extra), workdir)
    try:
        match = service.wait_for_log(r'eye-ingest listening.*?"port":\s*(\d+)|"port":\s*(\d+).*?eye-ingest listening')
        port = int(match.group(1) or match.group(2))
    except BaseException:
        service.stop()
        raise
    return service, port


class LostAnswerProxy:
    """A TCP proxy in front of a gRPC server that loses answers.

    Client bytes are forwarded as they come. Server bytes are parsed as HTTP/2 frames and
    forwarded too, except for the first `lose` answers (an answer starts with the first HEADERS
    frame of a stream, which a unary server sends only once its handler is done, so the request
    has been processed):
    - mode "cut": the proxy cuts both connections there (a connection error for the client);
    - mode "stall": the proxy holds that answer and everything after it on the connection for
      `stall` seconds, then forwards it all in order (HTTP/2 header compression needs every
      frame, in order): with a client deadline under `stall`, the client gives up on the call
      (DEADLINE_EXCEEDED) while the connection stays up.
    With `lose=0` it is a plain proxy. `port` picks the port to listen on (default: any).
    """

    def __init__(
        self, target_port: int, lose: int = 1, mode: str = "cut", port: int = 0, stall: float = 2.0
    ):
        assert mode in ("cut", "stall")
        self._stall = stall
        self._target = ("127.0.0.1", target_port)
        self._to_lose = lose
        self._mode = mode
        self.lost = 0
        self.connections = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", port))
        self.port = self._listener.getsockname()[1]
        self._closed = False
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._target)
            with self._lock:
                self.connections += 1
                self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._answers, args=(upstream, client), daemon=True).start()

    def _lose_one(self) -> bool:
        with self._lock:
            if self._to_lose <= 0:
                return False
            self._to_lose -= 1
            self.lost += 1
            return True

    @staticmethod
    def _cut(*sockets: socket.socket) -> None:
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        self._cut(source, sink)

    def _answers(self, upstream: socket.socket, client: socket.socket) -> None:
        buffer = b""
        held = None  # frames held back in "stall" mode, in order
        lock = threading.Lock()

        def release():
            nonlocal held
            time.sleep(self._stall)  # the simulated slow answer, not synchronisation
            with lock:
                frames, held = held, None
                try:
                    client.sendall(b"".join(frames))
                except OSError:
                    pass

        try:
            while True:
                data = upstream.recv(65536)
                if not data:
                    break
                buffer += data
                while len(buffer) >= 9:
                    length = int.from_bytes(buffer[0:3], "big")
                    if len(buffer) < 9 + length:
                        break
                    kind = buffer[3]
                    stream = int.from_bytes(buffer[5:9], "big") & 0x7FFF_FFFF
                    frame, buffer = buffer[: 9 + length], buffer[9 + length :]
                    with lock:
                        if held is None and kind == 0x1 and stream != 0 and self._lose_one():
                            if self._mode == "cut":
                                self._cut(upstream, client)
                                return
                            held = []
                            threading.Thread(target=release, daemon=True).start()
                        if held is not None:
                            held.append(frame)
                        else:
                            client.sendall(frame)
        except OSError:
            pass
        with lock:
            pass
        self._cut(upstream, client)

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        self._cut(*sockets)
