import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { shortFingerprint } from "./build-context.js";
import { buildLineProgress, missingBaseImageHint } from "./images.js";

describe("build output", () => {
  it("turns step lines into steps and other lines into logs", () => {
    expect(buildLineProgress("Step 3/7 : RUN npm ci")).toEqual({ type: "image.build.step", step: 3, total: 7, description: "RUN npm ci" });
    expect(buildLineProgress(" ---> Running in 1234")).toEqual({ type: "image.build.log", message: " ---> Running in 1234" });
  });

  it("tags by the first 12 hex digits of the fingerprint", () => {
    expect(shortFingerprint("sha256:" + "0123456789abcdef".repeat(4))).toBe("0123456789ab");
    expect(() => shortFingerprint("md5:1234")).toThrow(expect.objectContaining({ code: "INVALID_ARGUMENT" }) as Error);
  });
});

describe("missing base images", () => {
  it("explains a failed fetch of a base image, and stays quiet for other build errors", () => {
    const fetch = 'Get "https://registry-1.docker.io/v2/": dial tcp: lookup registry-1.docker.io: no such host';
    expect(missingBaseImageHint(fetch)).toMatch(/base image \(FROM\) is not on the engine/);
    expect(missingBaseImageHint("The command '/bin/sh -c exit 3' returned a non-zero code: 3")).toBe("");
  });
});

describe("lazy loading", () => {
  const dist = fileURLToPath(new URL("../dist/index.cjs", import.meta.url));
  it.skipIf(!existsSync(dist))("does not load dockerode or tar-fs when the package is imported", () => {
    const loaded = execFileSync(
      process.execPath,
      ["-e", `require(${JSON.stringify(dist)}); console.log(JSON.stringify(Object.keys(require.cache).filter((k) => /dockerode|docker-modem|tar-fs/.test(k))))`],
      { encoding: "utf8" },
    );
    expect(JSON.parse(loaded)).toEqual([]);
  });
});
