#!/usr/bin/env bash
# Installs the pinned official Cloudflare SDKs into project-local folders, never globally:
#   .sdk/node  - npm package `cloudflare` (pinned by tests/compat/ts/package-lock.json)
#   .sdk/py    - a virtualenv with PyPI packages `cloudflare`, `standardwebhooks` (the Standard
#                Webhooks reference library, which verifies zonecert's deliveries) and pytest
#                (every package pinned by tests/compat/py/requirements.txt)
# Idempotent: each part is skipped when the pinned version is already there.
set -euo pipefail

# Also pinned in tests/compat/ts/package.json (+ lock) and tests/compat/py/requirements.txt.
NPM_CLOUDFLARE_VERSION=7.3.0

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
sdk="$root/.sdk"
ts_dir="$root/tests/compat/ts"
mkdir -p "$sdk"

install_node() {
    local node_dir="$sdk/node"
    local installed=""
    if [[ -f "$node_dir/node_modules/cloudflare/package.json" ]]; then
        installed="$(node -p "require('$node_dir/node_modules/cloudflare/package.json').version")"
    fi
    # The lock file is the pin; a changed lock file means a reinstall.
    if [[ "$installed" == "$NPM_CLOUDFLARE_VERSION" ]] \
        && cmp -s "$ts_dir/package-lock.json" "$node_dir/package-lock.json"; then
        echo "install-sdks: npm cloudflare@$installed already in $node_dir"
    else
        echo "install-sdks: installing npm cloudflare@$NPM_CLOUDFLARE_VERSION into $node_dir"
        mkdir -p "$node_dir"
        cp "$ts_dir/package.json" "$ts_dir/package-lock.json" "$node_dir/"
        npm ci --prefix "$node_dir" --ignore-scripts --no-audit --no-fund >/dev/null
    fi
    # Node resolves `import ... from 'cloudflare'` by walking up from the importing file, so the
    # tests (and the seed example, which must stay verbatim) see the SDK through this link.
    local link="$ts_dir/node_modules"
    if [[ ! -L "$link" || "$(readlink "$link")" != "../../../.sdk/node/node_modules" ]]; then
        rm -rf "$link"
        ln -s ../../../.sdk/node/node_modules "$link"
    fi
}

install_py() {
    local venv="$sdk/py"
    local requirements="$root/tests/compat/py/requirements.txt"
    if [[ -x "$venv/bin/python" ]] && cmp -s "$requirements" "$venv/requirements.txt"; then
        echo "install-sdks: PyPI $(grep '^cloudflare==' "$requirements") already in $venv"
        return
    fi
    echo "install-sdks: installing PyPI $(grep '^cloudflare==' "$requirements") into $venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$venv/requirements.txt"
}

# The runtimes the SDKs need: Node.js with npm, and Python 3 with its venv module (a separate
# package on Debian). Installed from the distribution when missing and apt-get can.
ensure_runtimes() {
    local missing=()
    command -v node >/dev/null && command -v npm >/dev/null || missing+=(nodejs npm)
    python3 -m venv --help >/dev/null 2>&1 || missing+=(python3 python3-venv)
    if ((${#missing[@]} == 0)); then
        return
    fi
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        echo "install-sdks: installing ${missing[*]} with apt-get"
        apt-get update >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "install-sdks: missing ${missing[*]}; install them (Debian: apt-get install ${missing[*]})" >&2
        exit 1
    fi
}

ensure_runtimes
install_node
install_py
