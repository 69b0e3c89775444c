#!/usr/bin/env bash
# Runs every test of zonecert: formatting, lints, the Rust suites (unit, integration,
# doc tests: real servers on loopback) and the compatibility suites that drive the
# server with Cloudflare's official TypeScript and Python SDKs.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
echo "== official SDKs (scripts/compat.sh)"
scripts/compat.sh
