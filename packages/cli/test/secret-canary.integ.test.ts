// The secret canary: deploy with known secret values through the CLI and through the server (on
// PostgreSQL), with a runtime secret as a variable and as a file, a build secret and a front
// proxy; then search everything Kiln wrote or said for the values, in plain, JSON-escaped and
// base64 forms: every output stream, every state file, the database rows, the image's history and
// layers, the containers' labels, and the proxy's configuration. Zero hits. The instances really
// got the values (checked by their SHA-256, computed inside the container).
import { spawn, type ChildProcess } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { cp, mkdtemp, readFile, readdir, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import type Docker from "dockerode";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { waitFor } from "@kilnjs/core";
import { postgresUrl, requireDockerEngine, requirePostgres } from "@kilnjs/testkit";
import { HELLO_WEB, KILN_BIN, LABEL_RELEASE, LABEL_SERVICE, describeResult, dockerClient, freePort, kilnWith, randomSuffix, removeLabelled } from "./harness.js";

const engine = await requireDockerEngine();
const postgres = engine ? await requirePostgres() : false;

/** A value with characters JSON escapes (`"` and `\`), so its JSON-escaped form differs from it. */
const canary = (name: string) => `kiln-canary-${name}-"${randomBytes(12).toString("hex")}\\end`;

/** The forms a value could leak in: itself, JSON-escaped, and base64 at each of the three byte alignments. */
function leakForms(value: string): string[] {
  const forms = [value, JSON.stringify(value).slice(1, -1)];
  for (let shift = 0; shift < 3; shift++) {
    const encoded = Buffer.concat([Buffer.alloc(shift), Buffer.from(value)]).toString("base64");
    // Skip the characters that mix in the padding bytes, and the last group.
    forms.push(encoded.slice(shift === 0 ? 0 : 4, -4));
  }
  return forms;
}

/** Where (by name) any form of any value occurs in `haystacks`; empty when nothing leaked. */
function leaks(values: readonly string[], haystacks: Readonly<Record<string, string | Buffer>>): string[] {
  const found: string[] = [];
  for (const [where, text] of Object.entries(haystacks)) {
    const buffer = typeof text === "string" ? Buffer.from(text) : text;
    for (const value of values) for (const form of leakForms(value)) if (buffer.includes(form)) found.push(`${where}: ${form.slice(0, 24)}…`);
  }
  return found;
}

/** Every file under `dir`, by relative path. */
async function filesUnder(dir: string): Promise<Record<string, Buffer>> {
  const out: Record<string, Buffer> = {};
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const file = path.join(entry.parentPath, entry.name);
    out[path.relative(dir, file)] = await readFile(file);
  }
  return out;
}

/** What the engine holds about a service: image history, `docker save` of its images, container labels and names, the proxy's config. */
async function engineEvidence(docker: Docker, service: string): Promise<Record<string, string | Buffer>> {
  const out: Record<string, string | Buffer> = {};
  for (const image of await docker.listImages({ filters: { label: [`${LABEL_SERVICE}=${service}`] } })) {
    out[`history of ${image.Id}`] = JSON.stringify(await docker.getImage(image.Id).history());
    out[`inspect of ${image.Id}`] = JSON.stringify(await docker.getImage(image.Id).inspect());
    const saved: Buffer[] = [];
    for await (const chunk of (await docker.getImage(image.Id).get()) as AsyncIterable<Buffer>) saved.push(chunk);
    out[`docker save of ${image.Id}`] = Buffer.concat(saved);
  }
  for (const info of await docker.listContainers({ all: true, filters: { label: [`${LABEL_SERVICE}=${service}`] } })) {
    const container = docker.getContainer(info.Id);
    const inspected = await container.inspect();
    out[`labels and name of ${info.Names[0]}`] = JSON.stringify({ labels: inspected.Config.Labels, name: inspected.Name, mounts: inspected.Mounts, cmd: inspected.Config.Cmd });
    out[`docker diff of ${info.Names[0]}`] = JSON.stringify(await container.changes());
    if (/haproxy/.test(inspected.Config.Image)) {
      const archive: Buffer[] = [];
      for await (const chunk of (await container.getArchive({ path: "/usr/local/etc/haproxy" })) as AsyncIterable<Buffer>) archive.push(chunk);
      out[`proxy config of ${info.Names[0]}`] = Buffer.concat(archive);
    }
  }
  return out;
}

/** The SHA-256 of the variable and the file a running instance holds, computed inside it with node. */
async function instanceDigests(docker: Docker, service: string): Promise<Array<{ env: string; file: string }>> {
  const script = "const c=require('crypto'),h=(v)=>c.createHash('sha256').update(v).digest('hex');process.stdout.write(JSON.stringify({env:h(process.env.CANARY_TOKEN||''),file:h(require('fs').readFileSync('/run/secrets/canary-file'))}))";
  // Instances carry their release; the proxy does not.
  const instances = await docker.listContainers({ filters: { label: [`${LABEL_SERVICE}=${service}`, LABEL_RELEASE], status: ["running"] } });
  const out: Array<{ env: string; file: string }> = [];
  for (const info of instances) {
    const exec = await docker.getContainer(info.Id).exec({ Cmd: ["node", "-e", script], AttachStdout: true, AttachStderr: true });
    const stream = await exec.start({ hijack: true, stdin: false });
    const chunks: Buffer[] = [];
    await new Promise<void>((resolve, reject) => {
      stream.on("data", (chunk: Buffer) => chunks.push(chunk));
      stream.on("end", resolve);
      stream.on("error", reject);
    });
    // The multiplexed stream: 8-byte frame headers before each chunk of output.
    const raw = Buffer.concat(chunks);
    let text = "";
    for (let offset = 0; offset + 8 <= raw.length; ) {
      const size = raw.readUInt32BE(offset + 4);
      if (raw[offset] === 1) text += raw.subarray(offset + 8, offset + 8 + size).toString("utf8");
      offset += 8 + size;
    }
    out.push(JSON.parse(text) as { env: string; file: string });
  }
  return out;
}

const sha256 = (value: string) => createHash("sha256").update(value).digest("hex");

/** The spec of the canary service: secrets as a variable, a file and a build secret, behind a proxy. */
function canarySpec(service: string, proxyPort: number): Record<string, unknown> {
  return {
    service,
    image: { dockerfile: { args: { BASE_IMAGE: "kiln-local/node:20" }, secrets: { "build-canary": { from: { env: "KILN_SECRET_CANARY_BUILD" } } } } },
    instances: { count: 2, ports: [{ name: "http", port: 8080 }], env: { LOG_LEVEL: "info" }, stopGracePeriodMs: 1000 },
    secrets: {
      CANARY_TOKEN: { from: { env: "KILN_SECRET_CANARY_ENV" } },
      CANARY_FILE: { from: { file: "canary.secret" }, to: { file: "/run/secrets/canary-file" } },
    },
    health: { http: { port: "http", path: "/healthz" }, intervalMs: 200, timeoutMs: 1000, healthyThreshold: 1, startPeriodMs: 2000 },
    traffic: { proxy: { port: proxyPort } },
  };
}

/** A Dockerfile whose build reads the build secret (and keeps only its length, to prove it did). */
const DOCKERFILE = [
  "ARG BASE_IMAGE=node:20-slim",
  "FROM ${BASE_IMAGE}",
  "WORKDIR /app",
  "COPY package.json server.js version.txt ./",
  "RUN --mount=type=secret,id=build-canary,required=true wc -c < /run/secrets/build-canary > /app/build-secret-length",
  "ENV NODE_ENV=production PORT=8080",
  "USER node",
  'CMD ["node", "server.js"]',
  "",
].join("\n");

async function canaryApp(prefix: string): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), prefix));
  await cp(HELLO_WEB, dir, { recursive: true, filter: (source) => !/[/\\](\.kiln|node_modules|kiln\.yaml)$/.test(source) });
  await writeFile(path.join(dir, "Dockerfile"), DOCKERFILE);
  return dir;
}

describe.skipIf(!engine)("the secret canary", () => {
  const docker = dockerClient();
  const services: string[] = [];
  const dirs: string[] = [];

  afterAll(async () => {
    for (const service of services) await removeLabelled(docker, `${LABEL_SERVICE}=${service}`, { forceImages: true });
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  it("through the CLI: the values reach the instances and nothing Kiln writes or prints holds them", async () => {
    const service = `canary-cli-${randomSuffix()}`;
    services.push(service);
    const dir = await canaryApp("kiln-canary-cli-");
    dirs.push(dir);
    const values = { env: canary("env"), file: canary("file"), build: canary("build") };
    await writeFile(path.join(dir, "canary.secret"), `${values.file}\n`);
    // JSON is YAML: the spec file is the same object the server test posts.
    await writeFile(path.join(dir, "kiln.yaml"), `${JSON.stringify(canarySpec(service, await freePort()), null, 2)}\n`);
    const env = { KILN_SECRET_CANARY_ENV: values.env, KILN_SECRET_CANARY_BUILD: values.build };

    const outputs: Record<string, string> = {};
    for (const args of [["validate"], ["plan"], ["deploy", "--verbose"], ["status", "--json"], ["history", "--json"], ["plan", "--json"], ["deploy", "--json"]]) {
      const result = await kilnWith(dir, args, { env, timeoutMs: 240_000 });
      expect(result.code, describeResult(result)).toBe(0);
      outputs[`kiln ${args.join(" ")} (stdout)`] = result.stdout;
      outputs[`kiln ${args.join(" ")} (stderr)`] = result.stderr;
    }
    const digests = await instanceDigests(docker, service);
    expect(digests).toHaveLength(2);
    for (const digest of digests) expect(digest).toEqual({ env: sha256(values.env), file: sha256(values.file) });

    const evidence = { ...outputs, ...(await filesUnder(path.join(dir, ".kiln"))), ...(await engineEvidence(docker, service)) };
    expect(Object.keys(evidence).some((where) => where.startsWith("proxy config"))).toBe(true);
    expect(Object.keys(evidence).some((where) => where.startsWith("docker save"))).toBe(true);
    expect(leaks(Object.values(values), evidence)).toEqual([]);
    // The canary itself works: the state names the secrets' sources, and it would find a leak.
    expect(leaks(["KILN_SECRET_CANARY_ENV"], evidence).length).toBeGreaterThan(0);
    expect(leaks([values.file], { "the secret's own file": await readFile(path.join(dir, "canary.secret")) })).not.toEqual([]);
  });

  describe.skipIf(!postgres)("through the server on PostgreSQL", () => {
    const schema = `kiln_canary_${randomBytes(3).toString("hex")}`;
    const token = `t-${randomBytes(8).toString("hex")}`;
    const values = { env: canary("server-env"), file: canary("server-file"), build: canary("server-build") };
    let dir: string;
    let work: string;
    let child: ChildProcess;
    let output = "";
    let url = "";

    beforeAll(async () => {
      dir = await canaryApp("kiln-canary-server-");
      work = await mkdtemp(path.join(tmpdir(), "kiln-canary-server-work-"));
      dirs.push(dir, work);
      await writeFile(path.join(dir, "canary.secret"), values.file);
      child = spawn(process.execPath, [KILN_BIN, "serve", "--port", "0", "--postgres", postgresUrl(), "--postgres-schema", schema, "--spec-root", dir, "--data-dir", path.join(work, "kiln")], {
        cwd: dir,
        env: { ...process.env, KILN_SECRET_CANARY_ENV: values.env, KILN_SECRET_CANARY_BUILD: values.build, NO_COLOR: "1", KILN_SERVER_TOKENS: JSON.stringify([{ name: "canary", sha256: `sha256:${sha256(token)}`, scopes: ["admin"], environments: ["*"] }]) },
        stdio: ["ignore", "pipe", "pipe"],
      });
      child.stdout!.setEncoding("utf8").on("data", (chunk: string) => (output += chunk));
      child.stderr!.setEncoding("utf8").on("data", (chunk: string) => (output += chunk));
      url = await waitFor(
        async () => {
          const match = /listening on (http:\/\/\S+)/.exec(output);
          if (match) return { done: true, value: match[1]! };
          if (child.exitCode !== null) throw new Error(`kiln serve exited ${child.exitCode}: ${output}`);
          return { done: false, reason: output.slice(-300) };
        },
        { timeoutMs: 30_000, minDelayMs: 50, maxDelayMs: 200, description: "kiln serve to listen" },
      );
    });

    afterAll(async () => {
      child?.kill("SIGKILL");
      const client = new pg.Client({ connectionString: postgresUrl() });
      await client.connect();
      await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await client.end();
    });

    it("deploys, and neither the API, the events, the status page, the logs nor the database rows hold a value", async () => {
      const service = `canary-srv-${randomSuffix()}`;
      services.push(service);
      const spec = canarySpec(service, await freePort());
      const call = async (method: string, route: string, body?: unknown, accept = "application/json") => {
        const response = await fetch(`${url}${route}`, {
          method,
          headers: { authorization: `Bearer ${token}`, accept, ...(body !== undefined ? { "content-type": "application/json" } : {}) },
          ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        });
        return { status: response.status, text: await response.text() };
      };
      const planned = await call("POST", "/v1/plan", { spec });
      const posted = await call("POST", "/v1/deployments", { spec });
      expect(posted.status, posted.text).toBe(202);
      const id = (JSON.parse(posted.text) as { id: string }).id;
      const events = await call("GET", `/v1/deployments/${id}/events`, undefined, "application/x-ndjson");
      const record = await call("GET", `/v1/deployments/${id}`);
      expect((JSON.parse(record.text) as { state: string }).state, `${record.text}\n${output}`).toBe("succeeded");
      const target = encodeURIComponent(`${service}@default`);
      const api = {
        "POST /v1/plan": planned.text,
        "POST /v1/deployments": posted.text,
        "events (NDJSON)": events.text,
        "GET /v1/deployments/{id}": record.text,
        "GET /v1/deployments": (await call("GET", "/v1/deployments")).text,
        "GET /v1/targets": (await call("GET", "/v1/targets")).text,
        "GET /v1/targets/{target}": (await call("GET", `/v1/targets/${target}`)).text,
        "GET /v1/targets/{target}/history": (await call("GET", `/v1/targets/${target}/history`)).text,
        "the status page": (await call("GET", "/", undefined, "text/html")).text,
      };
      const digests = await instanceDigests(docker, service);
      expect(digests).toHaveLength(2);
      for (const digest of digests) expect(digest).toEqual({ env: sha256(values.env), file: sha256(values.file) });

      const client = new pg.Client({ connectionString: postgresUrl() });
      await client.connect();
      const rows: Record<string, string> = {};
      try {
        const tables = await client.query<{ table_name: string }>("SELECT table_name FROM information_schema.tables WHERE table_schema = $1", [schema]);
        expect(tables.rows.length).toBeGreaterThan(0);
        for (const { table_name: table } of tables.rows) {
          const result = await client.query<{ row: string }>(`SELECT t::text AS row FROM ${schema}.${table} t`);
          rows[`table ${table}`] = result.rows.map((row) => row.row).join("\n");
        }
      } finally {
        await client.end();
      }
      expect(rows["table target_state"]).toContain("KILN_SECRET_CANARY_ENV");
      const dataDir = path.join(work, "kiln");
      const files = (await stat(dataDir).catch(() => undefined)) ? await filesUnder(dataDir) : {};
      const evidence = { ...api, "the server's output": output, ...rows, ...files, ...(await engineEvidence(docker, service)) };
      expect(leaks(Object.values(values), evidence)).toEqual([]);
    });
  });
});
