// hello-web: a small real HTTP service for Kiln's examples and tests.
//   GET /healthz   -> 200 {"status":"ok"} (status from HEALTHZ_STATUS, to simulate a broken release)
//   GET /version   -> {"version": <version.txt>, "instance": <hostname>}
//   GET /          -> a greeting
//   GET /slow?ms=N -> answers after N ms (0 <= N <= 2000): a request that takes a while
//   GET /stats     -> {"requests": N, ...}: requests served so far, not counting /healthz and /stats
// Every response carries `x-instance: <hostname>`.
// Graceful shutdown: on SIGTERM it stops accepting connections, finishes in-flight requests and exits.
// The moment it was told to stop is recorded: every response to a request that *started* after it
// carries `x-served-after-stop: 1`, so a client can count requests a stopping instance still got.
// Test knobs: START_DELAY_MS (answers 503 on /healthz until then), HEALTHZ_STATUS, and
// EXIT_AFTER_MS (exits with code 1 after that long: a crashing, flapping app).
"use strict";
const http = require("node:http");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");

const port = Number(process.env.PORT || 8080);
const version = fs.readFileSync(path.join(__dirname, "version.txt"), "utf8").trim();
const healthStatus = Number(process.env.HEALTHZ_STATUS || 200);
const startDelayMs = Number(process.env.START_DELAY_MS || 0);
const startedAt = Date.now();
const instance = os.hostname();
const MAX_SLOW_MS = 2000;

/** When SIGTERM/SIGINT arrived (ms since the epoch), or 0 while running normally. */
let stopRequestedAt = 0;
/** Requests served, not counting /healthz and /stats. */
let served = 0;
/** Of those, how many started after the stop was requested. */
let servedAfterStop = 0;

const server = http.createServer((request, response) => {
  const afterStop = stopRequestedAt > 0;
  const send = (status, body) => {
    const headers = { "content-type": "application/json", "x-instance": instance };
    if (afterStop) headers["x-served-after-stop"] = "1";
    response.writeHead(status, headers);
    response.end(`${JSON.stringify(body)}\n`);
  };
  let url;
  try {
    url = new URL(request.url || "/", "http://localhost");
  } catch {
    return send(400, { error: "bad request target" });
  }
  const pathname = url.pathname;
  if (pathname === "/healthz") {
    if (Date.now() - startedAt < startDelayMs) return send(503, { status: "starting" });
    return send(healthStatus, { status: healthStatus < 400 ? "ok" : "failing" });
  }
  if (pathname === "/stats") {
    return send(200, { requests: served, servedAfterStop, stopRequestedAt: stopRequestedAt || null, instance, version });
  }
  served += 1;
  if (afterStop) servedAfterStop += 1;
  if (pathname === "/version") return send(200, { version, instance });
  if (pathname === "/") return send(200, { message: `hello from ${version}`, instance });
  if (pathname === "/slow") {
    const text = url.searchParams.get("ms") ?? "0";
    const ms = Number(text);
    if (!/^\d+$/.test(text) || ms > MAX_SLOW_MS) return send(400, { error: `ms must be an integer from 0 to ${MAX_SLOW_MS}` });
    const timer = setTimeout(() => send(200, { slept: ms, version, instance }), ms);
    // A client that goes away does not keep the timer (nor the process on shutdown) waiting.
    response.on("close", () => {
      if (!response.writableEnded) clearTimeout(timer);
    });
    return undefined;
  }
  return send(404, { error: "not found" });
});

const exitAfterMs = Number(process.env.EXIT_AFTER_MS || 0);
if (exitAfterMs > 0) {
  setTimeout(() => {
    console.error(`EXIT_AFTER_MS=${exitAfterMs}: exiting with code 1`);
    process.exit(1);
  }, exitAfterMs);
}

server.keepAliveTimeout = 5000;
server.listen(port, () => console.log(`hello-web ${version} listening on ${port}`));

let stopping = false;
function shutdown(signal) {
  if (stopping) return;
  stopping = true;
  stopRequestedAt = Date.now();
  console.log(`${signal}: closing; in-flight requests finish first`);
  server.close(() => {
    console.log(`${signal}: closed; served ${served} request(s), ${servedAfterStop} of them after the stop`);
    process.exit(0);
  });
  server.closeIdleConnections();
  setTimeout(() => process.exit(0), 8000).unref();
}
process.on("SIGTERM", () => shutdown("SIGTERM"));
process.on("SIGINT", () => shutdown("SIGINT"));
