#!/usr/bin/env bash
# What PostgreSQL alone commits on this machine, with no Moderato server in the way: a post's
# statements replayed by pgbench (16 clients, loopback, a durable cluster: fsync on), in three
# shapes, each run twice in turn:
#   now      the statements a post sends today (two thread reads, BEGIN, the comment with its
#            nonce, the event that bumps its room's counter, the counts with the NOTIFY, COMMIT);
#   folded   the same writes as one statement in autocommit (two round trips in all);
#   no-hot   the writes of "now" without the two rows every post updates (the room's event
#            counter and the published count), i.e. the most any design keeping those
#            statements could reach.
# It bounds the posting goal on PostgreSQL (docs and README, issue "speed under load").
# Usage: scripts/pg-ceiling.sh [SECONDS per run, default 8]. Needs target/release/moderato
# (scripts/build.sh, or cargo build --release -p server --bin moderato) to create the schema.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-8}
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
[ -x "$pg_bin/pgbench" ] || { echo "pgbench is not installed (scripts/tools.sh test installs PostgreSQL)" >&2; exit 1; }
[ -x target/release/moderato ] || { echo "build target/release/moderato first" >&2; exit 1; }

read -r dir url < <(PG_DURABLE=1 scripts/pg.sh start)
work=$(mktemp -d)
trap 'scripts/pg.sh stop "$dir" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
# The schema, and threads to post to (the first one has id 1).
target/release/moderato import --format disqus --database "$url" server/tests/fixtures/disqus.xml >/dev/null

# pgbench reads ":name" as a variable, so the room is spelt without the colon Moderato uses.
thread_read="SELECT id, key, kind, title, comments_enabled, published_at, created_at, updated_at FROM threads WHERE key = 'welcome';"
nonce="(:client_id || '-' || :n || '-' || clock_timestamp()::text, 1796444477559)"
columns="id, thread_id, parent_id, depth, path, author_name, author_email, author_url, title, body_source, body_html, status, moderator, reason, score, ip, created_at, updated_at"
values="1, NULL, 0, 'x', 'A', NULL, NULL, NULL, 'a comment of a few words', '<p>a comment of a few words</p>', 'published', NULL, NULL, NULL, '127.0.0.1', 1796437277687, 1796437277687"
payload="'{\"type\":\"comment\",\"html\":\"<article>a comment of a few words</article>\"}'"
bump="INSERT INTO event_rooms (room, last_id, pruned_through) VALUES ('thread-welcome', 1, 0) ON CONFLICT (room) DO UPDATE SET last_id = event_rooms.last_id + 1 RETURNING last_id"
count="INSERT INTO comment_counts (status, n) VALUES ('published', 1) ON CONFLICT (status) DO UPDATE SET n = comment_counts.n + 1"

# Both reads of a cycle (the form token's, the post's), and the comment with its nonce.
head="\\set n random(1, 2000000000)
$thread_read
$thread_read"
comment="WITH spent AS (INSERT INTO form_nonces (nonce, expires_at) VALUES $nonce RETURNING 1) INSERT INTO comments ($columns) SELECT nextval(pg_get_serial_sequence('comments', 'id')), $values FROM spent RETURNING id;"

cat >"$work/now.sql" <<EOF
$head
BEGIN;
$comment
WITH bumped (id) AS ($bump) INSERT INTO events (room, id, created_at, reader, staff) VALUES ('thread-welcome', (SELECT id FROM bumped), 1796437277687, $payload, $payload) RETURNING id;
WITH c0 AS ($count) SELECT pg_notify('moderato_events', 'thread-welcome 1');
COMMIT;
EOF
cat >"$work/folded.sql" <<EOF
$head
WITH spent AS (INSERT INTO form_nonces (nonce, expires_at) VALUES $nonce RETURNING 1), c AS (INSERT INTO comments ($columns) SELECT nextval(pg_get_serial_sequence('comments', 'id')), $values FROM spent RETURNING id), bumped (id) AS ($bump), e AS (INSERT INTO events (room, id, created_at, reader, staff) SELECT 'thread-welcome', bumped.id, 1796437277687, $payload, $payload FROM bumped RETURNING id), c0 AS ($count) SELECT e.id, pg_notify('moderato_events', 'thread-welcome ' || e.id) FROM e;
EOF
cat >"$work/no-hot.sql" <<EOF
$head
BEGIN;
$comment
INSERT INTO events (room, id, created_at, reader, staff) VALUES ('thread-x', :client_id::bigint * 4000000000 + :n, 1796437277687, $payload, $payload) RETURNING id;
SELECT pg_notify('moderato_events', 'thread-welcome 1');
COMMIT;
EOF

echo "pgbench, 16 clients, ${secs} s per run, durable cluster; transactions (posts) per second:"
for round in 1 2; do
  for shape in now folded no-hot; do
    tps=$("$pg_bin/pgbench" -n -M prepared -c 16 -j 2 -T "$secs" -f "$work/$shape.sql" "$url" 2>&1 |
      sed -n 's/^tps = \([0-9.]*\).*/\1/p')
    printf '  run %s  %-7s %8.0f\n' "$round" "$shape" "${tps:-0}"
  done
done
