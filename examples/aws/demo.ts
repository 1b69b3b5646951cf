/**
 * Runs examples/aws against moto, the local EC2 emulator: `kiln deploy --environment moto` bakes
 * an AMI and starts 4 instances; a version change bakes a new AMI and replaces all 4; a deploy
 * without changes does nothing; then `kiln history`.
 *
 * moto runs no user data, so no builder ever powers itself off: this script plays that part
 * through the EC2 API while it runs (it tags the builder's result and stops it, as the provisioning
 * script does at its end on a real VM).
 *
 *   bash scripts/moto.sh start            # then export what it prints
 *   npm run demo -w kiln-example-aws
 */
import { spawn } from "node:child_process";
import { cp, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { motoAvailable, motoEndpoint } from "@kilnjs/testkit";
import { motoClient, motoEnvironment, playBuilders, removeService } from "../../packages/provider-aws/src/test-support.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const bin = path.join(root, "packages/cli/dist/bin.js");

const endpoint = motoEndpoint();
if (!(await motoAvailable(endpoint))) {
  process.stderr.write(`No moto answers at ${endpoint}: run \`bash scripts/moto.sh start\` and export what it prints.\n`);
  process.exit(1);
}
// A copy of the two examples side by side, so the spec's ../hello-web paths hold and the
// version change stays out of the repository.
const work = await mkdtemp(path.join(os.tmpdir(), "kiln-aws-demo-"));
await cp(here, path.join(work, "aws"), { recursive: true, filter: (source) => !source.includes("node_modules") && !source.includes(".kiln") });
await cp(path.join(root, "examples/hello-web"), path.join(work, "hello-web"), { recursive: true });
const client = motoClient(endpoint);
const player = playBuilders(client);

/** Runs the CLI and waits for it (asynchronously: the builder player runs meanwhile). */
async function kiln(...args: string[]): Promise<void> {
  process.stdout.write(`\n$ kiln ${args.join(" ")}\n`);
  const child = spawn(process.execPath, [bin, ...args, "-C", path.join(work, "aws")], { stdio: "inherit", env: { ...process.env, ...motoEnvironment(endpoint) } });
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.on("close", (...exit) => resolve(exit)));
  if (code !== 0) throw new Error(`kiln ${args.join(" ")} exited ${code ?? signal}`);
}

try {
  await kiln("validate");
  await kiln("deploy", "--environment", "moto");
  const versionFile = path.join(work, "hello-web", "version.txt");
  await writeFile(versionFile, `${(await readFile(versionFile, "utf8")).trim()}-next\n`);
  await kiln("deploy", "--environment", "moto");
  await kiln("deploy", "--environment", "moto");
  await kiln("status", "--environment", "moto");
  await kiln("history", "--environment", "moto");
} finally {
  await player.stop();
  await removeService(client, "hello-web");
  client.destroy();
  await rm(work, { recursive: true, force: true });
}
