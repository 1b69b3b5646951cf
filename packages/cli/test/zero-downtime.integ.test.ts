/**
 * Zero-downtime replacement on a real Docker engine, through the built `kiln` binary and the front
 * proxy Kiln runs (`traffic.proxy`): under a bounded load through the front door (about 200
 * requests/s, a fifth of them taking up to 2 s, for the length of each rollout and never more than
 * 90 s), a rolling rollout of 3 instances, a blue-green rollout and a rollback each complete with
 * zero failed requests and zero requests served by a container after it was told to stop; a
 * release that never becomes healthy never receives a request; and SIGKILL of kiln mid-rollout
 * leaves the service answering (and the next deploy recovers the rollout under load). Also: a
 * release that changes the proxy's own settings (a HAProxy reload) drops nothing, and a control
 * that shows the load does see a container told to stop while it still has traffic.
 *
 * The app is a temp copy of examples/hello-web: every answer names its container (`x-instance`,
 * the container's hostname: its id's first 12 characters) and carries `x-served-after-stop: 1` when
 * the request started after the container got SIGTERM; `/stats` counts what it served. v2 needs
 * 10 s to become healthy (START_DELAY_MS). All traffic goes to 127.0.0.1 (the proxy's published
 * port) or into the test's containers (docker exec).
 *
 * When the proxy is not implemented, these tests fail (they do not skip) and say so.
 */
import { afterAll, describe, expect, it } from "vitest";
import { waitFor } from "@kilnjs/core";
import { formatLoadStats, requireDockerEngine, startLoad, type LoadReport, type LoadRun } from "@kilnjs/testkit";
import {
  LABEL_RELEASE,
  LABEL_SERVICE,
  Scratch,
  completeJsonLines,
  containersPublishing,
  containersWith,
  describeResult,
  dockerClient,
  execIn,
  freePort,
  healthBlock,
  helloWebStats,
  httpGet,
  httpStatus,
  jsonLines,
  kilnWith,
  publishedPorts,
  replaceOnce,
  replaceTopLevelBlock,
  startKiln,
  foundOrNot,
  withEnv,
  withProxy,
  type App,
  type CommandResult,
  type HealthSettings,
  type RunningKiln,
} from "./harness.js";

const engine = await requireDockerEngine();

type Event = Record<string, unknown> & { type: string };
type EventInstance = { id: string; name: string; release?: number };

/** Target rate of the load, requests per second. */
const RATE = 200;
/** No load runs longer than this (and no rollout under load may take longer). */
const LOAD_LIMIT_MS = 90_000;
/** A kiln command under load is killed after this long, so its load stays within {@link LOAD_LIMIT_MS}. */
const KILN_UNDER_LOAD_TIMEOUT_MS = 85_000;
/** Long enough to drain a 2 s request. */
const STOP_GRACE_MS = 3_000;
/** v1 starts at once. */
const V1_HEALTH: HealthSettings = { intervalMs: 300, timeoutMs: 500, healthyThreshold: 2, unhealthyThreshold: 2, startPeriodMs: 1_000 };
/** v2 answers 503 on /healthz for 10 s: its start period covers that. */
const V2_START_DELAY_MS = 10_000;
const V2_HEALTH: HealthSettings = { ...V1_HEALTH, startPeriodMs: 11_000 };

const PROXY_MISSING =
  "The Docker front proxy (traffic.proxy) is not implemented: kiln refused a spec with traffic.proxy. These tests need packages/provider-docker/src/proxy and the Docker provider's traffic capability.";

describe.skipIf(!engine)("zero downtime through the front proxy, on a real Docker engine", () => {
  const docker = dockerClient();
  const scratch = new Scratch();
  const timings: Record<string, number> = {};
  const figures: string[] = [];
  const proxyPorts = new Set<number>();

  afterAll(async () => {
    const problems = await scratch.cleanUp(docker);
    // The proxies the tests' specs asked for (whatever labels they carry) and the networks Kiln made for the services.
    for (const port of proxyPorts) {
      for (const info of await containersPublishing(docker, port).catch(() => [])) {
        if (!Object.keys(info.Labels ?? {}).some((label) => label.startsWith("dev.kiln."))) continue;
        await docker
          .getContainer(info.Id)
          .remove({ force: true })
          .catch((error: unknown) => problems.push(`proxy ${info.Id}: ${String(error)}`));
      }
    }
    for (const service of scratch.services) {
      const networks = await docker.listNetworks({ filters: { label: [`${LABEL_SERVICE}=${service}`] } }).catch(() => []);
      for (const network of networks) await docker.getNetwork(network.Id).remove().catch((error: unknown) => problems.push(`network ${network.Name}: ${String(error)}`));
      // The proxy keeps its configuration on a named volume.
      const volumes = (await docker.listVolumes({ filters: { label: [`${LABEL_SERVICE}=${service}`] } }).catch(() => ({ Volumes: [] }))).Volumes ?? [];
      for (const volume of volumes) await docker.getVolume(volume.Name).remove().catch((error: unknown) => problems.push(`volume ${volume.Name}: ${String(error)}`));
      const left = await containersWith(docker, `${LABEL_SERVICE}=${service}`);
      if (left.length > 0) problems.push(`${service}: ${left.length} container(s) left after cleanup`);
    }
    process.stderr.write(`\nzero-downtime.integ figures:\n${figures.map((line) => `  ${line}`).join("\n")}\nzero-downtime.integ timings (ms): ${JSON.stringify(timings)}\n`);
    if (problems.length > 0) throw new Error(`cleanup problems:\n${problems.join("\n")}`);
  });

  const timed = (name: string, body: () => Promise<void>) => async () => {
    const startedAt = Date.now();
    try {
      await body();
    } finally {
      timings[name] = Date.now() - startedAt;
    }
  };

  /** A hello-web copy with a front proxy on a free port of 127.0.0.1, 3 instances, v1 health, a 3 s grace period. */
  async function proxiedApp(prefix: string, rollout?: string): Promise<App & { port: number }> {
    const port = await freePort();
    proxyPorts.add(port);
    const app = await scratch.helloWeb(scratch.service(prefix), (spec) => {
      let edited = replaceTopLevelBlock(replaceOnce(spec, "stopGracePeriodMs: 1000", `stopGracePeriodMs: ${STOP_GRACE_MS}`), "health", healthBlock(V1_HEALTH));
      // The example's staging environment (1 instance) is not used here.
      edited = replaceTopLevelBlock(edited, "environments", "");
      if (rollout) edited = replaceTopLevelBlock(edited, "rollout", rollout);
      return withProxy(edited, port);
    });
    return Object.assign(app, { port });
  }

  /** Fails with {@link PROXY_MISSING} when kiln refused traffic.proxy, else with the command's output. */
  function expectOk(result: CommandResult, what: string): void {
    const events = safeJsonLines(result.stdout);
    const error = events.find((e) => e.type === "error");
    if (error?.code === "CAPABILITY_MISSING" || /traffic capability|cannot run a front proxy/.test(result.stdout + result.stderr)) {
      throw new Error(`${PROXY_MISSING}\n${what}: ${describeResult(result)}`);
    }
    expect(result.code, `${what}: ${describeResult(result)}`).toBe(0);
  }

  function safeJsonLines(text: string): Event[] {
    try {
      return jsonLines(text);
    } catch {
      return completeJsonLines(text).filter((line) => typeof line === "object");
    }
  }

  /** Deploys release 1 (no load) and checks that the front door answers, from the proxy container alone. */
  async function deployV1(app: App & { port: number }): Promise<string[]> {
    const result = await app.kiln(["deploy", "--json"]);
    timings[`${app.service}: deploy v1`] = result.elapsedMs;
    expectOk(result, "kiln deploy (v1)");
    const readyAt = Date.now();
    const first = await httpGet("127.0.0.1", app.port, "/version").catch((error: unknown) => ({ status: 0, body: String(error) }));
    expect.soft(first.status, `the front door answers at once when kiln deploy returns (got ${first.status}: ${first.body})`).toBe(200);
    await waitFor(async () => foundOrNot((await httpStatus("127.0.0.1", app.port, "/version")) === 200 ? true : undefined), {
      description: `the front door 127.0.0.1:${app.port} to answer /version`,
      timeoutMs: 15_000,
      minDelayMs: 100,
      maxDelayMs: 100,
    });
    timings[`${app.service}: front door ready after deploy`] = Date.now() - readyAt;
    const v1 = await idsOf(app.service, 1);
    expect(v1).toHaveLength(3);
    await expectNoPublishedPorts(app.service);
    return v1;
  }

  const idsOf = async (service: string, release?: number) =>
    // Instances carry their release's label; the proxy container of the service does not.
    (await containersWith(docker, `${LABEL_SERVICE}=${service}`, release === undefined ? LABEL_RELEASE : `${LABEL_RELEASE}=${release}`)).map((c) => c.Id).sort();
  /** The hostname hello-web reports in `x-instance`: Docker's default, the id's first 12 characters. */
  const host = (id: string) => id.slice(0, 12);

  async function expectNoPublishedPorts(service: string): Promise<void> {
    for (const id of await idsOf(service)) {
      const inspected = await docker.getContainer(id).inspect();
      expect(publishedPorts(inspected), `${inspected.Name} publishes no host port`).toEqual([]);
    }
  }

  /** The proxy container (the one publishing `port`) runs. */
  async function expectProxyRunning(port: number, when: string): Promise<void> {
    const proxies = await containersPublishing(docker, port);
    expect(proxies.map((p) => `${p.Names.join(",")} ${p.State}`), `${when}: one running container publishes the front door 127.0.0.1:${port}`).toHaveLength(1);
    expect(proxies[0]!.State, when).toBe("running");
  }

  function startFrontDoorLoad(port: number): LoadRun {
    return startLoad({ host: "127.0.0.1", port, ratePerSecond: RATE, durationMs: LOAD_LIMIT_MS, slowShare: 0.2, maxSlowMs: 2_000, maxSockets: 96, requestTimeoutMs: 10_000 });
  }

  /**
   * Runs `kiln <args> --json` under load: the switch window opens at the first `instance.healthy`
   * of `newRelease` (the first moment traffic can move) and closes when kiln exits.
   */
  async function underLoad(app: App & { port: number }, args: string[], newRelease: number | "any"): Promise<{ result: CommandResult; events: Event[]; report: LoadReport }> {
    const load = startFrontDoorLoad(app.port);
    let run: RunningKiln | undefined;
    try {
      // A second of steady traffic before the rollout.
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      run = startKiln(app.dir, [...args, "--json"], { timeoutMs: KILN_UNDER_LOAD_TIMEOUT_MS });
      const watcher = setInterval(() => {
        const healthy = completeJsonLines(run!.stdout()).some(
          (e) => e.type === "instance.healthy" && (newRelease === "any" || (e.instance as EventInstance).release === newRelease),
        );
        if (healthy) load.markWindowStart();
      }, 50);
      const result = await run.done;
      clearInterval(watcher);
      load.markWindowStart();
      load.markWindowEnd();
      // A second of traffic after, to the instances that are left.
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      const report = await load.stop();
      return { result, events: safeJsonLines(result.stdout), report };
    } catch (error) {
      run?.kill("SIGKILL");
      await load.stop();
      throw error;
    }
  }

  function describeReport(report: LoadReport): string {
    return [
      `overall: ${formatLoadStats(report.overall)}`,
      report.window ? `switch:  ${formatLoadStats(report.window)}` : "switch: (not marked)",
      `by instance: ${JSON.stringify(report.overall.byInstance)}`,
      `histogram: ${JSON.stringify(report.overall.histogram)}`,
      report.failureSamples.length > 0 ? `first failures: ${JSON.stringify(report.failureSamples)}` : "",
      report.servedAfterStopSamples.length > 0 ? `served after stop: ${JSON.stringify(report.servedAfterStopSamples)}` : "",
      report.abandoned > 0 ? `abandoned: ${report.abandoned}` : "",
    ]
      .filter(Boolean)
      .join("\n");
  }

  function record(name: string, report: LoadReport, kilnMs: number): void {
    const { overall, window } = report;
    const line =
      `${name}: kiln ${(kilnMs / 1000).toFixed(1)} s; ${overall.sent} requests, ${overall.failed} failed, ${overall.servedAfterStop} served after stop; ` +
      `p99 ${overall.p99Ms.toFixed(0)} ms overall, ${window?.p99Ms.toFixed(0) ?? "?"} ms during the switch (${window?.sent ?? 0} requests in ${((window?.elapsedMs ?? 0) / 1000).toFixed(1)} s); ` +
      `fast requests alone: p99 ${overall.fast.p99Ms.toFixed(1)} ms overall, ${window?.fast.p99Ms.toFixed(1) ?? "?"} ms during the switch (max ${window?.fast.maxMs.toFixed(1) ?? "?"} ms)`;
    figures.push(line);
    process.stderr.write(`${line}\n${describeReport(report)}\n`);
  }

  /** Zero failed, zero served after stop, every request answered, at about the target rate. */
  function expectClean(report: LoadReport): void {
    const details = describeReport(report);
    expect(report.overall.failed, `failed requests\n${details}`).toBe(0);
    expect(report.overall.servedAfterStop, `requests served by a container after it was told to stop\n${details}`).toBe(0);
    expect(report.abandoned, details).toBe(0);
    expect(report.overall.completed, details).toBe(report.overall.sent);
    expect(report.overall.sentPerSecond, `the load kept its rate\n${details}`).toBeGreaterThan(RATE * 0.8);
    expect(report.window?.sent ?? 0, `the switch window saw traffic\n${details}`).toBeGreaterThan(0);
  }

  /** Makes the next release v2: version.txt, 10 s to become healthy, a start period that covers it. */
  async function makeSlowV2(app: App, version = "v2"): Promise<void> {
    await app.write("version.txt", `${version}\n`);
    await app.editSpec((spec) => replaceTopLevelBlock(withEnv(spec, { START_DELAY_MS: String(V2_START_DELAY_MS) }), "health", healthBlock(V2_HEALTH)));
  }

  // Shared by the rolling rollout and the rollback that follows it.
  let rolling: { app: App & { port: number }; v1: string[]; v2: string[] } | undefined;

  it(
    "a. rolling rollout v1 → v2 of 3 instances (v2 healthy only after 10 s) under ~200 req/s: zero failed, zero served after stop",
    timed("a. rolling", async () => {
      const app = await proxiedApp("zd-roll");
      const v1 = await deployV1(app);
      await makeSlowV2(app);
      const { result, events, report } = await underLoad(app, ["deploy"], 2);
      timings["a. rolling: kiln deploy v2"] = result.elapsedMs;
      record("a. rolling v1→v2", report, result.elapsedMs);
      expectOk(result, "kiln deploy (v2, rolling)");
      expect(events.at(-1)).toMatchObject({ type: "result", outcome: "deployed", release: 2 });
      expect(events.filter((e) => e.type === "traffic.shifted").length, "the rollout moved traffic through the proxy").toBeGreaterThan(0);
      for (const event of events.filter((e) => e.type === "instance.healthy" && (e.instance as EventInstance).release === 2)) {
        expect(event.durationMs as number, "v2 really needed its 10 s").toBeGreaterThanOrEqual(V2_START_DELAY_MS);
      }
      expectClean(report);
      const v2 = await idsOf(app.service, 2);
      expect(v2).toHaveLength(3);
      expect(await idsOf(app.service), "only v2 is left").toEqual(v2);
      const served = report.overall.byInstance;
      for (const id of [...v1, ...v2]) expect(served[host(id)] ?? 0, `${host(id)} served traffic during the rollout\n${describeReport(report)}`).toBeGreaterThan(0);
      expect(Object.keys(served).filter((name) => ![...v1, ...v2].map(host).includes(name)), "every answer came from a v1 or v2 container").toEqual([]);
      await expectNoPublishedPorts(app.service);
      await expectProxyRunning(app.port, "after kiln deploy exited");
      expect(JSON.parse((await httpGet("127.0.0.1", app.port, "/version")).body)).toMatchObject({ version: "v2" });
      rolling = { app, v1, v2 };
    }),
  );

  it(
    "c. kiln rollback (v2 → v1) under ~200 req/s: zero failed, zero served after stop",
    timed("c. rollback", async () => {
      expect(rolling, "needs the rolling rollout's service (test a)").toBeDefined();
      const { app, v2 } = rolling!;
      const { result, events, report } = await underLoad(app, ["rollback"], "any");
      timings["c. rollback: kiln rollback"] = result.elapsedMs;
      record("c. rollback v2→v1", report, result.elapsedMs);
      expectOk(result, "kiln rollback");
      expect(events.find((e) => e.type === "release.created")).toMatchObject({ release: 3, rollbackOf: 1 });
      expectClean(report);
      const v3 = await idsOf(app.service, 3);
      expect(v3).toHaveLength(3);
      expect(await idsOf(app.service), "only the rolled-back release is left").toEqual(v3);
      for (const id of [...v2, ...v3]) expect(report.overall.byInstance[host(id)] ?? 0, `${host(id)} served traffic during the rollback`).toBeGreaterThan(0);
      await expectNoPublishedPorts(app.service);
      await expectProxyRunning(app.port, "after kiln rollback exited");
      expect(JSON.parse((await httpGet("127.0.0.1", app.port, "/version")).body)).toMatchObject({ version: "v1" });
    }),
  );

  it(
    "b. blue-green rollout v1 → v2 under ~200 req/s: zero failed, zero served after stop",
    timed("b. blue-green", async () => {
      const app = await proxiedApp("zd-bg", "rollout: { strategy: blue-green, bakeTimeMs: 2000 }");
      const v1 = await deployV1(app);
      await makeSlowV2(app);
      const { result, events, report } = await underLoad(app, ["deploy"], 2);
      timings["b. blue-green: kiln deploy v2"] = result.elapsedMs;
      record("b. blue-green v1→v2", report, result.elapsedMs);
      expectOk(result, "kiln deploy (v2, blue-green)");
      expect(events.at(-1)).toMatchObject({ type: "result", outcome: "deployed", release: 2 });
      expectClean(report);
      const v2 = await idsOf(app.service, 2);
      expect(v2).toHaveLength(3);
      expect(await idsOf(app.service)).toEqual(v2);
      for (const id of [...v1, ...v2]) expect(report.overall.byInstance[host(id)] ?? 0, `${host(id)} served traffic`).toBeGreaterThan(0);
      await expectNoPublishedPorts(app.service);
      await expectProxyRunning(app.port, "after kiln deploy exited");
    }),
  );

  it(
    "d. a v2 that never becomes healthy never receives a request (its /stats stays 0) and the rollout fails with exit 1",
    timed("d. never healthy", async () => {
      // autoRollback false: the failed v2 containers stay, so their own counters can be read afterwards.
      const app = await proxiedApp("zd-bad", "rollout:\n  strategy: rolling\n  maxSurge: 3\n  maxUnavailable: 0\n  autoRollback: false");
      const v1 = await deployV1(app);
      await app.write("version.txt", "v2\n");
      await app.editSpec((spec) => withEnv(spec, { HEALTHZ_STATUS: "500" }));
      const { result, events, report } = await underLoad(app, ["deploy"], "any");
      record("d. never-healthy v2", report, result.elapsedMs);
      if (events.some((e) => e.type === "error" && e.code === "CAPABILITY_MISSING")) throw new Error(`${PROXY_MISSING}\n${describeResult(result)}`);
      expect(result.code, describeResult(result)).toBe(1);
      expect(events.at(-1)).toMatchObject({ type: "error", code: "HEALTH_CHECK_FAILED" });
      const v2 = await idsOf(app.service, 2);
      expect(v2.length, "the failed v2 containers were left for inspection (autoRollback: false)").toBeGreaterThan(0);
      for (const id of v2) {
        const stats = await helloWebStats(docker, id);
        expect(stats.version).toBe("v2");
        expect(stats.requests, `v2 container ${host(id)} received no request`).toBe(0);
      }
      expect(Object.keys(report.overall.byInstance).sort(), `every answer came from v1\n${describeReport(report)}`).toEqual(v1.map(host).sort());
      expect(report.overall.failed, describeReport(report)).toBe(0);
      expect(report.overall.servedAfterStop, describeReport(report)).toBe(0);
      await expectProxyRunning(app.port, "after the failed deploy");
      // Converge back (and leave nothing of v2 running): the next deploy of a v1 spec.
      await app.write("version.txt", "v1\n");
      await app.editSpec((spec) => withEnv(spec, {}));
      const back = await kilnWith(app.dir, ["deploy", "--json"], { timeoutMs: 90_000 });
      expectOk(back, "kiln deploy (back to v1)");
    }),
  );

  it(
    "f. a release that changes the proxy's own settings (retries, health check path) reloads HAProxy under ~200 req/s: zero failed",
    timed("f. reload", async () => {
      const app = await proxiedApp("zd-reload");
      await deployV1(app);
      await app.write("version.txt", "v2\n");
      // Other retries and another check path (hello-web answers /healthz?probe=1 alike): the proxy's configuration changes.
      await app.editSpec((spec) =>
        replaceOnce(
          replaceOnce(spec, "http: { port: http, path: /healthz }", "http: { port: http, path: /healthz?probe=1 }"),
          `proxy: { port: ${app.port} }`,
          `proxy: { port: ${app.port}, retries: 3 }`,
        ),
      );
      const proxyBefore = (await containersPublishing(docker, app.port))[0]?.Id;
      const { result, report } = await underLoad(app, ["deploy"], 2);
      timings["f. reload: kiln deploy"] = result.elapsedMs;
      record("f. v1→v2 with new proxy settings (reload)", report, result.elapsedMs);
      expectOk(result, "kiln deploy (v2, new proxy settings)");
      // The running proxy has the new settings (a reload, not a restart: the same container answers on).
      const [proxy] = await containersPublishing(docker, app.port);
      expect(proxy?.Id, "the same proxy container").toBe(proxyBefore);
      const config = await execIn(docker, proxy!.Id, ["cat", "/usr/local/etc/haproxy/haproxy.cfg"]);
      expect(config.output).toMatch(/retries\s+3/);
      expect(config.output).toContain("/healthz?probe=1");
      expectClean(report);
      expect(JSON.parse((await httpGet("127.0.0.1", app.port, "/version")).body)).toMatchObject({ version: "v2" });
      await expectProxyRunning(app.port, "after the reload");
    }),
  );

  it(
    "control: the load sees it when a container still in the proxy is told to stop (SIGTERM behind Kiln's back)",
    timed("control", async () => {
      // Without this, "zero served after stop" could also mean that the detector is blind.
      const app = await proxiedApp("zd-ctl");
      const v1 = await deployV1(app);
      const load = startFrontDoorLoad(app.port);
      let report: LoadReport;
      try {
        await new Promise((resolve) => setTimeout(resolve, 2_000));
        load.markWindowStart();
        await docker.getContainer(v1[0]!).kill({ signal: "SIGTERM" });
        await new Promise((resolve) => setTimeout(resolve, 4_000));
        load.markWindowEnd();
        report = await load.stop();
      } catch (error) {
        await load.stop();
        throw error;
      }
      record("control: SIGTERM behind Kiln's back", report, 0);
      const details = describeReport(report);
      expect(report.overall.servedAfterStop + report.overall.failed, `the load noticed the container told to stop while it still had traffic\n${details}`).toBeGreaterThan(0);
    }),
  );

  it(
    "e. SIGKILL of kiln mid-rollout leaves the service answering: zero failed requests for 10 s after the kill; the proxy keeps running",
    timed("e. sigkill", async () => {
      const app = await proxiedApp("zd-kill");
      const v1 = await deployV1(app);
      await makeSlowV2(app);
      const load = startFrontDoorLoad(app.port);
      let run: RunningKiln | undefined;
      let report: LoadReport;
      let killedAfter: string;
      try {
        await new Promise((resolve) => setTimeout(resolve, 1_000));
        run = startKiln(app.dir, ["deploy", "--json"], { timeoutMs: KILN_UNDER_LOAD_TIMEOUT_MS });
        // The most delicate moment: an old instance is being drained (v2's first instance just took traffic).
        const retiring = await waitFor(async () => foundOrNot(completeJsonLines(run!.stdout()).find((e) => e.type === "instance.retiring")), {
          description: "the first instance.retiring event",
          timeoutMs: 60_000,
          minDelayMs: 20,
          maxDelayMs: 20,
        });
        killedAfter = `kill after ${JSON.stringify(retiring)}`;
        run.kill("SIGKILL");
        load.markWindowStart();
        const result = await run.done;
        expect(result.signal, describeResult(result)).toBe("SIGKILL");
        await new Promise((resolve) => setTimeout(resolve, 10_000));
        load.markWindowEnd();
        report = await load.stop();
      } catch (error) {
        run?.kill("SIGKILL");
        await load.stop();
        throw error;
      }
      record("e. SIGKILL mid-rollout (window = 10 s after the kill)", report, 0);
      const details = `${killedAfter}\n${describeReport(report)}`;
      expect(report.window!.sent, details).toBeGreaterThan(RATE * 8);
      expect(report.window!.failed, `failed requests after the kill\n${details}`).toBe(0);
      expect(report.overall.failed, `failed requests before or after the kill\n${details}`).toBe(0);
      expect(report.overall.servedAfterStop, details).toBe(0);
      await expectProxyRunning(app.port, "after kiln was killed");
      expect((await httpGet("127.0.0.1", app.port, "/version")).status).toBe(200);
      expect(v1).toHaveLength(3);
      killed = app;
    }),
  );

  // The service whose kiln was killed mid-rollout (test e).
  let killed: (App & { port: number }) | undefined;

  it(
    "e2. after the SIGKILL, the next kiln deploy recovers the interrupted rollout under ~200 req/s: zero failed, zero served after stop",
    timed("e2. recovery", async () => {
      expect(killed, "needs the killed rollout's service (test e)").toBeDefined();
      const app = killed!;
      const { result, events, report } = await underLoad(app, ["deploy"], 2);
      timings["e2. recovery: kiln deploy"] = result.elapsedMs;
      record("e2. recovery after SIGKILL", report, result.elapsedMs);
      expectOk(result, "kiln deploy (recovery after SIGKILL)");
      expect(events.find((e) => e.type === "rollout.recovered"), "the interrupted rollout was found").toBeDefined();
      expect(events.at(-1)).toMatchObject({ type: "result", outcome: "deployed" });
      expectClean(report);
      const instances = await idsOf(app.service);
      expect(instances, "3 instances of one release are left").toHaveLength(3);
      const releases = new Set((await containersWith(docker, `${LABEL_SERVICE}=${app.service}`, LABEL_RELEASE)).map((c) => c.Labels[LABEL_RELEASE]));
      expect(releases.size).toBe(1);
      expect(JSON.parse((await httpGet("127.0.0.1", app.port, "/version")).body)).toMatchObject({ version: "v2" });
      await expectNoPublishedPorts(app.service);
      await expectProxyRunning(app.port, "after the recovery");
    }),
  );
});
