// Waits until the server answers /health, so no test races the server's start.
export default async function globalSetup(): Promise<void> {
  const base = process.env.MODERATO_URL ?? "http://127.0.0.1:3000";
  const deadline = Date.now() + 60_000;
  let last = "";
  while (Date.now() < deadline) {
    try {
      const res = await fetch(`${base}/health`);
      if (res.ok) return;
      last = `status ${res.status}`;
    } catch (e) {
      last = String(e);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`Moderato did not answer ${base}/health within 60 s (${last})`);
}
