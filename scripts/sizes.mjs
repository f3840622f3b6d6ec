// What a reader downloads, measured against a running Moderato:
//   node scripts/sizes.mjs [BASE_URL] [THREAD_KEY]   (default http://127.0.0.1:3000 welcome)
//
// For each route (the thread page, the framed thread, the home page, sign-in) it loads the page and every script, stylesheet and wasm module the page loads on
// a first visit, and prints each file raw, as served to a browser sending
// `Accept-Encoding: br, gzip` (with the encoding the server chose), gzip -9 and brotli 11,
// then the page's total. Then embed.js and count.js, which a host page loads.
//
// Fails (exit 1) when the reader's pages (the thread page and the framed thread) transfer
// more than READER_BUDGET bytes of JS + wasm + CSS as served, or embed.js is over 4 KB
// gzip: the budgets in the README, checked on every test run so they cannot creep back.
import http from "node:http";
import zlib from "node:zlib";

const READER_BUDGET = Number(process.env.MODERATO_READER_BUDGET ?? 120 * 1024);
const EMBED_JS_BUDGET = 4096;
const base = (process.argv[2] ?? "http://127.0.0.1:3000").replace(/\/$/, "");
const key = process.argv[3] ?? "welcome";

const routes = [
  { path: `/t/${key}`, reader: true },
  { path: `/embed/t/${key}`, reader: true },
  { path: "/", reader: false },
  { path: "/login", reader: false },
];

// Node's fetch decodes bodies, so sizes come from plain http requests: the bytes as sent.
function get(path, encoding) {
  return new Promise((resolve, reject) => {
    const req = http.get(base + path, { headers: { "accept-encoding": encoding } }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => {
        if (res.statusCode !== 200) return reject(new Error(`${path}: HTTP ${res.statusCode}`));
        resolve({ bytes: Buffer.concat(chunks), encoding: res.headers["content-encoding"] ?? "identity" });
      });
    });
    req.on("error", reject);
  });
}

function brotli(bytes) {
  return zlib.brotliCompressSync(bytes, {
    params: { [zlib.constants.BROTLI_PARAM_QUALITY]: 11, [zlib.constants.BROTLI_PARAM_SIZE_HINT]: bytes.length },
  }).length;
}

async function measure(path) {
  const { bytes } = await get(path, "identity");
  const sent = await get(path, "br, gzip");
  return {
    path,
    raw: bytes.length,
    served: sent.bytes.length,
    encoding: sent.encoding,
    gzip: zlib.gzipSync(bytes, { level: 9 }).length,
    br: brotli(bytes),
    bytes,
  };
}

const cols = (a, b, c, d, e, f) =>
  console.log(`${String(a).slice(0, 58).padEnd(58)} ${String(b).padStart(9)} ${String(c).padStart(9)} ${String(d).padStart(8)} ${String(e).padStart(9)} ${String(f).padStart(9)}`);

let failed = false;
cols("file", "raw", "served", "encoding", "gzip -9", "br 11");
for (const route of routes) {
  const page = await measure(route.path);
  const html = page.bytes.toString("utf8");
  const assets = [];
  for (const m of html.matchAll(/<(?:link|script)\b[^>]*?(?:href|src)="(\/[^"]+)"/g)) {
    if (!assets.includes(m[1])) assets.push(m[1]);
  }
  // Files an inline module script loads (the reader client's `import ... from "/pkg/..."`
  // and its wasm), should a page ever load them without a hint in a link tag.
  for (const m of html.matchAll(/"(\/pkg\/[^"]+\.(?:js|wasm))"/g)) {
    if (!assets.includes(m[1])) assets.push(m[1]);
  }
  const files = [page];
  for (const a of assets) files.push(await measure(a));
  const total = { raw: 0, served: 0, gzip: 0, br: 0 };
  const code = { raw: 0, served: 0, gzip: 0, br: 0 };
  for (const f of files) {
    cols(f.path, f.raw, f.served, f.encoding, f.gzip, f.br);
    for (const k of Object.keys(total)) total[k] += f[k];
    if (f !== page) for (const k of Object.keys(code)) code[k] += f[k];
  }
  cols(`  ${route.path}: page + assets`, total.raw, total.served, "", total.gzip, total.br);
  cols(`  ${route.path}: JS + wasm + CSS`, code.raw, code.served, "", code.gzip, code.br);
  if (route.reader && code.served > READER_BUDGET) {
    console.error(`${route.path}: ${code.served} bytes of JS + wasm + CSS served, over the reader budget of ${READER_BUDGET}`);
    failed = true;
  }
  console.log();
}
for (const path of ["/embed.js", "/count.js"]) {
  const f = await measure(path);
  cols(f.path, f.raw, f.served, f.encoding, f.gzip, f.br);
  if (path === "/embed.js" && f.gzip > EMBED_JS_BUDGET) {
    console.error(`embed.js is ${f.gzip} bytes gzip, over its budget of ${EMBED_JS_BUDGET}`);
    failed = true;
  }
}
process.exit(failed ? 1 : 0);
