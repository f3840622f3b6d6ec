#!/usr/bin/env bash
# Builds the release server and the site it serves:
#   target/release/moderato    the server (SSR, API, live updates)
#   target/site/pkg/           moderato.HASH.{js,wasm,css} (the whole app) and
#                              reader.HASH.{js,wasm} (the light client of a reader's thread
#                              page), each beside its .br and .gz, and hash.txt naming them
#                              (read by the server at start)
#
# This is the job `cargo leptos build --release` would do (plus the second, light wasm that
# cargo-leptos knows nothing of), in four steps, so that a new
# machine need not compile cargo-leptos first (12-22 minutes on 2 cores):
#   1. the browser's two wasm builds (profile wasm-release) and the server (release), with cargo;
#   2. the JS glue, with the wasm-bindgen CLI pinned in Cargo.toml;
#   3. wasm-opt -Oz (npm binaryen; Debian's is too old, see ../shared/BUILD-NOTES.md);
#   4. content-hashed names and brotli + gzip copies made once here, so the server sends
#      them without compressing per request (scripts/assets.mjs).
# Needs what `scripts/tools.sh build` installs.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export PATH="$root/end2end/node_modules/.bin:$HOME/.cargo/bin:$PATH"
say() { printf '\033[1m[build]\033[0m %s\n' "$*"; }

stage=$(mktemp -d "$root/target/site-stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT
wasm=target/wasm32-unknown-unknown/wasm-release/frontend.wasm

# One wasm build of `frontend` into $stage/NAME.js + NAME_bg.wasm; $2... are cargo's
# feature flags. Both builds write the same file, so each is bound before the next starts.
browser_build() {
  local name=$1
  shift
  say "wasm $name (frontend $*, profile wasm-release)"
  cargo build --profile wasm-release -p frontend --lib --target wasm32-unknown-unknown "$@"
  say "wasm-bindgen $name"
  wasm-bindgen --target web --no-typescript --out-dir "$stage" --out-name "$name" "$wasm"
  say "wasm-opt -Oz $name"
  # The features rustc's wasm32 target emits by default; wasm-opt must accept them all.
  wasm-opt -Oz --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
    --enable-mutable-globals --enable-reference-types --enable-multivalue \
    "$stage/${name}_bg.wasm" -o "$stage/${name}_bg.opt.wasm"
  mv "$stage/${name}_bg.opt.wasm" "$stage/${name}_bg.wasm"
}
# The whole app (staff; every page but a reader's thread page) ...
browser_build moderato
# ... and the light reader client, without Leptos (frontend's `reader` feature).
browser_build reader --no-default-features --features reader
say "server (release)"
cargo build --release -p server --bin moderato
cp style/main.css "$stage/moderato.css"

say "hashed names, brotli and gzip"
rm -rf target/site
mkdir -p target/site
cp -R public/. target/site/
rm -f target/site/.keep
node scripts/assets.mjs "$stage" target/site
say "done: target/release/moderato, target/site"
