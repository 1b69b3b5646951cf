import path from "node:path";
import { KilnError } from "@kilnjs/core";
import { DEFAULT_SECRETS_DIR } from "./secrets.js";

/** Options of {@link createDockerProvider}. Every field is optional. */
export interface DockerProviderOptions {
  /**
   * The engine to talk to, written like `DOCKER_HOST`: `unix:///path/to/docker.sock` or
   * `tcp://127.0.0.1:2375` (plain HTTP; TLS is not supported).
   * @defaultValue the `DOCKER_HOST` environment variable when set, else `unix:///var/run/docker.sock`
   */
  readonly host?: string;
  /**
   * The host address container ports are published on, and the host of every
   * {@link @kilnjs/core#Endpoint} the provider reports. `0.0.0.0` publishes on every interface
   * (endpoints then say `127.0.0.1`).
   * @defaultValue `"127.0.0.1"`
   */
  readonly publishHost?: string;
  /**
   * A Docker network to attach every container to. When it does not exist, the provider creates it
   * (a bridge network labelled `dev.kiln.managed=true`) on the first launch.
   * @defaultValue none: containers use the engine's default bridge network
   */
  readonly network?: string;
  /**
   * The front proxy's image (HAProxy 2.6 or later, laid out like the official image: `haproxy` on
   * `PATH`, configuration in /usr/local/etc/haproxy), for the traffic capability. The provider never
   * pulls it. When neither this option nor `KILN_DOCKER_PROXY_IMAGE` is set and the official image
   * is not on the engine, `kiln-local/haproxy:2.6` (made by scripts/proxy-image.sh on machines with
   * no registry) is used when it is there.
   * @defaultValue the `KILN_DOCKER_PROXY_IMAGE` environment variable when set, else `haproxy:2.6`
   */
  readonly proxyImage?: string;
  /**
   * The docker CLI that builds images with build secrets (`image.dockerfile.secrets`): BuildKit
   * serves them to `RUN --mount=type=secret` steps only through a CLI session, which dockerode
   * cannot open. It must support BuildKit's `--secret`: a CLI with the buildx plugin, or a CLI
   * of Docker 18.09 to 22.x (such as Debian's docker.io 20.10, /usr/bin/docker) with
   * `DOCKER_BUILDKIT=1`. Builds without secrets never use it.
   * @defaultValue the `KILN_DOCKER_CLI` environment variable when set, else `docker` on `PATH`
   */
  readonly dockerCli?: string;
  /**
   * Where file secrets (`secrets.<name>.to.file`) are kept for the containers that mount them:
   * an absolute folder on a memory-backed filesystem (tmpfs) of the machine that runs Kiln, which
   * must also be the engine's host. Kiln makes it (mode 0700) and refuses one that is not on a
   * tmpfs or is open to other users.
   * @defaultValue `/dev/shm/kiln-secrets`
   */
  readonly secretsDir?: string;
}

/** The official HAProxy image the front proxy runs by default. */
export const DEFAULT_PROXY_IMAGE = "haproxy:2.6";
/** The proxy image scripts/proxy-image.sh builds from Debian's haproxy where no registry can be reached. */
export const LOCAL_PROXY_IMAGE = "kiln-local/haproxy:2.6";

/** Where the engine listens, in the form docker-modem takes. */
export type EngineAddress =
  | { readonly kind: "unix"; readonly url: string; readonly socketPath: string }
  | { readonly kind: "tcp"; readonly url: string; readonly host: string; readonly port: number };

/** The default engine address when neither the `host` option nor `DOCKER_HOST` is set. */
export const DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock";

/**
 * Parses a `DOCKER_HOST`-style URL.
 * @throws KilnError INVALID_ARGUMENT for any other scheme or a malformed address
 */
export function parseDockerHost(text: string): EngineAddress {
  const value = text.trim();
  if (value.startsWith("unix://")) {
    const socketPath = value.slice("unix://".length);
    if (!socketPath.startsWith("/")) {
      throw new KilnError("INVALID_ARGUMENT", `Docker host "${text}" must name an absolute socket path, e.g. unix:///var/run/docker.sock.`);
    }
    return { kind: "unix", url: value, socketPath };
  }
  const tcp = /^(?:tcp|http):\/\/(\[[0-9a-fA-F:.]+\]|[^:/]+)(?::(\d{1,5}))?\/?$/.exec(value);
  if (tcp) {
    const port = tcp[2] === undefined ? 2375 : Number(tcp[2]);
    if (port < 1 || port > 65535) throw new KilnError("INVALID_ARGUMENT", `Docker host "${text}" has an invalid port.`);
    const host = tcp[1]!.replace(/^\[(.*)\]$/, "$1");
    return { kind: "tcp", url: `tcp://${tcp[1]!}:${port}`, host, port };
  }
  throw new KilnError(
    "INVALID_ARGUMENT",
    `Docker host "${text}" is not supported: write unix:///path/to/docker.sock or tcp://HOST:PORT (TLS and ssh:// are not supported).`,
  );
}

/** Options with their defaults applied. */
export interface ResolvedOptions {
  readonly address: EngineAddress;
  readonly publishHost: string;
  /** The host written into endpoints (`publishHost`, or 127.0.0.1 for a wildcard address). */
  readonly endpointHost: string;
  readonly network: string | undefined;
  /** The front proxy's image. */
  readonly proxyImage: string;
  /** Whether the option or the environment named the image (else {@link LOCAL_PROXY_IMAGE} may stand in). */
  readonly proxyImageExplicit: boolean;
  /** The docker CLI for builds with secrets, as given (a path or a name on `PATH`). */
  readonly dockerCli: string;
  /** Whether the option or `KILN_DOCKER_CLI` named the CLI (else `docker` on `PATH`). */
  readonly dockerCliExplicit: boolean;
  /** Where file secrets are kept (absolute). */
  readonly secretsDir: string;
}

/**
 * Applies defaults and validates options.
 * @throws KilnError INVALID_ARGUMENT
 */
export function resolveOptions(options: DockerProviderOptions | undefined, env: NodeJS.ProcessEnv = process.env): ResolvedOptions {
  const host = options?.host ?? (env.DOCKER_HOST ? env.DOCKER_HOST : DEFAULT_DOCKER_HOST);
  const publishHost = options?.publishHost ?? "127.0.0.1";
  if (publishHost.trim() === "") throw new KilnError("INVALID_ARGUMENT", "publishHost must not be empty.");
  const network = options?.network;
  if (network !== undefined && !/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/.test(network)) {
    throw new KilnError("INVALID_ARGUMENT", `network "${network}" is not a valid Docker network name.`);
  }
  const endpointHost = publishHost === "0.0.0.0" ? "127.0.0.1" : publishHost === "::" ? "::1" : publishHost;
  const namedImage = options?.proxyImage ?? (env.KILN_DOCKER_PROXY_IMAGE ? env.KILN_DOCKER_PROXY_IMAGE : undefined);
  if (namedImage !== undefined && !/^[a-zA-Z0-9][a-zA-Z0-9_.\-/:@]*$/.test(namedImage.trim())) {
    throw new KilnError("INVALID_ARGUMENT", `proxyImage "${namedImage}" is not a valid image reference.`);
  }
  const namedCli = options?.dockerCli ?? (env.KILN_DOCKER_CLI ? env.KILN_DOCKER_CLI : undefined);
  if (namedCli !== undefined && namedCli.trim() === "") throw new KilnError("INVALID_ARGUMENT", "dockerCli must not be empty.");
  const secretsDir = options?.secretsDir ?? DEFAULT_SECRETS_DIR;
  if (!path.isAbsolute(secretsDir) || path.resolve(secretsDir) === "/") {
    throw new KilnError("INVALID_ARGUMENT", `secretsDir "${secretsDir}" must be an absolute folder other than /, on a tmpfs (such as ${DEFAULT_SECRETS_DIR}).`);
  }
  return {
    address: parseDockerHost(host),
    publishHost,
    endpointHost,
    network,
    proxyImage: namedImage?.trim() ?? DEFAULT_PROXY_IMAGE,
    proxyImageExplicit: namedImage !== undefined,
    dockerCli: namedCli?.trim() ?? "docker",
    dockerCliExplicit: namedCli !== undefined,
    secretsDir: path.resolve(secretsDir),
  };
}
