import { defineProvider, throwIfAborted, type Provider } from "@kilnjs/core";
import { EngineClient, engineError, isConnectionError, unavailableError } from "./engine.js";
import { createImageOperations } from "./images.js";
import { createInstanceOperations } from "./instances.js";
import { resolveOptions, type DockerProviderOptions } from "./options.js";
import { createNetworkEnsurer } from "./proxy/network.js";
import { PROXY_SLOTS } from "./proxy/config.js";
import { createTrafficCapability } from "./proxy/traffic.js";
import { dockerProviderSpec } from "./spec.js";

/** The Docker provider's name, equal to its package suffix. */
export const PROVIDER_NAME = "docker";

/** How long {@link Provider.ping} waits for the engine before it gives up, in milliseconds. */
const PING_TIMEOUT_MS = 5_000;

/**
 * Creates the Docker provider: it builds images from Dockerfiles on a Docker engine and runs
 * instances as containers, every one labelled with Kiln's {@link @kilnjs/core#LABELS}.
 *
 * Creating a provider does no I/O and does not load dockerode. `ping`, `images.find`,
 * `images.list` and `instances.list` (all a deploy with nothing to do needs) are plain GETs over
 * `node:http` and never load it; the first call that changes the engine (a build, a launch, a
 * terminate, an exec, the front proxy) does. The provider never pulls images: a base image must
 * already be on the engine.
 *
 * Its `traffic` capability runs a front proxy per target (HAProxy in the container
 * `kiln-proxy.<service>.<environment>` on the network `kiln.<service>.<environment>`, both found by
 * their labels, publishing the spec's `traffic.proxy` address), moves instances in and out of it
 * through HAProxy's runtime API, lists it for `kiln status` and retires it when a release without
 * a proxy serves; see docs/traffic.md.
 *
 * @param options - see {@link DockerProviderOptions}; every field is optional
 * @returns a {@link Provider} named {@link PROVIDER_NAME}
 * @throws KilnError INVALID_ARGUMENT when `host` (or `DOCKER_HOST`) is not a `unix://` or `tcp://`
 *   address, or `network` is not a valid network name
 *
 * Its operations throw `PROVIDER_UNAVAILABLE` when the engine does not answer (retryable, the
 * message says where it looked and how to start one), `BUILD_FAILED` with the build's own message,
 * `BUILD_CONTEXT_INVALID` when a context file cannot be read, `LAUNCH_FAILED` and `TERMINATE_FAILED`
 * with the engine's message, `ABORTED` when `ctx.signal` fires, and `IMAGE_IN_USE` when `images.remove` meets an image a
 * container still uses; `CAPABILITY_MISSING` for a file secret the engine cannot mount (it runs on
 * another host) and for a build with build secrets when no docker CLI here can run BuildKit.
 *
 * Secrets: instances receive them as environment variables, or as files in a read-only folder
 * bind-mounted from a tmpfs of the engine's host (`secretsDir`); builds with build secrets run the
 * docker CLI (`dockerCli`) with BuildKit. See the package README's Secrets section.
 *
 * @example
 * ```ts
 * import { createDockerProvider } from "@kilnjs/provider-docker";
 * const provider = createDockerProvider({ host: "unix:///tmp/kiln-engine/docker.sock" });
 * await provider.ping({ signal: AbortSignal.timeout(5000), logger: console, emit() {} });
 * ```
 */
export const createDockerProvider = defineProvider((options?: DockerProviderOptions): Provider => {
  const resolved = resolveOptions(options);
  const client = new EngineClient(resolved.address);
  const networks = createNetworkEnsurer();
  return {
    name: PROVIDER_NAME,
    spec: dockerProviderSpec,
    images: createImageOperations(client, resolved),
    instances: createInstanceOperations(client, resolved, networks),
    traffic: createTrafficCapability(client, resolved, networks),
    // The proxy's server slots: a plan that would need more behind it is refused before it starts.
    limits: { maxInstancesBehindProxy: PROXY_SLOTS },
    async ping(ctx) {
      throwIfAborted(ctx.signal);
      const timeout = AbortSignal.timeout(PING_TIMEOUT_MS);
      try {
        await client.reads.ping(AbortSignal.any([ctx.signal, timeout]));
      } catch (error) {
        if (timeout.aborted && !ctx.signal.aborted) {
          throw unavailableError(resolved.address, new Error(`no answer within ${PING_TIMEOUT_MS} ms`, { cause: error }));
        }
        if (isConnectionError(error)) throw unavailableError(resolved.address, error);
        throw engineError(error, resolved.address, "PROVIDER_UNAVAILABLE", `The Docker engine at ${resolved.address.url} did not answer its ping`);
      }
    },
    close() {
      client.reset();
      return Promise.resolve();
    },
  };
});
