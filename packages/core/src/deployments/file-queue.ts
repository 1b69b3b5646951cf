import { createHash } from "node:crypto";
import { appendFile, mkdir, readFile, readdir, rm } from "node:fs/promises";
import path from "node:path";
import lockfile from "proper-lockfile";
import writeFileAtomic from "write-file-atomic";
import { KilnError } from "../errors.js";
import type { KilnEvent } from "../events.js";
import { silentLogger, type Logger } from "../logger.js";
import { formatTarget } from "../target.js";
import { queueInMemory, type QueueEventLog } from "./memory-queue.js";
import { isFinalDeploymentState, type DeploymentError, type DeploymentEvent, type DeploymentQueue, type DeploymentRecord, type IdempotentResponse } from "./queue.js";

/** Options of {@link createFileDeploymentQueue}. */
export interface FileDeploymentQueueOptions {
  /** The folder to keep deployments in, e.g. `<data dir>/deployments`. Created when missing. */
  readonly directory: string;
  /**
   * How many finished deployments (with their events) are kept; older ones are deleted when the
   * queue opens. Queued and running ones are always kept. @defaultValue 1000
   */
  readonly keepFinished?: number;
  /**
   * How long an answer kept under an idempotency key is kept (milliseconds); older ones are
   * deleted when the queue opens, and a retry after that is a new request. @defaultValue 604800000 (7 days)
   */
  readonly keepResponsesMs?: number;
  /** Diagnostics: deployments marked interrupted, files that could not be read. */
  readonly logger?: Logger;
}

/** A {@link DeploymentQueue} kept in a folder. */
export interface FileDeploymentQueue extends DeploymentQueue {
  /** The folder, absolute. */
  readonly directory: string;
  /**
   * Opens the folder now: takes it for this process, reads what it holds, and marks the
   * deployments that were running when the process before died as failed. Every other method does
   * this first anyway; call it at start-up to fail early.
   * @throws KilnError STATE_UNAVAILABLE when another process uses the folder, or it cannot be read or written
   */
  ready(): Promise<void>;
  /** Waits for pending writes and lets the folder go (once every queue object on it in this process is closed). */
  close(): Promise<void>;
}

/** The error of a deployment that was running when the process that ran it stopped. */
export const INTERRUPTED_BY_RESTART: DeploymentError = {
  code: "ROLLOUT_INTERRUPTED",
  message:
    "The server stopped while this deployment ran, so it did not finish. Its rollout, if one had started, is journaled: the next deploy of the target (or `kiln rollout resume`) finishes or undoes it. Deploy again to carry on.",
};

const FORMAT_VERSION = 1;
/** How long the folder's lock lasts without an update from its process (milliseconds): a process that died lets the next one in after this. */
const FOLDER_LOCK_STALE_MS = 6_000;

/** A deployment's file: its record and its position in the queue (to keep the order of deployments queued in one millisecond). */
interface RecordFile {
  readonly version: number;
  readonly position: number;
  readonly record: DeploymentRecord;
}

/** An idempotent answer's file. */
interface ResponseFile {
  readonly version: number;
  readonly key: string;
  /** When it was kept (ISO 8601). */
  readonly keptAt: string;
  readonly response: IdempotentResponse;
}

/** The error of a file the queue cannot read or write. */
function unavailable(doing: string, file: string, error: unknown): KilnError {
  return new KilnError("STATE_UNAVAILABLE", `Cannot ${doing} ${file}: check free disk space and permissions.`, { cause: error });
}

/** One open folder, shared by the queue objects of this process that name it. */
interface Backend {
  /** The queue, once the folder is open. */
  readonly opened: Promise<DeploymentQueue>;
  users: number;
}

const backends = new Map<string, Backend>();

/**
 * The deployment queue of a single-machine `kiln serve`: deployments, their events and idempotent
 * answers kept in a folder, so they survive a restart as the embedded state store's releases do.
 * One process uses the folder at a time (a lock file, `proper-lockfile`, renewed while it runs; a
 * process that died lets the next one in after 6 s); the queue objects of one process that name
 * one folder share it. Decisions (one active deployment per target, exclusive claims) are made in
 * the process's memory, and each change is written before the call returns.
 *
 * Files: `deployments/<id>.json` (the record; written atomically, temporary file + rename, as the
 * file state store writes), `events/<id>.ndjson` (one event a line, appended; a line cut short by
 * a crash is skipped), `responses/<sha256 of the key>.json` (atomic), `queue.lock`.
 *
 * A deployment that was `running` when the process before died is marked `failed` with
 * `ROLLOUT_INTERRUPTED` when the folder is opened ({@link INTERRUPTED_BY_RESTART}): not run again,
 * since with one process nobody else can be running it, and repeating a request made before a
 * crash is the caller's decision; its rollout is journaled in the state store and recovered by the
 * next deploy of the target or `kiln rollout resume`. `queued` ones stay queued and run.
 *
 * @example
 * ```ts
 * const deployments = createFileDeploymentQueue({ directory: ".kiln/deployments" });
 * await deployments.ready();
 * ```
 */
export function createFileDeploymentQueue(options: FileDeploymentQueueOptions): FileDeploymentQueue {
  const directory = path.resolve(options.directory);
  let backend = backends.get(directory);
  if (!backend) {
    backend = openBackend(directory, options);
    backends.set(directory, backend);
  }
  backend.users += 1;
  const shared = backend;
  let closed = false;
  const after =
    <A extends unknown[], R>(call: (queue: DeploymentQueue, ...args: A) => Promise<R>) =>
    async (...args: A): Promise<R> => {
      if (closed) throw new KilnError("STATE_UNAVAILABLE", `The deployment queue in ${directory} is closed.`);
      return call(await shared.opened, ...args);
    };
  return {
    directory,
    ready: after(async () => undefined),
    enqueue: after((queue, input) => queue.enqueue(input)),
    get: after((queue, id) => queue.get(id)),
    list: after((queue, listOptions) => queue.list(listOptions)),
    claim: after((queue, worker, leaseMs) => queue.claim(worker, leaseMs)),
    renew: after((queue, id, worker, leaseMs) => queue.renew(id, worker, leaseMs)),
    finish: after((queue, id, worker, outcome) => queue.finish(id, worker, outcome)),
    requestCancel: after((queue, id) => queue.requestCancel(id)),
    appendEvents: after((queue, id, events) => queue.appendEvents(id, events)),
    readEvents: after((queue, id, afterSeq, limit) => queue.readEvents(id, afterSeq, limit)),
    getResponse: after((queue, key) => queue.getResponse(key)),
    keepResponse: after((queue, key, response) => queue.keepResponse(key, response)),
    async close() {
      if (closed) return;
      closed = true;
      shared.users -= 1;
      if (shared.users > 0) return;
      backends.delete(directory);
      const queue = await shared.opened.catch(() => undefined);
      await queue?.close?.();
    },
  };
}

function openBackend(directory: string, options: FileDeploymentQueueOptions): Backend {
  const logger = options.logger ?? silentLogger;
  const keepFinished = options.keepFinished ?? 1000;
  const keepResponsesMs = options.keepResponsesMs ?? 7 * 24 * 60 * 60 * 1000;
  const folders = { records: path.join(directory, "deployments"), events: path.join(directory, "events"), responses: path.join(directory, "responses") };
  const recordFile = (id: string) => path.join(folders.records, `${id}.json`);
  const eventFile = (id: string) => path.join(folders.events, `${id}.ndjson`);
  const responseFile = (key: string) => path.join(folders.responses, `${createHash("sha256").update(key).digest("hex")}.json`);
  const positions = new Map<string, number>();
  let nextPosition = 1;
  /** Writes not yet done, waited for by close. */
  const pending = new Set<Promise<unknown>>();
  let unlock: (() => Promise<void>) | undefined;
  let inner: DeploymentQueue | undefined;

  const track = <T>(promise: Promise<T>): Promise<T> => {
    pending.add(promise);
    void promise.finally(() => pending.delete(promise)).catch(() => undefined);
    return promise;
  };
  /** Writes atomically; called synchronously by each change, so writes of one file land in call order. */
  const write = (file: string, content: unknown) =>
    track(writeFileAtomic(file, `${JSON.stringify(content)}\n`).catch((error: unknown) => Promise.reject(unavailable("write", file, error))));

  const events = fileEventLog(eventFile, track);

  // ---- opening: take the folder, read it, mark what was running as interrupted ----------------
  async function open(): Promise<void> {
    try {
      await Promise.all(Object.values(folders).map((folder) => mkdir(folder, { recursive: true })));
    } catch (error) {
      throw unavailable("create", directory, error);
    }
    try {
      unlock = await lockfile.lock(directory, {
        lockfilePath: path.join(directory, "queue.lock"),
        realpath: false,
        stale: FOLDER_LOCK_STALE_MS,
        update: FOLDER_LOCK_STALE_MS / 3,
        // Long enough for the lock of a process that died to go stale.
        retries: { retries: 15, minTimeout: 500, maxTimeout: 1_000 },
        onCompromised: (error) => logger.error("the deployment queue's folder lock was lost; another process may be using the folder", { directory, error: String(error) }),
      });
    } catch (error) {
      throw new KilnError(
        "STATE_UNAVAILABLE",
        `Another process uses the deployment queue in ${directory} (a second kiln serve with the same --data-dir?). Give each server its own --data-dir, or use --postgres for several replicas.`,
        { cause: error },
      );
    }
    const found = await readRecordFiles(folders.records, logger);
    // Retention: the newest `keepFinished` finished deployments, and every one not finished.
    const finished = found.filter((entry) => isFinalDeploymentState(entry.record.state));
    const dropped = new Set(finished.slice(0, Math.max(0, finished.length - keepFinished)).map((entry) => entry.record.id));
    await Promise.all([...dropped].flatMap((id) => [rm(recordFile(id), { force: true }), rm(eventFile(id), { force: true })]));
    const kept = found.filter((entry) => !dropped.has(entry.record.id));
    for (const entry of kept) positions.set(entry.record.id, entry.position);
    nextPosition = (found.at(-1)?.position ?? 0) + 1;
    const loaded = kept.map((entry) => entry.record);
    const responses = await readResponseFiles(folders.responses, keepResponsesMs, logger);
    const now = new Date().toISOString();
    const interrupted: DeploymentRecord[] = [];
    const records = loaded.map((record) => {
      if (record.state !== "running") return record;
      const { leaseExpiresAt: _lease, ...rest } = record;
      const marked: DeploymentRecord = { ...rest, state: "failed", finishedAt: now, error: INTERRUPTED_BY_RESTART };
      interrupted.push(marked);
      return marked;
    });
    await Promise.all(interrupted.map((record) => write(recordFile(record.id), recordContent(record))));
    for (const record of interrupted) logger.warn("a deployment was running when the server stopped: marked failed (ROLLOUT_INTERRUPTED)", { deploymentId: record.id, target: formatTarget(record.target) });
    inner = queueInMemory({
      records,
      responses,
      events,
      keeper: {
        record: (record) => {
          if (!positions.has(record.id)) positions.set(record.id, nextPosition++);
          return write(recordFile(record.id), recordContent(record)).then(() => undefined);
        },
        response: (key, response) => write(responseFile(key), { version: FORMAT_VERSION, key, keptAt: new Date().toISOString(), response } satisfies ResponseFile).then(() => undefined),
      },
      close: async () => {
        await Promise.allSettled([...pending]);
        await unlock?.().catch(() => undefined);
      },
    });
  }

  const recordContent = (record: DeploymentRecord): RecordFile => ({ version: FORMAT_VERSION, position: positions.get(record.id)!, record });

  const opened = open().then(
    () => inner!,
    async (error: unknown) => {
      await unlock?.().catch(() => undefined);
      backends.delete(directory);
      throw error;
    },
  );
  // A failure is reported by the calls that wait for it, not as an unhandled rejection.
  opened.catch(() => undefined);
  return { opened, users: 0 };
}

/**
 * A deployment's events as lines of `events/<id>.ndjson`, appended (one append a batch, in call
 * order per deployment); a line cut short by a crash, or being written while it is read, is skipped.
 */
function fileEventLog(eventFile: (id: string) => string, track: <T>(promise: Promise<T>) => Promise<T>): QueueEventLog {
  /** The last event number of each deployment appended to by this process. */
  const lastSeq = new Map<string, number>();
  /** Appends of one deployment, in call order. */
  const appending = new Map<string, Promise<unknown>>();

  async function readLines(id: string): Promise<{ events: DeploymentEvent[]; endsWithNewline: boolean }> {
    let text: string;
    try {
      text = await readFile(eventFile(id), "utf8");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return { events: [], endsWithNewline: true };
      throw unavailable("read", eventFile(id), error);
    }
    const events: DeploymentEvent[] = [];
    for (const line of text.split("\n")) {
      if (line === "") continue;
      try {
        const stored = JSON.parse(line) as DeploymentEvent;
        // A line cut short by a crash (or being written now) does not parse, and is skipped.
        if (typeof stored.seq === "number" && stored.seq === events.length + 1) events.push(stored);
      } catch {
        // skipped, as above
      }
    }
    return { events, endsWithNewline: text === "" || text.endsWith("\n") };
  }

  return {
    append: (id, added) => {
      const run = async () => {
        let last = lastSeq.get(id);
        let prefix = "";
        if (last === undefined) {
          const found = await readLines(id);
          last = found.events.length;
          // A line cut short by a crash must not swallow the next one.
          if (!found.endsWithNewline) prefix = "\n";
        }
        if (added.length === 0) return last;
        const first = last;
        const lines = added.map((event: KilnEvent, index) => JSON.stringify({ seq: first + index + 1, event }));
        try {
          await appendFile(eventFile(id), `${prefix}${lines.join("\n")}\n`);
        } catch (error) {
          throw unavailable("append to", eventFile(id), error);
        }
        last = first + added.length;
        lastSeq.set(id, last);
        return last;
      };
      const result = (appending.get(id) ?? Promise.resolve()).then(run, run);
      appending.set(id, result.catch(() => undefined));
      return track(result);
    },
    read: async (id, afterSeq, limit) => {
      return (await readLines(id)).events.filter((stored) => stored.seq > afterSeq).slice(0, limit);
    },
  };
}

/** The deployment files in `folder`, oldest first; a file that is not one Kiln wrote is skipped (and left there). */
async function readRecordFiles(folder: string, logger: Logger): Promise<RecordFile[]> {
  const found: RecordFile[] = [];
  for (const name of await readdir(folder)) {
    if (!/^dep_[0-9a-f]{32}\.json$/.test(name)) continue;
    const file = path.join(folder, name);
    try {
      const parsed = JSON.parse(await readFile(file, "utf8")) as RecordFile;
      if (parsed.version !== FORMAT_VERSION || typeof parsed.position !== "number" || parsed.record?.id !== name.slice(0, -".json".length)) throw new Error(`unknown format ${String(parsed.version)}`);
      found.push(parsed);
    } catch (error) {
      logger.warn("skipped a deployment file that is not one Kiln wrote", { file, error: String(error) });
    }
  }
  return found.sort((a, b) => a.position - b.position);
}

/** The idempotent answers in `folder`, by key, deleting those kept more than `keepMs` ago. */
async function readResponseFiles(folder: string, keepMs: number, logger: Logger): Promise<Map<string, IdempotentResponse>> {
  const responses = new Map<string, IdempotentResponse>();
  const oldest = Date.now() - keepMs;
  for (const name of await readdir(folder)) {
    if (!/^[0-9a-f]{64}\.json$/.test(name)) continue;
    const file = path.join(folder, name);
    try {
      const parsed = JSON.parse(await readFile(file, "utf8")) as ResponseFile;
      if (parsed.version !== FORMAT_VERSION || typeof parsed.key !== "string") throw new Error(`unknown format ${String(parsed.version)}`);
      if (Date.parse(parsed.keptAt) < oldest) await rm(file, { force: true });
      else responses.set(parsed.key, parsed.response);
    } catch (error) {
      logger.warn("skipped an idempotent answer file that is not one Kiln wrote", { file, error: String(error) });
    }
  }
  return responses;
}
