// Points Upstash's own clients at upstash-emulator without changing their code.
//
// The official CLI (@upstash/cli 1.x) hard-codes https://api.upstash.com. Load this module with
// `node --import ./preload.mjs ...` and set UPSTASH_EMULATOR_API_URL (e.g. http://127.0.0.1:8080;
// UPSTASH_API_URL is used when it is not set):
// every fetch() to https://api.upstash.com is sent to the emulator instead, same path and query.
// Requests to other hosts (the data plane at https://<endpoint>) are untouched; trust the
// emulator's CA for them with NODE_EXTRA_CA_CERTS=<ca file>.

const UPSTASH_API = "https://api.upstash.com";
const target = (process.env.UPSTASH_EMULATOR_API_URL || process.env.UPSTASH_API_URL)?.replace(/\/$/, "");

if (target) {
  const originalFetch = globalThis.fetch;
  const rewrite = (url) =>
    url.startsWith(UPSTASH_API + "/") || url === UPSTASH_API
      ? target + url.slice(UPSTASH_API.length)
      : null;
  globalThis.fetch = function fetchViaEmulator(input, init) {
    if (typeof input === "string" || input instanceof URL) {
      const moved = rewrite(String(input));
      return originalFetch(moved ?? input, init);
    }
    if (input instanceof Request) {
      const moved = rewrite(input.url);
      return originalFetch(moved ? new Request(moved, input) : input, init);
    }
    return originalFetch(input, init);
  };
}
