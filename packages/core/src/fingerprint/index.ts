/**
 * Build fingerprints: a stable sha256 of everything that goes into a container image build (the
 * context after `.dockerignore`, the Dockerfile, build arguments, target stage, base images).
 * @module
 */
export { fingerprintBuild, shortFingerprint, FINGERPRINT_MAX_OPEN_FILES } from "./fingerprint.js";
export type { FingerprintOptions, FingerprintResult } from "./fingerprint.js";
export { RACY_MARGIN_MS } from "./stat-cache.js";
export { resolveBaseImages } from "./dockerfile.js";
export { fingerprintMachine } from "./machine.js";
export type { MachineFingerprintOptions, MachineFingerprintResult } from "./machine.js";
