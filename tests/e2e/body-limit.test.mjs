// Request bodies without a length, in the real runtime: the auth API reads a
// chunked body chunk by chunk and answers 413 as soon as it passes 16 KiB,
// without waiting for the rest; a chunked body under the limit still works.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { startGateway, randomEmail } from "./harness.mjs";

const LIMIT = 16 * 1024;
let gw;

before(async () => {
  gw = await startGateway();
});

after(async () => {
  await gw?.stop();
});

/**
 * POSTs a chunked body to `path`, one piece from `next()` at a time, each
 * written once the previous one has been handed to the socket and `pauseMs`
 * has passed; stops when `next()` returns null (the body ends) or undefined
 * (nothing more is sent, the body left open), or the answer has arrived.
 * Resolves to {status, headers, body, sent, finished}: `sent` is how many
 * bytes had been written when the answer's head arrived, `finished` whether
 * the whole body had been sent by then.
 */
function chunkedPost(path, next, pauseMs) {
  const url = new URL(path, gw.url);
  return new Promise((resolve, reject) => {
    let sent = 0;
    let finished = false;
    let answered = false;
    const req = http.request(url, {
      method: "POST",
      headers: { "content-type": "application/json", "transfer-encoding": "chunked" },
    });
    req.on("response", (res) => {
      answered = true;
      const at = { sent, finished };
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => {
        resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString("utf8"), ...at });
        req.destroy();
      });
      res.on("error", reject);
    });
    // Once answered, the server may close the connection under the unsent
    // rest: that is the point, not a failure.
    req.on("error", (e) => { if (!answered) reject(e); });
    const pump = () => {
      if (answered || req.destroyed) return;
      const piece = next();
      if (piece === undefined) return;
      if (piece === null) {
        finished = true;
        req.end();
        return;
      }
      req.write(piece, () => {
        sent += piece.length;
        setTimeout(pump, pauseMs);
      });
    };
    pump();
  });
}

test("a chunked body over 16 KiB is refused with 413 as soon as it passes the limit, not once it has all arrived", async () => {
  // 8 MiB in 16 KiB pieces, one every 10 ms: more than five seconds of sending.
  const piece = Buffer.alloc(16 * 1024, "a");
  const pieces = 512;
  let n = 0;
  const res = await chunkedPost("/auth/login", () => {
    if (n === 0) { n++; return Buffer.from('{"email": "'); }
    return n++ <= pieces ? piece : null;
  }, 10);
  assert.equal(res.status, 413, res.body);
  assert.match(res.headers["content-type"], /^application\/problem\+json/);
  assert.equal(JSON.parse(res.body).code, "payload_too_large");
  assert.equal(res.finished, false, "the answer came only after the whole body was sent");
  assert.ok(res.sent < 1024 * 1024, `the answer came after ${res.sent} bytes`);
});

test("a chunked body of many small pieces is refused once their sum passes 16 KiB", async () => {
  const piece = Buffer.alloc(1024, " ");
  let n = 0;
  // 17 pieces back to back, then nothing more (the body left open): the
  // answer must come from the sum passing 16 KiB, not from the body's end.
  // Nothing unread is left when the server closes, so the answer is not lost
  // to a reset of the connection under bytes still in flight.
  const res = await chunkedPost("/auth/signup", () => (n++ < 17 ? piece : undefined), 0);
  assert.equal(res.finished, false);
  assert.equal(res.status, 413, res.body);
  assert.equal(JSON.parse(res.body).code, "payload_too_large");
});

test("a chunked body under the limit is read whole and works", async () => {
  const email = randomEmail("chunked");
  const text = JSON.stringify({ email, password: "correct horse battery", name: "Ada" });
  // In 7-byte pieces: one body in many reads.
  const parts = text.match(/.{1,7}/gs);
  let i = 0;
  const res = await chunkedPost("/auth/signup", () => (i < parts.length ? Buffer.from(parts[i++]) : null), 1);
  assert.equal(res.status, 201, res.body);
  assert.equal(res.finished, true);
  assert.equal(JSON.parse(res.body).user.email, email);
  // Exactly 16 KiB, chunked, of valid JSON (whitespace padding): read, not refused.
  const padded = Buffer.from(JSON.stringify({ email: randomEmail("edge"), password: "correct horse battery" }));
  const body = Buffer.concat([padded, Buffer.alloc(LIMIT - padded.length, " ")]);
  let sentOnce = false;
  const edge = await chunkedPost("/auth/signup", () => {
    if (sentOnce) return null;
    sentOnce = true;
    return body;
  }, 0);
  assert.equal(edge.status, 201, edge.body);
});

test("a chunked body of exactly 16 KiB + 1 byte is refused, whether its last byte comes alone or not", async () => {
  // Valid JSON but for its size: were the limit off by one, it would sign up (201).
  const padded = Buffer.from(JSON.stringify({ email: randomEmail("over"), password: "correct horse battery" }));
  const body = Buffer.concat([padded, Buffer.alloc(LIMIT + 1 - padded.length, " ")]);
  assert.equal(body.length, LIMIT + 1);
  for (const pieces of [[body], [body.subarray(0, LIMIT), body.subarray(LIMIT)]]) {
    let i = 0;
    const res = await chunkedPost("/auth/signup", () => (i < pieces.length ? pieces[i++] : null), 0);
    assert.equal(res.status, 413, `${pieces.length} piece(s): ${res.body}`);
    assert.equal(JSON.parse(res.body).code, "payload_too_large");
  }
});
