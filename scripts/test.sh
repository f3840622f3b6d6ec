#!/usr/bin/env bash
# README command 2: install what is missing and run every test:
#   1. the Rust tests of the workspace on SQLite,
#   2. the same engine and HTTP tests against a real PostgreSQL server started here,
#   3. Playwright in Debian's Chromium against a release build (scripts/build.sh) on a free
#      port, then the size report per route (scripts/sizes.mjs).
# Every test runs even after a failure (--no-fail-fast), so one red test hides no other.
# Ends with one line "N passed, N failed" over all of them; exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
scripts/tools.sh test || exit 1
export PATH="$root/end2end/node_modules/.bin:$HOME/.cargo/bin:$PATH"

# A one-off build gains nothing from incremental caches, and they cost gigabytes of disk.
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi

logs="$root/target/test-logs"
mkdir -p "$logs"
passed=0
failed=0
steps_failed=()

# Adds the counts of cargo's "test result:" lines in a log to the totals.
count_cargo() {
  local p f
  read -r p f < <(awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;/) p += $i; if ($(i+1) ~ /^failed;/) f += $i } } END { print p + 0, f + 0 }' "$1")
  passed=$((passed + p))
  failed=$((failed + f))
}

echo "== 1/3 Rust tests (SQLite)"
cargo test --no-fail-fast --workspace --exclude frontend 2>&1 | tee "$logs/cargo-sqlite.log"
[ "${PIPESTATUS[0]}" = 0 ] || steps_failed+=("cargo test (SQLite)")
count_cargo "$logs/cargo-sqlite.log"

echo "== 2/3 Rust tests (PostgreSQL)"
if pg=$(scripts/pg.sh start); then
  pg_dir=${pg%% *}
  export MODERATO_TEST_PG_URL=${pg#* }
  # Only the tests that touch the database: the pure unit tests ran above. The same package
  # selection as above, so that features resolve the same and nothing is built again.
  cargo test --no-fail-fast --workspace --exclude frontend --test '*' 2>&1 | tee "$logs/cargo-postgres.log"
  [ "${PIPESTATUS[0]}" = 0 ] || steps_failed+=("cargo test (PostgreSQL)")
  count_cargo "$logs/cargo-postgres.log"
  unset MODERATO_TEST_PG_URL
  scripts/pg.sh stop "$pg_dir"
else
  steps_failed+=("PostgreSQL did not start")
  failed=$((failed + 1))
fi

echo "== 3/3 Playwright (release build, Chromium)"
if scripts/build.sh 2>&1 | tee "$logs/build.log" | grep -E '^(error|warning: unused)|Finished|\[build\]|^pkg/' ; [ "${PIPESTATUS[0]}" = 0 ]; then
  work=$(mktemp -d /tmp/moderato-e2e.XXXXXX)
  free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
  port=$(free_port)
  # The embed stories' two static sites (served by Playwright): one allowed, one not.
  embed_host_port=$(free_port)
  embed_foreign_port=$(free_port)
  # A real SMTP server for the mail story; it picks its own port and prints it.
  python3 server/tests/support/smtp.py "$work/mail" > "$work/smtp.port" 2> "$logs/e2e-smtp.log" &
  smtp_pid=$!
  for _ in $(seq 50); do [ -s "$work/smtp.port" ] && break; sleep 0.1; done
  smtp_port=$(head -n1 "$work/smtp.port")
  cat > "$work/moderato.toml" <<'TOML'
[comments]
# Each browser test opens a thread of its own.
auto_create_threads = true
# The mail story asks for reply mail (sent to the SMTP server started above).
reply_notifications = true

[moderation.kinds.post]
# Threads of kind "post" (made by the browser tests with `moderato thread set`).
enable_field = true
moderate_after_days = 7

[limits]
# The browser tests post and sign in faster than a person; the limits have HTTP tests.
posts_per_minute = 0
sign_ins_per_minute = 60
TOML
  printf '\n[embed]\n# The embed stories host page; Moderato itself is reached as http://localhost:PORT.\nallowed_origins = ["http://127.0.0.1:%s"]\nnew_threads_per_minute = 0\n' \
    "$embed_host_port" >> "$work/moderato.toml"
  # Links in mail are absolute: the address the embed stories reach Moderato at.
  printf '\n[site]\npublic_url = "http://localhost:%s"\n\n[smtp]\nport = %s\nretry_after_secs = 1\n' \
    "$port" "$smtp_port" >> "$work/moderato.toml"
  # The staff account the moderation stories sign in with.
  MODERATO_PASSWORD=e2e-staff-password target/release/moderato user add e2e-staff --staff \
    --database "sqlite://$work/e2e.db" >/dev/null
  LEPTOS_SITE_ROOT="$root/target/site" target/release/moderato serve \
    --addr "127.0.0.1:$port" --database "sqlite://$work/e2e.db" --config "$work/moderato.toml" --demo \
    > "$logs/e2e-server.log" 2>&1 &
  server_pid=$!
  (cd end2end && MODERATO_URL="http://127.0.0.1:$port" MODERATO_STAFF_USER=e2e-staff \
    MODERATO_STAFF_PASSWORD=e2e-staff-password MODERATO_BIN="$root/target/release/moderato" \
    MODERATO_DATABASE_URL="sqlite://$work/e2e.db" MODERATO_CONFIG="$work/moderato.toml" \
    MODERATO_EMBED_URL="http://localhost:$port" MODERATO_EMBED_HOST_PORT="$embed_host_port" \
    MODERATO_EMBED_FOREIGN_PORT="$embed_foreign_port" MODERATO_MAILDIR="$work/mail" \
    npx playwright test) 2>&1 | tee "$logs/playwright.log"
  if [ "${PIPESTATUS[0]}" != 0 ]; then
    steps_failed+=("Playwright")
    # What the server said while the stories ran: the first place to look.
    echo "-- e2e server log (warnings and errors)"
    grep -E 'WARN|ERROR' "$logs/e2e-server.log" | tail -n 40
  fi
  # What a reader and a host page download, per route (raw, served, gzip, brotli). Fails
  # if embed.js is over 4 KB gzip, or a reader page's JS + wasm + CSS over 120 KB as served
  # (README "What a page weighs").
  if node scripts/sizes.mjs "http://127.0.0.1:$port" welcome 2>&1 | tee "$logs/sizes.log"; [ "${PIPESTATUS[0]}" = 0 ]; then
    passed=$((passed + 1))
  else
    steps_failed+=("page sizes")
    failed=$((failed + 1))
  fi
  kill "$server_pid" "$smtp_pid" 2>/dev/null
  wait "$server_pid" "$smtp_pid" 2>/dev/null
  results=end2end/test-results/results.json
  if [ -f "$results" ]; then
    read -r p f fl < <(node -e '
      const s = require(process.argv[1]).stats;
      console.log(`${s.expected + (s.flaky || 0)} ${s.unexpected} ${s.flaky || 0}`);' "$root/$results")
    # A story that failed once and passed on its retry (CI only) passes, but is named.
    if [ "${fl:-0}" -gt 0 ]; then
      echo "flaky (passed on retry): $fl, see the Playwright log above"
    fi
    passed=$((passed + p))
    failed=$((failed + f))
  else
    failed=$((failed + 1))
  fi
  rm -rf "$work"
else
  steps_failed+=("scripts/build.sh")
  failed=$((failed + 1))
fi

echo
if [ ${#steps_failed[@]} -gt 0 ]; then
  echo "failed steps: ${steps_failed[*]} (logs in target/test-logs/)"
  [ "$failed" -gt 0 ] || failed=1
fi
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
