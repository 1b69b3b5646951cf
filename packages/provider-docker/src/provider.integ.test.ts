import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { get } from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import Docker from "dockerode";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  LABELS,
  silentLogger,
  type DockerfileRecipe,
  type ImageRecipe,
  type ImageRef,
  type Instance,
  type LaunchRequest,
  type ProviderContext,
  type ProviderProgress,
} from "@kilnjs/core";
import { requireDockerEngine } from "@kilnjs/testkit";
import { createDockerProvider } from "./index.js";

const engine = await requireDockerEngine();

const BASE_IMAGE = "kiln-local/busybox:latest";
const hex = (bytes: number) => randomBytes(bytes).toString("hex");
const newFingerprint = () => `sha256:${hex(32)}`;

function context(events: ProviderProgress[] = [], signal = new AbortController().signal): ProviderContext {
  return { signal, logger: silentLogger, emit: (progress) => events.push(progress) };
}

/** Polls `check` until it returns a value other than undefined, or fails after `timeoutMs`. */
async function waitFor<T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`, { cause: last });
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

function httpGet(host: string, port: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = get({ host, port, path: "/", timeout: 2_000 }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => (body += chunk));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", reject);
  });
}

describe.skipIf(!engine)("docker provider against a real engine", () => {
  const docker = new Docker(
    process.env.DOCKER_HOST?.startsWith("unix://") ? { socketPath: process.env.DOCKER_HOST.slice("unix://".length) } : undefined,
  );
  const provider = createDockerProvider();
  const run = hex(3);
  const service = `kt-${run}`;
  const services = new Set([service]);
  const networks = new Set<string>();
  let workDir: string;
  let contextDir: string;
  let recipe: ImageRecipe & { dockerfile: DockerfileRecipe };
  let image: ImageRef;
  let instances: Instance[];

  const launchRequest = (overrides: Partial<LaunchRequest> = {}): LaunchRequest => ({
    target: { service, environment: "test" },
    release: 3,
    rolloutId: `ro-${run}`,
    idempotencyKey: `launch-${run}-1`,
    image,
    config: {
      ports: [{ name: "http", port: 8080, protocol: "tcp" }],
      env: { GREETING_ENV: "from-env" },
      labels: { "com.example.team": "kiln" },
      memoryBytes: 64 * 1024 * 1024,
      cpus: 0.5,
      stopGracePeriodMs: 1_000,
    },
    count: 2,
    ...overrides,
  });

  beforeAll(async () => {
    await docker.getImage(BASE_IMAGE).inspect().catch((error: unknown) => {
      throw new Error(`${BASE_IMAGE} is missing: run bash scripts/base-images.sh first`, { cause: error });
    });
    workDir = await mkdtemp(path.join(tmpdir(), "kiln-provider-docker-"));
    contextDir = path.join(workDir, "context");
    await mkdir(path.join(contextDir, "site"), { recursive: true });
    await writeFile(
      path.join(contextDir, "Dockerfile"),
      [
        `FROM ${BASE_IMAGE}`,
        "ARG GREETING=unset",
        "COPY . /ctx/",
        'RUN mkdir -p /www && cp /ctx/site/index.html /www/index.html && echo "$GREETING" > /www/greeting.txt',
        'CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]',
        "",
      ].join("\n"),
    );
    await writeFile(path.join(contextDir, "site", "index.html"), "hello from kiln\n");
    await writeFile(path.join(contextDir, "secret.txt"), "do not ship\n");
    recipe = {
      target: { service, environment: "test" },
      fingerprint: newFingerprint(),
      dockerfile: {
        kind: "dockerfile",
        contextDir,
        dockerfilePath: path.join(contextDir, "Dockerfile"),
        files: ["Dockerfile", "site/index.html"],
        args: { GREETING: "hi" },
      },
    };
  });

  afterAll(async () => {
    for (const name of services) {
      const containers = await docker.listContainers({ all: true, filters: { label: [`${LABELS.service}=${name}`] } });
      await Promise.all(containers.map((info) => docker.getContainer(info.Id).remove({ force: true }).catch(() => undefined)));
      const images = await docker.listImages({ filters: { label: [`${LABELS.service}=${name}`] } });
      for (const info of images) await docker.getImage(info.Id).remove({ force: true }).catch(() => undefined);
    }
    for (const name of networks) await docker.getNetwork(name).remove().catch(() => undefined);
    if (workDir) await rm(workDir, { recursive: true, force: true });
    await provider.close?.();
  });

  it("pings the engine", async () => {
    await expect(provider.ping(context())).resolves.toBeUndefined();
  });

  it("builds an image from exactly the listed files, labelled and tagged by fingerprint", async () => {
    const events: ProviderProgress[] = [];
    image = await provider.images.build(recipe, context(events));
    expect(image.id).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(image.digest).toBe(image.id);
    expect(image.fingerprint).toBe(recipe.fingerprint);
    expect(image.names).toEqual([`kiln/${service}:${recipe.fingerprint.slice(7, 19)}`]);
    expect(image.sizeBytes).toBeGreaterThan(0);
    expect(Number.isNaN(Date.parse(image.createdAt!))).toBe(false);
    // The classic builder adds one LABEL step per label after the Dockerfile's own steps.
    expect(events.find((event) => event.type === "image.build.step")).toMatchObject({ step: 1, description: `FROM ${BASE_IMAGE}` });
    expect(events.some((event) => event.type === "image.build.log")).toBe(true);

    const inspected = await docker.getImage(image.id).inspect();
    expect(inspected.Config.Labels).toMatchObject({
      [LABELS.managed]: "true",
      [LABELS.service]: service,
      [LABELS.fingerprint]: recipe.fingerprint,
    });
    // Environments share images by fingerprint, so an image names no environment.
    expect(inspected.Config.Labels).not.toHaveProperty(LABELS.environment);

    // secret.txt is on disk but not in the recipe's files: it must not reach the image.
    const probe = await docker.createContainer({
      Image: image.id,
      Cmd: ["sh", "-c", "test -f /ctx/site/index.html && test -f /ctx/Dockerfile && test ! -e /ctx/secret.txt && grep -qx hi /www/greeting.txt"],
      Labels: { [LABELS.service]: service },
    });
    try {
      await probe.start();
      const { StatusCode } = (await probe.wait()) as { StatusCode: number };
      expect(StatusCode).toBe(0);
    } finally {
      await probe.remove({ force: true });
    }
  });

  it("finds the image by fingerprint and lists it by service", async () => {
    const found = await provider.images.find({ service, fingerprint: recipe.fingerprint }, context());
    expect(found).toMatchObject({ id: image.id, fingerprint: recipe.fingerprint, names: image.names });
    expect(await provider.images.find({ service, fingerprint: newFingerprint() }, context())).toBeUndefined();
    expect(await provider.images.find({ service: `${service}-other`, fingerprint: recipe.fingerprint }, context())).toBeUndefined();
    const listed = await provider.images.list(service, context());
    expect(listed.map((ref) => ref.id)).toEqual([image.id]);
    expect(await provider.images.list(`${service}-none`, context())).toEqual([]);
  });

  it("launches instances that answer on their published endpoints", async () => {
    const request = launchRequest();
    instances = await provider.instances.launch(request, context());
    expect(instances).toHaveLength(2);
    expect(new Set(instances.map((instance) => instance.id)).size).toBe(2);
    for (const instance of instances) {
      expect(instance.name).toMatch(new RegExp(`^${service}\\.test\\.r3\\.[0-9a-f]{6}$`));
      expect(instance).toMatchObject({
        target: { service, environment: "test" },
        release: 3,
        rolloutId: `ro-${run}`,
        imageId: image.id,
        state: "running",
        restartCount: 0,
      });
      expect(instance.labels).toMatchObject({
        "com.example.team": "kiln",
        [LABELS.managed]: "true",
        [LABELS.service]: service,
        [LABELS.environment]: "test",
        [LABELS.release]: "3",
        [LABELS.rollout]: `ro-${run}`,
        [LABELS.fingerprint]: recipe.fingerprint,
      });
      const endpoint = instance.endpoints.http!;
      expect(endpoint.host).toBe("127.0.0.1");
      expect(endpoint.port).toBeGreaterThan(0);
      const answer = await waitFor(`HTTP on ${instance.name}`, async () => {
        const response = await httpGet(endpoint.host, endpoint.port);
        return response.status === 200 ? response : undefined;
      });
      expect(answer.body).toBe("hello from kiln\n");

      const inspected = await docker.getContainer(instance.id).inspect();
      expect(inspected.HostConfig.Memory).toBe(64 * 1024 * 1024);
      expect(inspected.HostConfig.NanoCpus).toBe(500_000_000);
      expect(inspected.HostConfig.RestartPolicy?.Name).toBe("unless-stopped");
      expect((inspected.Config as { StopTimeout?: number }).StopTimeout).toBe(1);
      expect(inspected.Config.Env).toContain("GREETING_ENV=from-env");
    }
  });

  it("returns the same instances when launched again with the same idempotency key", async () => {
    const before = await docker.listContainers({ all: true, filters: { label: [`${LABELS.service}=${service}`] } });
    const again = await provider.instances.launch(launchRequest(), context());
    expect(again.map((instance) => instance.id).sort()).toEqual(instances.map((instance) => instance.id).sort());
    const after = await docker.listContainers({ all: true, filters: { label: [`${LABELS.service}=${service}`] } });
    expect(after).toHaveLength(before.length);
  });

  it("lists instances by target, release and rollout", async () => {
    const ids = instances.map((instance) => instance.id).sort();
    const target = { service, environment: "test" };
    const byTarget = await provider.instances.list({ target }, context());
    expect(byTarget.map((instance) => instance.id).sort()).toEqual(ids);
    expect(byTarget[0]!.endpoints.http).toEqual(instances.find((instance) => instance.id === byTarget[0]!.id)!.endpoints.http);
    expect(byTarget.every((instance) => instance.state === "running" && instance.release === 3)).toBe(true);
    expect((await provider.instances.list({ target, release: 3 }, context())).map((instance) => instance.id).sort()).toEqual(ids);
    expect(await provider.instances.list({ target, release: 4 }, context())).toEqual([]);
    expect((await provider.instances.list({ target, rolloutId: `ro-${run}` }, context())).map((instance) => instance.id).sort()).toEqual(ids);
    expect(await provider.instances.list({ target: { service, environment: "other" } }, context())).toEqual([]);
  });

  it("refuses to remove an image a container uses", async () => {
    await expect(provider.images.remove(image, context())).rejects.toMatchObject({ code: "IMAGE_IN_USE" });
  });

  it("terminates instances, and terminating them again is a no-op", async () => {
    await provider.instances.terminate(instances, { gracePeriodMs: 1_000 }, context());
    expect(await provider.instances.list({ target: { service, environment: "test" } }, context())).toEqual([]);
    for (const instance of instances) {
      await expect(docker.getContainer(instance.id).inspect()).rejects.toMatchObject({ statusCode: 404 });
    }
    await expect(provider.instances.terminate(instances, { gracePeriodMs: 1_000 }, context())).resolves.toBeUndefined();
  });

  it("removes an image, and removing it again is a no-op", async () => {
    await provider.images.remove(image, context());
    expect(await provider.images.find({ service, fingerprint: recipe.fingerprint }, context())).toBeUndefined();
    await expect(provider.images.remove(image, context())).resolves.toBeUndefined();
  });

  it("builds with a Dockerfile outside the context", async () => {
    const outside = path.join(workDir, "outside.Dockerfile");
    await writeFile(outside, `FROM ${BASE_IMAGE}\nCOPY site/ /www/\nRUN test ! -e /www/Dockerfile\n`);
    const fingerprint = newFingerprint();
    const built = await provider.images.build(
      { ...recipe, fingerprint, dockerfile: { ...recipe.dockerfile, dockerfilePath: outside, files: ["site/index.html"], args: {} } },
      context(),
    );
    expect(built.fingerprint).toBe(fingerprint);
    expect((await provider.images.find({ service, fingerprint }, context()))?.id).toBe(built.id);
  });

  it("reports a failing build as BUILD_FAILED with the build's message", async () => {
    const failing = path.join(workDir, "failing.Dockerfile");
    await writeFile(failing, `FROM ${BASE_IMAGE}\nRUN echo about to fail && exit 3\n`);
    const events: ProviderProgress[] = [];
    const error = await provider.images
      .build({ ...recipe, fingerprint: newFingerprint(), dockerfile: { ...recipe.dockerfile, dockerfilePath: failing, files: [], args: {} } }, context(events))
      .then(
        () => undefined,
        (caught: unknown) => caught,
      );
    expect(error).toMatchObject({ name: "KilnError", code: "BUILD_FAILED" });
    expect((error as Error).message).toMatch(/returned a non-zero code: 3/);
    expect(events).toContainEqual({ type: "image.build.log", message: "about to fail" });
  });

  it("reports a missing context file as BUILD_CONTEXT_INVALID", async () => {
    await expect(
      provider.images.build({ ...recipe, fingerprint: newFingerprint(), dockerfile: { ...recipe.dockerfile, files: ["Dockerfile", "missing.txt"] } }, context()),
    ).rejects.toMatchObject({ code: "BUILD_CONTEXT_INVALID" });
  });

  it("stops a build when the signal aborts", async () => {
    const slow = path.join(workDir, "slow.Dockerfile");
    await writeFile(slow, `FROM ${BASE_IMAGE}\nRUN echo started && sleep 60\n`);
    const controller = new AbortController();
    const events: ProviderProgress[] = [];
    const ctx: ProviderContext = {
      signal: controller.signal,
      logger: silentLogger,
      emit(progress) {
        events.push(progress);
        if (progress.type === "image.build.log" && progress.message === "started") controller.abort();
      },
    };
    const started = Date.now();
    await expect(
      provider.images.build({ ...recipe, fingerprint: newFingerprint(), dockerfile: { ...recipe.dockerfile, dockerfilePath: slow, files: [], args: {} } }, ctx),
    ).rejects.toMatchObject({ code: "ABORTED" });
    expect(Date.now() - started).toBeLessThan(30_000);
  });

  it("creates the configured network and attaches containers to it", async () => {
    const network = `kiln-test-${run}`;
    networks.add(network);
    const netService = `${service}-net`;
    services.add(netService);
    const withNetwork = createDockerProvider({ network });
    const built = await withNetwork.images.build(
      { ...recipe, target: { service: netService, environment: "test" }, fingerprint: newFingerprint() },
      context(),
    );
    const launched = await withNetwork.instances.launch(
      { ...launchRequest(), target: { service: netService, environment: "test" }, idempotencyKey: `net-${run}`, image: built, count: 1 },
      context(),
    );
    expect(launched).toHaveLength(1);
    const info = await docker.getNetwork(network).inspect();
    expect(info.Labels).toMatchObject({ [LABELS.managed]: "true" });
    const inspected = await docker.getContainer(launched[0]!.id).inspect();
    expect(Object.keys(inspected.NetworkSettings.Networks)).toEqual([network]);
    await withNetwork.instances.terminate(launched, { gracePeriodMs: 0 }, context());
  });
});

describe("docker provider without an engine", () => {
  it("ping says where it looked and how to start an engine", async () => {
    const socket = path.join(tmpdir(), `kiln-no-engine-${hex(4)}.sock`);
    const provider = createDockerProvider({ host: `unix://${socket}` });
    const error = await provider.ping(context()).then(
      () => undefined,
      (caught: unknown) => caught,
    );
    expect(error).toMatchObject({ name: "KilnError", code: "PROVIDER_UNAVAILABLE", retryable: true });
    expect((error as Error).message).toContain(`unix://${socket}`);
    expect((error as Error).message).toContain("npm run engine:start");
    expect((error as Error).message).toContain("DOCKER_HOST");
    expect((error as Error).cause).toBeDefined();
  });

  it("rejects an unsupported host address", () => {
    expect(() => createDockerProvider({ host: "ssh://somewhere" })).toThrow(expect.objectContaining({ code: "INVALID_ARGUMENT" }) as Error);
  });
});
