#!/usr/bin/env bash
# Builds the release server and the site it serves:
#   target/release/moderato    the server (SSR, API, live updates)
#   target/site/pkg/           moderato.HASH.{js,wasm,css}, each beside its .br and .gz,
#                              and hash.txt naming them (read by the server at start)
#
# This is the job `cargo leptos build --release` would do, in four steps, so that a new
# machine need not compile cargo-leptos first (12-22 minutes on 2 cores):
#   1. the browser's wasm (profile wasm-release) and the server (release), with cargo;
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

say "wasm (frontend, profile wasm-release)"
cargo build --profile wasm-release -p frontend --lib --target wasm32-unknown-unknown
say "server (release)"
cargo build --release -p server --bin moderato

stage=$(mktemp -d "$root/target/site-stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT
say "wasm-bindgen"
wasm-bindgen --target web --no-typescript --out-dir "$stage" --out-name moderato \
  target/wasm32-unknown-unknown/wasm-release/frontend.wasm
say "wasm-opt -Oz"
# The features rustc's wasm32 target emits by default; wasm-opt must accept them all.
wasm-opt -Oz --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
  --enable-mutable-globals --enable-reference-types --enable-multivalue \
  "$stage/moderato_bg.wasm" -o "$stage/moderato_bg.opt.wasm"
mv "$stage/moderato_bg.opt.wasm" "$stage/moderato_bg.wasm"
cp style/main.css "$stage/moderato.css"

say "hashed names, brotli and gzip"
rm -rf target/site
mkdir -p target/site
cp -R public/. target/site/
rm -f target/site/.keep
node scripts/assets.mjs "$stage" target/site
say "done: target/release/moderato, target/site"
