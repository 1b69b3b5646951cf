// hello-web: a small real HTTP service for Kiln's examples and tests.
//   GET /healthz  -> 200 {"status":"ok"} (status from HEALTHZ_STATUS, to simulate a broken release)
//   GET /version  -> {"version": <version.txt>, "instance": <hostname>}
//   GET /         -> a greeting
// Graceful shutdown: on SIGTERM it stops accepting connections, finishes in-flight requests and exits.
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

const server = http.createServer((request, response) => {
  const send = (status, body) => {
    response.writeHead(status, { "content-type": "application/json" });
    response.end(`${JSON.stringify(body)}\n`);
  };
  if (request.url === "/healthz") {
    if (Date.now() - startedAt < startDelayMs) return send(503, { status: "starting" });
    return send(healthStatus, { status: healthStatus < 400 ? "ok" : "failing" });
  }
  if (request.url === "/version") return send(200, { version, instance: os.hostname() });
  if (request.url === "/") return send(200, { message: `hello from ${version}`, instance: os.hostname() });
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
  console.log(`${signal}: closing; in-flight requests finish first`);
  server.close(() => process.exit(0));
  server.closeIdleConnections();
  setTimeout(() => process.exit(0), 8000).unref();
}
process.on("SIGTERM", () => shutdown("SIGTERM"));
process.on("SIGINT", () => shutdown("SIGINT"));
