// scripts/test.sh's setup decisions (what `npm test` starts, finds or skips, and what it prints),
// run against stand-in part scripts in a copy of the scripts folder: each stand-in records how it
// was called and answers as the real one would (an export line on stdout, progress and installer
// noise on stderr, an exit code), so no engine is started or installed here. The real scripts run
// in `npm test` itself, whose output the README and docs/development.md show.
import { spawnSync } from "node:child_process";
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";

const TEST_SH = fileURLToPath(new URL("./test.sh", import.meta.url));

/** How a stand-in answers one command (`start`, `env`, `path`). */
interface Answer {
  /** Its last stdout line (an export line, or a bare path for schemathesis.sh path). */
  readonly stdout?: string;
  /** What it prints on stderr (progress, installer noise). */
  readonly stderr?: string;
  readonly exitCode?: number;
}

type PartScript = "docker-engine.sh" | "base-images.sh" | "moto.sh" | "postgres.sh" | "schemathesis.sh" | "chromium.sh";

/** What every stand-in answers unless a test says otherwise: everything runs (as after an install). */
const HEALTHY: Record<PartScript, Partial<Record<"start" | "env" | "path" | "", Answer>>> = {
  "docker-engine.sh": {
    start: { stdout: "export DOCKER_HOST=unix:///tmp/engine/docker.sock", stderr: "Reading package lists...\nSetting up docker.io (26.1.5)\nkiln-engine: engine ready" },
    env: { stdout: "export DOCKER_HOST=unix:///tmp/engine/docker.sock" },
  },
  "base-images.sh": { "": { stderr: "base-images: built kiln-local/node:20" } },
  "moto.sh": {
    start: { stdout: "export AWS_ENDPOINT_URL_EC2=http://127.0.0.1:5055 AWS_ENDPOINT_URL_ELASTIC_LOAD_BALANCING_V2=http://127.0.0.1:5055", stderr: "Collecting moto[server]==5.2.1\n  Downloading moto-5.2.1-py3-none-any.whl" },
    env: { stdout: "export AWS_ENDPOINT_URL_EC2=http://127.0.0.1:5055 AWS_ENDPOINT_URL_ELASTIC_LOAD_BALANCING_V2=http://127.0.0.1:5055" },
  },
  "postgres.sh": {
    start: { stdout: "export KILN_PG_URL=postgres://kiln:s3cret@127.0.0.1:5433/kiln", stderr: "Unpacking postgresql-15 (15.14-0+deb12u1) ..." },
    env: { stdout: "export KILN_PG_URL=postgres://kiln:s3cret@127.0.0.1:5433/kiln" },
  },
  "schemathesis.sh": {
    path: { stdout: "/opt/kiln-schemathesis/bin/schemathesis", stderr: "Successfully installed schemathesis-4.32.5" },
    env: { stdout: "export KILN_SCHEMATHESIS=/opt/kiln-schemathesis/bin/schemathesis" },
  },
  "chromium.sh": {
    path: { stdout: "export KILN_CHROMIUM=/usr/bin/chromium", stderr: "Setting up chromium (156.0.8078.114-1~deb12u1) ..." },
    env: { stdout: "export KILN_CHROMIUM=/usr/bin/chromium" },
  },
};

/** Whatever `start`, `env`, `path` or no argument must answer for this test, by script. */
type Answers = Partial<Record<PartScript, Partial<Record<"start" | "env" | "path" | "", Answer>>>>;

const folders: string[] = [];
afterEach(() => {
  for (const folder of folders.splice(0)) rmSync(folder, { recursive: true, force: true });
});

/** A copy of test.sh beside stand-ins of the part scripts, and `id` / `docker` stand-ins on PATH. */
function sandbox(options: { uid: number; answers?: Answers; missingImages?: string[]; dockerWithoutBuildkit?: boolean }) {
  const root = mkdtempSync(path.join(tmpdir(), "kiln-test-sh-"));
  folders.push(root);
  mkdirSync(path.join(root, "scripts"));
  mkdirSync(path.join(root, "bin"));
  copyFileSync(TEST_SH, path.join(root, "scripts/test.sh"));
  const calls = path.join(root, "calls.txt");
  writeFileSync(calls, "");
  for (const script of Object.keys(HEALTHY) as PartScript[]) {
    const answers = { ...HEALTHY[script], ...options.answers?.[script] };
    const cases = Object.entries(answers)
      .map(([command, answer]) => {
        const lines = [
          answer.stderr ? `printf '%s\\n' ${shellQuote(answer.stderr)} >&2` : "",
          answer.stdout ? `printf '%s\\n' ${shellQuote(answer.stdout)}` : "",
          `exit ${answer.exitCode ?? 0}`,
        ];
        return `  ${shellQuote(command)}) ${lines.filter(Boolean).join("; ")} ;;`;
      })
      .join("\n");
    const body = `#!/usr/bin/env bash\nprintf '%s %s\\n' ${shellQuote(script)} "$*" >>${shellQuote(calls)}\ncase "\${1:-}" in\n${cases}\n  *) echo "unexpected: $*" >&2; exit 64 ;;\nesac\n`;
    writeFileSync(path.join(root, "scripts", script), body);
  }
  writeFileSync(path.join(root, "bin/id"), `#!/bin/sh\n[ "$1" = "-u" ] && echo ${options.uid} || exec /usr/bin/id "$@"\n`);
  const missing = (options.missingImages ?? []).map((image) => `  ${shellQuote(image)}) exit 1 ;;`).join("\n");
  // A docker CLI of Docker 23 or later without buildx: it refuses both BuildKit probes.
  const noBuildkit = options.dockerWithoutBuildkit ? `[ "$1" = buildx ] && exit 1\n[ "$1" = build ] && exit 1\n` : "";
  writeFileSync(path.join(root, "bin/docker"), `#!/bin/sh\n${noBuildkit}case "$3" in\n${missing}\n  *) exit 0 ;;\nesac\n`);
  chmodSync(path.join(root, "bin/id"), 0o755);
  chmodSync(path.join(root, "bin/docker"), 0o755);
  return {
    root,
    log: path.join(root, "node_modules/.cache/kiln/test-setup.log"),
    /** Runs `bash scripts/test.sh --setup` in the sandbox with `env` added to a clean environment. */
    setup(env: Record<string, string> = {}) {
      const result = spawnSync("bash", [path.join(root, "scripts/test.sh"), "--setup"], {
        encoding: "utf8",
        timeout: 30_000,
        env: { PATH: `${path.join(root, "bin")}:${process.env.PATH ?? ""}`, HOME: root, TMPDIR: root, ...env },
      });
      return { code: result.status, stdout: result.stdout, stderr: result.stderr };
    },
    /** The part scripts called, in order, with their arguments. */
    calls: () => readFileSync(calls, "utf8").trim().split("\n").filter(Boolean),
  };
}

function shellQuote(text: string): string {
  return `'${text.replace(/'/g, `'\\''`)}'`;
}

describe("npm test's setup (scripts/test.sh)", () => {
  it("exports KILN_DOCKER_CLI when the docker on PATH cannot build with BuildKit secrets and another docker CLI can", () => {
    const box = sandbox({ uid: 1000, dockerWithoutBuildkit: true });
    const other = path.join(box.root, "other-bin");
    mkdirSync(other);
    writeFileSync(path.join(other, "docker"), `#!/bin/sh\n[ "$1" = build ] && [ "$DOCKER_BUILDKIT" = 1 ] && echo "  --secret stringArray" && exit 0\nexit 1\n`);
    chmodSync(path.join(other, "docker"), 0o755);
    const result = box.setup({ PATH: `${path.join(box.root, "bin")}:${other}:${process.env.PATH ?? ""}` });
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toContain(`export KILN_DOCKER_CLI=${path.join(other, "docker")}\n`);
    expect(result.stderr).toMatch(/BuildKit CLI +.*other-bin\/docker \(the docker on PATH has no BuildKit\)/);
    // A docker on PATH that can: nothing to export, nothing said.
    const plain = sandbox({ uid: 1000 }).setup();
    expect(plain.stdout).not.toContain("KILN_DOCKER_CLI");
    expect(plain.stderr).not.toContain("BuildKit CLI");
  });

  it("as root, starts or reuses every part, prints one line for each and the export lines, and keeps installer output in the log", () => {
    const box = sandbox({ uid: 0 });
    const result = box.setup();
    expect(result.code, result.stderr).toBe(0);
    expect(box.calls()).toEqual(["docker-engine.sh start", "base-images.sh ", "moto.sh start", "postgres.sh start", "schemathesis.sh path", "chromium.sh path"]);
    expect(result.stdout.trim().split("\n")).toEqual([
      "export DOCKER_HOST=unix:///tmp/engine/docker.sock",
      "export AWS_ENDPOINT_URL_EC2=http://127.0.0.1:5055 AWS_ENDPOINT_URL_ELASTIC_LOAD_BALANCING_V2=http://127.0.0.1:5055",
      "export KILN_PG_URL=postgres://kiln:s3cret@127.0.0.1:5433/kiln",
      "export KILN_SCHEMATHESIS=/opt/kiln-schemathesis/bin/schemathesis",
      "export KILN_CHROMIUM=/usr/bin/chromium",
    ]);
    const lines = result.stderr.trim().split("\n");
    expect(lines[0]).toBe(`npm test: starting or reusing what the tests need (installers' output: ${box.log})`);
    expect(lines.slice(1).map((line) => line.trim().replace(/\s+/g, " "))).toEqual([
      "Docker engine unix:///tmp/engine/docker.sock",
      "base images kiln-local/busybox, kiln-local/node:20, kiln-local/haproxy:2.6",
      "moto http://127.0.0.1:5055",
      "PostgreSQL postgres://kiln:***@127.0.0.1:5433/kiln",
      "schemathesis /opt/kiln-schemathesis/bin/schemathesis",
      "Chromium /usr/bin/chromium",
    ]);
    expect(result.stderr, "no installer noise on the terminal").not.toMatch(/Reading package lists|Collecting|Unpacking|Setting up|Successfully installed/);
    const log = readFileSync(box.log, "utf8");
    expect(log, "no password in the log").not.toContain("s3cret");
    expect(log).toContain("export KILN_PG_URL=postgres://kiln:***@127.0.0.1:5433/kiln");
    for (const noise of ["Setting up docker.io", "Collecting moto[server]==5.2.1", "Unpacking postgresql-15", "Successfully installed schemathesis", "Setting up chromium"]) {
      expect(log).toContain(noise);
    }
  });

  it("as root, a part that fails to start shows its output in full and the rest still run; under CI=true it stops the run", () => {
    const answers: Answers = { "moto.sh": { start: { stderr: "kiln-moto: installing moto[server]==5.2.1\nERROR: Could not find a version that satisfies the requirement", exitCode: 1 } } };
    const box = sandbox({ uid: 0, answers });
    const result = box.setup();
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toMatch(/moto +FAILED \(exit 1 after \d+ s\); the aws provider's suites will skip\. Its output \(also in .*test-setup\.log\):/);
    expect(result.stderr).toContain("    | kiln-moto: installing moto[server]==5.2.1\n    | ERROR: Could not find a version that satisfies the requirement");
    expect(result.stderr).toContain("npm test: 1 part(s) failed to start; see above for what that means for the tests.");
    expect(box.calls(), "the parts after moto still run").toEqual(["docker-engine.sh start", "base-images.sh ", "moto.sh start", "postgres.sh start", "schemathesis.sh path", "chromium.sh path"]);
    expect(result.stdout).not.toContain("AWS_ENDPOINT_URL_EC2");

    const ci = sandbox({ uid: 0, answers });
    const underCi = ci.setup({ CI: "true" });
    expect(underCi.code).toBe(1);
    expect(underCi.stderr).toContain("npm test: moto is required under CI=true; stopping.");
    expect(ci.calls()).toEqual(["docker-engine.sh start", "base-images.sh ", "moto.sh start"]);
  });

  it("as root, without an engine it makes no base images", () => {
    const box = sandbox({ uid: 0, answers: { "docker-engine.sh": { start: { stderr: "kiln-engine: error: could not start dockerd", exitCode: 1 } } } });
    const result = box.setup();
    expect(result.code).toBe(0);
    expect(result.stderr).toContain("Docker engine  FAILED (exit 1");
    expect(result.stderr).toContain("    | kiln-engine: error: could not start dockerd");
    expect(box.calls()).not.toContain("base-images.sh ");
  });

  it("without root, starts nothing: uses what answers, and names what to do for each part it did not find", () => {
    const box = sandbox({
      uid: 1000,
      answers: { "moto.sh": { env: { stderr: "kiln-moto: error: no moto server answers", exitCode: 1 } }, "chromium.sh": { env: { exitCode: 1 } } },
      missingImages: ["kiln-local/haproxy:2.6"],
    });
    const result = box.setup();
    expect(result.code, result.stderr).toBe(0);
    expect(box.calls()).toEqual(["docker-engine.sh env", "moto.sh env", "postgres.sh env", "schemathesis.sh env", "chromium.sh env"]);
    expect(result.stderr).toContain(`npm test: looking for what the tests need; starting nothing (KILN_TEST_SETUP=find; log: ${box.log})`);
    expect(result.stderr).toMatch(/base images +not found: kiln-local\/haproxy:2\.6; make them: bash scripts\/base-images\.sh/);
    expect(result.stderr).toMatch(
      /moto +not found: the aws provider's suites will skip; npm test starts one when run as root or with KILN_TEST_SETUP=start; or: npm run moto:start\n/,
    );
    expect(result.stderr).toMatch(/Chromium +not found: the status page suite will skip; npm test installs Debian's when run as root; or: export KILN_CHROMIUM=<a Chromium>\n/);
    expect(result.stderr, "a part that is merely absent shows no output").not.toContain("no moto server answers");
    expect(result.stdout).not.toMatch(/AWS_ENDPOINT_URL_EC2|KILN_CHROMIUM/);
    expect(result.stdout).toContain("export KILN_PG_URL=");
  });

  it("without root, a variable already set is used as given", () => {
    const box = sandbox({ uid: 1000 });
    const result = box.setup({ DOCKER_HOST: "tcp://127.0.0.1:2375", KILN_PG_URL: "postgres://me:pw@db:5432/x" });
    expect(result.code, result.stderr).toBe(0);
    expect(box.calls()).toEqual(["moto.sh env", "schemathesis.sh env", "chromium.sh env"]);
    expect(result.stderr).toMatch(/Docker engine +tcp:\/\/127\.0\.0\.1:2375 \(from DOCKER_HOST\)/);
    expect(result.stderr).toMatch(/PostgreSQL +postgres:\/\/me:\*\*\*@db:5432\/x \(from KILN_PG_URL\)/);
    expect(result.stdout).toContain("export DOCKER_HOST=tcp://127.0.0.1:2375\n");
  });

  it("KILN_TEST_SETUP overrides the default both ways, and refuses anything else", () => {
    const started = sandbox({ uid: 1000 });
    expect(started.setup({ KILN_TEST_SETUP: "start" }).code).toBe(0);
    expect(started.calls()[0]).toBe("docker-engine.sh start");

    const found = sandbox({ uid: 0 });
    expect(found.setup({ KILN_TEST_SETUP: "find" }).code).toBe(0);
    expect(found.calls()[0]).toBe("docker-engine.sh env");

    const off = sandbox({ uid: 0 });
    const nothing = off.setup({ KILN_TEST_SETUP: "off" });
    expect(nothing.code).toBe(0);
    expect(off.calls()).toEqual([]);
    expect(nothing.stdout).toBe("");
    expect(existsSync(off.log)).toBe(false);

    const wrong = sandbox({ uid: 0 });
    const refused = wrong.setup({ KILN_TEST_SETUP: "yes" });
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain("KILN_TEST_SETUP must be start, find or off, not 'yes'");
    expect(wrong.calls()).toEqual([]);
  });
});
