/**
 * Kiln provider for a Docker engine: builds container images and replaces containers (dockerode).
 * @module
 */
export const PLACEHOLDER = true;
