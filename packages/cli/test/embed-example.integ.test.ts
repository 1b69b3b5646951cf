/**
 * examples/embed/deploy.ts as its README runs it: deploy hello-web (2 instances), then start a
 * deploy of a new version and cancel it through an AbortSignal when its first instance launches.
 */
import { rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { requireDockerEngine } from "@kilnjs/testkit";
import { LABEL_ENVIRONMENT, LABEL_RELEASE, LABEL_SERVICE, REPO_ROOT, containersWith, describeResult, dockerClient, randomSuffix, removeLabelled, runCommand } from "./harness.js";

const engine = await requireDockerEngine();

describe.skipIf(!engine)("examples/embed/deploy.ts", () => {
  const docker = dockerClient();
  const environment = `itest-embed-${randomSuffix()}`;
  const service = `embed-${randomSuffix()}`;
  /** Images this run built (the example prints `image built: sha256:<12 hex>`); images carry no environment label. */
  const builtImages = new Set<string>();

  afterAll(async () => {
    // Images built under our environment may be reused by another run (same fingerprint): leave those in use.
    const problems = await removeLabelled(docker, `${LABEL_ENVIRONMENT}=${environment}`, { forceImages: false });
    // Not forced: another run may have found the same image by fingerprint and run it (409: left).
    for (const id of builtImages) {
      await docker
        .getImage(id)
        .remove()
        .catch((error: unknown) => {
          const status = (error as { statusCode?: number }).statusCode;
          if (status !== 404 && status !== 409) problems.push(`image ${id}: ${String(error)}`);
        });
    }
    // The example keeps its state per environment under <tmp>/kiln-embed-state: remove ours.
    await rm(path.join(tmpdir(), "kiln-embed-state", service), { recursive: true, force: true });
    const left = await containersWith(docker, `${LABEL_ENVIRONMENT}=${environment}`);
    if (left.length > 0) problems.push(`${left.length} container(s) of ${environment} left after cleanup`);
    if (problems.length > 0) throw new Error(`cleanup problems:\n${problems.join("\n")}`);
  });

  it("--cancel-on-launch: release 1 serves, the cancelled deploy leaves exactly its 2 instances and no drift", async () => {
    const result = await runCommand(process.execPath, ["--import", "tsx", "examples/embed/deploy.ts", "--service", service, "--app", "examples/hello-web", "--count", "2", "--environment", environment, "--cancel-on-launch"], {
      cwd: REPO_ROOT,
      timeoutMs: 170_000,
    });
    process.stderr.write(`embed example took ${result.elapsedMs} ms\n`);
    for (const match of result.stdout.matchAll(/^image built: sha256:([0-9a-f]{12})/gm)) builtImages.add(match[1]!);
    expect(result.code, describeResult(result)).toBe(0);

    const lines = result.stdout.split("\n");
    const serving = lines.findIndex((line) => /^release 1 serves \((deployed|unchanged)\)$/.test(line));
    const cancelled = lines.indexOf("cancelled: release 1 serves with 2 instance(s); drift: none");
    expect(serving, `a line "release 1 serves (...)"\n${describeResult(result)}`).toBeGreaterThanOrEqual(0);
    expect(cancelled, `the cancellation line\n${describeResult(result)}`).toBeGreaterThan(serving);
    expect(result.stdout).not.toContain("unexpected: the deploy was not cancelled");
    // The cancelled deploy did launch a release 2 instance (that is what triggers the cancel).
    expect(lines.slice(serving + 1, cancelled).some((line) => line.startsWith("launched "))).toBe(true);

    const containers = await containersWith(docker, `${LABEL_ENVIRONMENT}=${environment}`);
    expect(containers.map((c) => [c.Labels[LABEL_SERVICE], c.Labels[LABEL_RELEASE], c.State])).toEqual([
      [service, "1", "running"],
      [service, "1", "running"],
    ]);
  });
});
