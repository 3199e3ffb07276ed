// Process helpers: free ports, child processes with captured logs, readiness, and
// the exact CPU time a process has used (sum over its threads of
// /proc/PID/task/TID/schedstat field 1: nanoseconds on CPU).
import { spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/**
 * A listening TCP socket on 127.0.0.1, on a port of the OS's choosing, to
 * hand to a child process as file descriptor 3 (`start(..., { socket })`;
 * workerd: `--socket-fd http=3`). The port is never free in between, so no
 * other process can take it (freePort()'s release-then-bind race). Call
 * `release()` once the child has it.
 */
export async function listenSocket() {
  const srv = net.createServer();
  await new Promise((resolve, reject) => {
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", resolve);
  });
  return { port: srv.address().port, fd: srv._handle.fd, release: () => srv.close() };
}

const children = new Set();

/**
 * Spawns cmd; stdout+stderr go to logFile and are kept (child.output()).
 * `socket` (from listenSocket()) becomes the child's file descriptor 3;
 * `sockets`, several, become descriptors 3, 4, ... in order. `stdin: "pipe"`
 * holds a pipe open to the child (a supervisor that watches for its end);
 * `detached` makes it lead its own process group.
 */
export function start(cmd, args, { logFile, env, cwd, socket, sockets = socket ? [socket] : [], stdin = "ignore", detached = false } = {}) {
  const stdio = [stdin, "pipe", "pipe", ...sockets.map((s) => s.fd)];
  const child = spawn(cmd, args, { env: env ?? process.env, cwd, stdio, detached });
  // The child holds its own copies of the listening sockets now.
  for (const s of sockets) s.release();
  let text = "";
  const log = logFile ? fs.createWriteStream(logFile) : null;
  const onData = (d) => {
    text += d.toString();
    if (text.length > 4_000_000) text = text.slice(-2_000_000);
    log?.write(d);
  };
  child.stdout.on("data", onData);
  child.stderr.on("data", onData);
  child.output = () => text;
  child.exited = new Promise((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
  children.add(child);
  child.on("exit", () => {
    children.delete(child);
    log?.end();
  });
  return child;
}

/** Stops one child we started (by its own pid), SIGTERM then SIGKILL. */
export async function stop(child) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  child.kill("SIGTERM");
  const t = setTimeout(() => child.kill("SIGKILL"), 3000);
  await child.exited;
  clearTimeout(t);
}

export async function stopAll() {
  await Promise.all([...children].map(stop));
}

/** Waits until `text` appears in the child's output. */
export async function waitOutput(child, pattern, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const m = child.output().match(pattern);
    if (m) return m;
    if (child.exitCode !== null) throw new Error(`process exited (${child.exitCode}) before printing ${pattern}:\n${child.output().slice(-3000)}`);
    await sleep(50);
  }
  throw new Error(`timed out waiting for ${pattern}:\n${child.output().slice(-3000)}`);
}

/** Waits until an HTTP GET of url answers at all. */
export async function waitHttp(url, child, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    if (child && child.exitCode !== null) {
      throw new Error(`process exited (${child.exitCode}) before ${url} answered:\n${child.output().slice(-3000)}`);
    }
    try {
      const r = await fetch(url);
      await r.arrayBuffer();
      return;
    } catch (e) {
      last = e;
      await sleep(100);
    }
  }
  throw new Error(`${url} did not answer: ${last}\n${child ? child.output().slice(-3000) : ""}`);
}

/** CPU time used so far by process `pid`, all threads, in nanoseconds. */
export function cpuNs(pid) {
  let total = 0;
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    try {
      total += Number(fs.readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ")[0]);
    } catch {
      // thread ended between readdir and read
    }
  }
  return total;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
