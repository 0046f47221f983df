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

# What CI checks.
verify: lint test
