// Outbound HTTP for every request core builds — webhook deliveries, email API
// calls, the sign-in hook and OAuth provider calls — in JavaScript for the
// same reason as glue.js: one boundary crossing per request. Rust decides what
// to send and what the answer means; this only moves bytes.

/**
 * Sends one request and resolves to {status, body}: the body text, read as a
 * stream and capped at `maxBytes` — cut there when `truncate`, otherwise a
 * larger reply rejects. Rejects on a network error, or when no complete
 * answer came within `timeoutMs` (message "timed out"). `headers` is
 * "name\nvalue\nname\nvalue..."; redirects are returned, not followed.
 * `fetcher` (a service binding) sends it to another Worker instead of the
 * network; `url` then only gives the path and query the Worker sees.
 */
export async function send(method, url, headers, body, timeoutMs, maxBytes, truncate, fetcher) {
  const h = new Headers();
  if (headers) {
    const kv = headers.split("\n");
    for (let i = 0; i + 1 < kv.length; i += 2) h.append(kv[i], kv[i + 1]);
  }
  const controller = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort();
  }, timeoutMs);
  try {
    const init = { method, headers: h, body: body ?? undefined, redirect: "manual", signal: controller.signal };
    const resp = await (fetcher ?? globalThis).fetch(url, init);
    const chunks = [];
    let size = 0;
    if (resp.body) {
      const reader = resp.body.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        if (size + value.byteLength > maxBytes) {
          if (!truncate) {
            controller.abort();
            throw new Error(`reply larger than ${maxBytes} bytes`);
          }
          chunks.push(value.subarray(0, maxBytes - size));
          size = maxBytes;
          reader.cancel().catch(() => {});
          break;
        }
        size += value.byteLength;
        chunks.push(value);
      }
    }
    const all = new Uint8Array(size);
    let at = 0;
    for (const c of chunks) {
      all.set(c, at);
      at += c.byteLength;
    }
    // A cut inside a UTF-8 sequence decodes to U+FFFD; a truncated body is for logs only.
    return { status: resp.status, body: new TextDecoder().decode(all) };
  } catch (err) {
    throw new Error(timedOut ? "timed out" : (err && err.message) || String(err));
  } finally {
    clearTimeout(timer);
  }
}
