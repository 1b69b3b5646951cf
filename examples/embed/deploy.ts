/**
 * Embedding Kiln: deploy the hello-web example to a Docker engine from a spec given as an object,
 * follow the rollout through events, and cancel cleanly through an AbortSignal.
 *
 *   node --import tsx deploy.ts                      deploy (3 instances)
 *   node --import tsx deploy.ts --count 2            deploy 2 instances
 *   node --import tsx deploy.ts --cancel-on-launch   start a deploy of a new version and cancel it as soon as
 *                                                    the first new instance is launched: Kiln removes it and
 *                                                    the previous release keeps serving
 *   Ctrl-C at any time cancels the same way.
 *   --service NAME      the service's name (default "hello-web")
 *   --app DIR           the app to deploy: a folder with a Dockerfile whose container serves GET /healthz
 *                       on port 8080, and a version.txt (default: examples/hello-web); it is copied first
 *   --environment NAME  the environment (default "embed"); --state-dir DIR  where Kiln keeps state
 *                       (default: <tmp>/kiln-embed-state/<service>/<environment>, kept between runs, so a
 *                       second run continues the history and manages the same containers)
 *
 * Needs a Docker engine (DOCKER_HOST) and the base image kiln-local/node:20 (scripts/base-images.sh).
 * See README.md beside this file.
 */
import { cp, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { createKiln, isKilnError, type KilnEvent, type SpecInput } from "@kilnjs/core";
import { createDockerProvider } from "@kilnjs/provider-docker";

const { values: flags } = parseArgs({
  options: {
    count: { type: "string", default: "3" },
    "cancel-on-launch": { type: "boolean", default: false },
    "state-dir": { type: "string" },
    environment: { type: "string", default: "embed" },
    service: { type: "string", default: "hello-web" },
    app: { type: "string" },
    help: { type: "boolean", short: "h", default: false },
  },
});

if (flags.help) {
  console.log("usage: node --import tsx deploy.ts [--service NAME] [--app DIR] [--count N] [--environment NAME] [--state-dir DIR] [--cancel-on-launch]");
  process.exit(0);
}

// A copy of the example app, so the demo can change its version without touching the repository.
const appDir = await mkdtemp(path.join(os.tmpdir(), "kiln-embed-"));
const appSource = flags.app === undefined ? fileURLToPath(new URL("../hello-web", import.meta.url)) : path.resolve(flags.app);
// Not the app's own Kiln state or spec: this program gives the spec as an object.
await cp(appSource, appDir, { recursive: true, filter: (source) => !/[/\\](\.kiln|node_modules|kiln\.ya?ml)$/.test(source) });

const spec: SpecInput = {
  service: flags.service,
  provider: "docker",
  image: { dockerfile: { context: ".", args: { BASE_IMAGE: process.env.KILN_BASE_IMAGE ?? "kiln-local/node:20" } } },
  instances: { count: Number(flags.count), ports: [{ name: "http", port: 8080 }], stopGracePeriodMs: 3000 },
  health: { http: { port: "http", path: "/healthz" }, intervalMs: 300, healthyThreshold: 2, startPeriodMs: 2000 },
  rollout: { maxSurge: 1, maxUnavailable: 0 },
  environments: { [flags.environment]: {} },
};

const controller = new AbortController();
process.once("SIGINT", () => controller.abort(new Error("SIGINT")));

function onEvent(event: KilnEvent): void {
  switch (event.type) {
    case "image.built":
      console.log(`image built: ${event.imageId.slice(0, 19)} in ${event.durationMs} ms`);
      break;
    case "image.reused":
      console.log(`image reused: ${event.imageId.slice(0, 19)}`);
      break;
    case "instance.launched":
      console.log(`launched ${event.instance.name}`);
      if (flags["cancel-on-launch"] && event.instance.release !== undefined && event.instance.release > 1) controller.abort(new Error("cancelled on purpose"));
      break;
    case "instance.healthy":
      console.log(`healthy  ${event.instance.name} (${event.durationMs} ms)`);
      break;
    case "instance.retired":
      console.log(`retired  ${event.instance.name}`);
      break;
    case "rollout.succeeded":
    case "rollout.failed":
    case "rollout.rolled-back":
      console.log(`${event.type}: release ${event.release}`);
      break;
  }
}

const kiln = createKiln({
  providers: { docker: createDockerProvider() },
  dataDir: flags["state-dir"] ?? path.join(os.tmpdir(), "kiln-embed-state", flags.service, flags.environment),
  onEvent,
});

try {
  const environment = flags.environment;
  const first = await kiln.deploy({ spec, baseDir: appDir, environment });
  console.log(`release ${first.release.number} serves (${first.outcome})`);
  if (flags["cancel-on-launch"]) {
    await writeFile(path.join(appDir, "version.txt"), "v2-cancelled\n");
    await kiln.deploy({ spec, baseDir: appDir, environment, signal: controller.signal });
    console.log("unexpected: the deploy was not cancelled");
    process.exitCode = 1;
  }
} catch (error) {
  if (isKilnError(error, "ABORTED")) {
    const status = await kiln.status({ target: { service: flags.service, environment: flags.environment } });
    console.log(`cancelled: release ${status.release?.number ?? "none"} serves with ${status.instances.length} instance(s); drift: ${status.drift.length === 0 ? "none" : status.drift.join("; ")}`);
  } else if (isKilnError(error)) {
    console.error(`deploy failed [${error.code}]: ${error.message}`);
    process.exitCode = 1;
  } else throw error;
} finally {
  await kiln.close();
  await rm(appDir, { recursive: true, force: true });
}
