import { createHash } from "node:crypto";
import { OpenAPIHono, createRoute, z, type RouteConfig } from "@hono/zod-openapi";
import {
  KilnError,
  formatTarget,
  isFinalDeploymentState,
  parseTarget,
  specFromObject,
  specFromYaml,
  type DeploymentQueue,
  type DeploymentRecord,
  type EnqueueOutcome,
  type IdempotentResponse,
  type Kiln,
  type LoadedSpec,
  type Logger,
  type StateStore,
  type Target,
} from "@kilnjs/core";
import type { Context, MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import { HTTPException } from "hono/http-exception";
import { PatternRouter } from "hono/router/pattern-router";
import { streamSSE, stream } from "hono/streaming";
import { parse as parseYaml } from "yaml";
import { mayTouch, type Principal, type Scope } from "./auth.js";
import type { Metrics } from "./metrics.js";
import type { PathHider } from "./paths.js";
import { problem, problemOf, problemSchema, type Problem, type ProblemCode } from "./problem.js";

/** What the HTTP app needs; see `createKilnServer` for the defaults. */
export interface AppOptions {
  readonly kiln: Kiln;
  /** The state store the Kiln instance uses (for the list of targets). */
  readonly store: StateStore;
  readonly deployments: DeploymentQueue;
  readonly authenticate: (secret: string | undefined) => Principal | undefined;
  /** Registered services: name → absolute path of its kiln.yaml. */
  readonly services: Readonly<Record<string, string>>;
  /** The folder relative paths of a posted spec are resolved against. */
  readonly specRoot: string;
  /** Largest request body accepted (bytes). */
  readonly maxBodyBytes: number;
  readonly logger: Logger;
  readonly metrics: Metrics;
  /** Wakes this replica's runner after a deployment was accepted. */
  wake(): void;
  /** Whether the server is ready (its state store answers). */
  ready(): Promise<boolean>;
  /** The status page (HTML), served at `/`. */
  readonly page: string;
  /** The page's Content-Security-Policy header. */
  readonly pageCsp?: string;
  /** How often an event stream looks for new events (milliseconds). */
  readonly streamPollMs: number;
  /** Rewrites the server's own folders (spec root, services, data folder) in problem documents: callers never see its absolute paths. */
  readonly paths: PathHider;
}

type Env = { Variables: { principal: Principal } };

const PROBLEM = "application/problem+json";
/** Error answers kept under an Idempotency-Key (besides every 2xx): the request itself was wrong. */
const KEPT_STATUSES: ReadonlySet<number> = new Set([400, 413, 415, 422]);
/** A service or environment name as core's spec allows it (at most 40 characters): a longer one is a 400, not a file name the state store cannot open (503). */
const NAME = "[a-z](?:[a-z0-9-]{0,38}[a-z0-9])?";
const namePattern = new RegExp(`^${NAME}$`);
const targetPattern = new RegExp(`^${NAME}@${NAME}$`);

const TargetParam = z.object({
  target: z.string().regex(targetPattern).openapi({ param: { name: "target", in: "path" }, example: "hello-web@staging", description: "service@environment" }),
});
const IdParam = z.object({ id: z.string().regex(/^dep_[0-9a-f]{32}$/).openapi({ param: { name: "id", in: "path" }, example: "dep_0123456789abcdef0123456789abcdef" }) });
const IdempotencyHeader = z.object({
  "idempotency-key": z.string().min(1).max(200).optional().openapi({ param: { name: "idempotency-key", in: "header" }, description: "A retried request with the same key returns the first answer and starts nothing new." }),
});

const DeploymentSchema = z
  .object({
    id: z.string(),
    kind: z.enum(["deploy", "rollback"]),
    target: z.string().openapi({ example: "hello-web@staging" }),
    state: z.enum(["queued", "running", "succeeded", "unchanged", "failed", "cancelled"]),
    requestedBy: z.string(),
    createdAt: z.string(),
    startedAt: z.string().optional(),
    finishedAt: z.string().optional(),
    cancelRequested: z.boolean(),
    attempts: z.number().int().openapi({ description: "How many times a replica claimed it; above 1 it was taken over after a replica died." }),
    claimedBy: z.string().optional(),
    release: z.number().int().optional(),
    rolloutId: z.string().optional(),
    error: z.object({ code: z.string(), message: z.string() }).optional(),
    links: z.object({ self: z.string(), events: z.string() }),
  })
  .openapi("Deployment");

/** One Server-Sent Event as a client parses it: in OpenAPI 3.1 the schema of text/event-stream describes each event. */
const SseEventSchema = z
  .object({
    id: z.string().regex(/^\d+$/).optional().openapi({ description: "The event's number, for Last-Event-ID (absent on deployment.finished)" }),
    event: z.string().openapi({ description: "The event's type (rollout.started, …), or deployment.finished, whose data is the Deployment" }),
    data: z.string().openapi({ description: "The event as JSON" }),
  })
  .openapi("ServerSentEvent");
const StepSchema = z.object({ seq: z.number().int(), time: z.string(), type: z.string(), summary: z.string() }).openapi("Step");
const DeploymentDetailSchema = DeploymentSchema.extend({ steps: z.array(StepSchema) }).openapi("DeploymentDetail");

const SpecObject = z.record(z.string(), z.unknown()).openapi({ description: "A kiln.yaml as JSON (schema: packages/core/schema/kiln.schema.json), validated exactly as a spec file." });
const DeployBody = z
  .object({
    spec: SpecObject.optional(),
    service: z.string().min(1).optional().openapi({ description: "A registered service (kiln serve --service NAME=PATH) instead of a spec." }),
    environment: z.string().regex(namePattern).optional().openapi({ description: "The environment; `default` (the spec's top level) when absent." }),
  })
  .strict()
  .openapi("DeployRequest", {
    example: { spec: { service: "hello-web", provider: "docker", instances: { count: 2, ports: [{ name: "http", port: 8080 }] }, environments: { staging: { instances: { count: 1 } } } }, environment: "staging" },
  });
const YamlSpec = { schema: z.string().openapi({ description: "A kiln.yaml; the environment comes from ?environment=" }) };
/** A deploy or plan body: JSON, or a kiln.yaml as any of the YAML media types readDeployInput reads. */
const DEPLOY_CONTENT = { "application/json": { schema: DeployBody }, "application/yaml": YamlSpec, "text/yaml": YamlSpec, "application/x-yaml": YamlSpec };
const RollbackBody = z.object({ release: z.number().int().min(1).optional() }).strict().openapi("RollbackRequest");
const GcBody = z
  .object({
    keep: z.number().int().min(1).max(1000).openapi({ description: "Releases kept for the target: the current one and keep - 1 successful ones before it." }),
    olderThanMs: z.number().int().min(0).optional().openapi({ description: "Only images created at least this long ago (milliseconds) go." }),
    apply: z.boolean().optional().openapi({ description: "Remove the images; false or absent: a dry run that changes nothing." }),
  })
  .strict()
  .openapi("GarbageCollectionRequest");
const GcResultSchema = z
  .object({
    applied: z.boolean(),
    gcId: z.string().nullable().openapi({ description: "The gc record in the target's history; null when nothing was removed" }),
    plan: z.record(z.string(), z.unknown()).openapi({ description: "What goes (remove) and what stays (kept, with reasons), and the retained releases" }),
    resumed: z.array(z.record(z.string(), z.unknown())),
    removed: z.array(z.record(z.string(), z.unknown())),
    failed: z.array(z.object({ image: z.record(z.string(), z.unknown()), error: z.object({ code: z.string(), message: z.string() }) })),
  })
  .openapi("GarbageCollection");

const json = <T extends z.ZodType>(schema: T, description: string) => ({ content: { "application/json": { schema } }, description });
const problems = (...statuses: number[]) =>
  Object.fromEntries(statuses.map((status) => [status, { content: { [PROBLEM]: { schema: problemSchema } }, description: DESCRIPTIONS[status] ?? "A problem" }]));
const DESCRIPTIONS: Record<number, string> = {
  400: "Bad input",
  401: "No token, or an unknown one",
  403: "The token lacks the scope or the environment",
  404: "Not found (also: no route matches, e.g. an empty path parameter)",
  409: "Conflict: the target has a rollout running or queued, or its lock is held",
  413: "The body is too large",
  415: "Unsupported media type",
  422: "The spec or request is invalid",
  503: "A backend (state store, provider) is unavailable",
};
// 404 too: app.notFound answers any path no route matches (GET /v1/targets//history).
const COMMON = [400, 401, 403, 404, 413, 503];
const security = [{ bearer: [] }];

/** Builds the Hono app: routes, auth, problem documents, the OpenAPI document. */
export function createApp(options: AppOptions): OpenAPIHono<Env> {
  const { kiln, deployments, logger, metrics } = options;
  const app = new OpenAPIHono<Env>({
    defaultHook: (result) => {
      if (!result.success) {
        const issues = result.error.issues.map((issue) => ({ path: issue.path.join("."), message: friendlier(issue.path.join("."), issue.message) }));
        return send(problem("INVALID_ARGUMENT", `The request is invalid: ${issues.map((issue) => `${issue.path || "(body)"}: ${issue.message}`).join("; ")}.`, { details: { issues } }));
      }
      return undefined;
    },
  });
  app.openAPIRegistry.registerComponent("securitySchemes", "bearer", { type: "http", scheme: "bearer", description: "An API token (kiln serve --help: tokens)." });

  // Access log and metrics; never the Authorization header.
  app.use("*", async (c, next) => {
    const startedAt = performance.now();
    await next();
    const route = c.req.routePath || "unmatched";
    metrics.requests.inc({ method: c.req.method, route, status: String(c.res.status) });
    logger.info("request", { method: c.req.method, path: c.req.path, status: c.res.status, ms: Math.round(performance.now() - startedAt), token: c.get("principal")?.name });
  });
  // Problems name files relative to the spec root, never by the server's own absolute paths
  // (core's messages have them: a missing Dockerfile, a build context, a secret file, a spec file).
  app.use("*", async (c, next) => {
    await next();
    if (!(c.res.headers.get("content-type") ?? "").startsWith(PROBLEM)) return;
    const text = await c.res.clone().text();
    const hidden = options.paths.text(text);
    if (hidden === text) return;
    const headers = new Headers(c.res.headers);
    headers.delete("content-length");
    c.res = new Response(hidden, { status: c.res.status, headers });
  });
  app.onError((error, c) => {
    if (error instanceof HttpProblem) return send(error.problem);
    if (error instanceof HTTPException && error.status < 500) {
      // 415 comes from the media-type gate @hono/zod-openapi puts before a route with a body.
      const code = error.status === 413 ? "PAYLOAD_TOO_LARGE" : error.status === 415 ? "UNSUPPORTED_MEDIA_TYPE" : "INVALID_ARGUMENT";
      const detail = error.status === 415 ? "Send the body as application/json (or, for a spec, application/yaml)." : error.message || "The request is invalid (a malformed body?).";
      return send(problem(code, detail, { status: error.status }));
    }
    const found = problemOf(error);
    if (found.status >= 500 && found.code === "INTERNAL") logger.error("request failed", { path: c.req.path, error: String(error) });
    return send(found);
  });
  // A path the API has, asked with a method it does not have: 405 with the methods it has (RFC 9110
  // §15.5.6), and OPTIONS answers with them. HEAD is GET without the body (Hono's own behaviour).
  app.notFound((c) => {
    const allowed = allowedMethods(c.req.path);
    if (allowed.length === 0) return send(problem("NOT_FOUND", `No route ${c.req.method} ${c.req.path}; see /v1/openapi.json.`, { status: 404 }));
    const allow = allowed.join(", ");
    if (c.req.method === "OPTIONS") return c.body(null, 204, { allow });
    const refused = send(problem("METHOD_NOT_ALLOWED", `${c.req.path} does not take ${c.req.method}; it takes ${allow} (see /v1/openapi.json).`, { status: 405, details: { allow: allowed } }));
    refused.headers.set("allow", allow);
    return refused;
  });
  let routeMethods: ((path: string) => string[]) | undefined;
  /** The methods `path` takes (with HEAD where it takes GET, and OPTIONS), or none when no route has the path. */
  function allowedMethods(path: string): string[] {
    if (!routeMethods) {
      // Built on first use, once every route is registered: the app's routes, not its middleware.
      const router = new PatternRouter<string>();
      for (const route of app.routes) if (route.method !== "ALL") router.add("ALL", route.path, route.method);
      routeMethods = (wanted) => [...new Set(router.match("GET", wanted)[0].map(([method]) => method))];
    }
    const methods = routeMethods(path);
    if (methods.length === 0) return [];
    return ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"].filter((method) => methods.includes(method) || (method === "HEAD" && methods.includes("GET")) || method === "OPTIONS");
  }

  // Health and readiness answer without a token; everything else needs one.
  app.get("/v1/health", (c) => c.json({ status: "ok" }));
  app.get("/v1/ready", async (c) => ((await options.ready()) ? c.json({ status: "ready" }) : c.json({ status: "not ready" }, 503)));
  app.get("/", (c) =>
    c.html(options.page, 200, {
      ...(options.pageCsp ? { "content-security-policy": options.pageCsp } : {}),
      "x-content-type-options": "nosniff",
      "referrer-policy": "no-referrer",
      "cache-control": "no-cache",
    }),
  );
  app.use("*", async (c, next) => {
    if (c.req.path === "/v1/health" || c.req.path === "/v1/ready" || c.req.path === "/") return next();
    const header = c.req.header("authorization");
    const secret = header?.startsWith("Bearer ") ? header.slice("Bearer ".length).trim() : undefined;
    const principal = options.authenticate(secret);
    if (!principal) {
      const refused = send(problem("UNAUTHENTICATED", header ? "The token is not known; check it, or ask for one." : "Send an API token: Authorization: Bearer <token>.", { status: 401 }));
      refused.headers.set("www-authenticate", 'Bearer realm="kiln"');
      return refused;
    }
    c.set("principal", principal);
    return next();
  });
  const limitBody: MiddlewareHandler<Env> = bodyLimit({
    maxSize: options.maxBodyBytes,
    onError: () => {
      const answer = send(problem("PAYLOAD_TOO_LARGE", `The body is larger than ${options.maxBodyBytes} bytes.`, { status: 413 }));
      // The rest of the body is not read: the connection cannot be reused.
      answer.headers.set("connection", "close");
      return answer;
    },
  });
  // Not for GET and HEAD, which have no body: bodyLimit reads c.req.raw.body, which makes
  // @hono/node-server build a whole Request for every read (about a quarter of a status read).
  app.use("/v1/*", (c, next) => (c.req.method === "GET" || c.req.method === "HEAD" ? next() : limitBody(c as Context<Env, string, object>, next)));

  /** Throws a 403 problem unless the principal has the scope (and the environment). */
  function authorize(c: Context<Env>, scope: Scope, environment?: string): Principal {
    const principal = c.get("principal");
    if (!principal.scopes.has(scope)) throw new HttpProblem(problem("FORBIDDEN", `The token "${principal.name}" lacks the ${scope} scope.`, { status: 403 }));
    if (environment !== undefined && !mayTouch(principal, environment)) {
      throw new HttpProblem(problem("FORBIDDEN", `The token "${principal.name}" may not touch the ${environment} environment.`, { status: 403 }));
    }
    return principal;
  }

  /** Runs a POST once per Idempotency-Key (per token and route); a retry gets the first answer. */
  async function once(c: Context<Env>, body: unknown, run: () => Promise<IdempotentResponse>): Promise<Response> {
    const key = c.req.header("idempotency-key");
    if (!key) return reply(c, await run());
    const scope = createHash("sha256").update(`${c.get("principal").name}\0${c.req.method}\0${c.req.path}\0${key}`).digest("hex");
    const bodyHash = createHash("sha256").update(JSON.stringify(body ?? null)).digest("hex");
    const kept = await deployments.getResponse(scope);
    if (kept) return replyKept(c, kept, bodyHash);
    const answer: IdempotentResponse = await run().catch((error: unknown) => {
      if (error instanceof HttpProblem) return { status: error.problem.status, body: error.problem };
      return { status: problemOf(error).status, body: problemOf(error) };
    });
    // Only final answers are kept: a 409 (the target was busy), an auth refusal or a 5xx may
    // change, and a retry with the same key must then be able to get through.
    if (!KEPT_STATUSES.has(answer.status) && answer.status >= 300) return reply(c, answer);
    const first = await deployments.keepResponse(scope, { ...answer, headers: { ...answer.headers, "x-kiln-body-sha256": bodyHash } });
    // Another request with the same key may have been first: then its answer is the answer.
    if (JSON.stringify(first.body) !== JSON.stringify(answer.body)) return replyKept(c, first, bodyHash);
    return reply(c, answer);
  }

  function replyKept(c: Context<Env>, kept: IdempotentResponse, bodyHash: string): Response {
    const { "x-kiln-body-sha256": keptHash, ...headers } = kept.headers ?? {};
    if (keptHash !== undefined && keptHash !== bodyHash) {
      return send(problem("IDEMPOTENCY_KEY_REUSED", "This Idempotency-Key was used with another body; use a new key for a new request.", { status: 422 }));
    }
    return reply(c, { ...kept, headers: { ...headers, "idempotent-replayed": "true" } });
  }

  function reply(c: Context<Env>, answer: IdempotentResponse): Response {
    const isProblem = typeof answer.body === "object" && answer.body !== null && "code" in answer.body && "status" in answer.body;
    return new Response(JSON.stringify(answer.body), { status: answer.status, headers: { "content-type": isProblem ? PROBLEM : "application/json", ...answer.headers } });
  }

  const openapi = <R extends RouteConfig>(route: R, handler: (c: Context<Env>) => Promise<Response>) =>
    app.openapi(route, (async (c: Context<Env>) => {
      try {
        return await handler(c);
      } catch (error) {
        if (error instanceof HttpProblem) return send(error.problem);
        const found = problemOf(error);
        if (found.code === "INTERNAL") logger.error("request failed", { path: c.req.path, error: String(error) });
        return send(found);
      }
    }) as never);

  // ---- targets -------------------------------------------------------------------------------

  openapi(
    createRoute({
      method: "get",
      path: "/v1/targets",
      summary: "Every target deployed (with a release or a rollout), and its current release",
      security,
      responses: { 200: json(z.object({ targets: z.array(z.object({ target: z.string(), release: z.number().int().optional(), status: z.string().optional() })) }), "Targets"), ...problems(...COMMON) },
    }),
    async (c) => {
      const principal = authorize(c, "read");
      const targets = (await options.store.listTargets()).filter((target) => mayTouch(principal, target.environment));
      const rows = await Promise.all(
        targets.map(async (target) => {
          const state = await kiln.history({ target });
          const current = state.releases.find((release) => release.number === state.currentRelease);
          return { target: formatTarget(target), ...(current ? { release: current.number, status: current.status } : {}) };
        }),
      );
      return c.json({ targets: rows });
    },
  );

  openapi(
    createRoute({
      method: "get",
      path: "/v1/targets/{target}",
      summary: "A target's current release, instances, their health and drift, and its lock",
      security,
      request: { params: TargetParam },
      responses: { 200: json(z.record(z.string(), z.unknown()).openapi("TargetStatus"), "The target's status"), ...problems(...COMMON) },
    }),
    async (c) => {
      const target = targetOf(c);
      authorize(c, "read", target.environment);
      const status = await kiln.status({ target });
      return c.json({
        target: formatTarget(target),
        release: status.release ? summarizeRelease(status.release) : null,
        instances: status.instances.map((instance) => ({ id: instance.id, name: instance.name, release: instance.release ?? null, state: instance.state, restartCount: instance.restartCount, endpoints: instance.endpoints, createdAt: instance.createdAt })),
        proxies: status.proxies.map((proxy) => ({ id: proxy.id, name: proxy.name, state: proxy.state, address: proxy.address ?? null })),
        drift: status.drift,
        progress: status.progress,
        activeRollout: status.activeRollout ? { id: status.activeRollout.id, status: status.activeRollout.status, startedAt: status.activeRollout.startedAt } : null,
        lock: status.lock ?? null,
      });
    },
  );

  openapi(
    createRoute({
      method: "get",
      path: "/v1/targets/{target}/history",
      summary: "Every release and rollout of the target, newest first",
      security,
      request: { params: TargetParam },
      responses: { 200: json(z.record(z.string(), z.unknown()).openapi("History"), "History"), ...problems(...COMMON) },
    }),
    async (c) => {
      const target = targetOf(c);
      authorize(c, "read", target.environment);
      const state = await kiln.history({ target });
      return c.json({
        target: formatTarget(target),
        currentRelease: state.currentRelease ?? null,
        releases: state.releases.map(summarizeRelease),
        rollouts: state.rollouts.map((rollout) => ({ id: rollout.id, kind: rollout.kind, status: rollout.status, fromRelease: rollout.fromRelease ?? null, toRelease: rollout.toRelease, startedAt: rollout.startedAt, finishedAt: rollout.finishedAt ?? null, error: rollout.error ?? null })),
      });
    },
  );

  openapi(
    createRoute({
      method: "get",
      path: "/v1/targets/{target}/lock",
      summary: "Who holds the target's rollout lock, and since when",
      security,
      request: { params: TargetParam },
      responses: { 200: json(z.object({ lock: z.record(z.string(), z.unknown()).nullable() }), "The lock, or null"), ...problems(...COMMON) },
    }),
    async (c) => {
      const target = targetOf(c);
      authorize(c, "read", target.environment);
      return c.json({ lock: ((await kiln.lockStatus({ target })) ?? null) as Record<string, unknown> | null });
    },
  );

  openapi(
    createRoute({
      method: "post",
      path: "/v1/targets/{target}/lock/release",
      summary: "Force-release the target's lock (admin): its holder's next write fails",
      security,
      request: { params: TargetParam, headers: IdempotencyHeader },
      responses: { 200: json(z.object({ released: z.record(z.string(), z.unknown()).nullable() }), "The lease that was cleared, or null"), ...problems(...COMMON, 422) },
    }),
    async (c) => {
      const target = targetOf(c);
      authorize(c, "admin", target.environment);
      return once(c, null, async () => ({ status: 200, body: { released: ((await kiln.forceReleaseLock({ target })) ?? null) as unknown } }));
    },
  );

  // ---- images and garbage collection ---------------------------------------------------------

  openapi(
    createRoute({
      method: "get",
      path: "/v1/targets/{target}/images",
      summary: "The service's images across its environments, with the releases that use them and whether an instance runs them",
      security,
      request: { params: TargetParam },
      responses: { 200: json(z.object({ images: z.array(z.record(z.string(), z.unknown())) }), "The images, newest first"), ...problems(...COMMON) },
    }),
    async (c) => {
      const target = targetOf(c);
      authorize(c, "read", target.environment);
      return c.json({ images: (await kiln.listImages({ target })) as unknown as Record<string, unknown>[] });
    },
  );

  openapi(
    createRoute({
      method: "post",
      path: "/v1/targets/{target}/gc",
      summary: "Remove the images no retained release uses (admin); a dry run unless apply is true",
      security,
      request: { params: TargetParam, headers: IdempotencyHeader, body: { content: { "application/json": { schema: GcBody } }, required: true } },
      responses: { 200: json(GcResultSchema, "What the collection planned and did"), ...problems(...COMMON, 409, 415, 422) },
    }),
    async (c) => {
      const target = targetOf(c);
      authorize(c, "admin", target.environment);
      const parsed = GcBody.safeParse(safeJson(await c.req.text()));
      if (!parsed.success) throw new HttpProblem(problem("INVALID_ARGUMENT", `The body is invalid: ${parsed.error.issues.map((issue) => `${issue.path.join(".") || "(body)"}: ${issue.message}`).join("; ")}.`));
      const body = parsed.data;
      return once(c, body, async () => {
        const state = await kiln.history({ target });
        if (state.releases.length === 0) return { status: 404, body: problem("NOT_FOUND", `${formatTarget(target)} has never been deployed; it has no images to collect.`, { status: 404 }) };
        const result = await kiln.collectGarbage({ target, keep: body.keep, ...(body.olderThanMs !== undefined ? { olderThanMs: body.olderThanMs } : {}), apply: body.apply === true });
        return {
          status: 200,
          body: {
            applied: result.applied,
            gcId: result.gcId ?? null,
            plan: result.plan,
            resumed: result.resumed,
            removed: result.removed,
            failed: result.failed.map(({ image, error }) => ({ image, error: { code: error.code, message: error.message } })),
          },
        };
      });
    },
  );

  // ---- plan, deploy, rollback ----------------------------------------------------------------

  openapi(
    createRoute({
      method: "post",
      path: "/v1/plan",
      summary: "What a deploy would do (a dry run: nothing changes)",
      security,
      request: {
        
        query: z.object({ environment: z.string().regex(namePattern).optional() }),
        body: { content: DEPLOY_CONTENT, required: true },
      },
      responses: { 200: json(z.object({ target: z.string(), noop: z.boolean(), changes: z.array(z.string()) }).openapi("Plan"), "The plan"), ...problems(...COMMON, 415, 422) },
    }),
    async (c) => {
      const input = await readDeployInput(c);
      authorize(c, "deploy", input.environment);
      const plan = await kiln.plan({ spec: input.loaded, environment: input.environment });
      return c.json({ target: formatTarget(plan.target), noop: plan.noop, changes: plan.changes });
    },
  );

  openapi(
    createRoute({
      method: "post",
      path: "/v1/deployments",
      summary: "Deploy a spec (JSON or YAML) or a registered service: 202 with the deployment's Location",
      security,
      request: {
        headers: IdempotencyHeader,
        query: z.object({ environment: z.string().regex(namePattern).optional() }),
        body: { content: DEPLOY_CONTENT, required: true },
      },
      responses: {
        202: { ...json(DeploymentSchema, "Accepted: it runs in the background"), headers: z.object({ Location: z.string() }) },
        ...problems(...COMMON, 409, 415, 422),
      },
    }),
    async (c) => {
      const input = await readDeployInput(c);
      const principal = authorize(c, "deploy", input.environment);
      return once(c, input.raw, async () => {
        const target = { service: input.loaded.validated.spec.service, environment: input.environment };
        return accept(c, await deployments.enqueue({ kind: "deploy", target, requestedBy: principal.name, request: { ...(input.service ? { service: input.service } : { spec: input.object }), environment: input.environment } }));
      });
    },
  );

  openapi(
    createRoute({
      method: "post",
      path: "/v1/targets/{target}/rollback",
      summary: "Roll back to the previous good release (or `release`): 202 with the deployment's Location",
      security,
      request: { params: TargetParam, headers: IdempotencyHeader, body: { content: { "application/json": { schema: RollbackBody } }, required: false } },
      responses: { 202: { ...json(DeploymentSchema, "Accepted"), headers: z.object({ Location: z.string() }) }, ...problems(...COMMON, 409, 415, 422) },
    }),
    async (c) => {
      const target = targetOf(c);
      const principal = authorize(c, "deploy", target.environment);
      const text = await c.req.text();
      let body: { release?: number } = {};
      if (text.trim() !== "") {
        const parsed = RollbackBody.safeParse(safeJson(text));
        if (!parsed.success) throw new HttpProblem(problem("INVALID_ARGUMENT", `The body is invalid: ${parsed.error.issues.map((issue) => `${issue.path.join(".") || "(body)"}: ${issue.message}`).join("; ")}.`));
        body = parsed.data;
      }
      return once(c, body, async () => {
        // Decided now rather than in the background: a target never deployed, or a release it never
        // had, is the caller's mistake (and must not leave an empty target behind).
        const state = await kiln.history({ target });
        if (state.releases.length === 0) return { status: 404, body: problem("NOT_FOUND", `${formatTarget(target)} has never been deployed; there is nothing to roll back to.`, { status: 404 }) };
        if (body.release !== undefined && !state.releases.some((release) => release.number === body.release)) {
          return { status: 404, body: problem("RELEASE_NOT_FOUND", `${formatTarget(target)} has no release ${body.release}; GET /v1/targets/${formatTarget(target)}/history lists them.`, { status: 404 }) };
        }
        return accept(c, await deployments.enqueue({ kind: "rollback", target, requestedBy: principal.name, request: { environment: target.environment, ...(body.release !== undefined ? { release: body.release } : {}) } }));
      });
    },
  );

  // ---- deployments ---------------------------------------------------------------------------

  openapi(
    createRoute({
      method: "get",
      path: "/v1/deployments",
      summary: "Recent deployments, newest first",
      security,
      request: { query: z.object({ target: z.string().regex(targetPattern).optional(), limit: z.coerce.number().int().min(1).max(200).optional() }) },
      responses: { 200: json(z.object({ deployments: z.array(DeploymentSchema) }), "Deployments"), ...problems(...COMMON) },
    }),
    async (c) => {
      const principal = authorize(c, "read");
      const query = c.req.query();
      const target = query.target ? parseTarget(query.target) : undefined;
      const limit = query.limit ? Number(query.limit) : 50;
      const list = (await deployments.list({ ...(target ? { target } : {}), limit })).filter((record) => mayTouch(principal, record.target.environment));
      return c.json({ deployments: list.map(present) });
    },
  );

  openapi(
    createRoute({
      method: "get",
      path: "/v1/deployments/{id}",
      summary: "One deployment with its steps and state",
      security,
      request: { params: IdParam },
      responses: { 200: json(DeploymentDetailSchema, "The deployment"), ...problems(...COMMON) },
    }),
    async (c) => {
      const record = await visibleDeployment(c);
      const events = await deployments.readEvents(record.id, 0, 1000);
      return c.json({ ...present(record), steps: events.map(({ seq, event }) => ({ seq, time: event.time, type: event.type, summary: summarizeEvent(event as unknown as { type: string } & Record<string, unknown>) })) });
    },
  );

  openapi(
    createRoute({
      method: "get",
      path: "/v1/deployments/{id}/events",
      summary: "The deployment's events: Server-Sent Events (resumable with Last-Event-ID), or NDJSON with Accept: application/x-ndjson",
      security,
      request: {
        params: IdParam,
        headers: z.object({ "last-event-id": z.string().regex(/^\d+$/).optional().openapi({ param: { name: "last-event-id", in: "header" } }) }),
        query: z.object({ after: z.coerce.number().int().min(0).optional().openapi({ description: "Start after this event number (as Last-Event-ID)." }) }),
      },
      responses: {
        200: {
          content: {
            "text/event-stream": { schema: SseEventSchema },
            "application/x-ndjson": { schema: z.string().openapi({ description: "One JSON object a line: each event with its `id`, then `deployment.finished`" }) },
          },
          description: "Events until the deployment ends; each has `id` (its number) and the event as JSON `data`",
        },
        ...problems(...COMMON),
      },
    }),
    async (c) => {
      const record = await visibleDeployment(c);
      const after = Number(c.req.header("last-event-id") ?? c.req.query("after") ?? 0) || 0;
      const ndjson = (c.req.header("accept") ?? "").includes("application/x-ndjson");
      const follow = async (write: (seq: number, event: unknown) => Promise<void>, aborted: () => boolean, sleep: (ms: number) => Promise<void>) => {
        let seq = after;
        for (;;) {
          const batch = await deployments.readEvents(record.id, seq, 500);
          for (const stored of batch) {
            await write(stored.seq, stored.event);
            seq = stored.seq;
          }
          if (batch.length > 0) continue;
          const current = await deployments.get(record.id);
          if (!current || isFinalDeploymentState(current.state)) {
            // Events written just before the end.
            const last = await deployments.readEvents(record.id, seq, 500);
            for (const stored of last) await write(stored.seq, stored.event);
            return current;
          }
          if (aborted()) return undefined;
          await sleep(options.streamPollMs);
        }
      };
      if (ndjson) {
        c.header("content-type", "application/x-ndjson");
        return stream(c, async (out) => {
          const final = await follow(
            async (seq, event) => void (await out.write(`${JSON.stringify({ id: seq, ...(event as object) })}\n`)),
            () => out.aborted,
            (ms) => out.sleep(ms).then(() => undefined),
          );
          if (final) await out.write(`${JSON.stringify({ type: "deployment.finished", deployment: present(final) })}\n`);
        });
      }
      return streamSSE(c, async (out) => {
        const final = await follow(
          (seq, event) => out.writeSSE({ id: String(seq), event: (event as { type: string }).type, data: JSON.stringify(event) }),
          () => out.aborted,
          (ms) => out.sleep(ms).then(() => undefined),
        );
        if (final) await out.writeSSE({ event: "deployment.finished", data: JSON.stringify(present(final)) });
      });
    },
  );

  openapi(
    createRoute({
      method: "post",
      path: "/v1/deployments/{id}/cancel",
      summary: "Cancel a deployment (as Ctrl-C in the CLI: a running rollout stops and restores the previous release)",
      security,
      request: { params: IdParam, headers: IdempotencyHeader },
      responses: { 202: json(DeploymentSchema, "Cancel requested (or the deployment had ended)"), ...problems(...COMMON, 409) },
    }),
    async (c) => {
      const record = await visibleDeployment(c);
      authorize(c, "deploy", record.target.environment);
      return once(c, null, async () => {
        if (isFinalDeploymentState(record.state)) {
          return { status: 409, body: problem("CONFLICT", `Deployment ${record.id} already ended (${record.state}); there is nothing to cancel.`, { status: 409, details: { deployment: present(record) } }) };
        }
        const updated = await deployments.requestCancel(record.id);
        return { status: 202, body: present(updated ?? record) };
      });
    },
  );

  app.get("/metrics", async (c) => {
    authorize(c, "read");
    return c.body(await metrics.registry.metrics(), 200, { "content-type": metrics.registry.contentType });
  });

  app.doc31("/v1/openapi.json", {
    openapi: "3.1.0",
    info: { title: "Kiln", version: "1", description: "Kiln over HTTP: the same functions as the kiln CLI. Errors are application/problem+json with a stable `code`." },
    security,
  });

  // ---- helpers -------------------------------------------------------------------------------

  async function accept(c: Context<Env>, outcome: EnqueueOutcome): Promise<IdempotentResponse> {
    if (outcome.kind === "conflict") {
      const active = outcome.active;
      const lock = await kiln.lockStatus({ target: active.target }).catch(() => undefined);
      return {
        status: 409,
        body: problem("TARGET_LOCKED", `${formatTarget(active.target)} has a ${active.kind} ${active.state} (${active.id}, asked by ${active.requestedBy} at ${active.createdAt}); wait for it, or cancel it.`, {
          status: 409,
          details: { deployment: present(active), ...(lock ? { lock } : {}) },
        }),
      };
    }
    options.wake();
    const body = present(outcome.record);
    return { status: 202, body, headers: { location: body.links.self } };
  }

  /**
   * A posted spec checked as a file would be (every provider's sections and rules), with its
   * files (build context, Dockerfile, provision steps) confined to the spec root: a caller may not
   * build from, or probe for, files elsewhere on the server's host.
   * @throws KilnError SPEC_INVALID naming each field
   */
  function confined(loaded: LoadedSpec): Promise<LoadedSpec> {
    return kiln.check({ spec: loaded, references: false, root: options.specRoot });
  }

  async function visibleDeployment(c: Context<Env>): Promise<DeploymentRecord> {
    authorize(c, "read");
    const record = await deployments.get(c.req.param("id") ?? "");
    if (!record || !mayTouch(c.get("principal"), record.target.environment)) {
      throw new HttpProblem(problem("NOT_FOUND", `No deployment ${c.req.param("id") ?? ""} (or not one this token may see).`, { status: 404 }));
    }
    return record;
  }

  /** Reads a deploy or plan body: JSON `{ spec | service, environment }`, or a YAML spec. */
  async function readDeployInput(c: Context<Env>): Promise<{ loaded: LoadedSpec; object?: unknown; service?: string; environment: string; raw: unknown }> {
    const type = (c.req.header("content-type") ?? "").split(";")[0]!.trim().toLowerCase();
    const queryEnvironment = c.req.query("environment");
    if (type === "application/yaml" || type === "text/yaml" || type === "application/x-yaml") {
      const text = await c.req.text();
      const loaded = await confined(specFromYaml(text, { file: "request body", baseDir: options.specRoot }));
      const object = parseYaml(text, { maxAliasCount: 1000 }) as unknown;
      return { loaded, object, environment: environmentOf(queryEnvironment, loaded.validated.environments), raw: text };
    }
    if (type !== "application/json") {
      throw new HttpProblem(problem("UNSUPPORTED_MEDIA_TYPE", "Send the spec as application/json ({ spec, environment }) or application/yaml.", { status: 415 }));
    }
    const body = DeployBody.safeParse(safeJson(await c.req.text()));
    if (!body.success) {
      throw new HttpProblem(problem("INVALID_ARGUMENT", `The body is invalid: ${body.error.issues.map((issue) => `${issue.path.join(".") || "(body)"}: ${issue.message}`).join("; ")}.`));
    }
    const { spec, service, environment } = body.data;
    if ((spec === undefined) === (service === undefined)) throw new HttpProblem(problem("INVALID_ARGUMENT", "Give either spec (a kiln.yaml as JSON) or service (a registered service), not both or neither."));
    let loaded: LoadedSpec;
    if (service !== undefined) {
      const file = options.services[service];
      if (!file) throw new HttpProblem(problem("NOT_FOUND", `No registered service "${service}"; registered: ${Object.keys(options.services).join(", ") || "none"}.`, { status: 404 }));
      const { loadSpec } = await import("@kilnjs/core");
      loaded = await kiln.check({ spec: await loadSpec(file), references: false });
    } else {
      loaded = await confined(specFromObject(spec, options.specRoot));
    }
    return { loaded, ...(spec !== undefined ? { object: spec } : {}), ...(service !== undefined ? { service } : {}), environment: environmentOf(environment ?? queryEnvironment, loaded.validated.environments), raw: body.data };
  }

  return app;
}

/** A request-validation message in words rather than a regular expression, for the fields users get wrong. */
function friendlier(field: string, message: string): string {
  if (!message.includes("pattern")) return message;
  if (field === "target") return "write the target as service@environment: lowercase letters, digits and dashes, each at most 40 characters";
  if (field === "id") return "a deployment id is dep_ and 32 hexadecimal digits, as in a Location header";
  if (field === "environment") return "an environment name: lowercase letters, digits and dashes, at most 40 characters";
  return message;
}

/** A problem to answer with, thrown from inside a handler. */
class HttpProblem extends Error {
  constructor(readonly problem: Problem) {
    super(problem.detail);
  }
}

function send(found: Problem): Response {
  return new Response(JSON.stringify(found), { status: found.status, headers: { "content-type": PROBLEM } });
}

function targetOf(c: Context): Target {
  return parseTarget(c.req.param("target") ?? "");
}

function environmentOf(name: string | undefined, environments: Readonly<Record<string, unknown>>): string {
  const environment = name ?? "default";
  if (environment !== "default" && !(environment in environments)) {
    throw new KilnError("ENVIRONMENT_NOT_FOUND", `The spec defines no environment "${environment}"; it defines ${Object.keys(environments).join(", ") || "none"}.`);
  }
  return environment;
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new HttpProblem(problem("INVALID_ARGUMENT", "The body is not valid JSON."));
  }
}

/** A deployment as the API shows it (never the spec: it may hold values nobody asked to see again). */
export function present(record: DeploymentRecord) {
  return {
    id: record.id,
    kind: record.kind,
    target: formatTarget(record.target),
    state: record.state,
    requestedBy: record.requestedBy,
    createdAt: record.createdAt,
    ...(record.startedAt ? { startedAt: record.startedAt } : {}),
    ...(record.finishedAt ? { finishedAt: record.finishedAt } : {}),
    cancelRequested: record.cancelRequested,
    attempts: record.attempts,
    ...(record.claimedBy && !isFinalDeploymentState(record.state) ? { claimedBy: record.claimedBy } : {}),
    ...(record.result?.release !== undefined ? { release: record.result.release } : {}),
    ...(record.result?.rolloutId ? { rolloutId: record.result.rolloutId } : {}),
    ...(record.error ? { error: record.error } : {}),
    links: { self: `/v1/deployments/${record.id}`, events: `/v1/deployments/${record.id}/events` },
  };
}

function summarizeRelease(release: { number: number; status: string; createdAt: string; fingerprint: string; image: { id: string }; count: number; provider: string }) {
  return { number: release.number, status: release.status, createdAt: release.createdAt, fingerprint: release.fingerprint, imageId: release.image.id, count: release.count, provider: release.provider };
}

/** One line about an event, for a deployment's steps. */
function summarizeEvent(event: { type: string } & Record<string, unknown>): string {
  const instance = (event.instance as { name?: string } | undefined)?.name;
  const parts = [event.type.replace(/\./g, " ")];
  if (instance) parts.push(instance);
  if (typeof event.release === "number") parts.push(`release ${event.release}`);
  if (typeof event.message === "string") parts.push(event.message);
  return parts.join(": ");
}

export type { ProblemCode };
