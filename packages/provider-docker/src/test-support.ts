/**
 * Test helpers for the Docker provider's front proxy against a real engine. Not part of the
 * package's API: only tests import this file.
 * @module
 */
import { randomBytes } from "node:crypto";
import { createServer } from "node:net";
import type Docker from "dockerode";
import type { ImageRef, InstanceConfig } from "@kilnjs/core";
import { DEFAULT_PROXY_IMAGE, LOCAL_PROXY_IMAGE } from "./options.js";

/** The tiny image the proxy tests run their instances from (made by scripts/base-images.sh). */
export const BASE_IMAGE = "kiln-local/busybox:latest";

/**
 * Checks that the base image and a proxy image are on the engine, and returns the base image as an
 * {@link ImageRef} with a random fingerprint.
 * @throws Error saying which script makes the missing image
 */
export async function proxyTestImage(docker: Docker): Promise<ImageRef> {
  const base = await docker
    .getImage(BASE_IMAGE)
    .inspect()
    .catch((error: unknown) => {
      throw new Error(`${BASE_IMAGE} is missing: run bash scripts/base-images.sh first`, { cause: error });
    });
  const official = await docker.getImage(DEFAULT_PROXY_IMAGE).inspect().then(() => true, () => false);
  const local = await docker.getImage(LOCAL_PROXY_IMAGE).inspect().then(() => true, () => false);
  if (!official && !local && !process.env.KILN_DOCKER_PROXY_IMAGE) throw new Error(`no proxy image: run bash scripts/proxy-image.sh first`);
  return { id: base.Id, fingerprint: `sha256:${randomBytes(32).toString("hex")}`, digest: base.Id, names: [BASE_IMAGE] };
}

/** A TCP port on 127.0.0.1 that nothing listens on right now (the kernel picks it; it is released at once). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => (typeof address === "object" && address ? resolve(address.port) : reject(new Error("no port"))));
    });
  });
}

/** An instance configuration that serves its container's hostname over HTTP on port 8080 (busybox httpd), named `http`. */
export function hostnameServer(publishPorts: boolean): InstanceConfig {
  return {
    ports: [{ name: "http", port: 8080, protocol: "tcp" }],
    env: {},
    labels: {},
    command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"],
    stopGracePeriodMs: 1_000,
    publishPorts,
  };
}
