// The provider conformance suite from @kilnjs/testkit, against a real Docker engine.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import Docker from "dockerode";
import { afterAll, describe } from "vitest";
import { LABELS } from "@kilnjs/core";
import { requireDockerEngine, runProviderConformance } from "@kilnjs/testkit";
import { createDockerProvider } from "./index.js";

const engine = await requireDockerEngine();

const BASE_IMAGE = "kiln-local/busybox:latest";

describe.skipIf(!engine)("docker provider conformance", () => {
  const docker = new Docker(
    process.env.DOCKER_HOST?.startsWith("unix://") ? { socketPath: process.env.DOCKER_HOST.slice("unix://".length) } : undefined,
  );
  const workDirs: string[] = [];

  afterAll(async () => {
    for (const dir of workDirs) await rm(dir, { recursive: true, force: true });
  });

  runProviderConformance({
    name: "docker",
    createProvider: async () => {
      await docker.getImage(BASE_IMAGE).inspect().catch((error: unknown) => {
        throw new Error(`${BASE_IMAGE} is missing: run bash scripts/base-images.sh first`, { cause: error });
      });
      return createDockerProvider();
    },
    async makeRecipe({ service, fingerprint }) {
      const contextDir = await mkdtemp(path.join(tmpdir(), "kiln-conformance-"));
      workDirs.push(contextDir);
      await writeFile(path.join(contextDir, "Dockerfile"), `FROM ${BASE_IMAGE}\nCOPY index.html /www/\nCMD ["httpd", "-f", "-p", "8080", "-h", "/www"]\n`);
      await writeFile(path.join(contextDir, "index.html"), "conformance\n");
      return {
        target: { service, environment: "conformance" },
        fingerprint,
        dockerfile: {
          kind: "dockerfile",
          contextDir,
          dockerfilePath: path.join(contextDir, "Dockerfile"),
          files: ["Dockerfile", "index.html"],
          args: {},
        },
      };
    },
    async cleanup(service) {
      const filters = { label: [`${LABELS.service}=${service}`] };
      const containers = await docker.listContainers({ all: true, filters });
      await Promise.all(containers.map((info) => docker.getContainer(info.Id).remove({ force: true }).catch(() => undefined)));
      for (const info of await docker.listImages({ filters })) await docker.getImage(info.Id).remove({ force: true }).catch(() => undefined);
    },
  });
});
