import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  ERROR_CODES,
  LABELS,
  silentLogger,
  type ErrorCode,
  type ImageRecipe,
  type ImageRef,
  type Instance,
  type InstanceConfig,
  type LaunchRequest,
  type Provider,
  type ProviderContext,
  type Target,
} from "@kilnjs/core";

/** Options of {@link runProviderConformance}. */
export interface ProviderConformanceOptions {
  /** Names the suite: `provider conformance: <name>`. */
  readonly name: string;
  /**
   * Creates the provider under test: once before the first check, and once more to check that a
   * second provider object (as in a new process after a crash) sees the same images and instances
   * and honours the same idempotency keys. It may return the same object when the backend lives in
   * it. `close()` is called on each distinct object.
   */
  createProvider(): Provider | Promise<Provider>;
  /**
   * A recipe this provider can build, for a small image whose default command keeps running and
   * listens on port 8080 (e.g. a Dockerfile `FROM <local base>` with `CMD ["httpd", "-f", "-p", "8080"]`).
   * The suite sets the recipe's `target.service` and `fingerprint` to the ones given, whatever the
   * recipe says; the recipe's `target.environment` is kept.
   */
  makeRecipe(ctx: { readonly service: string; readonly fingerprint: string }): Promise<ImageRecipe>;
  /**
   * Replaces fields of the instance configuration the suite launches with.
   * @defaultValue `{ ports: [{ name: "http", port: 8080, protocol: "tcp" }], env: {}, labels: { "kiln-conformance": "yes" }, stopGracePeriodMs: 1000 }`
   */
  readonly launchConfig?: Partial<InstanceConfig>;
  /**
   * Removes everything of one service the suite used, bypassing the provider (e.g. by the service
   * label); called in `afterAll` for each service, after the suite's own cleanup through the provider.
   */
  cleanup?(service: string): Promise<void>;
  /** Timeout of each check and hook, in milliseconds. @defaultValue 120000 */
  readonly timeoutMs?: number;
}

/** The environment the suite's instances run in. */
const ENVIRONMENT = "conformance";

/** Whether `error` looks like a Kiln error with a code from {@link ERROR_CODES} (structural: survives duplicate copies of core). */
function kilnErrorCode(error: unknown): ErrorCode | undefined {
  if (!(error instanceof Error) || error.name !== "KilnError") return undefined;
  const { code, retryable } = error as Error & { code?: unknown; retryable?: unknown };
  if (typeof code !== "string" || !(ERROR_CODES as readonly string[]).includes(code) || typeof retryable !== "boolean") return undefined;
  return code as ErrorCode;
}

/** Awaits `promise`, expecting it to reject with a KilnError of one of `codes`; returns the code. */
async function expectKilnError(promise: Promise<unknown>, codes: readonly ErrorCode[], what: string): Promise<ErrorCode> {
  const outcome = await promise.then(
    () => ({ resolved: true as const }),
    (error: unknown) => ({ resolved: false as const, error }),
  );
  if (outcome.resolved) expect.fail(`${what}: expected a KilnError ${codes.join(" or ")}, but the call resolved`);
  const code = kilnErrorCode(outcome.error);
  if (code === undefined) {
    expect.fail(`${what}: expected a KilnError with a code from ERROR_CODES, got ${describeThrown(outcome.error)}`);
  }
  expect(codes, `${what}: error code (${(outcome.error as Error).message})`).toContain(code);
  return code;
}

/** Names an error (or anything thrown) for a failure message. */
function describeThrown(error: unknown): string {
  if (error instanceof Error) return `${error.name}: ${error.message}`;
  try {
    return JSON.stringify(error);
  } catch {
    return typeof error;
  }
}

function ids(instances: readonly Instance[]): string[] {
  return instances.map((instance) => instance.id).sort();
}

function context(signal: AbortSignal = new AbortController().signal): ProviderContext {
  return { signal, logger: silentLogger, emit() {} };
}

/** A value a previous check set; a clear failure when that check failed. */
function need<T>(value: T | undefined, what: string): T {
  if (value === undefined) expect.fail(`needs ${what}, which an earlier check did not produce`);
  return value;
}

/**
 * Registers the provider conformance suite with vitest: every provider runs it, and a provider is
 * done when it passes. Call it at the top level of a test file (or inside a `describe`); it
 * registers one `describe` block whose checks run in order and share what they create.
 *
 * It checks, on two fresh services with unique names (`kc-<random>` and `kc-<random>-b`):
 * `ping`; `images.build` returns an {@link ImageRef} with the fingerprint; `images.find` by service
 * and fingerprint returns it and nothing for another service or fingerprint; images belong to one
 * service (the same fingerprint built for two services gives two images); `images.list(service)`;
 * `instances.launch` returns `count` instances labelled with {@link LABELS} and the config's labels,
 * with unique ids and names, state `running` or `pending`, target, release and rollout set; a launch
 * repeated with the same `idempotencyKey` returns the same instances and starts none; `instances.list`
 * filters by target, release and rollout and never returns another service's instances; every call
 * rejects an already-aborted signal with `ABORTED` and changes nothing; `images.remove` refuses an
 * image in use with `IMAGE_IN_USE` (when the provider checks); `instances.terminate` removes
 * instances and a second terminate resolves; removing an image twice resolves; launching a removed
 * image fails with `LAUNCH_FAILED` and a count of 0 with `INVALID_ARGUMENT` or `LAUNCH_FAILED`;
 * errors are KilnErrors with codes from {@link ERROR_CODES}. `afterAll` terminates and removes what
 * is left through the provider, then calls `cleanup` for each service.
 *
 * @example
 * ```ts
 * import { runProviderConformance } from "@kilnjs/testkit";
 * runProviderConformance({
 *   name: "my-cloud",
 *   createProvider: () => createMyProvider({ endpoint: emulator.url }),
 *   makeRecipe: async ({ service, fingerprint }) => recipeFromFixture("fixtures/httpd", service, fingerprint),
 * });
 * ```
 */
export function runProviderConformance(options: ProviderConformanceOptions): void {
  const timeoutMs = options.timeoutMs ?? 120_000;
  const run = randomBytes(4).toString("hex");
  const service = `kc-${run}`;
  const otherService = `kc-${run}-b`;
  const target: Target = { service, environment: ENVIRONMENT };
  const otherTarget: Target = { service: otherService, environment: ENVIRONMENT };
  const fingerprint = `sha256:${randomBytes(32).toString("hex")}`;
  const config: InstanceConfig = {
    ports: [{ name: "http", port: 8080, protocol: "tcp" }],
    env: {},
    labels: { "kiln-conformance": "yes" },
    stopGracePeriodMs: 1_000,
    ...options.launchConfig,
  };

  describe(`provider conformance: ${options.name}`, () => {
    let provider: Provider | undefined;
    let image: ImageRef | undefined;
    let otherImage: ImageRef | undefined;
    /** Release 7, rollout A, 2 instances. */
    let first: Instance[] | undefined;
    /** Release 8, rollout B, 1 instance. */
    let second: Instance[] | undefined;
    /** The other service's instance. */
    let foreign: Instance[] | undefined;

    const p = () => need(provider, "a provider");
    const rolloutA = `ro-${run}-a`;
    const rolloutB = `ro-${run}-b`;
    const request = (overrides: Partial<LaunchRequest>): LaunchRequest => ({
      target,
      release: 7,
      rolloutId: rolloutA,
      idempotencyKey: `launch-${run}-1`,
      image: need(image, "the built image"),
      config,
      count: 2,
      ...overrides,
    });
    const recipeFor = async (forService: string, forFingerprint: string): Promise<ImageRecipe> => {
      const made = await options.makeRecipe({ service: forService, fingerprint: forFingerprint });
      return { ...made, target: { service: forService, environment: made.target.environment }, fingerprint: forFingerprint };
    };

    beforeAll(async () => {
      provider = await options.createProvider();
    }, timeoutMs);

    afterAll(async () => {
      const problems: unknown[] = [];
      if (provider) {
        const live = provider;
        for (const name of [service, otherService]) {
          for (const environment of [ENVIRONMENT]) {
            try {
              const left = await live.instances.list({ target: { service: name, environment } }, context());
              if (left.length > 0) await live.instances.terminate(left, { gracePeriodMs: 0 }, context());
            } catch (error) {
              problems.push(error);
            }
          }
          try {
            for (const ref of await live.images.list(name, context())) await live.images.remove(ref, context());
          } catch (error) {
            problems.push(error);
          }
        }
      }
      for (const name of [service, otherService]) {
        try {
          await options.cleanup?.(name);
        } catch (error) {
          problems.push(error);
        }
      }
      await provider?.close?.();
      if (problems.length > 0) throw new AggregateError(problems, `Cleaning up after the conformance suite failed ${problems.length} time(s).`);
    }, timeoutMs);

    it("ping resolves", async () => {
      await expect(p().ping(context())).resolves.toBeUndefined();
    }, timeoutMs);

    it("images.build returns an ImageRef carrying the fingerprint", async () => {
      const built = await p().images.build(await recipeFor(service, fingerprint), context());
      expect(typeof built.id === "string" && built.id.length > 0, "image id").toBe(true);
      expect(built.fingerprint).toBe(fingerprint);
      expect(typeof built.digest === "string" && built.digest.length > 0, "image digest").toBe(true);
      expect(Array.isArray(built.names), "image names").toBe(true);
      if (built.createdAt !== undefined) expect(Number.isNaN(Date.parse(built.createdAt)), `createdAt ${built.createdAt} is ISO 8601`).toBe(false);
      if (built.sizeBytes !== undefined) expect(built.sizeBytes).toBeGreaterThanOrEqual(0);
      image = built;
    }, timeoutMs);

    it("images.find returns the image by service and fingerprint, and nothing for another service or fingerprint", async () => {
      const built = need(image, "the built image");
      const found = await p().images.find({ service, fingerprint }, context());
      expect(found?.id).toBe(built.id);
      expect(found?.fingerprint).toBe(fingerprint);
      expect(await p().images.find({ service, fingerprint: `sha256:${randomBytes(32).toString("hex")}` }, context())).toBeUndefined();
      expect(await p().images.find({ service: `kc-${run}-none`, fingerprint }, context())).toBeUndefined();
    }, timeoutMs);

    it("images.list(service) includes the image and nothing of another service", async () => {
      const built = need(image, "the built image");
      const listed = await p().images.list(service, context());
      expect(listed.map((ref) => ref.id)).toContain(built.id);
      expect(listed.find((ref) => ref.id === built.id)?.fingerprint).toBe(fingerprint);
      expect(await p().images.list(`kc-${run}-none`, context())).toEqual([]);
    }, timeoutMs);

    it("an image belongs to one service: the same fingerprint built for another service is another image", async () => {
      const built = need(image, "the built image");
      otherImage = await p().images.build(await recipeFor(otherService, fingerprint), context());
      expect(otherImage.fingerprint).toBe(fingerprint);
      expect(otherImage.id, "each service gets its own image").not.toBe(built.id);
      expect((await p().images.find({ service: otherService, fingerprint }, context()))?.id).toBe(otherImage.id);
      expect((await p().images.find({ service, fingerprint }, context()))?.id).toBe(built.id);
      expect((await p().images.list(service, context())).map((ref) => ref.id)).not.toContain(otherImage.id);
    }, timeoutMs);

    it("instances.launch starts count instances, labelled, with unique ids and names", async () => {
      const built = need(image, "the built image");
      const launched = await p().instances.launch(request({}), context());
      first = launched;
      expect(launched).toHaveLength(2);
      expect(new Set(launched.map((instance) => instance.id)).size, "unique ids").toBe(2);
      expect(new Set(launched.map((instance) => instance.name)).size, "unique names").toBe(2);
      for (const instance of launched) {
        expect(["running", "pending"], `state of ${instance.name}`).toContain(instance.state);
        expect(instance.target).toEqual(target);
        expect(instance.release).toBe(7);
        expect(instance.rolloutId).toBe(rolloutA);
        expect(instance.imageId, "imageId is the ImageRef's id").toBe(built.id);
        expect(instance.restartCount).toBeGreaterThanOrEqual(0);
        expect(Number.isNaN(Date.parse(instance.createdAt)), `createdAt ${instance.createdAt} is ISO 8601`).toBe(false);
        expect(instance.labels).toMatchObject({
          ...config.labels,
          [LABELS.managed]: "true",
          [LABELS.service]: service,
          [LABELS.environment]: ENVIRONMENT,
          [LABELS.release]: "7",
          [LABELS.rollout]: rolloutA,
          [LABELS.fingerprint]: fingerprint,
        });
        const portNames = config.ports.map((port) => port.name);
        for (const [name, endpoint] of Object.entries(instance.endpoints)) {
          expect(portNames, "endpoints are named by the config's ports").toContain(name);
          expect(typeof endpoint.host === "string" && endpoint.host.length > 0, `endpoint ${name} host`).toBe(true);
          expect(Number.isInteger(endpoint.port) && endpoint.port > 0, `endpoint ${name} port`).toBe(true);
        }
      }
    }, timeoutMs);

    it("instances.launch with the same idempotencyKey returns the same instances and starts none", async () => {
      const launched = need(first, "the launched instances");
      const before = await p().instances.list({ target }, context());
      const again = await p().instances.launch(request({}), context());
      expect(ids(again)).toEqual(ids(launched));
      const after = await p().instances.list({ target }, context());
      expect(ids(after)).toEqual(ids(before));
    }, timeoutMs);

    it("a second provider object sees the same backend: images, instances and idempotency keys", async () => {
      const launched = need(first, "the launched instances");
      const again = await options.createProvider();
      try {
        expect((await again.images.find({ service, fingerprint }, context()))?.id).toBe(need(image, "the built image").id);
        expect(ids(await again.instances.list({ target }, context()))).toEqual(ids(launched));
        expect(ids(await again.instances.launch(request({}), context())), "same key, same instances").toEqual(ids(launched));
        expect(ids(await p().instances.list({ target }, context())), "no instance started").toEqual(ids(launched));
      } finally {
        if (again !== provider) await again.close?.();
      }
    }, timeoutMs);

    it("instances.list filters by target, release and rollout, and never returns another service's instances", async () => {
      const launchedFirst = need(first, "the launched instances");
      second = await p().instances.launch(request({ release: 8, rolloutId: rolloutB, idempotencyKey: `launch-${run}-2`, count: 1 }), context());
      expect(second).toHaveLength(1);
      foreign = await p().instances.launch(
        request({ target: otherTarget, image: need(otherImage, "the other service's image"), idempotencyKey: `launch-${run}-3`, count: 1 }),
        context(),
      );
      expect(foreign).toHaveLength(1);

      const all = await p().instances.list({ target }, context());
      expect(ids(all)).toEqual(ids([...launchedFirst, ...second]));
      for (const instance of all) {
        expect(instance.target).toEqual(target);
        expect(instance.state).not.toBe("terminated");
        expect(instance.labels[LABELS.service]).toBe(service);
      }
      expect(ids(await p().instances.list({ target, release: 7 }, context()))).toEqual(ids(launchedFirst));
      expect(ids(await p().instances.list({ target, release: 8 }, context()))).toEqual(ids(second));
      expect(await p().instances.list({ target, release: 99 }, context())).toEqual([]);
      expect(ids(await p().instances.list({ target, rolloutId: rolloutA }, context()))).toEqual(ids(launchedFirst));
      expect(ids(await p().instances.list({ target, rolloutId: rolloutB }, context()))).toEqual(ids(second));
      expect(await p().instances.list({ target, release: 7, rolloutId: rolloutB }, context())).toEqual([]);
      expect(await p().instances.list({ target: { service, environment: `${ENVIRONMENT}-other` } }, context())).toEqual([]);
      expect(ids(await p().instances.list({ target: otherTarget }, context()))).toEqual(ids(foreign));
      // Release 7 of the other service exists too: the release filter must not cross services.
      expect(ids(await p().instances.list({ target: otherTarget, release: 7 }, context()))).toEqual(ids(foreign));
    }, timeoutMs);

    it("every call rejects an already-aborted signal with ABORTED and changes nothing", async () => {
      const built = need(image, "the built image");
      const live = need(first, "the launched instances");
      const controller = new AbortController();
      controller.abort(new Error("aborted by the conformance suite"));
      const aborted = context(controller.signal);
      const abortedFingerprint = `sha256:${randomBytes(32).toString("hex")}`;
      const abortedRecipe = await recipeFor(service, abortedFingerprint);
      const before = ids(await p().instances.list({ target }, context()));

      const calls: [string, () => Promise<unknown>][] = [
        ["ping", () => p().ping(aborted)],
        ["images.build", () => p().images.build(abortedRecipe, aborted)],
        ["images.find", () => p().images.find({ service, fingerprint }, aborted)],
        ["images.list", () => p().images.list(service, aborted)],
        ["images.remove", () => p().images.remove(built, aborted)],
        ["instances.launch", () => p().instances.launch(request({ idempotencyKey: `launch-${run}-aborted`, count: 1 }), aborted)],
        ["instances.list", () => p().instances.list({ target }, aborted)],
        ["instances.terminate", () => p().instances.terminate(live, { gracePeriodMs: 0 }, aborted)],
      ];
      const health = p().health;
      if (health) {
        calls.push(["health.probe", () => health.probe(live[0]!, { kind: "http", portName: "http", path: "/", expectStatus: [200, 399] }, 1_000, aborted)]);
      }
      for (const [what, call] of calls) await expectKilnError(call(), ["ABORTED"], what);

      expect(ids(await p().instances.list({ target }, context())), "no instance started or terminated").toEqual(before);
      expect(await p().images.find({ service, fingerprint: abortedFingerprint }, context()), "no image built").toBeUndefined();
      expect((await p().images.find({ service, fingerprint }, context()))?.id, "the image was not removed").toBe(built.id);
    }, timeoutMs);

    it("images.remove refuses an image in use with IMAGE_IN_USE (when the provider checks)", async ({ annotate }) => {
      const built = need(image, "the built image");
      const outcome = await p()
        .images.remove(built, context())
        .then(
          () => undefined,
          (error: unknown) => error,
        );
      if (outcome === undefined) {
        // The provider does not check: allowed by the contract, but then the instances must still run.
        await annotate(`${options.name} removed an image in use instead of refusing with IMAGE_IN_USE`, "warning");
        expect((await p().instances.list({ target }, context())).length).toBeGreaterThan(0);
        return;
      }
      expect(kilnErrorCode(outcome), `error ${describeThrown(outcome)}`).toBe("IMAGE_IN_USE");
      expect((await p().images.find({ service, fingerprint }, context()))?.id, "the image is still there").toBe(built.id);
    }, timeoutMs);

    it("instances.terminate removes instances, and terminating them again resolves", async () => {
      const toStop = [...need(first, "the launched instances"), ...need(second, "the second launch")];
      await p().instances.terminate(toStop, { gracePeriodMs: 0 }, context());
      const left = await p().instances.list({ target }, context());
      expect(ids(left).filter((id) => ids(toStop).includes(id)), "terminated instances are no longer listed").toEqual([]);
      await expect(p().instances.terminate(toStop, { gracePeriodMs: 0 }, context())).resolves.toBeUndefined();
      expect(ids(await p().instances.list({ target: otherTarget }, context())), "another service's instance is untouched").toEqual(ids(need(foreign, "the other service's instance")));
    }, timeoutMs);

    it("images.remove removes the image, removing it twice resolves, and another service's image stays", async () => {
      const built = need(image, "the built image");
      await p().images.remove(built, context());
      expect(await p().images.find({ service, fingerprint }, context())).toBeUndefined();
      expect((await p().images.list(service, context())).map((ref) => ref.id)).not.toContain(built.id);
      await expect(p().images.remove(built, context())).resolves.toBeUndefined();
      expect((await p().images.find({ service: otherService, fingerprint }, context()))?.id).toBe(need(otherImage, "the other service's image").id);
    }, timeoutMs);

    it("errors are KilnErrors with codes from ERROR_CODES: a removed image cannot be launched, a count of 0 is refused", async () => {
      await expectKilnError(p().instances.launch(request({ idempotencyKey: `launch-${run}-removed`, count: 1 }), context()), ["LAUNCH_FAILED"], "launching a removed image");
      await expectKilnError(
        p().instances.launch(request({ target: otherTarget, image: need(otherImage, "the other service's image"), idempotencyKey: `launch-${run}-zero`, count: 0 }), context()),
        ["INVALID_ARGUMENT", "LAUNCH_FAILED"],
        "launching 0 instances",
      );
      expect(ids(await p().instances.list({ target }, context())), "nothing was started").toEqual([]);
      expect(ids(await p().instances.list({ target: otherTarget }, context())), "nothing was started").toEqual(ids(need(foreign, "the other service's instance")));
    }, timeoutMs);
  });
}
