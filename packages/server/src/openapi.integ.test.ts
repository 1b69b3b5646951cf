// The server against its own OpenAPI document: Schemathesis (property-based API testing, from PyPI)
// generates requests from /v1/openapi.json (examples, coverage, fuzzing, stateful) and checks that
// no answer is a 5xx and that every status code, content type, header and body is the one the
// document declares. A few requests Schemathesis does not send (or sends but does not judge: a
// wrong content type, an empty path segment) are checked against the document by hand.
//
// Everything runs in this process on 127.0.0.1 with the in-memory provider (no other provider is
// configured, so a deployment Schemathesis manages to create can touch nothing real) and a
// throwaway state folder. Schemathesis is found at KILN_SCHEMATHESIS, else on PATH, else in the
// virtualenv scripts/schemathesis.sh installs it into; without one the suite skips loudly on a laptop and
// fails under CI=true (install it: export KILN_SCHEMATHESIS="$(bash scripts/schemathesis.sh path | tail -n 1)").
import { spawn, spawnSync } from "node:child_process";
import { accessSync, constants } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { waitFor, type Logger } from "@kilnjs/core";
import { createMemoryProvider } from "@kilnjs/testkit";
import { hashToken, newTokenSecret } from "./auth.js";
import { createKilnServer, type KilnServer } from "./server.js";

/** Keep in step with scripts/schemathesis.sh: the CLI's options change between releases. */
const SCHEMATHESIS_VERSION = "4.32.5";
/** Test cases per operation and phase; the whole run takes about 15 s on the 2-core machines. */
const MAX_EXAMPLES = 20;
/** The run is killed (and the test fails) after this long. */
const RUN_TIMEOUT_MS = 120_000;
/**
 * A fixed seed, so that CI is reproducible; KILN_SCHEMATHESIS_SEED=<n> tries another one. The data
 * Schemathesis sees (deployment ids, times) differs between runs all the same.
 */
const SEED = process.env.KILN_SCHEMATHESIS_SEED ?? "20261130";
/**
 * What every response must satisfy. Not `all`: `positive_data_acceptance` expects any body that
 * matches DeployRequest's JSON schema to be accepted, but "spec or service, not both or neither"
 * and a kiln.yaml's own rules are checked by the server (422 SPEC_INVALID). `unsupported_method`
 * sends each path the methods the document does not give it and expects 405 with `Allow`;
 * `allow_header_conformance` expects OPTIONS to list exactly the document's methods.
 */
const CHECKS = [
  "not_a_server_error",
  "status_code_conformance",
  "content_type_conformance",
  "response_schema_conformance",
  "response_headers_conformance",
  "unsupported_method",
  "allow_header_conformance",
];

/** The schemathesis binary of the pinned version, or why there is none. */
function findSchemathesis(): { bin: string } | { missing: string } {
  const venv = process.env.KILN_SCHEMATHESIS_VENV ?? (process.getuid?.() === 0 ? "/opt/kiln-schemathesis" : path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), ".cache"), "kiln-schemathesis/venv"));
  // As scripts/schemathesis.sh looks: KILN_SCHEMATHESIS, PATH, then the virtualenv.
  const onPath = (process.env.PATH ?? "").split(path.delimiter).filter(Boolean).map((folder) => path.join(folder, "schemathesis"));
  const candidates = [process.env.KILN_SCHEMATHESIS, ...onPath, path.join(venv, "bin/schemathesis")].filter((candidate): candidate is string => Boolean(candidate));
  const tried: string[] = [];
  for (const bin of candidates) {
    try {
      accessSync(bin, constants.X_OK);
    } catch {
      if (!onPath.includes(bin)) tried.push(`${bin} (missing)`);
      continue;
    }
    // About 0.2 s: cheap enough for the top of a test file.
    const version = /^schemathesis, version (\S+)/m.exec(spawnSync(bin, ["--version"], { encoding: "utf8", timeout: 30_000, env: { ...process.env, NO_COLOR: "1" } }).stdout ?? "")?.[1];
    if (version === SCHEMATHESIS_VERSION) return { bin };
    tried.push(`${bin} (version ${version ?? "unknown"}, not ${SCHEMATHESIS_VERSION})`);
  }
  return { missing: `no schemathesis ${SCHEMATHESIS_VERSION} found: tried ${tried.join(", ")}` };
}

/** As `requireDockerEngine`: the binary, or undefined after a loud notice; throws under CI=true. */
function requireSchemathesis(): string | undefined {
  const found = findSchemathesis();
  if ("bin" in found) return found.bin;
  const install = 'export KILN_SCHEMATHESIS="$(bash scripts/schemathesis.sh path | tail -n 1)"';
  if (process.env.CI === "true") throw new Error(`Schemathesis is required under CI, but ${found.missing}. Install it first: ${install}.`);
  process.stderr.write(`\n*** SKIPPED: ${found.missing}: npm test installs it when run as root or with KILN_TEST_SETUP=start; or (about 25 s): ${install} (see "What npm test sets up" in docs/development.md) ***\n\n`);
  return undefined;
}

const schemathesis = requireSchemathesis();

/** Runs the binary; resolves with its exit code (null when killed) and output, killing it after `timeoutMs`. */
function run(bin: string, args: string[], options: { cwd: string; timeoutMs: number }): Promise<{ code: number | null; output: string; timedOut: boolean }> {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { cwd: options.cwd, env: { ...process.env, NO_COLOR: "1", PYTHONDONTWRITEBYTECODE: "1" }, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    let timedOut = false;
    child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString("utf8")));
    child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString("utf8")));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGTERM");
      setTimeout(() => child.kill("SIGKILL"), 5_000).unref();
    }, options.timeoutMs);
    child.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, output, timedOut });
    });
  });
}

interface OpenApiDocument {
  paths: Record<string, Record<string, { responses: Record<string, { content?: Record<string, unknown> }> }>>;
}

describe.skipIf(!schemathesis)("the OpenAPI document (Schemathesis)", () => {
  const admin = newTokenSecret();
  /** Requests that failed inside the server (a 500 logs "request failed"). */
  const errors: string[] = [];
  /** Every error the server logged, with the runner's (a rollout whose lock Schemathesis released by force logs some): printed when a check fails. */
  const logged: string[] = [];
  const logger: Logger = {
    debug() {},
    info() {},
    warn() {},
    error: (message, fields) => {
      const line = `${message} ${JSON.stringify(fields ?? {})}`;
      logged.push(line);
      if (message === "request failed") errors.push(line);
    },
  };
  let dir: string;
  let server: KilnServer;
  let base: string;
  let document: OpenApiDocument;

  const call = (method: string, route: string, init: { body?: string; headers?: Record<string, string>; token?: string | null } = {}) =>
    fetch(`${base}${route}`, {
      method,
      headers: { ...(init.token === null ? {} : { authorization: `Bearer ${init.token ?? admin}` }), ...init.headers },
      ...(init.body !== undefined ? { body: init.body } : {}),
    });

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "kiln-openapi-"));
    await writeFile(path.join(dir, "Dockerfile"), "FROM scratch\n");
    server = createKilnServer({
      providers: { memory: createMemoryProvider() },
      tokens: [{ name: "schemathesis", sha256: hashToken(admin), scopes: ["admin"], environments: ["*"] }],
      dataDir: path.join(dir, ".kiln"),
      specRoot: dir,
      logger,
      pollIntervalMs: 50,
    });
    base = (await server.listen(0, "127.0.0.1")).url;
    // The document's example target (hello-web@staging), deployed: requests built from the
    // examples then reach a target with a release, instances and history, not only empty answers.
    const accepted = await call("POST", "/v1/deployments", {
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        spec: { service: "hello-web", provider: "memory", instances: { count: 2, ports: [{ name: "http", port: 8080 }] }, health: { intervalMs: 100, healthyThreshold: 1 }, environments: { staging: {} } },
        environment: "staging",
      }),
    });
    expect(accepted.status).toBe(202);
    const { id } = (await accepted.json()) as { id: string };
    await waitFor(
      async () => {
        const { state } = (await (await call("GET", `/v1/deployments/${id}`)).json()) as { state: string };
        return state === "succeeded" ? { done: true, value: undefined } : { done: false, reason: state };
      },
      { timeoutMs: 20_000, minDelayMs: 20, maxDelayMs: 200, description: "hello-web@staging to be deployed" },
    );
    const fetched = await call("GET", "/v1/openapi.json");
    expect(fetched.status).toBe(200);
    document = (await fetched.json()) as OpenApiDocument;
  }, 60_000);

  afterAll(async () => {
    await server?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it(
    "answers every request Schemathesis makes from the document without a 5xx, and as the document says",
    async () => {
      const args = [
        "run",
        `${base}/v1/openapi.json`,
        // Also sent when loading the document, which needs a token like every /v1 route.
        "--header",
        `Authorization: Bearer ${admin}`,
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        String(MAX_EXAMPLES),
        "--checks",
        CHECKS.join(","),
        // Nothing is excluded. GET /v1/deployments/{id}/events streams until the deployment ends;
        // the deployments Schemathesis can start end within seconds (rollbacks of hello-web@staging
        // on the memory provider) or at once (a spec naming a provider this server lacks, as the
        // document's example names docker; invented specs fail validation with a 422), so a
        // stream that outlives this timeout is a failure worth seeing, not a hang.
        "--request-timeout",
        "30",
        "--seed",
        SEED,
        // Nothing written outside the run's temporary folder (the cwd): no .hypothesis database.
        "--generation-database",
        "none",
        "--no-color",
      ];
      const result = await run(schemathesis!, args, { cwd: dir, timeoutMs: RUN_TIMEOUT_MS });
      const explain = () =>
        [
          result.timedOut ? `schemathesis did not finish within ${RUN_TIMEOUT_MS / 1000} s and was killed.` : `schemathesis exited with ${result.code}.`,
          `Rerun: ${schemathesis} ${args.map((arg) => (arg.startsWith("Authorization") ? "'Authorization: Bearer <token>'" : arg)).join(" ")}`,
          "---- schemathesis output ----",
          result.output.length > 20_000 ? `…${result.output.slice(-20_000)}` : result.output,
          ...(logged.length > 0 ? ["---- errors the server logged (last 20) ----", ...logged.slice(-20)] : []),
        ].join("\n");
      // It tested every operation of the document (a schema that failed to load exits non-zero too).
      const operations = Object.values(document.paths).reduce((count, methods) => count + Object.keys(methods).length, 0);
      const tested = /Tested:\s+(\d+)/.exec(result.output)?.[1];
      const ok = !result.timedOut && result.code === 0 && tested === String(operations) && errors.length === 0;
      if (!ok) process.stderr.write(`${explain()}\n`);
      const see = "see the schemathesis output printed above";
      expect(result.timedOut, see).toBe(false);
      expect(result.code, see).toBe(0);
      expect(tested, see).toBe(String(operations));
      expect(errors, see).toEqual([]);
    },
    RUN_TIMEOUT_MS + 30_000,
  );

  it("answers requests Schemathesis does not send, or does not judge, as the document says", async () => {
    const spec = "service: web\nprovider: memory\ninstances:\n  count: 1\n";
    const probes: Array<{ operation: [string, string]; request: () => Promise<Response>; expect?: { status?: number; code?: string } }> = [
      // A body of a type the operation does not take (Schemathesis sends it, but skips the status check).
      {
        operation: ["/v1/targets/{target}/rollback", "post"],
        request: () => call("POST", "/v1/targets/hello-web@staging/rollback", { headers: { "content-type": "text/plain" }, body: '{"release":1}' }),
        expect: { status: 415, code: "UNSUPPORTED_MEDIA_TYPE" },
      },
      { operation: ["/v1/deployments", "post"], request: () => call("POST", "/v1/deployments", { headers: { "content-type": "text/plain" }, body: spec }), expect: { status: 415, code: "UNSUPPORTED_MEDIA_TYPE" } },
      // Every YAML media type the server reads is one the document declares.
      { operation: ["/v1/plan", "post"], request: () => call("POST", "/v1/plan", { headers: { "content-type": "text/yaml" }, body: spec }), expect: { status: 200 } },
      { operation: ["/v1/plan", "post"], request: () => call("POST", "/v1/plan", { headers: { "content-type": "application/x-yaml" }, body: spec }), expect: { status: 200 } },
      // An empty path parameter: no route matches, the answer is a 404 problem.
      { operation: ["/v1/targets/{target}/history", "get"], request: () => call("GET", "/v1/targets//history"), expect: { status: 404 } },
      { operation: ["/v1/targets/{target}/lock", "get"], request: () => call("GET", "/v1/targets//lock"), expect: { status: 404 } },
      { operation: ["/v1/targets/{target}/lock/release", "post"], request: () => call("POST", "/v1/targets//lock/release"), expect: { status: 404 } },
      { operation: ["/v1/targets/{target}/rollback", "post"], request: () => call("POST", "/v1/targets//rollback"), expect: { status: 404 } },
      // A target no spec can name (names have at most 40 characters) is bad input, not a state store that is down.
      { operation: ["/v1/targets/{target}", "get"], request: () => call("GET", `/v1/targets/${"a".repeat(300)}@staging`), expect: { status: 400 } },
      { operation: ["/v1/targets/{target}/lock/release", "post"], request: () => call("POST", `/v1/targets/${"a".repeat(300)}@staging/lock/release`), expect: { status: 400 } },
      // Too large a body, and no token.
      {
        operation: ["/v1/deployments", "post"],
        request: () => call("POST", "/v1/deployments", { headers: { "content-type": "application/json" }, body: JSON.stringify({ spec: { service: "big", pad: "x".repeat(1_100_000) } }) }),
        expect: { status: 413, code: "PAYLOAD_TOO_LARGE" },
      },
      { operation: ["/v1/targets/{target}", "get"], request: () => call("GET", "/v1/targets/hello-web@staging", { token: null }), expect: { status: 401, code: "UNAUTHENTICATED" } },
    ];
    const wrong: string[] = [];
    for (const probe of probes) {
      const [template, method] = probe.operation;
      const response = await probe.request();
      const text = await response.text();
      const label = `${method.toUpperCase()} ${template} → ${response.status} ${text.slice(0, 200)}`;
      const declared = document.paths[template]?.[method]?.responses;
      if (!declared) {
        wrong.push(`${label}: the document has no such operation`);
        continue;
      }
      const documented = declared[String(response.status)];
      if (!documented) {
        wrong.push(`${label}: status ${response.status} is not documented (documented: ${Object.keys(declared).join(", ")})`);
        continue;
      }
      const type = (response.headers.get("content-type") ?? "").split(";")[0]!.trim();
      if (documented.content && !(type in documented.content)) wrong.push(`${label}: content type ${type} is not documented (documented: ${Object.keys(documented.content).join(", ")})`);
      if (probe.expect?.status !== undefined && response.status !== probe.expect.status) wrong.push(`${label}: expected ${probe.expect.status}`);
      if (type === "application/problem+json") {
        const body = JSON.parse(text) as { status?: number; code?: string };
        if (body.status !== response.status) wrong.push(`${label}: the problem's status ${body.status} is not the HTTP status`);
        if (probe.expect?.code !== undefined && body.code !== probe.expect.code) wrong.push(`${label}: expected the code ${probe.expect.code}`);
      }
    }
    expect(wrong).toEqual([]);
    expect(errors).toEqual([]);
  });
});
