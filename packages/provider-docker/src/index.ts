/**
 * Kiln provider for a Docker engine: builds container images and replaces containers (dockerode).
 *
 * dockerode is loaded on the first call that changes the engine, so importing this package is cheap;
 * the read-only calls of a deploy with nothing to do (ping, find, list) use `node:http` and never
 * load it (or its ssh2, @grpc/grpc-js and protobufjs).
 * @module
 */
export { createDockerProvider, createDockerProvider as createProvider, PROVIDER_NAME } from "./provider.js";
export type { DockerProviderOptions } from "./options.js";
export { DOCKER_MAX_INSTANCE_COUNT, dockerProviderSpec, dockerProviderSpec as providerSpec } from "./spec.js";
