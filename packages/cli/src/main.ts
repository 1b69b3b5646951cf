import { existsSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { Command, CommanderError, Option } from "commander";
import { createColors } from "picocolors";
import type { CollectionResult, DeployResult, Kiln, KilnError, KilnOptions, LeaseStatus, LoadedSpec, ProviderSpec, RecoveryResult, SpecIssue, TargetStatus } from "@kilnjs/core";
import { parseDuration } from "./duration.js";
import type { ServeOptions } from "./serve.js";
import { EXIT_CODES, exitCodeFor } from "./exit-codes.js";
import type { Output, Renderer } from "./render.js";
import { INIT_DOCKERIGNORE, initSpec } from "./init-template.js";

/** Options every command takes. */
interface CommonOptions {
  cwd: string;
  config: string;
  environment?: string;
  json: boolean;
  color: boolean;
  verbose: boolean;
}

/** Where the CLI reads and writes; tests pass their own. */
export interface CliIo {
  readonly stdout: NodeJS.WritableStream & { isTTY?: boolean };
  readonly stderr: NodeJS.WritableStream;
  readonly env: NodeJS.ProcessEnv;
}

/** What a test harness or wrapper injects into the `kiln` run; the `kiln` binary passes none. */
export interface RunOptions {
  /**
   * Merged over the options the CLI gives `createKiln` for every command that acts on a target
   * (plan, build, deploy, rollback, rollout resume and abort, status, history, lock), e.g. test-only
   * `journalHooks: { crashAt: "intent:launch:2" }`. A `providers` here replaces the providers the
   * CLI loads for the spec. `kiln serve` does not use them. @defaultValue none
   */
  readonly kilnOptions?: Partial<KilnOptions>;
}

const HELP_FOOTER = `
Providers (the spec's provider:): docker (containers on a Docker engine; the default) and aws (EC2
instances from AMIs Kiln bakes from image.machine, no SSH; credentials and region from the standard
AWS chain, AWS_ENDPOINT_URL_EC2 for an emulator such as moto). See docs/providers/aws.md.

Exit codes: 0 success (also "nothing to do"), 1 rollout or build failed (what ran before keeps
serving), 2 bad input (spec, flags; nothing changed), 3 provider unreachable, 4 target locked (or
the lock was lost to another process), 5 state unreadable, 130 cancelled, 70 internal error.
See docs/cli.md.`;

const WAIT_FOR_LOCK_HELP = "if another rollout holds the target's lock, wait up to DURATION for it (e.g. 30s, 5m, 1500ms) instead of failing at once with exit code 4";

/**
 * Runs the `kiln` command line with `argv` (without the node and script paths) and returns the
 * exit code; never calls process.exit itself. `io` is where it reads and writes (default: this
 * process's stdout, stderr and environment); `runOptions` what a harness injects ({@link RunOptions}).
 */
export async function run(
  argv: readonly string[],
  io: CliIo = { stdout: process.stdout, stderr: process.stderr, env: process.env },
  runOptions: RunOptions = {},
): Promise<number> {
  let exitCode: number = EXIT_CODES.success;
  const jsonRequested = argv.includes("--json");
  const colorDefault = !("NO_COLOR" in io.env) && Boolean(io.stdout.isTTY);
  const program = new Command("kiln")
    .description("Kiln: bake an image, replace instances, health-check them, keep the history.\nNever patches what runs: every change is a new image and new instances.")
    .version(VERSION, "-V, --version")
    .configureOutput({
      writeOut: (text) => io.stdout.write(text),
      // With --json a usage error is reported as a JSON error below instead.
      writeErr: (text) => (jsonRequested ? undefined : io.stderr.write(text)),
    })
    .exitOverride()
    .showHelpAfterError("(run with --help for usage)")
    .addHelpText("after", HELP_FOOTER);

  const common = (command: Command, withEnvironment = true) => {
    command
      .option("-C, --cwd <dir>", "run as if started in this folder", ".")
      .option("-c, --config <file>", "the spec file, relative to --cwd", "kiln.yaml");
    if (withEnvironment) command.option("-e, --environment <name>", "the environment to act on (default: the spec's top-level settings)");
    command
      .option("--json", "print one JSON object per line instead of human output", false)
      .addOption(new Option("--no-color", "no colors (also: NO_COLOR set, or output is not a terminal)"))
      .option("--verbose", "print build output and diagnostics", false);
    return command;
  };

  const action =
    (handler: (options: CommonOptions & Record<string, unknown>, output: Output, ...args: string[]) => Promise<number>) =>
    async (...args: unknown[]) => {
      const command = args.at(-1) as Command;
      const options = command.opts<CommonOptions & Record<string, unknown>>();
      const output: Output = {
        stdout: io.stdout,
        stderr: io.stderr,
        json: options.json,
        color: options.color && colorDefault && !options.json,
        verbose: options.verbose,
      };
      const positional = args.slice(0, -2).filter((value): value is string => typeof value === "string");
      try {
        exitCode = await handler(options, output, ...positional);
      } catch (error) {
        exitCode = await reportError(error, output);
      }
    };

  /**
   * The shape every rollout command shares: --wait-for-lock, Ctrl-C as cancellation, the live
   * view, and closing providers. `run` performs the rollout and returns what to print once the
   * live view is done.
   */
  const rolloutAction = (
    name: string,
    run: (kiln: Kiln, spec: LoadedSpec, options: CommonOptions & Record<string, unknown>, extra: { waitForLockMs?: number; signal: AbortSignal }, output: Output, ...args: string[]) => Promise<() => void>,
  ) =>
    action(async (options, output, ...args) => {
      const wait = lockWait(options, output);
      if (typeof wait === "number") return wait;
      const { kiln, spec, renderer } = await open(options, output, name);
      return withCancellation(output, async (signal) => {
        try {
          const report = await run(kiln, spec, options, { ...wait, signal }, output, ...args);
          renderer.done();
          report();
          return EXIT_CODES.success;
        } finally {
          renderer.done();
          await kiln.close();
        }
      });
    });

  common(program.command("init").description("write a starter kiln.yaml (and .dockerignore) in the folder"), false)
    .option("--service <name>", "the service name (default: the folder's name)")
    .option("--force", "overwrite an existing kiln.yaml", false)
    .action(action(async (options, output) => {
      const dir = path.resolve(options.cwd);
      const file = path.resolve(dir, options.config);
      if (existsSync(file) && !options.force) {
        return badInput(output, `${file} exists already; pass --force to overwrite it.`);
      }
      const service = (options.service as string | undefined) ?? sanitizeName(path.basename(dir));
      await mkdir(path.dirname(file), { recursive: true });
      await writeFile(file, initSpec(service));
      const ignore = path.join(dir, ".dockerignore");
      if (!existsSync(ignore)) await writeFile(ignore, INIT_DOCKERIGNORE);
      output.stdout.write(output.json ? `${JSON.stringify({ type: "init", file, service })}\n` : `Wrote ${path.relative(process.cwd(), file) || file} for service "${service}". Next: kiln validate, then kiln plan.\n`);
      return EXIT_CODES.success;
    }));

  common(
    program
      .command("validate")
      .description("check the spec and report every problem with file:line:column")
      .addHelpText("after", "\nWarnings (printed, never refused): an instances.env key that looks like a secret (DB_PASSWORD,\nAPI_KEY, ...), since env values are recorded in state; move it to secrets (docs/secrets.md)."),
  )
    .action(action(async (options, output) => {
      // The spec alone: neither the lifecycle's half of core nor any provider's operations or SDK.
      const core = await import("@kilnjs/core/spec");
      const loaded = await core.loadSpec(specPath(options), { providerSpec: await providerSpecFinder() });
      const environments = Object.keys(loaded.validated.environments);
      if (options.environment) core.resolveTarget(loaded.validated, options.environment, loaded.baseDir);
      // Beyond the schema: every provider's own sections and rules, and the files the spec
      // references, for every environment (what `plan` would trip over at once).
      const { importOptions } = await import("./providers.js");
      const loading = importOptions(core.providersOf(loaded.validated), io.env);
      await core.checkSpec(loaded, { providerSpec: (name) => core.importProviderSpec(name, loading) });
      const service = loaded.validated.spec.service;
      const warnings = loaded.validated.warnings ?? [];
      if (!output.json) writeWarnings(output, warnings, core.formatSpecIssue);
      output.stdout.write(
        output.json
          ? `${JSON.stringify({ type: "valid", file: loaded.file, service, environments, warnings })}\n`
          : `${loaded.file} is valid: service "${service}"${environments.length > 0 ? `, environments ${environments.join(", ")}` : ""}${warnings.length > 0 ? `, with ${warnings.length} warning${warnings.length === 1 ? "" : "s"}` : ""}.\n`,
      );
      return EXIT_CODES.success;
    }));

  common(program.command("plan").description("show what deploy would do, changing nothing (like terraform plan)"))
    .action(action(async (options, output) => {
      const core = await import("@kilnjs/core");
      const { kiln, spec } = await open(options, output, "plan", { document: true });
      try {
        const plan = await kiln.plan({ spec, ...env(options) });
        output.stdout.write(output.json ? `${JSON.stringify({ type: "plan", plan: { ...plan, changes: plan.changes } })}\n` : `${core.formatPlan(plan)}\n`);
        return EXIT_CODES.success;
      } finally {
        await kiln.close();
      }
    }));

  common(
    program
      .command("build")
      .description("build the image unless one with the same fingerprint exists")
      .addHelpText("after", "\nContainer providers (docker) build image.dockerfile. VM providers (aws) bake a machine image from\nimage.machine: a builder VM runs the provision steps from its user data and powers off, then it is\nimaged and removed. See docs/providers/aws.md."),
  )
    .action(action(async (options, output) => {
      const { kiln, spec, renderer } = await open(options, output, "build");
      try {
        const result = await kiln.build({ spec, ...env(options) });
        renderer.done();
        if (output.json) output.stdout.write(`${JSON.stringify({ type: "result", image: result.image, built: result.built })}\n`);
        else output.stdout.write(`${result.image.names[0] ?? result.image.id} ${result.built ? "built" : "already existed"}.\n`);
        return EXIT_CODES.success;
      } finally {
        renderer.done();
        await kiln.close();
      }
    }));

  common(
    program
      .command("deploy")
      .description("build if needed, create a release and roll it out; undo it if health checks fail")
      .addHelpText(
        "after",
        "\nA rollout left unfinished by a process that died (kill -9, a crash) is recovered first: its\nrelease is resumed when the spec still asks for it, and leftovers are retired once the new\ninstances are healthy. See kiln rollout --help.\n\nSecrets (the spec's secrets and image.dockerfile.secrets) are read at each deploy from this\nprocess's environment (from.env), files (from.file) or a provider's secret store; only their\nreferences and keyed digests are recorded, and a changed value makes a new release. See\ndocs/secrets.md.",
      ),
  )
    .option("--wait-for-lock <duration>", WAIT_FOR_LOCK_HELP)
    .action(
      rolloutAction("deploy", async (kiln, spec, options, extra, output) => {
        const result = await kiln.deploy({ spec, ...env(options), ...extra });
        return () => printResult(result, output);
      }),
    );

  common(program.command("rollback").description("roll back to the previous good release, or to RELEASE, reusing its image (no rebuild)"))
    .argument("[release]", "the release number to roll back to")
    .option("--wait-for-lock <duration>", WAIT_FOR_LOCK_HELP)
    .action(
      rolloutAction("rollback", async (kiln, spec, options, extra, output, releaseText) => {
        const release = releaseText === undefined ? undefined : Number(releaseText.replace(/^[rv#]/i, ""));
        if (release !== undefined && (!Number.isInteger(release) || release < 1)) {
          const { KilnError } = await import("@kilnjs/core");
          throw new KilnError("INVALID_ARGUMENT", `"${releaseText}" is not a release number; see kiln history for the numbers.`);
        }
        const result = await kiln.rollback({ spec, ...env(options), ...extra, ...(release ? { release } : {}) });
        return () => printResult(result, output);
      }),
    );

  common(program.command("status").description("the current release, its instances, their addresses, and any drift"))
    .action(action(async (options, output) => {
      const { kiln, spec } = await open(options, output, "status", { document: true });
      try {
        const status = await kiln.status({ spec, ...env(options) });
        if (output.json) {
          output.stdout.write(`${JSON.stringify({ type: "status", ...status })}\n`);
          return EXIT_CODES.success;
        }
        const c = createColors(output.color);
        const lines = [`${c.bold(`${status.target.service}@${status.target.environment}`)}: ${status.release ? `release ${status.release.number} (image ${shortId(status.release.image.id)}, deployed ${status.release.finishedAt ?? status.release.createdAt})` : "never deployed"}`];
        const proxy = status.release?.traffic?.proxy;
        if (proxy) lines.push(`address: http://${proxy.host}:${proxy.port} (front proxy → port ${proxy.portName}; the addresses below are the instances' own)`);
        for (const found of status.proxies) lines.push(`front proxy: ${found.name}, ${found.state}${found.address ? `, publishing http://${found.address}` : ""}`);
        if (status.activeRollout) {
          const active = status.activeRollout;
          const by = `${active.holder.user}@${active.holder.host}, pid ${active.holder.pid}`;
          if (active.kind === "gc") {
            lines.push(
              !status.lock || status.lock.stale
                ? c.yellow(`gc ${active.id} was interrupted (started ${active.startedAt} by ${by}, whose process is gone): the next kiln gc --yes finishes its removals`)
                : c.yellow(`gc ${active.id} is removing images (started ${active.startedAt} by ${by})`),
            );
          } else lines.push(
            !status.lock || status.lock.stale
              ? c.yellow(`rollout ${active.id} was interrupted (started ${active.startedAt} by ${by}, whose process is gone): kiln deploy or kiln rollout resume finishes it, kiln rollout abort rolls it back`)
              : c.yellow(`rollout ${active.id} is running (started ${active.startedAt} by ${by})`),
          );
        }
        lines.push(
          table(
            ["INSTANCE", "RELEASE", "STATE", "ADDRESSES"],
            status.instances.map((i) => [i.name, String(i.release ?? "?"), i.state, Object.entries(i.endpoints).map(([name, e]) => `${name}=http://${e.host}:${e.port}`).join(" ") || "-"]),
          ),
        );
        lines.push(...describeDriftLines(status, c));
        output.stdout.write(`${lines.join("\n")}\n`);
        return EXIT_CODES.success;
      } finally {
        await kiln.close();
      }
    }));

  common(program.command("history").description("every release and rollout of the target, newest first"))
    .option("-n, --limit <count>", "show at most this many releases", "20")
    .action(action(async (options, output) => {
      const limit = Number(options.limit);
      if (!/^\d+$/.test(String(options.limit)) || limit < 1) return badInput(output, `--limit takes a whole number of 1 or more, not "${String(options.limit)}".`);
      const { kiln, spec } = await open(options, output, "history", { document: true });
      try {
        const history = await kiln.history({ spec, ...env(options) });
        const releases = history.releases.slice(0, limit);
        if (output.json) {
          output.stdout.write(`${JSON.stringify({ type: "history", target: history.target, currentRelease: history.currentRelease, releases, rollouts: history.rollouts })}\n`);
          return EXIT_CODES.success;
        }
        const c = createColors(output.color);
        output.stdout.write(
          `${table(
            ["RELEASE", "STATUS", "CREATED", "IMAGE", "DIGEST", "INSTANCES", "NOTE"],
            releases.map((r) => [
              `${r.number}${r.number === history.currentRelease ? c.green(" *") : ""}`,
              r.status === "failed" ? c.red(r.status) : r.status,
              r.createdAt.replace("T", " ").slice(0, 19),
              r.image.names[0] ?? shortId(r.image.id),
              shortId(r.image.digest),
              String(r.count),
              [r.rollbackOf ? `rollback to ${r.rollbackOf}` : "", r.error ? `${r.error.code}` : ""].filter(Boolean).join("; "),
            ]),
          )}\n${releases.length === 0 ? "no releases yet\n" : c.dim("* serving now\n")}`,
        );
        return EXIT_CODES.success;
      } finally {
        await kiln.close();
      }
    }));

  common(
    program
      .command("images")
      .description("the service's images across its environments: fingerprint, size, created, the releases that use them, whether an instance runs them")
      .addHelpText("after", "\nReads the state of every environment of the service and asks each provider once for its images\nand once per environment for its instances. Changes nothing. kiln gc removes the old ones."),
  ).action(action(async (options, output) => {
    const { kiln, spec } = await open(options, output, "images", { document: true });
    try {
      const images = await kiln.listImages({ spec, ...env(options) });
      if (output.json) {
        output.stdout.write(`${JSON.stringify({ type: "images", service: spec.validated.spec.service, images })}\n`);
        return EXIT_CODES.success;
      }
      const { formatBytes } = await import("./render.js");
      const c = createColors(output.color);
      output.stdout.write(
        `${table(
          ["IMAGE", "FINGERPRINT", "SIZE", "CREATED", "RELEASES", "RUNNING"],
          images.map((usage) => [
            usage.image.names[0] ?? shortId(usage.image.id),
            usage.image.fingerprint.replace(/^sha256:/, "").slice(0, 12),
            usage.image.sizeBytes === undefined ? "-" : formatBytes(usage.image.sizeBytes),
            usage.image.createdAt?.replace("T", " ").slice(0, 19) ?? "-",
            usage.releases.map((ref) => `${ref.environment}#${ref.release}${ref.current ? "*" : ""}`).join(" ") || c.dim("none"),
            usage.inUse ? c.green(`yes (${usage.instances.length})`) : "no",
          ]),
        )}\n${images.length === 0 ? "no images\n" : c.dim("* the environment's current release\n")}`,
      );
      return EXIT_CODES.success;
    } finally {
      await kiln.close();
    }
  }));

  common(
    program
      .command("gc")
      .description("remove images no retained release uses (a dry run unless --yes, as plan before deploy)")
      .addHelpText(
        "after",
        `
Keeps, for the environment (-e), its current release and the N-1 successful releases before it
(--keep N, the rollback window; "keep the last N releases"), and every pending one. Never removes an
image that an instance of any environment runs, or that a release of another environment references
within that environment's window (its retention.keep in the spec; without one, all its releases):
collecting one environment never takes what another may roll back to. --older-than spares images
younger than DURATION (30s, 5m, 720h). Removal is complete (an AMI with its snapshots).

With --yes it takes the lock of every environment of the service (no deploy interleaves) and journals
each removal like a rollout: a gc that was killed is finished by the next one. The spec's
retention: { keep: N } runs the same after each successful deploy. See docs/retention.md.`,
      ),
  )
    .option("--keep <count>", "releases kept per environment: the current one and COUNT-1 before it", "5")
    .option("--older-than <duration>", "only remove images created at least DURATION ago (e.g. 720h, 90m)")
    .option("--yes", "really remove them; without it, only print what would go", false)
    .option("--wait-for-lock <duration>", WAIT_FOR_LOCK_HELP)
    .action(action(async (options, output) => {
      const keep = Number(options.keep);
      if (!/^\d+$/.test(String(options.keep)) || keep < 1) return badInput(output, `--keep takes a whole number of 1 or more (the current release counts as one), not "${String(options.keep)}".`);
      let olderThanMs: number | undefined;
      if (typeof options.olderThan === "string") {
        olderThanMs = parseDuration(options.olderThan);
        if (olderThanMs === undefined) return badInput(output, `--older-than "${options.olderThan}" is not a duration: write a number with a unit, ms, s, m or h (90m, 720h, 1h30m).`);
      }
      const wait = lockWait(options, output);
      if (typeof wait === "number") return wait;
      const apply = options.yes === true;
      const { kiln, spec, renderer } = await open(options, output, "gc", { document: !apply });
      try {
        const result = await kiln.collectGarbage({ spec, ...env(options), ...wait, keep, ...(olderThanMs !== undefined ? { olderThanMs } : {}), apply });
        renderer.done();
        return await printCollection(result, targetText(spec, options), output);
      } finally {
        renderer.done();
        await kiln.close();
      }
    }));

  const lock = program
    .command("lock")
    .description("show or clear the target's rollout lock")
    .addHelpText(
      "after",
      "\nOne rollout per target runs at a time: deploy, rollback and rollout resume/abort hold a lease on\nthe target's lock, renewed while they run. A lease whose process died on this host is stale at\nonce; one from another host when it expires. The next command that needs the lock takes a\nstale lease over by itself.",
    );

  common(lock.command("status").description("who holds the target's lock: holder, since, expiry, fencing token, and whether it is stale"))
    .action(action(async (options, output) => {
      const { kiln, spec } = await open(options, output, "lock status", { document: true });
      try {
        const target = targetText(spec, options);
        const lease = await kiln.lockStatus({ spec, ...env(options) });
        if (output.json) output.stdout.write(`${JSON.stringify({ type: "lock", target, lock: lease ?? null })}\n`);
        else output.stdout.write(`${describeLock(target, lease, createColors(output.color))}\n`);
        return EXIT_CODES.success;
      } finally {
        await kiln.close();
      }
    }));

  common(
    lock
      .command("release")
      .description("clear the target's lock whoever holds it (needs --force)")
      .addHelpText(
        "after",
        "\nThe holder is not stopped: its next state write fails (LOCK_LOST) and it gives up. A rollout it\nleft unfinished is recovered by the next kiln deploy, kiln rollout resume or kiln rollout abort.\nA lock whose holder died needs no release: it is taken over by itself.",
      ),
  )
    .option("--force", "really clear it, even when its holder is alive", false)
    .action(action(async (options, output) => {
      if (!options.force) {
        return badInput(output, "kiln lock release clears the lock even if its holder still runs, so it needs --force; check kiln lock status first.");
      }
      const { kiln, spec } = await open(options, output, "lock release", { document: true });
      try {
        const target = targetText(spec, options);
        const cleared = await kiln.forceReleaseLock({ spec, ...env(options) });
        if (output.json) output.stdout.write(`${JSON.stringify({ type: "lock.released", target, lock: cleared ?? null })}\n`);
        else if (!cleared) output.stdout.write(`${target} was not locked; nothing to release.\n`);
        else {
          const who = `${cleared.holder.user}@${cleared.holder.host} (pid ${cleared.holder.pid}, "${cleared.holder.command}")`;
          output.stdout.write(`Released the lock of ${target} held by ${who}, token ${cleared.token}${cleared.stale ? " (it was stale)" : "; that process stops at its next write"}.\n`);
        }
        return EXIT_CODES.success;
      } finally {
        await kiln.close();
      }
    }));

  const rollout = program
    .command("rollout")
    .description("finish or undo a rollout whose process died (kill -9, a crash, a lost machine)")
    .addHelpText(
      "after",
      "\nEvery provider call that creates or destroys something is journaled in the state before and\nafter it is made, and every instance carries its rollout's id, so a rollout whose process died\ncan be finished or undone with nothing orphaned. kiln deploy does this by itself too.",
    );

  common(
    rollout
      .command("resume")
      .description("finish an interrupted rollout: roll its release out from its record (no spec change, no build)")
      .addHelpText("after", "\nInstances it launched that pass the health check are kept; the others, and the old release's,\nare retired once the new ones are healthy. Nothing to resume is not an error."),
  )
    .option("--wait-for-lock <duration>", WAIT_FOR_LOCK_HELP)
    .action(
      rolloutAction("rollout resume", async (kiln, spec, options, extra, output) => {
        const result = await kiln.resumeRollout({ spec, ...env(options), ...extra });
        return () => printRecovery(result, "resumed", targetText(spec, options), output);
      }),
    );

  common(
    rollout
      .command("abort")
      .description("roll back on purpose: mark an interrupted rollout aborted and its release failed, then repair the current release")
      .addHelpText("after", "\nThe current release keeps its instances, missing ones are relaunched, every other instance is\nretired once they are healthy. With no current release, the target's instances are removed."),
  )
    .option("--wait-for-lock <duration>", WAIT_FOR_LOCK_HELP)
    .action(
      rolloutAction("rollout abort", async (kiln, spec, options, extra, output) => {
        const result = await kiln.abortRollout({ spec, ...env(options), ...extra });
        return () => printRecovery(result, "aborted", targetText(spec, options), output);
      }),
    );

  const { registerServe } = await import("./serve.js");
  registerServe(program, (handler) =>
    action(async (options, output) => handler(options as unknown as ServeOptions, output.stdout, output.stderr)),
  );

  try {
    await program.parseAsync(argv, { from: "user" });
  } catch (error) {
    if (error instanceof CommanderError) {
      if (error.code === "commander.helpDisplayed" || error.code === "commander.version" || error.code === "commander.help") return EXIT_CODES.success;
      if (jsonRequested) {
        io.stdout.write(`${JSON.stringify({ type: "error", code: "INVALID_ARGUMENT", message: error.message.replace(/^error: /, ""), retryable: false, details: {} })}\n`);
      }
      return EXIT_CODES.badInput;
    }
    throw error;
  }
  return exitCode;

  /**
   * Loads the spec and creates the Kiln the command uses. Commands that print one document
   * (plan, status, history, lock) pass `document`: with --json their stdout is that document
   * alone, without event lines.
   */
  /**
   * Finds the spec of a provider the spec names (its installed package, or its
   * KILN_PROVIDER_MODULE_<NAME>), so that loading checks its sections and rules in the same pass
   * as the schema: every problem at once.
   */
  async function providerSpecFinder(): Promise<(name: string) => Promise<ProviderSpec | undefined>> {
    const core = await import("@kilnjs/core/spec");
    const { importOptions } = await import("./providers.js");
    // Only the provider's spec declaration (its `/spec` subpath): a command that runs the provider loads the rest later.
    return (name) => core.importProviderSpec(name, importOptions([name], io.env));
  }

  async function open(
    options: CommonOptions,
    output: Output,
    command: string,
    { document = false }: { document?: boolean } = {},
  ): Promise<{ kiln: Kiln; spec: LoadedSpec; renderer: Renderer }> {
    const core = await import("@kilnjs/core");
    if (options.environment === "") throw new core.KilnError("INVALID_ARGUMENT", "--environment needs a name; leave it out to use the spec's top-level settings.");
    const spec = await core.loadSpec(specPath(options), { providerSpec: await providerSpecFinder() });
    writeWarnings(output, spec.validated.warnings ?? [], core.formatSpecIssue);
    const renderer = document && output.json ? { onEvent() {}, done() {} } : await (await import("./render.js")).createRenderer(output);
    const { importOptions } = await import("./providers.js");
    const names = core.providersOf(spec.validated);
    const kiln = core.createKiln({
      // Every provider the spec names, each loaded only when a command uses it.
      providers: core.providerSources(names, importOptions(names, io.env)),
      dataDir: path.join(spec.baseDir, ".kiln"),
      onEvent: renderer.onEvent,
      command: `kiln ${command}`,
      // Secrets written `from: { env: NAME }` are read from the CLI's own environment.
      env: io.env,
      ...(options.verbose ? { logger: stderrLogger(output) } : {}),
      ...runOptions.kilnOptions,
    });
    return { kiln, spec, renderer };
  }
}

/**
 * `kiln status`'s last lines: a running rollout's progress, then the drift and what to do about it,
 * never advising a command the target's lock would refuse.
 */
function describeDriftLines(status: TargetStatus, c: ReturnType<typeof createColors>): string[] {
  const lines = status.progress.map((line) => c.cyan(line));
  const locked = status.lock && !status.lock.stale ? status.lock : undefined;
  if (status.drift.length === 0) {
    if (status.progress.length > 0) lines.push(c.green("no drift besides the rollout's progress"));
    else if (!status.release && status.instances.length === 0) lines.push("nothing deployed yet: kiln deploy makes release 1");
    else lines.push(c.green("no drift: what runs is what the release says"));
    return lines;
  }
  const advice = locked
    ? `kiln deploy converges once the lock is free (held by ${locked.holder.user}@${locked.holder.host}, pid ${locked.holder.pid}; kiln lock status)`
    : "run kiln deploy to converge";
  lines.push(c.yellow(`drift:\n${status.drift.map((d) => `  - ${d}`).join("\n")}\n${advice}`));
  return lines;
}

/** Prints the spec's warnings (`warning: kiln.yaml:6:5: instances.env.DB_PASSWORD: ...`) on stderr. */
function writeWarnings(output: Output, warnings: readonly SpecIssue[], format: (issue: SpecIssue) => string): void {
  for (const warning of warnings) output.stderr.write(`warning: ${format(warning)}\n`);
}

/** An image id for a table: a `sha256:` digest shortened to 12 hex digits; other ids (AMI ids) whole. */
function shortId(id: string): string {
  return id.startsWith("sha256:") ? id.slice(0, 19) : id;
}

function env(options: CommonOptions): { environment?: string } {
  return options.environment ? { environment: options.environment } : {};
}

/** `service@environment` of the spec's target, as output names it. */
function targetText(spec: LoadedSpec, options: CommonOptions): string {
  return `${spec.validated.spec.service}@${options.environment ?? "default"}`;
}

/** Reports bad input (exit 2) the way errors are reported: JSON with --json, else a line on stderr. */
function badInput(output: Output, message: string): number {
  if (output.json) output.stdout.write(`${JSON.stringify({ type: "error", code: "INVALID_ARGUMENT", message, retryable: false, details: {} })}\n`);
  else output.stderr.write(`${createColors(output.color).red("error")} [INVALID_ARGUMENT]: ${message}\n`);
  return EXIT_CODES.badInput;
}

/** `--wait-for-lock` as options for core, or the exit code of a bad value. */
function lockWait(options: Record<string, unknown>, output: Output): { waitForLockMs?: number } | number {
  const text = options.waitForLock;
  if (typeof text !== "string") return {};
  const ms = parseDuration(text);
  if (ms === undefined) return badInput(output, `--wait-for-lock "${text}" is not a duration: write a number with a unit, ms, s, m or h (1500ms, 30s, 5m, 1m30s).`);
  return { waitForLockMs: ms };
}

/** The lock in words, for `kiln lock status`. */
function describeLock(target: string, lease: LeaseStatus | undefined, c: ReturnType<typeof createColors>): string {
  if (!lease) return `${target}: not locked`;
  const inSeconds = Math.round((Date.parse(lease.expiresAt) - Date.now()) / 1000);
  return [
    `${c.bold(target)}: locked by ${lease.holder.user}@${lease.holder.host} (pid ${lease.holder.pid}, "${lease.holder.command}")`,
    `  since    ${lease.holder.since}`,
    `  expires  ${lease.expiresAt} (${inSeconds >= 0 ? `in ${inSeconds} s` : `${-inSeconds} s ago`}; renewed every ${Math.round(lease.ttlMs / 3000)} s while its holder runs)`,
    `  token    ${lease.token}`,
    lease.stale
      ? c.yellow(`  stale    yes: ${lease.staleReason ?? "it may be taken over"}; the next deploy takes it over (kiln lock release --force clears it now)`)
      : `  stale    no`,
  ].join("\n");
}

function specPath(options: CommonOptions): string {
  return path.resolve(options.cwd, options.config);
}

function sanitizeName(name: string): string {
  const cleaned = name.toLowerCase().replace(/[^a-z0-9-]+/g, "-").replace(/^[^a-z]+/, "").replace(/-+$/, "").slice(0, 40);
  return cleaned || "my-service";
}

/**
 * Runs a rollout with SIGINT/SIGTERM wired to an AbortSignal: the first signal cancels (the
 * rollout is undone, the lock released, exit 130), a second one exits at once with the journal
 * intact (the lease is then stale: its pid is gone, and the next run recovers the rollout).
 */
async function withCancellation(output: Output, run: (signal: AbortSignal) => Promise<number>): Promise<number> {
  const controller = new AbortController();
  let signals = 0;
  const onSignal = (name: NodeJS.Signals) => {
    signals += 1;
    if (signals === 1) {
      output.stderr.write(`\n${name}: cancelling; removing the new instances and restoring the previous release (press Ctrl-C again to exit at once)\n`);
      controller.abort(new Error(`${name} received`));
    } else {
      output.stderr.write(`${name}: exiting now; the journal is kept and the next kiln deploy (or kiln rollout resume / abort) recovers this rollout\n`);
      process.exit(EXIT_CODES.aborted);
    }
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  try {
    return await run(controller.signal);
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}

function printRecovery(recovery: RecoveryResult, done: "resumed" | "aborted", target: string, output: Output): void {
  const { interrupted, result } = recovery;
  if (output.json) {
    const outcome = result ? done : interrupted.length > 0 ? "recovered" : done === "resumed" ? "nothing-to-resume" : "nothing-to-abort";
    output.stdout.write(`${JSON.stringify({ type: "result", outcome, release: result?.release.number ?? null, rollout: result?.rollout?.id ?? null, interrupted: interrupted.map((r) => r.id) })}\n`);
    return;
  }
  if (interrupted.length === 0 && (!result || result.outcome === "unchanged")) {
    output.stdout.write(done === "resumed" ? `No rollout of ${target} was interrupted; nothing to resume.\n` : `No rollout of ${target} was interrupted, and the current release runs as recorded; nothing to abort.\n`);
  } else if (!result) {
    output.stdout.write(`Recovered ${interrupted.length} interrupted rollout(s) of ${target}; no release serves.\n`);
  }
}

/** What `kiln gc` planned and did; the exit code is that of the first failed removal, else 0. */
async function printCollection(result: CollectionResult, target: string, output: Output): Promise<number> {
  const { plan } = result;
  const code = result.failed[0] ? exitCodeFor(result.failed[0].error.code) : EXIT_CODES.success;
  if (output.json) {
    output.stdout.write(
      `${JSON.stringify({
        type: "gc",
        target,
        applied: result.applied,
        gcId: result.gcId ?? null,
        keep: plan.keep,
        olderThanMs: plan.olderThanMs ?? null,
        retainedReleases: plan.retainedReleases,
        remove: plan.remove.map((usage) => usage.image),
        kept: plan.kept,
        reclaimableBytes: plan.reclaimableBytes,
        resumed: result.resumed,
        removed: result.removed,
        failed: result.failed.map(({ image, error }) => ({ image, error: error.toJSON() })),
      })}\n`,
    );
    return code;
  }
  const { formatBytes } = await import("./render.js");
  const c = createColors(output.color);
  const name = (image: { names: readonly string[]; id: string }) => image.names[0] ?? shortId(image.id);
  const lines = [`${c.bold(target)}: keeping releases ${plan.retainedReleases.join(", ") || "none"} (keep ${plan.keep})${plan.olderThanMs !== undefined ? `, and images younger than ${Math.round(plan.olderThanMs / 1000)} s` : ""}`];
  if (!result.applied) {
    for (const usage of plan.remove) lines.push(`  ${c.red("-")} ${name(usage.image)} ${c.dim(`(${usage.releases.map((ref) => `${ref.environment}#${ref.release}`).join(" ") || "no release"})`)}`);
    for (const kept of plan.kept) lines.push(c.dim(`  = ${name(kept.image)}: ${kept.reasons[0]}${kept.reasons.length > 1 ? ` (+${kept.reasons.length - 1} more)` : ""}`));
    lines.push(
      plan.remove.length === 0
        ? "Nothing to remove."
        : `${plan.remove.length} image(s) would be removed${plan.reclaimableBytes > 0 ? ` (${formatBytes(plan.reclaimableBytes)})` : ""}. This was a dry run: run again with --yes to remove them.`,
    );
  } else {
    for (const image of result.resumed) lines.push(`  ${c.yellow("↺")} finished the removal of ${name(image)} that an interrupted gc began`);
    lines.push(result.removed.length === 0 && result.failed.length === 0 ? "Nothing to remove." : `Removed ${result.removed.length} image(s).`);
    for (const { error } of result.failed) lines.push(`${c.red("error")} [${error.code}]: ${error.message}`);
  }
  output.stdout.write(`${lines.join("\n")}\n`);
  return code;
}

function printResult(result: DeployResult, output: Output): void {
  if (output.json) {
    output.stdout.write(`${JSON.stringify({ type: "result", outcome: result.outcome, release: result.release.number, rollout: result.rollout?.id ?? null })}\n`);
  }
}

async function reportError(error: unknown, output: Output): Promise<number> {
  // The spec entry has what reporting needs (and is loaded already by any command that read a spec).
  const core = await import("@kilnjs/core/spec");
  const c = createColors(output.color);
  if (!core.isKilnError(error)) {
    output.stderr.write(`${c.red("internal error")}: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\nThis is a bug in Kiln; please report it with the output above.\n`);
    return EXIT_CODES.internal;
  }
  const kilnError: KilnError = error;
  if (output.json) {
    output.stdout.write(`${JSON.stringify({ type: "error", ...kilnError.toJSON() })}\n`);
  } else if (kilnError.code === "SPEC_INVALID" && Array.isArray(kilnError.details.issues)) {
    const issues = kilnError.details.issues as SpecIssue[];
    output.stderr.write(`${c.red("error")} [SPEC_INVALID]: ${issues.length} problem${issues.length === 1 ? "" : "s"} in the spec; nothing was built or changed.\n`);
    for (const issue of issues) output.stderr.write(`  ${core.formatSpecIssue(issue)}\n`);
  } else if (typeof kilnError.details.rolloutId === "string" && typeof kilnError.details.release === "number") {
    // The rollout's events already printed the reason; say what it means for the user.
    const restored = kilnError.details.restoredRelease;
    output.stderr.write(
      `${c.red("error")} [${kilnError.code}]: release ${kilnError.details.release} was not deployed; ${typeof restored === "number" ? `release ${restored} serves` : "see kiln status for what serves"}. The reason is above; kiln history keeps it.\n`,
    );
  } else {
    output.stderr.write(`${c.red("error")} [${kilnError.code}]: ${kilnError.message}\n`);
    if (output.verbose && kilnError.cause !== undefined) {
      const cause = kilnError.cause instanceof Error ? (kilnError.cause.stack ?? kilnError.cause.message) : JSON.stringify(kilnError.cause);
      output.stderr.write(c.dim(`cause: ${cause}\n`));
    }
  }
  return exitCodeFor(kilnError.code);
}

function stderrLogger(output: Output) {
  const write = (level: string) => (message: string, fields?: Record<string, unknown>) =>
    output.stderr.write(`[${level}] ${message}${fields ? ` ${JSON.stringify(fields)}` : ""}\n`);
  return { debug: write("debug"), info: write("info"), warn: write("warn"), error: write("error") };
}

/** Aligned columns. */
function table(header: string[], rows: string[][]): string {
  // eslint-disable-next-line no-control-regex
  const visible = (text: string) => text.replace(/\u001b\[[0-9;]*m/g, "").length;
  const widths = header.map((title, index) => Math.max(visible(title), ...rows.map((row) => visible(row[index] ?? ""))));
  const line = (cells: string[]) => cells.map((cell, index) => cell + " ".repeat(widths[index]! - visible(cell))).join("  ").trimEnd();
  return [line(header), ...rows.map(line)].join("\n");
}

declare const __KILN_VERSION__: string | undefined;
const VERSION = typeof __KILN_VERSION__ === "string" ? __KILN_VERSION__ : "0.0.0";
