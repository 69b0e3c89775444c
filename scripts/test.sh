#!/usr/bin/env bash
# Runs every test of zonecert: formatting, lints, the Rust suites (unit, integration,
# doc tests: real servers on loopback) and the compatibility suites that drive the
# server with Cloudflare's official TypeScript and Python SDKs.
#
#   scripts/test.sh               in this checkout
#   scripts/test.sh --from-copy   in a copy of the repository's files placed alone in a new
#                                 temporary folder (no sibling folders to lean on), as a
#                                 fresh clone would be; the copy is removed afterwards.
#                                 This checkout's target/ (without its incremental caches),
#                                 when there is one, is copied beside it so that
#                                 dependencies need no rebuild; the copy's own sources are
#                                 newer, so the workspace rebuilds.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if [[ "${1:-}" == "--from-copy" ]]; then
    parent="$(mktemp -d "${TMPDIR:-/tmp}/zonecert-copy.XXXXXX")"
    trap 'rm -rf "$parent"' EXIT
    copy="$parent/zonecert"
    mkdir "$copy"
    # The repository's files as they are in this checkout (committed or not, never what
    # .gitignore leaves out); without git, every file but the build output and SDKs.
    # `-m`: the copies get new modification times, so cargo rebuilds them there.
    if git -C "$root" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        git -C "$root" ls-files -z --cached --others --exclude-standard \
            | tar -C "$root" --null --ignore-failed-read -T - -cf - \
            | tar -C "$copy" -m -xf -
    else
        tar -C "$root" --exclude=./target --exclude=./.sdk --exclude=node_modules \
            --exclude=./zonecert-data -cf - . | tar -C "$copy" -m -xf -
    fi
    # Its own target dir: sharing this checkout's would mix the two copies' artifacts.
    unset CARGO_TARGET_DIR
    # Without the incremental caches, about half of target/, which serve only the
    # workspace's own crates (rebuilt in the copy anyway).
    if [[ -d "$root/target" ]]; then
        tar -C "$root" --exclude='target/*/incremental' -cf - target | tar -C "$copy" -xf -
    fi
    echo "== running the suite in a copy of the repository alone: $copy"
    "$copy/scripts/test.sh"
    exit 0
elif [[ $# -gt 0 ]]; then
    echo "usage: scripts/test.sh [--from-copy]" >&2
    exit 2
fi

# The ACME tests run Pebble, Let's Encrypt's test CA (Debian's `pebble` package), as a real
# process on loopback. Installed from the distribution when missing and apt-get can, like
# the SDKs' runtimes.
if ! command -v pebble >/dev/null; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        echo "== installing pebble with apt-get"
        apt-get update >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends pebble >/dev/null
    else
        echo "test.sh: pebble is missing; install it (Debian: apt-get install pebble)" >&2
        exit 1
    fi
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
# The store tests start PostgreSQL clusters of their own (testkit's PgCluster): install
# the distribution's server when it is missing, as install-sdks.sh does the SDKs'
# runtimes. ZONECERT_SKIP_POSTGRES=1 skips those tests instead, explicitly.
if [[ "${ZONECERT_SKIP_POSTGRES:-}" != 1 ]] && ! command -v pg_ctl >/dev/null \
    && ! compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        echo "== installing PostgreSQL with apt-get (the store tests start their own clusters)"
        apt-get update >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql >/dev/null
    else
        echo "test.sh: PostgreSQL is missing (Debian: apt-get install postgresql); or set ZONECERT_SKIP_POSTGRES=1 to skip its tests" >&2
        exit 1
    fi
fi
echo "== cargo test"
# --no-fail-fast: one failing test binary must not hide the results of the others; nor
# must it hide the SDK suites', which run whatever the Rust suites said.
rust_status=0
cargo test --workspace --locked --no-fail-fast || rust_status=$?
echo "== official SDKs (scripts/compat.sh)"
# The binary `cargo test` just built: building it again with `cargo build -p zonecert` would
# resolve the dependencies' features for that one package and rebuild some of them.
compat_status=0
ZONECERT_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/zonecert" scripts/compat.sh || compat_status=$?
if (( rust_status != 0 || compat_status != 0 )); then
    echo "== FAILED: cargo test exited $rust_status, scripts/compat.sh exited $compat_status" >&2
    exit 1
fi
