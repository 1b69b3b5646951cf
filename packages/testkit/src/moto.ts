/** How long {@link motoAvailable} waits for moto to answer, in milliseconds. */
const PING_TIMEOUT_MS = 2_000;

/** How long {@link resetMoto} waits for moto to answer, in milliseconds. */
const RESET_TIMEOUT_MS = 10_000;

/**
 * The endpoint tests use when `AWS_ENDPOINT_URL_EC2` is unset: where `scripts/moto.sh start` runs
 * its own moto server (port 5055 on 127.0.0.1, unless `KILN_MOTO_PORT` said otherwise, in which
 * case `AWS_ENDPOINT_URL_EC2` must be exported).
 */
export const DEFAULT_MOTO_ENDPOINT = "http://127.0.0.1:5055";

/**
 * An unsigned request with the shape of a SigV4 `Authorization` header: moto checks no signature,
 * but routes a query-protocol request by the service named in the credential scope (without it,
 * `POST /` goes to S3).
 */
const FAKE_EC2_AUTHORIZATION = "AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=0";

/**
 * The moto endpoint tests use: `AWS_ENDPOINT_URL_EC2` (which `scripts/moto.sh start|env` and
 * `npm test` export), else {@link DEFAULT_MOTO_ENDPOINT}. No trailing slash.
 */
export function motoEndpoint(): string {
  const configured = process.env.AWS_ENDPOINT_URL_EC2;
  return (configured ? configured : DEFAULT_MOTO_ENDPOINT).replace(/\/+$/, "");
}

/**
 * Whether a moto server answers at `endpoint`: an EC2 `DescribeRegions` returns a
 * `DescribeRegionsResponse`, and `GET /moto-api/config` (moto's own API, which {@link resetMoto}
 * needs) answers 2xx (moto 5.2.1 says 201). Never throws; gives up after 2 seconds in all. Uses `fetch` only (no SDK), so
 * it is cheap to call at the top of a test file.
 * @param endpoint - an `http://host:port` URL; defaults to {@link motoEndpoint}()
 * @returns true when both answered
 */
export async function motoAvailable(endpoint: string = motoEndpoint()): Promise<boolean> {
  const base = endpoint.replace(/\/+$/, "");
  const signal = AbortSignal.timeout(PING_TIMEOUT_MS);
  try {
    const regions = await fetch(`${base}/`, {
      method: "POST",
      headers: { authorization: FAKE_EC2_AUTHORIZATION, "content-type": "application/x-www-form-urlencoded" },
      body: "Action=DescribeRegions&Version=2016-11-15",
      signal,
    });
    const body = await regions.text();
    if (!regions.ok || !body.includes("<DescribeRegionsResponse")) return false;
    const config = await fetch(`${base}/moto-api/config`, { signal });
    await config.arrayBuffer();
    return config.ok;
  } catch {
    return false;
  }
}

/**
 * Decides whether a test file that needs moto (the EC2 emulator) runs. When moto answers at
 * {@link motoEndpoint}() it returns true. When it does not: under CI (`CI=true`) it throws, because a
 * skipped integration suite must not pass silently there; elsewhere it prints a loud notice to
 * stderr and returns false.
 *
 * @example
 * ```ts
 * const moto = await requireMoto();
 * describe.skipIf(!moto)("aws provider", () => { ... });
 * ```
 * @throws Error under `CI=true` when moto does not answer
 */
export async function requireMoto(): Promise<boolean> {
  const endpoint = motoEndpoint();
  if (await motoAvailable(endpoint)) return true;
  if (process.env.CI === "true") {
    throw new Error(
      `A moto server (EC2 emulator) is required under CI, but none answered at ${endpoint}. Start one first: eval "$(bash scripts/moto.sh start | tail -1)".`,
    );
  }
  process.stderr.write(`\n*** SKIPPED: no moto server (EC2 emulator) answered at ${endpoint}: npm test starts one when run as root or with KILN_TEST_SETUP=start; or: npm run moto:start (see "What npm test sets up" in Kiln's docs/development.md) ***\n\n`);
  return false;
}

/**
 * Empties moto: every resource of every service, account and region goes (`POST /moto-api/reset`),
 * and moto's built-in AMIs, default VPCs and subnets come back. Call it in a test file's `beforeAll`
 * so the file starts from a clean cloud. It resets the whole server, so files sharing one moto must
 * not run at the same time (the `integ` project runs one file at a time).
 * @param endpoint - the moto endpoint; defaults to {@link motoEndpoint}()
 * @throws Error when moto does not answer 2xx within 10 seconds
 */
export async function resetMoto(endpoint: string = motoEndpoint()): Promise<void> {
  const url = `${endpoint.replace(/\/+$/, "")}/moto-api/reset`;
  let response: Response;
  try {
    response = await fetch(url, { method: "POST", signal: AbortSignal.timeout(RESET_TIMEOUT_MS) });
  } catch (error) {
    throw new Error(`Could not reset moto at ${url}: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
  }
  const body = await response.text();
  if (!response.ok) throw new Error(`Could not reset moto at ${url}: HTTP ${response.status} ${body.slice(0, 200)}`);
}
