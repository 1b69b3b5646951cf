/**
 * The `kiln` command line against a real Docker engine, driven as a user drives it: the built
 * binary in a temp copy of examples/hello-web, checked through its output, its exit code and what
 * the engine runs afterwards.
 */
import { mkdir } from "node:fs/promises";
import { afterAll, describe, expect, it } from "vitest";
import { requireDockerEngine } from "@kilnjs/testkit";
import {
  FAST_HEALTH,
  FAST_STOP_GRACE_MS,
  LABEL_FINGERPRINT,
  LABEL_RELEASE,
  LABEL_SERVICE,
  Scratch,
  containersWith,
  describeResult,
  dockerClient,
  fastHealthDeadlineMs,
  httpGet,
  imagesWith,
  jsonLines,
  lineOf,
  replaceOnce,
  runOnce,
  type App,
  type HistoryDocument,
  type PlanDocument,
  type StatusDocument,
} from "./harness.js";

const engine = await requireDockerEngine();

describe.skipIf(!engine)("kiln CLI against a real Docker engine", () => {
  const docker = dockerClient();
  const scratch = new Scratch();
  const timings: Record<string, number> = {};

  afterAll(async () => {
    const problems = await scratch.cleanUp(docker);
    // Everything labelled with our services must be gone.
    for (const service of scratch.services) {
      const left = [...(await containersWith(docker, `${LABEL_SERVICE}=${service}`)), ...(await imagesWith(docker, `${LABEL_SERVICE}=${service}`))];
      if (left.length > 0) problems.push(`${service}: ${left.length} container(s)/image(s) left after cleanup`);
    }
    process.stderr.write(`cli.integ timings (ms): ${JSON.stringify(timings)}\n`);
    if (problems.length > 0) throw new Error(`cleanup problems:\n${problems.join("\n")}`);
  });

  /** Times a test body into `timings`. */
  const timed = (name: string, body: () => Promise<void>) => async () => {
    const startedAt = Date.now();
    try {
      await body();
    } finally {
      timings[name] = Date.now() - startedAt;
    }
  };

  /** `kiln deploy --json` expecting exit 0; returns the events. */
  async function deployOk(app: App, extra: string[] = []) {
    const result = await app.kiln(["deploy", "--json", ...extra]);
    expect(result.code, describeResult(result)).toBe(0);
    return jsonLines(result.stdout);
  }

  const running = (service: string, release: number) => containersWith(docker, `${LABEL_SERVICE}=${service}`, `${LABEL_RELEASE}=${release}`);

  it(
    "v1 then v2 with 3 instances: every container replaced, each answers v2, history shows 2 and 1 succeeded",
    timed("replace-v1-with-v2", async () => {
      const app = await scratch.helloWeb(scratch.service());
      const first = await deployOk(app);
      expect(first.at(-1)).toMatchObject({ type: "result", outcome: "deployed", release: 1 });
      const v1 = await running(app.service, 1);
      expect(v1.map((c) => c.State)).toEqual(["running", "running", "running"]);

      await app.write("version.txt", "v2\n");
      const second = await deployOk(app);
      expect(second.at(-1)).toMatchObject({ type: "result", outcome: "deployed", release: 2 });
      expect(second.some((e) => e.type === "image.build.started"), "v2 changed a file, so it needs a new image").toBe(true);

      const all = await containersWith(docker, `${LABEL_SERVICE}=${app.service}`);
      expect(all.filter((c) => c.Labels[LABEL_RELEASE] === "1"), "no container of release 1 may be left").toEqual([]);
      const v2 = all.filter((c) => c.Labels[LABEL_RELEASE] === "2");
      expect(v2.map((c) => c.State)).toEqual(["running", "running", "running"]);
      expect(all).toHaveLength(3);
      for (const old of v1) expect(v2.map((c) => c.Id)).not.toContain(old.Id);

      const status = await app.json<StatusDocument>(["status"], "status");
      expect(status.release?.number).toBe(2);
      expect(status.drift).toEqual([]);
      expect(status.instances.map((i) => i.id).sort()).toEqual(v2.map((c) => c.Id).sort());
      for (const instance of status.instances) {
        const endpoint = instance.endpoints.http;
        expect(endpoint, `instance ${instance.name} has an http endpoint`).toBeDefined();
        const answer = await httpGet(endpoint!.host, endpoint!.port, "/version");
        expect(answer.status).toBe(200);
        expect(JSON.parse(answer.body)).toMatchObject({ version: "v2" });
      }

      const history = await app.json<HistoryDocument>(["history"], "history");
      expect(history.currentRelease).toBe(2);
      expect(history.releases.map((r) => [r.number, r.status])).toEqual([
        [2, "succeeded"],
        [1, "succeeded"],
      ]);
    }),
  );

  it(
    "deploy with nothing changed builds nothing, touches no container and says it is up to date",
    timed("noop-deploy", async () => {
      const app = await scratch.helloWeb(scratch.service());
      await deployOk(app);

      const imagesBefore = await imagesWith(docker, `${LABEL_SERVICE}=${app.service}`);
      expect(imagesBefore).toHaveLength(1);
      const containersBefore = await containersWith(docker, `${LABEL_SERVICE}=${app.service}`);
      expect(containersBefore).toHaveLength(3);
      const startedBefore = new Map(
        await Promise.all(containersBefore.map(async (c) => [c.Id, (await docker.getContainer(c.Id).inspect()).State.StartedAt] as const)),
      );

      const events = await deployOk(app);
      expect(events.filter((e) => e.type === "image.build.started"), "no image may be built").toEqual([]);
      expect(events.some((e) => e.type === "rollout.skipped")).toBe(true);
      expect(events.at(-1)).toMatchObject({ type: "result", outcome: "unchanged", release: 1 });

      const human = await app.kiln(["deploy"]);
      expect(human.code, describeResult(human)).toBe(0);
      expect(human.stdout).toContain("is up to date");
      expect(human.stdout).toContain("nothing built");
      expect(human.stdout).toContain(`${app.service}@default is up to date (release 1)`);

      const imagesAfter = await imagesWith(docker, `${LABEL_SERVICE}=${app.service}`);
      expect(imagesAfter.map((i) => i.Id)).toEqual(imagesBefore.map((i) => i.Id));
      const containersAfter = await containersWith(docker, `${LABEL_SERVICE}=${app.service}`);
      expect(containersAfter.map((c) => c.Id).sort()).toEqual([...startedBefore.keys()].sort());
      for (const container of containersAfter) {
        const state = (await docker.getContainer(container.Id).inspect()).State;
        expect(state.Running, `${container.Id} still runs`).toBe(true);
        expect(state.StartedAt, `${container.Id} was not restarted`).toBe(startedBefore.get(container.Id));
      }
    }),
  );

  it(
    "a v2 whose health check never passes: exit 1 within the health deadline, v1 keeps serving, history records the failure",
    timed("failing-v2", async () => {
      const app = await scratch.helloWeb(scratch.service());
      await deployOk(app);
      const v1Ids = (await running(app.service, 1)).map((c) => c.Id).sort();
      expect(v1Ids).toHaveLength(3);

      await app.write("version.txt", "v2\n");
      await app.editSpec((spec) => replaceOnce(spec, "    LOG_LEVEL: info\n", `    LOG_LEVEL: info\n    HEALTHZ_STATUS: "500"\n`));
      // Build first, so the deploy's time is the rollout's alone.
      const build = await app.kiln(["build", "--json"]);
      expect(build.code, describeResult(build)).toBe(0);
      expect(jsonLines(build.stdout).at(-1)).toMatchObject({ type: "result", built: true });

      const result = await app.kiln(["deploy", "--json"]);
      timings["failing-v2: the deploy command"] = result.elapsedMs;
      expect(result.code, describeResult(result)).toBe(1);
      // One batch (maxSurge 1) fails by the derived deadline at the latest; then the one new
      // instance is stopped (its grace period). Everything else is process start, fingerprint and
      // engine calls: 15 s of slack.
      const bound = fastHealthDeadlineMs() + FAST_STOP_GRACE_MS + 15_000;
      expect(result.elapsedMs, `deploy took ${result.elapsedMs} ms; bound ${bound} ms from ${JSON.stringify(FAST_HEALTH)}`).toBeLessThan(bound);
      const events = jsonLines(result.stdout);
      expect(events.filter((e) => e.type === "image.build.started")).toEqual([]);
      expect(events.some((e) => e.type === "instance.unhealthy")).toBe(true);
      expect(events.find((e) => e.type === "rollout.failed")).toMatchObject({ release: 2, code: "HEALTH_CHECK_FAILED" });
      expect(events.find((e) => e.type === "rollout.rolled-back")).toMatchObject({ release: 2, restoredRelease: 1 });
      expect(events.at(-1)).toMatchObject({ type: "error", code: "HEALTH_CHECK_FAILED" });

      const all = await containersWith(docker, `${LABEL_SERVICE}=${app.service}`);
      expect(all.filter((c) => c.Labels[LABEL_RELEASE] !== "1"), "no instance of the failed release may be left").toEqual([]);
      expect(all.map((c) => c.Id).sort(), "the v1 containers are the same ones as before").toEqual(v1Ids);
      expect(all.map((c) => c.State)).toEqual(["running", "running", "running"]);

      const status = await app.json<StatusDocument>(["status"], "status");
      expect(status.release?.number).toBe(1);
      expect(status.drift).toEqual([]);
      expect(status.instances).toHaveLength(3);
      for (const instance of status.instances) {
        const endpoint = instance.endpoints.http!;
        expect((await httpGet(endpoint.host, endpoint.port, "/healthz")).status).toBe(200);
        const version = await httpGet(endpoint.host, endpoint.port, "/version");
        expect(JSON.parse(version.body)).toMatchObject({ version: "v1" });
      }

      const history = await app.json<HistoryDocument>(["history"], "history");
      expect(history.currentRelease).toBe(1);
      expect(history.releases[0]).toMatchObject({ number: 2, status: "failed", error: { code: "HEALTH_CHECK_FAILED" } });
      expect(history.releases[1]).toMatchObject({ number: 1, status: "succeeded" });
    }),
  );

  it(
    ".dockerignore with a Dockerfile at a custom path: the deploy succeeds and secret.txt never reaches the image",
    timed("dockerignore-custom-dockerfile", async () => {
      const app = await scratch.helloWeb(scratch.service(), (spec) =>
        replaceOnce(replaceOnce(spec, "    file: Dockerfile\n", "    file: build/app.Dockerfile\n"), "  count: 3\n", "  count: 1\n"),
      );
      await mkdir(app.file("build"));
      await app.write(
        "build/app.Dockerfile",
        ["ARG BASE_IMAGE=node:20-slim", "FROM ${BASE_IMAGE}", "WORKDIR /app", "COPY . /app/", "ENV NODE_ENV=production PORT=8080", "EXPOSE 8080", "USER node", 'CMD ["node", "server.js"]', ""].join("\n"),
      );
      await app.write(".dockerignore", "Dockerfile\n.dockerignore\nsecret.txt\n");
      await app.write("secret.txt", "hunter2\n");

      const events = await deployOk(app);
      expect(events.at(-1)).toMatchObject({ type: "result", outcome: "deployed", release: 1 });
      const containers = await running(app.service, 1);
      expect(containers.map((c) => c.State)).toEqual(["running"]);

      const history = await app.json<HistoryDocument>(["history"], "history");
      const image = history.releases[0]!.image.id;
      const listing = await runOnce(docker, image, ["node", "-e", "console.log(JSON.stringify(require('fs').readdirSync('/app').sort()))"], {
        [LABEL_SERVICE]: app.service,
      });
      expect(listing.exitCode, listing.output).toBe(0);
      const files = JSON.parse(listing.output.trim()) as string[];
      expect(files, "the app's files were copied").toEqual(expect.arrayContaining(["server.js", "package.json", "version.txt", "itest-id.txt"]));
      expect(files, "secret.txt is listed in .dockerignore").not.toContain("secret.txt");
      expect(files, ".dockerignore lists itself").not.toContain(".dockerignore");
      expect(files, ".dockerignore lists Dockerfile").not.toContain("Dockerfile");
      expect(files, "Kiln's state folder never enters a build").not.toContain(".kiln");
    }),
  );

  it(
    "two environments with different build args: different fingerprints, different digests, each the image id docker reports",
    timed("environments-build-args", async () => {
      const app = await scratch.helloWeb(scratch.service(), (spec) =>
        replaceOnce(
          spec,
          "environments:\n  staging:\n    instances: { count: 1 }\n",
          [
            "environments:",
            "  a:",
            "    instances: { count: 1 }",
            "    image: { dockerfile: { args: { FLAVOR: a } } }",
            "  b:",
            "    instances: { count: 1 }",
            "    image: { dockerfile: { args: { FLAVOR: b } } }",
            "",
          ].join("\n"),
        ),
      );
      await app.write("Dockerfile", replaceOnce(await app.read("Dockerfile"), "FROM ${BASE_IMAGE}\n", "FROM ${BASE_IMAGE}\nARG FLAVOR\nENV FLAVOR=${FLAVOR}\n"));

      const planA = await app.json<PlanDocument>(["plan", "-e", "a"], "plan");
      const planB = await app.json<PlanDocument>(["plan", "-e", "b"], "plan");
      expect(planA.plan.fingerprint).toMatch(/^sha256:[0-9a-f]{64}$/);
      expect(planB.plan.fingerprint).toMatch(/^sha256:[0-9a-f]{64}$/);
      expect(planA.plan.fingerprint, "FLAVOR differs, so the fingerprints must").not.toBe(planB.plan.fingerprint);

      await deployOk(app, ["-e", "a"]);
      await deployOk(app, ["-e", "b"]);

      const digests: string[] = [];
      for (const [environment, plan] of [
        ["a", planA],
        ["b", planB],
      ] as const) {
        const history = await app.json<HistoryDocument>(["history", "-e", environment], "history");
        const release = history.releases[0]!;
        expect(release).toMatchObject({ number: 1, status: "succeeded", fingerprint: plan.plan.fingerprint });
        expect(release.image.digest).toMatch(/^sha256:[0-9a-f]{64}$/);
        digests.push(release.image.digest);

        const images = await imagesWith(docker, `${LABEL_FINGERPRINT}=${plan.plan.fingerprint}`);
        expect(images, `one image carries fingerprint ${plan.plan.fingerprint}`).toHaveLength(1);
        expect(release.image.digest, "the recorded digest is the image id the engine reports").toBe(images[0]!.Id);
        expect((await docker.getImage(release.image.names[0] ?? release.image.id).inspect()).Id).toBe(release.image.digest);

        // And the environment's instance runs that image, built with its FLAVOR.
        const containers = await containersWith(docker, `${LABEL_SERVICE}=${app.service}`, `dev.kiln.environment=${environment}`);
        expect(containers).toHaveLength(1);
        const inspected = await docker.getContainer(containers[0]!.Id).inspect();
        expect(inspected.Image).toBe(release.image.digest);
        expect(inspected.Config.Env).toContain(`FLAVOR=${environment}`);
      }
      expect(digests[0]).not.toBe(digests[1]);
    }),
  );

  describe("bad specs: exit 2, file:line:column and key path, nothing built or started", () => {
    const cases: Array<{ name: string; edit: (spec: string) => string; marker: string; expect: RegExp[] }> = [
      {
        name: "invalid YAML (an unclosed bracket)",
        edit: (spec) => replaceOnce(spec, "  ports:\n    - { name: http, port: 8080 }\n", "  ports: [ { name: http, port: 8080 }\n"),
        marker: "  ports: [ {",
        expect: [/\]/],
      },
      {
        name: "an unknown key (instances.cuont)",
        edit: (spec) => replaceOnce(spec, "  count: 3\n", "  cuont: 3\n"),
        marker: "  cuont: 3",
        expect: [/instances\.cuont/, /did you mean "count"/],
      },
      {
        name: 'a wrong type (count: "three")',
        edit: (spec) => replaceOnce(spec, "  count: 3\n", '  count: "three"\n'),
        marker: '  count: "three"',
        expect: [/instances\.count/, /expected a number/],
      },
      {
        name: "tab indentation",
        edit: (spec) => replaceOnce(spec, "  count: 3\n", "\tcount: 3\n"),
        marker: "\tcount: 3",
        expect: [/tab/i],
      },
    ];

    it.each(cases)(
      "$name",
      async (testCase) => {
        const startedAt = Date.now();
        try {
          const app = await scratch.helloWeb(scratch.service("itest-bad"));
          const bad = testCase.edit(await app.read("kiln.yaml"));
          await app.write("bad.yaml", bad);
          const line = lineOf(bad, testCase.marker);

          const result = await app.kiln(["deploy", "-c", "bad.yaml"]);
          expect(result.code, describeResult(result)).toBe(2);
          expect(result.stderr).toContain("SPEC_INVALID");
          for (const pattern of testCase.expect) expect(result.stderr).toMatch(pattern);
          // Nothing may have been built or started, whatever the position says.
          expect(await containersWith(docker, `${LABEL_SERVICE}=${app.service}`)).toEqual([]);
          expect(await imagesWith(docker, `${LABEL_SERVICE}=${app.service}`)).toEqual([]);
          const position = /bad\.yaml:(\d+):(\d+)/.exec(result.stderr);
          expect(position, `stderr names bad.yaml:LINE:COL\n${result.stderr}`).not.toBeNull();
          expect(Number(position![1]), `the problem is on line ${line} (${JSON.stringify(bad.split("\n")[line - 1])}); stderr:\n${result.stderr}`).toBe(line);
        } finally {
          timings[`bad-spec: ${testCase.name}`] = Date.now() - startedAt;
        }
      },
    );
  });
});
