// The `cloudflare` email transport: hands a MIME message core built to the
// Worker's `send_email` binding. JavaScript because `EmailMessage` comes
// from the runtime's `cloudflare:email` module and the binding's errors
// carry a `code` (Email Service's `E_…`) that a Rust error would lose; one
// call from Rust does it all. Rust decides what the outcome means.

// `cloudflare:email` is imported when first needed, not at the top: the
// open-source workerd (bare runtime tests and the bench) does not provide
// it, and a Worker importing it at load would not start there at all.
let emailMessage = null;

/**
 * Sends `raw` (a complete RFC 5322 message) from `from` to `to` through
 * `binding`, waiting at most `timeoutMs`. Resolves to null once the binding
 * took it, or to {code, message, timedOut} when it did not; never rejects.
 */
export async function sendMime(binding, from, to, raw, timeoutMs) {
  let timer;
  const timeout = new Promise((resolve) => {
    timer = setTimeout(() => resolve({ code: null, message: "timed out", timedOut: true }), timeoutMs);
  });
  const send = (async () => {
    try {
      emailMessage ??= (await import("cloudflare:email")).EmailMessage;
      await binding.send(new emailMessage(from, to, raw));
      return null;
    } catch (err) {
      const code = err && typeof err.code === "string" ? err.code : null;
      return { code, message: String((err && err.message) || err), timedOut: false };
    }
  })();
  try {
    return await Promise.race([send, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
