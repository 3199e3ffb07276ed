// The bench origin: a tiny Node HTTP server answering every request with 200 and a
// small JSON body naming the identity the gateway forwarded (or null). The same
// origin serves all three gateways. Run as a child process of bench/run.mjs so that
// its CPU is not mixed with the orchestrator's:  node bench/origin.mjs PORT
// It prints "listening PORT" once ready.
import http from "node:http";

const port = Number(process.argv[2] || 0);
const server = http.createServer((req, res) => {
  const user = req.headers["x-auth-user-id"];
  // /api/echo: the identity headers as received (the bench's correctness checks).
  const body = req.url.startsWith("/api/echo")
    ? JSON.stringify(Object.fromEntries(Object.entries(req.headers).filter(([k]) => k.startsWith("x-auth-") || k === "authorization")))
    : user
    ? `{"ok":true,"user":${JSON.stringify(user)},"assertion":${req.headers["x-auth-assertion"] ? "true" : "false"}}`
    : '{"ok":true,"user":null}';
  // Drain any request body, then answer.
  req.resume();
  req.on("end", () => {
    res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
    res.end(body);
  });
});
server.keepAliveTimeout = 60_000;
server.headersTimeout = 65_000;
server.listen(port, "127.0.0.1", () => {
  console.log(`listening ${server.address().port}`);
});
process.on("SIGTERM", () => server.close(() => process.exit(0)));
