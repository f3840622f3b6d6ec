#!/usr/bin/env bash
# README command 1: install what is missing, build, and run Moderato with the demo thread on
# the embedded SQLite database (./moderato.db) at http://127.0.0.1:3000.
# Extra arguments go to `moderato serve` (e.g. --addr 127.0.0.1:8080).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/tools.sh build
scripts/build.sh
export LEPTOS_SITE_ROOT="$PWD/target/site"
exec target/release/moderato serve --demo "$@"
