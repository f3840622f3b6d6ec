#!/usr/bin/env bash
# Installs what building and testing Moderato needs, skipping whatever is already there.
# Usage: scripts/tools.sh build   (wasm target, wasm-bindgen CLI, npm packages)
#        scripts/tools.sh test    (all of the above, plus Chromium and PostgreSQL)
# Every step is idempotent: a second run on a ready machine takes a couple of seconds.
# cargo-leptos is not needed: scripts/build.sh does its release build in four steps.
set -euo pipefail
cd "$(dirname "$0")/.."

# Must equal the wasm-bindgen crate version pinned in Cargo.toml (and so in Cargo.lock).
WASM_BINDGEN_VERSION=$(sed -n 's/^wasm-bindgen = { version = "=\([0-9.]*\)".*/\1/p; s/^wasm-bindgen = "=\([0-9.]*\)"/\1/p' Cargo.toml | head -n1)
export PATH="$HOME/.cargo/bin:$PATH"

say() { printf '\033[1m[tools]\033[0m %s\n' "$*"; }

apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then
    say "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
  say "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_wasm_target() {
  if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    say "adding the wasm32-unknown-unknown target"
    rustup target add wasm32-unknown-unknown
  fi
}

ensure_wasm_bindgen() {
  if wasm-bindgen --version 2>/dev/null | grep -q " $WASM_BINDGEN_VERSION\$"; then return; fi
  say "installing wasm-bindgen-cli $WASM_BINDGEN_VERSION (one time, ~4 min)"
  # --locked fails: a dependency version in its lockfile is gone from the index.
  cargo install --quiet wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" --force
}

ensure_npm() {
  # wasm-opt (npm binaryen; Debian's is too old) and Playwright live in end2end/node_modules.
  if [ ! -x end2end/node_modules/.bin/wasm-opt ] || [ ! -d end2end/node_modules/@playwright/test ] \
     || [ end2end/package-lock.json -nt end2end/node_modules/.package-lock.json ]; then
    say "npm ci in end2end/"
    (cd end2end && npm ci --no-audit --no-fund --loglevel=error)
  fi
}

ensure_chromium() {
  if [ ! -x /usr/bin/chromium ]; then apt_install chromium; fi
}

ensure_postgres() {
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then apt_install postgresql; fi
}

ensure_aiosmtpd() {
  # A real SMTP server for the email notification test.
  if ! python3 -c 'import aiosmtpd' 2>/dev/null; then
    say "pip install aiosmtpd"
    python3 -m pip install --quiet --disable-pip-version-check aiosmtpd
  fi
}

mode=${1:-build}
ensure_wasm_target
ensure_wasm_bindgen
ensure_npm
if [ "$mode" = test ]; then
  ensure_chromium
  ensure_postgres
  ensure_aiosmtpd
fi
say "ready"
