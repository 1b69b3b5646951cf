// The status page (public/index.html) in headless Chromium, driven with playwright-core against a
// server in this process on the memory provider: a wrong token is refused, the token is entered
// once, a deploy started through the API shows up running with its events arriving live, then
// succeeded, with the target's release and instances and its history; the page runs under a strict
// Content-Security-Policy (hashes of its inline style and script, connect-src 'self'), throws no
// error, sends the token only in the Authorization header and asks nothing of any other origin.
//
// Needs a Chromium: KILN_CHROMIUM, else Debian's /usr/bin/chromium (`bash scripts/chromium.sh path`
// installs it). Without one the suite is skipped with a loud notice, except under CI=true, where it fails.
import { constants } from "node:fs";
import { access, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { chromium, type Browser, type BrowserContext, type Page, type Request } from "playwright-core";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "@kilnjs/core";
import { createMemoryProvider } from "@kilnjs/testkit";
import { hashToken, type TokenConfig } from "./auth.js";
import { createKilnServer, type KilnServer } from "./server.js";

/**
 * The Chromium to drive: KILN_CHROMIUM, else /usr/bin/chromium, when executable. Without one: under
 * CI=true it throws (a browser suite must not pass in CI by being skipped); elsewhere it prints a
 * loud notice and returns undefined, and the suite is skipped. Modelled on testkit's requireDockerEngine.
 */
async function requireChromium(): Promise<string | undefined> {
  const candidates = [process.env.KILN_CHROMIUM, "/usr/bin/chromium"].filter((candidate): candidate is string => Boolean(candidate));
  for (const candidate of candidates) {
    try {
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {
      // try the next
    }
  }
  if (process.env.CI === "true") {
    throw new Error(`Chromium is required under CI, but none is executable at ${candidates.join(" or ")}. Install it first: eval "$(bash scripts/chromium.sh path | tail -1)".`);
  }
  process.stderr.write(`\n*** SKIPPED: no Chromium at ${candidates.join(" or ")}: npm test installs Debian's when run as root; or: export KILN_CHROMIUM=<a Chromium> (see "What npm test sets up" in docs/development.md) ***\n\n`);
  return undefined;
}

const executablePath = await requireChromium();

const TOKEN = "t-status-page-reader-and-deployer";
const tokens: TokenConfig[] = [{ name: "status-page", sha256: hashToken(TOKEN), scopes: ["deploy"], environments: ["*"] }];
/**
 * How long the rollout holds with one of its two instances up: longer than the page's 2 s refresh,
 * so the page finds it running. (A canary step: a rolling first deploy launches every instance in
 * one batch, as nothing old is there to replace, so `pauseBetweenBatchesMs` would never apply.)
 */
const HOLD_MS = 4000;
/** Every wait on the page; a test as a whole is bounded by vitest (below). */
const WAIT_MS = 20_000;

describe.skipIf(!executablePath)("the status page in headless Chromium (memory provider)", () => {
  let dir: string;
  let server: KilnServer;
  let base: string;
  let browser: Browser;
  let context: BrowserContext | undefined;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "kiln-status-page-"));
    await writeFile(path.join(dir, "Dockerfile"), "FROM scratch\n");
    server = createKilnServer({ providers: { memory: createMemoryProvider() }, tokens, dataDir: path.join(dir, ".kiln"), specRoot: dir, logger: silentLogger, pollIntervalMs: 50 });
    base = (await server.listen(0, "127.0.0.1")).url;
    browser = await chromium.launch({ executablePath, args: ["--no-sandbox"], timeout: 30_000 });
  }, 60_000);
  afterEach(async () => {
    await context?.close();
    context = undefined;
  });
  afterAll(async () => {
    await browser?.close();
    await server?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** A fresh browser context (empty localStorage) and page, recording requests, page errors and CSP reports. */
  async function open() {
    context = await browser.newContext();
    const page = await context.newPage();
    page.setDefaultTimeout(WAIT_MS);
    const requests: Request[] = [];
    const errors: string[] = [];
    page.on("request", (request) => requests.push(request));
    page.on("pageerror", (error) => errors.push(`page error: ${error.message}`));
    page.on("console", (message) => {
      if (message.type() === "error" && /Content Security Policy|Refused to/i.test(message.text())) errors.push(`CSP: ${message.text()}`);
    });
    await expectStrictCsp();
    await page.goto(`${base}/`);
    return { page, requests, errors };
  }

  /** Posts a deployment of `spec` to prod through the API; returns its id. */
  async function postDeployment(spec: unknown): Promise<string> {
    const accepted = await fetch(`${base}/v1/deployments`, {
      method: "POST",
      headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify({ spec, environment: "prod" }),
      signal: AbortSignal.timeout(10_000),
    });
    expect(accepted.status).toBe(202);
    return ((await accepted.json()) as { id: string }).id;
  }

  /** The server's own policy for the page must be strict: nothing but its inline style and script (by hash) and fetches to itself. */
  async function expectStrictCsp() {
    const answer = await fetch(`${base}/`);
    const csp = answer.headers.get("content-security-policy") ?? "";
    expect(csp).toContain("default-src 'none'");
    expect(csp).toMatch(/script-src 'sha256-[A-Za-z0-9+/=]+'/);
    expect(csp).toMatch(/style-src 'sha256-[A-Za-z0-9+/=]+'/);
    expect(csp).toContain("connect-src 'self'");
    await answer.arrayBuffer();
  }

  async function signIn(page: Page, token: string) {
    await page.getByTestId("login").waitFor({ state: "visible" });
    await page.getByLabel("API token", { exact: true }).fill(token);
    await page.getByTestId("token-submit").click();
  }

  /** Requests went only to the server (or were data: URLs), none with the token in its URL, and every API call carried it as a bearer token. */
  async function expectOnlyOurServer(requests: Request[]) {
    expect(requests.length).toBeGreaterThan(0);
    const foreign = requests.map((request) => request.url()).filter((url) => !url.startsWith(`${base}/`) && !url.startsWith("data:"));
    expect(foreign).toEqual([]);
    expect(requests.map((request) => request.url()).filter((url) => url.includes(TOKEN))).toEqual([]);
    for (const request of requests.filter((candidate) => candidate.url().startsWith(`${base}/v1/`))) {
      const authorization = (await request.allHeaders()).authorization;
      expect(authorization === `Bearer ${TOKEN}` || authorization === "Bearer wrong-token", `${request.url()} carries a bearer token`).toBe(true);
    }
  }

  it("refuses a wrong token with the server's reason and keeps nothing", async () => {
    const { page, requests, errors } = await open();
    await signIn(page, "wrong-token");
    const error = page.getByTestId("token-error");
    await error.filter({ hasText: "401" }).waitFor({ state: "visible" });
    expect(await error.textContent()).toMatch(/refused this token \(401 UNAUTHENTICATED\): The token is not known/);
    expect(await page.getByTestId("dashboard").isHidden()).toBe(true);
    expect(await page.evaluate<number>("window.localStorage.length")).toBe(0);
    await expectOnlyOurServer(requests);
    expect(errors).toEqual([]);
  }, 60_000);

  it("shows a deploy started through the API running with live events, then succeeded with its release, instances and history", async () => {
    const { page, requests, errors } = await open();
    await signIn(page, TOKEN);
    await page.getByTestId("dashboard").waitFor({ state: "visible" });
    await page.getByTestId("targets-empty").waitFor({ state: "visible" });

    // Entered once: a reload signs in with the kept token.
    await page.reload();
    await page.getByTestId("dashboard").waitFor({ state: "visible" });
    expect(await page.getByTestId("login").isHidden()).toBe(true);

    const spec = {
      service: "shop",
      provider: "memory",
      instances: { count: 2, ports: [{ name: "http", port: 8080 }] },
      health: { intervalMs: 100, healthyThreshold: 1 },
      rollout: { strategy: "canary", steps: [{ instances: 1, holdMs: HOLD_MS }] },
      environments: { prod: {} },
    };
    const id = await postDeployment(spec);

    // Running, with events arriving while it runs: the canary hold is in the log while the deployment still runs.
    const row = page.locator(`[data-testid="deployment-row"][data-deployment-id="${id}"]`);
    await page.locator(`[data-testid="active-deployment"][data-deployment-id="${id}"][data-state="running"]`).waitFor();
    await page.getByTestId("event-stream-deployment").filter({ hasText: id }).waitFor();
    const log = page.getByTestId("event-log");
    await log.locator('[data-type="rollout.started"]').waitFor();
    await log.locator('[data-type="instance.healthy"]').first().waitFor();
    await log.locator('[data-type="rollout.holding"]').waitFor();
    expect(await row.getAttribute("data-state")).toBe("running");
    expect(await log.locator('[data-type="rollout.succeeded"]').count()).toBe(0);
    expect(await log.locator('[data-type="rollout.holding"]').textContent()).toMatch(/canary-step for 4\.0 s, 1 of 2 healthy/);
    await page.locator('[data-testid="target-row"][data-target="shop@prod"]').waitFor();

    // Then it finishes: succeeded, release 1 serving on 2 instances, in the history too.
    await page.locator(`[data-testid="deployment-row"][data-deployment-id="${id}"][data-state="succeeded"]`).waitFor({ timeout: HOLD_MS + WAIT_MS });
    await log.locator('[data-type="rollout.succeeded"]').waitFor();
    await log.locator('[data-type="deployment.finished"]').filter({ hasText: "succeeded, release 1" }).waitFor();
    expect(await row.getByTestId("deployment-result").textContent()).toBe("release 1");
    await page.getByTestId("active-empty").waitFor({ state: "visible" });

    const target = page.locator('[data-testid="target-row"][data-target="shop@prod"]');
    await target.getByTestId("target-release").filter({ hasText: /^1$/ }).waitFor();
    await target.getByTestId("target-instances").filter({ hasText: /^2$/ }).waitFor();
    await target.getByTestId("target-health").filter({ hasText: "all running" }).waitFor();
    expect(await target.getByTestId("target-drift-summary").textContent()).toBe("none");

    const detail = page.getByTestId("target-detail");
    expect(await detail.getByTestId("target-detail-name").textContent()).toBe("shop@prod");
    await detail.getByTestId("detail-release").filter({ hasText: "1 (succeeded), 2 instances" }).waitFor();
    await detail.locator('[data-testid="instance-row"][data-state="running"]').nth(1).waitFor();
    expect(await detail.getByTestId("instance-row").count()).toBe(2);
    expect(await detail.getByTestId("instance-release").allTextContents()).toEqual(["1", "1"]);
    expect(await detail.getByTestId("instance-health").allTextContents()).toEqual(["healthy", "healthy"]);
    await detail.getByTestId("drift-none").waitFor();
    await detail.locator('[data-testid="release-row"][data-release="1"][data-status="succeeded"]').getByTestId("release-current").waitFor();
    await detail.locator('[data-testid="rollout-row"][data-status="succeeded"]').waitFor();

    await expectOnlyOurServer(requests);
    expect(errors).toEqual([]);

    // "Forget token" signs out and removes it from the browser.
    await page.getByTestId("forget-token").click();
    await page.getByTestId("login").waitFor({ state: "visible" });
    expect(await page.getByTestId("token-error").textContent()).toContain("Token forgotten");
    expect(await page.getByTestId("dashboard").isHidden()).toBe(true);
    expect(await page.evaluate<number>("window.localStorage.length")).toBe(0);
    await page.reload();
    await page.getByTestId("login").waitFor({ state: "visible" });
    expect(errors).toEqual([]);
  }, 90_000);

  it("resumes a broken event stream with Last-Event-ID, losing and repeating no event", async () => {
    const spec = { service: "cart", provider: "memory", instances: { count: 2 }, health: { intervalMs: 100, healthyThreshold: 1 }, environments: { prod: {} } };
    const id = await postDeployment(spec);
    // The whole stream, read to its end (so the deployment has finished): its first three events are what the page gets before the break.
    const full = await (await fetch(`${base}/v1/deployments/${id}/events`, { headers: { authorization: `Bearer ${TOKEN}` }, signal: AbortSignal.timeout(WAIT_MS) })).text();
    const blocks = full.split("\n\n").filter((block) => /^id: \d+$/m.test(block));
    expect(blocks.length).toBeGreaterThan(5);

    const { page, requests, errors } = await open();
    const resumedFrom: Array<string | undefined> = [];
    await page.route(`${base}/v1/deployments/${id}/events`, async (route) => {
      const lastEventId = await route.request().headerValue("last-event-id");
      resumedFrom.push(lastEventId ?? undefined);
      // The first connection breaks after three events; later ones reach the server.
      if (resumedFrom.length === 1) await route.fulfill({ status: 200, contentType: "text/event-stream", body: `${blocks.slice(0, 3).join("\n\n")}\n\n` });
      else await route.continue();
    });
    await signIn(page, TOKEN);
    await page.locator(`[data-testid="deployment-row"][data-deployment-id="${id}"]`).getByTestId("deployment-follow").click();
    const log = page.getByTestId("event-log");
    await log.locator('[data-type="deployment.finished"]').filter({ hasText: "succeeded" }).waitFor({ timeout: WAIT_MS });
    expect(resumedFrom).toEqual([undefined, "3"]);
    const items = await log.locator('[data-testid="event"][data-seq]:not([data-seq=""])').all();
    const seqs = await Promise.all(items.map(async (item) => Number(await item.getAttribute("data-seq"))));
    expect(seqs).toEqual(blocks.map((_, index) => index + 1));
    expect(await page.getByTestId("event-stream-status").textContent()).toBe("Finished: succeeded.");
    await expectOnlyOurServer(requests);
    expect(errors).toEqual([]);
  }, 60_000);
});
