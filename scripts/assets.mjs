// Step 4 of scripts/build.sh: node scripts/assets.mjs STAGE SITE
//
// Moves the built moderato.js, moderato_bg.wasm, moderato.css, reader.js and reader_bg.wasm
// from STAGE into SITE/pkg under content-hashed names (moderato.HASH.js, reader.HASH.wasm,
// ...), writes SITE/pkg/hash.txt in the format Leptos reads ("js: HASH" per line), then puts a brotli (quality 11) and a gzip
// (level 9) copy beside every compressible file under SITE, where the server's static
// file handler picks the one the request accepts. Compression happens here, once, at the
// highest levels: a server compressing per request could not afford them.
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import zlib from "node:zlib";

const [stage, site] = process.argv.slice(2);
if (!stage || !site) {
  console.error("usage: node scripts/assets.mjs STAGE SITE");
  process.exit(2);
}
const pkg = path.join(site, "pkg");
fs.mkdirSync(pkg, { recursive: true });

const hashOf = (bytes) => createHash("sha256").update(bytes).digest("hex").slice(0, 16);

// What the server must find (its hash.txt kind), what wasm-bindgen names it, and its stem.
// Leptos reads the `js` and `wasm` lines (the whole app); the app's shell reads `css` and
// the reader client's `reader_js` and `reader_wasm`.
const built = [
  { kind: "js", from: "moderato.js", stem: "moderato", ext: "js" },
  { kind: "wasm", from: "moderato_bg.wasm", stem: "moderato", ext: "wasm" },
  { kind: "css", from: "moderato.css", stem: "moderato", ext: "css" },
  { kind: "reader_js", from: "reader.js", stem: "reader", ext: "js" },
  { kind: "reader_wasm", from: "reader_bg.wasm", stem: "reader", ext: "wasm" },
];
const lines = [];
for (const { kind, from, stem, ext } of built) {
  const bytes = fs.readFileSync(path.join(stage, from));
  const hash = hashOf(bytes);
  fs.writeFileSync(path.join(pkg, `${stem}.${hash}.${ext}`), bytes);
  lines.push(`${kind}: ${hash}`);
}
// Inline JS of crates (wasm-bindgen "snippets"), imported relative to moderato.js.
const snippets = path.join(stage, "snippets");
if (fs.existsSync(snippets)) {
  fs.cpSync(snippets, path.join(pkg, "snippets"), { recursive: true });
}
fs.writeFileSync(path.join(pkg, "hash.txt"), lines.join("\n") + "\n");

const compressible = /\.(js|mjs|wasm|css|html|svg|json|txt|xml|map)$/;
const files = [];
const walk = (dir) => {
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) walk(p);
    else if (compressible.test(entry.name) && entry.name !== "hash.txt") files.push(p);
  }
};
walk(site);

const row = (name, raw, gz, br) =>
  console.log(`${name.padEnd(44)} ${String(raw).padStart(9)} ${String(gz).padStart(9)} ${String(br).padStart(9)}`);
row("file", "raw", "gzip -9", "br 11");
for (const file of files.sort()) {
  const bytes = fs.readFileSync(file);
  const br = zlib.brotliCompressSync(bytes, {
    params: {
      [zlib.constants.BROTLI_PARAM_QUALITY]: 11,
      [zlib.constants.BROTLI_PARAM_MODE]: file.endsWith(".wasm")
        ? zlib.constants.BROTLI_MODE_GENERIC
        : zlib.constants.BROTLI_MODE_TEXT,
      [zlib.constants.BROTLI_PARAM_SIZE_HINT]: bytes.length,
    },
  });
  const gz = zlib.gzipSync(bytes, { level: 9 });
  // A copy that saves nothing would only cost a header; the server then sends the file.
  if (br.length < bytes.length) fs.writeFileSync(`${file}.br`, br);
  if (gz.length < bytes.length) fs.writeFileSync(`${file}.gz`, gz);
  row(path.relative(site, file), bytes.length, gz.length, br.length);
}
