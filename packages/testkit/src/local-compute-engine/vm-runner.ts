/**
 * What runs a VM of the local Compute Engine. The engine keeps the API state (status, disks,
 * operations); the runner makes the machine itself. Phase 1 ships {@link createStateOnlyVmRunner}
 * (nothing runs; the status alone changes). A Docker-backed runner (phase 2) implements the same
 * interface: `start` makes a container from the boot disk's image root filesystem, passes the
 * metadata server's address, runs the `startup-script` metadata item and returns the container's
 * address as the instance's `networkIP`; `captureImage` commits the stopped container's filesystem.
 */

/** The instance a runner is asked to start, stop or delete. */
export interface VmDescription {
  readonly project: string;
  readonly zone: string;
  readonly name: string;
  /** The instance's `id` (a uint64 as a decimal string). */
  readonly id: string;
  /** `metadata.items` as a map (`startup-script`, `enable-guest-attributes`, …). */
  readonly metadata: Readonly<Record<string, string>>;
  readonly labels: Readonly<Record<string, string>>;
  readonly machineType: string;
  /** The boot disk: its name and what it was made from. */
  readonly bootDisk: {
    readonly name: string;
    /** The source image's selfLink, when the disk was made from an image. */
    readonly sourceImage?: string;
    /** What a runner stored when it captured that image ({@link VmRunner.captureImage}); absent for images it did not make. */
    readonly imageArtifact?: string;
  };
  /** The address the engine gave the instance's first network interface. */
  readonly networkIP: string;
  /**
   * The metadata server for this instance: base URL (`http://127.0.0.1:PORT`) and the header that
   * names the instance (`X-Kiln-Instance: <id>`), for a guest's `GCE_METADATA_HOST`-style setup.
   */
  readonly metadataServer: { readonly url: string; readonly headers: Readonly<Record<string, string>> };
  /** Appends text to serial port 1, as a guest's console would. */
  readonly writeSerialPort: (text: string) => void;
}

/** What a started VM reports back. */
export interface VmStarted {
  /** The address the VM really has (a container's address), replacing the engine's `networkIP`. */
  readonly networkIP?: string;
}

/**
 * The machine behind an instance. The engine calls `start` when an instance is created or started
 * (the instance becomes RUNNING when it resolves), `stop` when it is stopped (TERMINATED when it
 * resolves), `delete` when it is deleted; a rejected `start` leaves the instance TERMINATED and the
 * error on serial port 1. Calls for one instance never overlap.
 */
export interface VmRunner {
  start(vm: VmDescription, signal: AbortSignal): Promise<VmStarted>;
  stop(vm: VmDescription, signal: AbortSignal): Promise<void>;
  delete(vm: VmDescription, signal: AbortSignal): Promise<void>;
  /**
   * Makes an image's content from a disk (the disk's VM is stopped or detached). Returns a reference
   * the engine keeps on the image and hands back as `bootDisk.imageArtifact` to VMs made from it.
   * Optional: without it an image holds no content.
   */
  captureImage?(disk: { readonly zone: string; readonly name: string; readonly lastAttachedInstance?: string }, image: { readonly name: string }, signal: AbortSignal): Promise<string | undefined>;
  /** Releases what the runner holds (called when the engine closes). */
  close?(): Promise<void>;
}

/**
 * A runner where nothing runs: VMs only change state. For unit tests and machines without a
 * Docker engine. Every call resolves at once.
 */
export function createStateOnlyVmRunner(): VmRunner {
  return {
    start: () => Promise.resolve({}),
    stop: () => Promise.resolve(),
    delete: () => Promise.resolve(),
  };
}
