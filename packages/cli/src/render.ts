import type { KilnEvent } from "@kilnjs/core";
import { createColors } from "picocolors";

/** How the CLI writes: streams and whether to draw a live view. */
export interface Output {
  readonly stdout: NodeJS.WritableStream & { isTTY?: boolean };
  readonly stderr: NodeJS.WritableStream;
  /** One JSON event per line instead of human output. */
  readonly json: boolean;
  /** Colors on (off with NO_COLOR, --no-color, or a non-TTY stdout). */
  readonly color: boolean;
  /** Print build output lines too. */
  readonly verbose: boolean;
}

type Colors = ReturnType<typeof createColors>;

interface InstanceRow {
  name: string;
  release: number | undefined;
  status: "launched" | "healthy" | "unhealthy" | "retiring" | "retired";
  detail: string;
}

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)}s`;

/** Receives events and draws them; `done` stops the live view. */
export interface Renderer {
  readonly onEvent: (event: KilnEvent) => void;
  readonly done: () => void;
}

/**
 * Turns events into output: NDJSON with `--json`; on a TTY a live task view (image, then one
 * row per instance with its state); otherwise one plain line per event.
 *
 * The live view's terminal library (log-update, whose width tables cost ~40 ms to load) is
 * imported only when a live view is drawn: `--json`, piped output and commands that draw nothing
 * never load it.
 */
export async function createRenderer(output: Output): Promise<Renderer> {
  if (output.json) {
    return {
      onEvent: (event) => output.stdout.write(`${JSON.stringify(event)}\n`),
      done() {},
    };
  }
  const c = createColors(output.color);
  // A live view needs a real terminal with a size; one that reports 0 columns (some CI shells,
  // detached ptys) gets the plain view, which log-update would otherwise draw as nothing.
  const columns = (output.stdout as NodeJS.WriteStream).columns ?? 0;
  const live = Boolean(output.stdout.isTTY) && process.env.TERM !== "dumb" && columns > 0;
  if (!live) {
    return {
      onEvent(event) {
        const line = describeEvent(event, c, output.verbose);
        if (line !== undefined) output.stdout.write(`${line}\n`);
      },
      done() {},
    };
  }
  const { createLogUpdate } = await import("log-update");
  const update = createLogUpdate(output.stdout, { showCursor: true });
  const header: string[] = [];
  const rows = new Map<string, InstanceRow>();
  let buildLine = "";
  let footer = "";
  const frames = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];
  let frame = 0;
  let finished = false;
  const draw = () => {
    if (finished) return;
    const spin = c.cyan(frames[frame % frames.length]);
    const lines = [...header];
    if (buildLine) lines.push(`${spin} ${buildLine}`);
    for (const row of rows.values()) {
      const mark = { launched: spin, healthy: c.green("✓"), unhealthy: c.red("✗"), retiring: spin, retired: c.dim("−") }[row.status];
      lines.push(`  ${mark} ${row.name} ${c.dim(`release ${row.release ?? "?"}`)} ${row.status}${row.detail ? c.dim(` ${row.detail}`) : ""}`);
    }
    if (footer) lines.push(footer);
    update(lines.join("\n"));
  };
  const timer = setInterval(() => {
    frame += 1;
    draw();
  }, 100);
  timer.unref();
  return {
    onEvent(event) {
      switch (event.type) {
        case "image.build.started":
          buildLine = `building image ${short(event.fingerprint)}`;
          break;
        case "image.build.step":
          buildLine = `building image: step ${event.step}/${event.total} ${truncate(event.description, 60)}`;
          break;
        case "image.build.log":
          if (output.verbose) header.push(c.dim(`  │ ${truncate(event.message, 120)}`));
          break;
        case "instance.launched":
          rows.set(event.instance.id, { name: event.instance.name, release: event.instance.release, status: "launched", detail: "waiting for health check" });
          break;
        case "instance.healthy":
          rows.set(event.instance.id, { name: event.instance.name, release: event.instance.release, status: "healthy", detail: `after ${seconds(event.durationMs)}` });
          break;
        case "instance.unhealthy":
          rows.set(event.instance.id, { name: event.instance.name, release: event.instance.release, status: "unhealthy", detail: event.reason });
          break;
        case "instance.retiring":
          rows.set(event.instance.id, { name: event.instance.name, release: event.instance.release, status: "retiring", detail: "draining and stopping" });
          break;
        case "instance.retired":
          rows.set(event.instance.id, { name: event.instance.name, release: event.instance.release, status: "retired", detail: "" });
          break;
        default: {
          if (event.type === "image.built" || event.type === "image.reused") buildLine = "";
          const line = describeEvent(event, c, false);
          if (line === undefined) break;
          if (event.type.startsWith("rollout.") && event.type !== "rollout.started" && event.type !== "rollout.recovered") footer = line;
          else header.push(line);
        }
      }
      draw();
    },
    done() {
      // Called from both the success path and `finally`: a second call must not draw again.
      if (finished) return;
      clearInterval(timer);
      buildLine = "";
      draw();
      finished = true;
      update.done();
    },
  };
}

/** One line for an event, or undefined for events the plain view leaves out. */
export function describeEvent(event: KilnEvent, c: Colors, verbose: boolean): string | undefined {
  switch (event.type) {
    case "plan.ready":
      return event.noop ? undefined : c.dim(event.summary);
    case "image.fingerprinted":
      return c.dim(`fingerprint ${short(event.fingerprint)}: ${event.fileCount} files, ${formatBytes(event.totalBytes)} (${formatBytes(event.bytesHashed)} read) in ${seconds(event.durationMs)}`);
    case "image.reused":
      return `${c.green("✓")} image ${short(event.fingerprint)} exists: build skipped`;
    case "image.build.started":
      return `${c.cyan("•")} building image ${short(event.fingerprint)}`;
    case "image.build.step":
      return c.dim(`  step ${event.step}/${event.total}: ${truncate(event.description, 100)}`);
    case "image.build.log":
      return verbose ? c.dim(`  │ ${truncate(event.message, 160)}`) : undefined;
    case "image.built":
      return `${c.green("✓")} image built ${short(event.fingerprint)} in ${seconds(event.durationMs)}`;
    case "release.created":
      return `${c.cyan("•")} release ${event.release} created${event.rollbackOf ? ` (copy of release ${event.rollbackOf})` : ""}`;
    case "rollout.started":
    {
      const what =
        event.fromRelease === event.toRelease
          ? `repairing release ${event.toRelease} (its instances differ from it)`
          : `${event.kind === "rollback" ? "rolling back to" : "rolling out"} release ${event.toRelease}${event.fromRelease ? ` over release ${event.fromRelease}` : ""}`;
      const shape = event.strategy === "rolling" ? `rolling, surge ${event.maxSurge}, unavailable ${event.maxUnavailable}` : event.strategy;
      return `${c.cyan("•")} ${what}: ${event.count} instance${event.count === 1 ? "" : "s"}, ${shape}`;
    }
    case "rollout.holding": {
      const why = {
        bake: `blue-green: the new set serves; baking ${seconds(event.durationMs)} with the old set kept for an instant rollback`,
        "canary-step": `canary: ${event.healthy} of ${event.count} on the new release; holding ${seconds(event.durationMs)} with health checks running`,
        pause: `pausing ${seconds(event.durationMs)} after a batch (${event.healthy} of ${event.count} new), health checks running`,
      }[event.reason];
      return `  ${c.cyan("…")} ${why}`;
    }
    case "rollout.skipped":
      return `${c.green("✓")} ${event.target} is up to date (release ${event.release}): nothing built, nothing launched, nothing retired`;
    case "instance.launched":
      return `  ${c.cyan("+")} ${event.instance.name} launched`;
    case "instance.healthy":
      return `  ${c.green("✓")} ${event.instance.name} healthy after ${seconds(event.durationMs)}`;
    case "instance.unhealthy":
      return `  ${c.red("✗")} ${event.instance.name} unhealthy: ${event.reason}`;
    case "instance.retiring":
      return `  ${c.yellow("-")} ${event.instance.name} retiring`;
    case "instance.retired":
      return `  ${c.dim("-")} ${event.instance.name} retired`;
    case "rollout.succeeded":
      return `${c.green("✓")} release ${event.release} of ${event.target} serves (${seconds(event.durationMs)})`;
    case "rollout.failed":
      return `${c.red("✗")} release ${event.release} failed [${event.code}]: ${event.message}`;
    case "rollout.rolled-back":
      return `${c.yellow("↩")} rolled back: ${event.reason}`;
    case "traffic.shifted":
      return `  ${c.cyan("⇄")} traffic: ${[
        event.registered.length > 0 ? `+${event.registered.map((i) => i.name).join(", +")}` : "",
        event.deregistered.length > 0 ? `drained ${event.deregistered.map((i) => i.name).join(", ")}` : "",
      ]
        .filter(Boolean)
        .join("; ")}`;
    case "lock.waiting":
      return `${c.yellow("…")} waiting up to ${seconds(event.timeoutMs)} for the lock held by ${event.holder}`;
    case "lock.taken-over":
      return `${c.yellow("!")} took over a stale lock from ${event.previousHolder}: ${event.reason} (token ${event.previousToken} → ${event.token})`;
    case "image.removed":
      return `  ${c.dim("-")} image ${short(event.fingerprint) || event.imageId} removed${event.sizeBytes !== undefined ? ` (${formatBytes(event.sizeBytes)})` : ""}`;
    case "image.remove-failed":
      return `  ${c.red("✗")} image ${short(event.fingerprint) || event.imageId} kept [${event.code}]`;
    case "retention.failed":
      return `${c.yellow("!")} retention: the clean-up after the deploy failed [${event.code}]: ${event.message}`;
    case "rollout.recovered": {
      const release = {
        resumed: `release ${event.release} is resumed`,
        failed: `release ${event.release} is recorded as failed`,
        "not-created": `release ${event.release} was never recorded`,
        unchanged: `release ${event.release} stays as it was`,
      }[event.releaseOutcome];
      return `${c.yellow("↺")} recovered interrupted rollout ${event.rolloutId} of ${event.holder}: ${event.found.length} instance(s) carried its id, ${event.adopted.length} adopted, ${event.retiring.length} to retire; ${release}`;
    }
  }
}

function short(fingerprint: string): string {
  return fingerprint.replace(/^sha256:/, "").slice(0, 12);
}

function truncate(text: string, length: number): string {
  const single = text.replace(/\s+/g, " ").trim();
  return single.length > length ? `${single.slice(0, length - 1)}…` : single;
}

/** Bytes as B, kB, MB, GB (powers of 1000). */
export function formatBytes(bytes: number): string {
  const units = ["B", "kB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}
