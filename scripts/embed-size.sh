#!/usr/bin/env bash
# What embedding costs a host page, measured against a running Moderato:
#   embed-size.sh [BASE_URL] [THREAD_KEY]     (default http://127.0.0.1:3000 welcome)
# Prints embed.js and count.js raw and gzip (gzip -9, and as served with Accept-Encoding),
# then every file the embed page /embed/t/KEY loads on a first visit (HTML, CSS, JS, wasm)
# with its size raw, as served, and gzip -9, and the totals. Fails if embed.js is over
# 4 KB gzip, the budget in the README.
set -euo pipefail
base=${1:-http://127.0.0.1:3000}
key=${2:-welcome}
exec python3 - "$base" "$key" <<'PY'
import gzip, re, sys, urllib.request

base, key = sys.argv[1].rstrip("/"), sys.argv[2]

def fetch(path, encoding=None):
    req = urllib.request.Request(base + path)
    if encoding:
        req.add_header("Accept-Encoding", encoding)
    with urllib.request.urlopen(req) as r:
        return r.read(), r.headers.get("Content-Encoding") or "identity"

def sizes(path):
    raw, _ = fetch(path)
    served, enc = fetch(path, "gzip, br")
    return len(raw), len(served), enc, len(gzip.compress(raw, 9))

print(f"{'file':52} {'raw':>9} {'served':>9} {'encoding':>9} {'gzip -9':>9}")
budget_ok = True
for path in ["/embed.js", "/count.js"]:
    raw, served, enc, gz = sizes(path)
    print(f"{path:52} {raw:9} {served:9} {enc:>9} {gz:9}")
    if path == "/embed.js" and gz > 4096:
        budget_ok = False

html, _ = fetch(f"/embed/t/{key}")
text = html.decode("utf-8", "replace")
assets = []
for m in re.finditer(r'<(?:link|script)\b[^>]*?(?:href|src)="(/[^"]+)"', text):
    if m.group(1) not in assets:
        assets.append(m.group(1))
# The wasm is fetched by the hydration script, not linked, unless preloaded.
js = [a for a in assets if a.endswith(".js") and "/pkg/" in a]
if js and not any(a.endswith(".wasm") for a in assets):
    assets.append(re.sub(r"\.js$", "_bg.wasm", js[0]))
total = [0, 0, 0]
for path in [f"/embed/t/{key}"] + assets:
    raw, served, enc, gz = sizes(path)
    total = [total[0] + raw, total[1] + served, total[2] + gz]
    print(f"{path[:52]:52} {raw:9} {served:9} {enc:>9} {gz:9}")
print(f"{'embed page, first load, total':52} {total[0]:9} {total[1]:9} {'':>9} {total[2]:9}")
if not budget_ok:
    print("embed.js is over its 4 KB gzip budget", file=sys.stderr)
    sys.exit(1)
PY
