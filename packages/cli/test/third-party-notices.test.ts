// Code bundled into a build (tsup's `noExternal`) ships without its package, so its licence notice
// must ship in THIRD-PARTY-NOTICES.md instead: every bundled package has its heading there, at the
// version installed, and nothing else is listed.
import { readFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const PACKAGES_ROOT = fileURLToPath(new URL("../../", import.meta.url));

/** The packages a tsup.config.ts bundles: the strings in its `noExternal: [...]` lists. */
function bundledPackages(config: string): string[] {
  return [...config.matchAll(/noExternal:\s*\[([^\]]*)\]/g)].flatMap((match) => [...(match[1] ?? "").matchAll(/"([^"]+)"/g)].map((name) => name[1] ?? "")).sort();
}

/** The package.json of `dependency` as Node resolves it from `folder` (some packages do not export it). */
function installedManifest(folder: string, dependency: string): string {
  for (let dir = folder; ; dir = path.dirname(dir)) {
    const file = path.join(dir, "node_modules", dependency, "package.json");
    if (existsSync(file)) return file;
    if (path.dirname(dir) === dir) throw new Error(`${dependency} is not installed under ${folder}`);
  }
}

describe.each(["core", "cli"])("THIRD-PARTY-NOTICES.md of @kilnjs/%s", (name) => {
  const folder = path.join(PACKAGES_ROOT, name);

  it("names every package the build bundles, at the installed version, and the package ships the file", async () => {
    const bundled = bundledPackages(await readFile(path.join(folder, "tsup.config.ts"), "utf8"));
    expect(bundled.length).toBeGreaterThan(0);
    const notices = await readFile(path.join(folder, "THIRD-PARTY-NOTICES.md"), "utf8");
    const expected = await Promise.all(
      bundled.map(async (dependency) => {
        const manifest = JSON.parse(await readFile(installedManifest(folder, dependency), "utf8")) as { version: string; license: string };
        return `## ${dependency} ${manifest.version} (${manifest.license})`;
      }),
    );
    expect([...notices.matchAll(/^## .*$/gm)].map((heading) => heading[0]).sort()).toEqual(expected.sort());
    const manifest = JSON.parse(await readFile(path.join(folder, "package.json"), "utf8")) as { files: string[] };
    expect(manifest.files).toContain("THIRD-PARTY-NOTICES.md");
  });
});
