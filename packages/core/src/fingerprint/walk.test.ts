// The walk's filesystem calls run synchronously in batches, in flight, or first one then the other
// (`WalkMode`); whichever way, it must find the same entries, so the fingerprint cannot depend on it.
import { rmSync } from "node:fs";
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { fingerprintBuild } from "./fingerprint.js";
import { createContextFilter, type ContextFilter } from "./ignore.js";
import type * as walk from "./walk.js";
import { Run, WALK_BATCH_CALLS, WALK_SLOW_CALL_MS, walkContext, type ContextEntry, type WalkMode } from "./walk.js";

// fingerprintBuild makes its own Run: this lets a test choose the mode it walks with.
const chosen = vi.hoisted(() => ({ mode: undefined as WalkMode | undefined }));
vi.mock("./walk.js", async (importOriginal) => {
  const original = await importOriginal<typeof walk>();
  class RunInChosenMode extends original.Run {
    constructor(contextDir: string, signal: AbortSignal | undefined, mode?: WalkMode) {
      super(contextDir, signal, chosen.mode ?? mode);
    }
  }
  return { ...original, Run: RunInChosenMode };
});

let root: string;
beforeEach(async () => {
  root = await mkdtemp(path.join(tmpdir(), "kiln-walk-"));
  chosen.mode = undefined;
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

const DOCKERIGNORE = ["logs/", "**/*.tmp", "vendor", "!vendor/keep/**", ""].join("\n");

/**
 * A context with nested folders (more entries per level than one synchronous batch), symlinks to a
 * file, to a folder and to nothing, and ignored paths (an excluded folder, a pattern at any depth,
 * a folder excluded but for one `!` subfolder). Returns the paths the build must include, sorted.
 */
async function makeContext(dir: string): Promise<string[]> {
  const included: string[] = [];
  const file = async (relPath: string, content: string, include: boolean) => {
    const absPath = path.join(dir, ...relPath.split("/"));
    await mkdir(path.dirname(absPath), { recursive: true });
    await writeFile(absPath, content);
    if (include) included.push(relPath);
  };
  await file("Dockerfile", "FROM kiln-local/busybox\nCOPY . /ctx\n", true);
  await file(".dockerignore", DOCKERIGNORE, true);
  const perFolder = Math.ceil((WALK_BATCH_CALLS * 1.5) / 6);
  for (let folder = 0; folder < 6; folder++) {
    for (let index = 0; index < perFolder; index++) {
      const depth = index % 3;
      const relPath = ["src", `m${folder}`, ...(depth > 0 ? ["a"] : []), ...(depth > 1 ? ["b"] : []), `f${index}.js`].join("/");
      await file(relPath, `export const value = ${folder * 1000 + index};\n`, true);
    }
    await file(`src/m${folder}/scratch-${folder}.tmp`, "temporary", false);
  }
  await file("logs/today.log", "log line", false);
  await file("vendor/lib/index.js", "vendored", false);
  await file("vendor/keep/kept.js", "kept", true);
  const link = async (relPath: string, target: string) => {
    await symlink(target, path.join(dir, ...relPath.split("/")));
    included.push(relPath);
  };
  await link("src/link-to-file.js", "m0/f0.js");
  await link("src/link-to-folder", "m1");
  await link("src/dangling", "does-not-exist");
  return included.sort();
}

function described(entries: readonly ContextEntry[]): unknown[] {
  return [...entries]
    .sort((a, b) => (a.relPath < b.relPath ? -1 : a.relPath > b.relPath ? 1 : 0))
    .map(({ relPath, kind, stat, executable }) => ({ relPath, kind, stat, executable }));
}

async function walkIn(dir: string, mode: WalkMode, filter: ContextFilter = createContextFilter(DOCKERIGNORE, [".dockerignore", "Dockerfile"])): Promise<ContextEntry[]> {
  return walkContext(new Run(dir, undefined, mode), filter);
}

describe("walkContext", () => {
  it("finds the same entries whether its calls run one after the other or in flight", async () => {
    const dir = path.join(root, "context");
    const expected = await makeContext(dir);
    const sequential = await walkIn(dir, "sequential");
    expect(sequential.map((entry) => entry.relPath).sort()).toEqual(expected);
    expect(sequential.filter((entry) => entry.kind === "symlink").map((entry) => entry.relPath).sort()).toEqual(["src/dangling", "src/link-to-file.js", "src/link-to-folder"]);
    expect(described(await walkIn(dir, "parallel"))).toEqual(described(sequential));
    expect(described(await walkIn(dir, "adaptive"))).toEqual(described(sequential));
  });

  it("finds the same entries when an adaptive walk switches to calls in flight half-way through a level", async () => {
    const dir = path.join(root, "context");
    await makeContext(dir);
    const sequential = await walkIn(dir, "sequential");
    const run = new Run(dir, undefined, "adaptive");
    const filter = createContextFilter(DOCKERIGNORE, [".dockerignore", "Dockerfile"]);
    let looked = 0;
    // As a slow batch would: the switch happens after the first synchronous batch of a level.
    const switching: ContextFilter = {
      entersDirectory: (relPath) => filter.entersDirectory(relPath),
      includesFile: (relPath) => {
        if (++looked === WALK_BATCH_CALLS + 10) run.walkMode = "parallel";
        return filter.includesFile(relPath);
      },
    };
    const switched = await walkContext(run, switching);
    expect(run.walkMode).toBe("parallel");
    expect(described(switched)).toEqual(described(sequential));
  });

  it("switches an adaptive walk to calls in flight when a batch is slow", async () => {
    const dir = path.join(root, "context");
    await makeContext(dir);
    const sequential = await walkIn(dir, "sequential");
    const filter = createContextFilter(DOCKERIGNORE, [".dockerignore", "Dockerfile"]);
    // (Whether a fast walk stays synchronous depends on the machine's load: not asserted here.)
    // Each file takes 10 times the threshold to look at, as on a slow filesystem.
    const slow = new Run(dir, undefined, "adaptive");
    const slowFilter: ContextFilter = {
      entersDirectory: (relPath) => filter.entersDirectory(relPath),
      includesFile: (relPath) => {
        const until = performance.now() + WALK_SLOW_CALL_MS * 10;
        while (performance.now() < until) {
          // busy: the time a slow lstat would take
        }
        return filter.includesFile(relPath);
      },
    };
    expect(described(await walkContext(slow, slowFilter))).toEqual(described(sequential));
    expect(slow.walkMode).toBe("parallel");
  });

  it.each(["sequential", "parallel"] as const)("names a folder that vanishes before it is read (%s)", async (mode) => {
    const dir = path.join(root, "context");
    await makeContext(dir);
    const filter = createContextFilter(undefined, []);
    const vanishing: ContextFilter = {
      includesFile: (relPath) => filter.includesFile(relPath),
      entersDirectory: (relPath) => {
        // Listed in its parent, then gone before the walk reads it.
        if (relPath === "src/m3") rmSync(path.join(dir, "src", "m3"), { recursive: true });
        return filter.entersDirectory(relPath);
      },
    };
    await expect(walkIn(dir, mode, vanishing)).rejects.toMatchObject({ code: "BUILD_CONTEXT_INVALID", details: { path: "src/m3", errno: "ENOENT" } });
  });
});

describe("fingerprintBuild and the walk's mode", () => {
  it("gives the fingerprint of the sequential walk whatever the mode", async () => {
    const dir = path.join(root, "context");
    const expected = await makeContext(dir);
    const options = { contextDir: dir, dockerfilePath: path.join(dir, "Dockerfile") };
    chosen.mode = "sequential";
    const sequential = await fingerprintBuild(options);
    expect(sequential.files).toEqual(expected);
    for (const mode of ["parallel", "adaptive"] as const) {
      chosen.mode = mode;
      const result = await fingerprintBuild(options);
      expect(result.fingerprint, mode).toBe(sequential.fingerprint);
      expect(result.files, mode).toEqual(sequential.files);
    }
  });
});
