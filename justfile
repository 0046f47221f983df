# The Eye: common tasks. `cargo install --locked just` if `just` is missing.

default: verify

# Run the whole pipeline locally (starts its own Postgres if DATABASE_URL is unset).
dev:
    cargo run --release --bin eye -- dev

# The test suite (starts its own Postgres if DATABASE_URL is unset).
test:
    cargo test --workspace

# Formatting and lints, as CI runs them.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# The end-to-end benchmark (release binaries, durable Postgres); pass options after, e.g.
# `just bench --scenario latency --rate 5000` (see `target/release/eye-bench --help`).
bench *ARGS:
    cargo build --release --bins
    target/release/eye-bench {{ARGS}}

# The benchmark's correctness check at small scale (counts only, no timing), as CI runs it.
bench-check:
    cargo build --bins
    target/debug/eye-bench --bin-dir target/debug --scenario clients --events 20000 --batch 200 --no-copy --json
    target/debug/eye-bench --bin-dir target/debug --scenario transports --events 20000 --batch 200 --no-copy --json
    target/debug/eye-bench --bin-dir target/debug --scenario growth --sizes 0,200000 --events 10000 --batch 200 --json
    target/debug/eye-bench --bin-dir target/debug --scenario mixed --preload 200000 --preload-days 90 --queries 5 --rate 2000 --events 10000 --batch 100 --json

# Read-path latency: 10 million events loaded by COPY (about 2.5 minutes, once), then p50/p95/p99
# of sessions, a category over an hour and payload lookups through the real QueryService, and
# their plans. The store is kept: `just query-bench --reuse` measures it again without reloading;
# `--drop` removes it (see `target/release/eye-query-bench --help`).
query-bench *ARGS:
    cargo build --release -p eye-query-bench
    target/release/eye-query-bench {{ARGS}}

# The crash suite: real binaries, seeded faults (kill -9, SIGSTOP past the lease, Postgres
# restarts, terminated backends, poison rows), then nothing lost and nothing twice, checked in
# SQL. Pass options after, e.g. `just chaos --seed 7 --duration 120` (see `--help`).
chaos *ARGS:
    cargo build --release --bins
    target/release/eye-chaos {{ARGS}}

# The browser tracker's tests (headless Chromium, `apt-get install chromium`, against eye dev).
test-js:
    cargo build --bins
    bash clients/js/run-tests.sh

# The console's browser tests and screenshots (headless Chromium against eye dev).
test-console:
    cargo build --bins
    bash services/query/console-tests/run-tests.sh

# What CI checks.
verify: lint test
