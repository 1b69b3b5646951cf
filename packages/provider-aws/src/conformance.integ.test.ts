// The provider conformance suite from @kilnjs/testkit, against moto (the EC2 emulator).
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe } from "vitest";
import { motoEndpoint, requireMoto, runProviderConformance } from "@kilnjs/testkit";
import { createAwsProvider } from "./index.js";
import { motoBaseImage, motoClient, playBuilders, removeService, MOTO_REGION, type BuilderPlayer } from "./test-support.js";

const moto = await requireMoto();

describe.skipIf(!moto)("aws provider conformance (moto)", () => {
  const endpoint = motoEndpoint();
  const client = motoClient(endpoint);
  const workDirs: string[] = [];
  /** The services this suite bakes for: its builder player finishes only theirs. */
  const services = new Set<string>();
  let player: BuilderPlayer;
  let baseImageId: string;

  beforeAll(async () => {
    baseImageId = (await motoBaseImage(client)).id;
    // moto runs no user data: this plays the builder's part (tag the result, power off).
    player = playBuilders(client, { owns: (name) => services.has(name) });
  });

  afterAll(async () => {
    await player.stop();
    for (const dir of workDirs) await rm(dir, { recursive: true, force: true });
    client.destroy();
  });

  runProviderConformance({
    name: "aws",
    createProvider: () => createAwsProvider({ endpoint, region: MOTO_REGION, credentials: { accessKeyId: "testing", secretAccessKey: "testing" }, pollIntervalMs: 50 }),
    async makeRecipe({ service, fingerprint }) {
      services.add(service);
      const dir = await mkdtemp(path.join(tmpdir(), "kiln-aws-conformance-"));
      workDirs.push(dir);
      await writeFile(path.join(dir, "index.html"), "conformance\n");
      return {
        target: { service, environment: "conformance" },
        fingerprint,
        machine: {
          kind: "machine",
          steps: [
            { kind: "file", from: path.join(dir, "index.html"), to: "/srv/www/index.html", directory: false, files: [""] },
            { kind: "run", command: "echo provisioned" },
          ],
          base: { id: baseImageId },
          builder: { instanceType: "t3.micro", securityGroupIds: [], amiName: "kiln-{service}-{fingerprint}" },
          timeoutMs: 120_000,
        },
      };
    },
    cleanup: (service) => removeService(client, service),
  });
});
