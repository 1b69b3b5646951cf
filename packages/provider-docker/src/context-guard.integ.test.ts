// The context guard on a real Docker engine (issue 11): a nested .env that a misspelt .dockerignore
// rule misses refuses the deploy before any image is built; allowing it by path in the spec builds
// and deploys, with the file in the image.
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import Docker from "dockerode";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createKiln, LABELS, silentLogger, type Kiln, type KilnEvent, type SpecInput } from "@kilnjs/core";
import { requireDockerEngine } from "@kilnjs/testkit";
import { createDockerProvider } from "./index.js";

const engine = await requireDockerEngine();

describe.skipIf(!engine)("the context guard on the Docker engine", () => {
  const docker = new Docker(process.env.DOCKER_HOST?.startsWith("unix://") ? { socketPath: process.env.DOCKER_HOST.slice("unix://".length) } : undefined);
  const service = `kg-${randomBytes(3).toString("hex")}`;
  const events: KilnEvent[] = [];
  let dir: string;
  let kiln: Kiln;

  const spec = (image: SpecInput["image"] = {}): SpecInput => ({
    service,
    provider: "docker",
    image,
    instances: { count: 1, ports: [{ name: "http", port: 8080 }], stopGracePeriodMs: 1000 },
    health: { http: { port: "http", path: "/index.html" }, intervalMs: 200, timeoutMs: 500, healthyThreshold: 1 },
  });
  const images = () => docker.listImages({ filters: { label: [`${LABELS.service}=${service}`] } });
  const containers = () => docker.listContainers({ all: true, filters: { label: [`${LABELS.service}=${service}`] } });

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "kiln-context-guard-"));
    await mkdir(path.join(dir, "config"));
    await writeFile(path.join(dir, "Dockerfile"), 'FROM kiln-local/busybox:latest\nCOPY . /www\nCMD ["httpd", "-f", "-p", "8080", "-h", "/www"]\n');
    await writeFile(path.join(dir, "index.html"), "ok\n");
    // The rule means config/.env and misspells it.
    await writeFile(path.join(dir, ".dockerignore"), ".kiln\nconfg/.env\n");
    await writeFile(path.join(dir, "config", ".env"), "FEATURE_FLAG=on\n");
    kiln = createKiln({ providers: { docker: createDockerProvider() }, dataDir: path.join(dir, ".kiln"), logger: silentLogger, onEvent: (event) => events.push(event) });
  });

  afterAll(async () => {
    await kiln?.close();
    for (const info of await containers()) await docker.getContainer(info.Id).remove({ force: true }).catch(() => undefined);
    for (const image of await images()) await docker.getImage(image.Id).remove({ force: true }).catch(() => undefined);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("refuses the deploy with SECRET_FILES_IN_CONTEXT before any image is built", async () => {
    const error = await kiln.deploy({ spec: spec(), baseDir: dir }).then(() => undefined, (caught: unknown) => caught);
    expect(error).toMatchObject({ code: "SECRET_FILES_IN_CONTEXT", details: { files: [{ path: "config/.env" }] } });
    expect((error as Error).message).toContain("config/.env");
    expect(events.map((event) => event.type)).not.toContain("image.build.started");
    expect(await images()).toHaveLength(0);
    expect(await containers()).toHaveLength(0);
  });

  it("builds and deploys when the spec allows the file by path, with the file in the image", async () => {
    const result = await kiln.deploy({ spec: spec({ allowSecretFiles: ["config/.env"] }), baseDir: dir });
    expect(result.outcome).toBe("deployed");
    expect(await images()).toHaveLength(1);
    const [running] = await containers();
    const exec = await docker.getContainer(running!.Id).exec({ Cmd: ["cat", "/www/config/.env"], AttachStdout: true, AttachStderr: true });
    const stream = await exec.start({});
    const output = await new Promise<string>((resolve, reject) => {
      let text = "";
      stream.on("data", (chunk: Buffer) => (text += chunk.toString("utf8")));
      stream.on("end", () => resolve(text));
      stream.on("error", reject);
    });
    expect(output).toContain("FEATURE_FLAG=on");
  });
});
