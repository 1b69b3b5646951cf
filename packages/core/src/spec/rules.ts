import type { ProviderSpec } from "../provider/spec.js";
import { checkSecretRules } from "../secrets/rules.js";
import { minimumHealthDeadline, resolveStepSize, resolveSurge, resolveUnavailable } from "./arithmetic.js";
import type { SpecIssue } from "./issues.js";
import { DEFAULT_MAX_INSTANCE_COUNT, type Spec } from "./schema.js";

type Path = (string | number)[];

/**
 * Core's own rules beyond types, for one target's merged settings (the top level, or one
 * environment after merging): port names unique and referenced right, one health check, host
 * ports, stop-first, the proxy, surge and unavailability, canary steps, the machine recipe, the
 * instance count the provider allows, where a load balancer belongs, the health deadline and
 * secrets (`checkSecretRules`). `provider` is the target's provider's spec,
 * when it is loaded. Every issue's path starts with `prefix`. Pure.
 */
export function checkSpecRules(spec: Spec, prefix: Path, provider: ProviderSpec | undefined): SpecIssue[] {
  return [
    ...checkPorts(spec, prefix),
    ...checkHealth(spec, prefix),
    ...checkHostPorts(spec, prefix),
    ...checkProxy(spec, prefix),
    ...checkRollout(spec, prefix),
    ...checkMachine(spec, prefix, provider),
    ...checkInstanceCount(spec, prefix, provider),
    ...checkLoadBalancer(spec, prefix),
    ...checkSecretRules(spec, prefix, provider),
  ];
}

function checkPorts(spec: Spec, prefix: Path): SpecIssue[] {
  const issues: SpecIssue[] = [];
  const seen = new Set<string>();
  spec.instances.ports.forEach((port, index) => {
    if (seen.has(port.name)) {
      issues.push({ path: [...prefix, "instances", "ports", index, "name"], kind: "invalid-value", message: `port name "${port.name}" is used twice; give each port its own name` });
    }
    seen.add(port.name);
  });
  return issues;
}

function checkHealth(spec: Spec, prefix: Path): SpecIssue[] {
  const issues: SpecIssue[] = [];
  const names = new Set(spec.instances.ports.map((port) => port.name));
  const checks = (["http", "tcp", "command"] as const).filter((kind) => spec.health[kind] !== undefined);
  if (checks.length > 1) {
    issues.push({ path: [...prefix, "health"], kind: "invalid-value", message: `give one health check, not ${checks.join(" and ")}` });
  }
  for (const kind of ["http", "tcp"] as const) {
    const port = spec.health[kind]?.port;
    if (typeof port === "string" && !names.has(port)) {
      const known = [...names].map((name) => `"${name}"`).join(", ") || "none are declared";
      issues.push({
        path: [...prefix, "health", kind, "port"],
        kind: "reference",
        message: `"${port}" is not a port name from instances.ports (${known}); name one, or give a port number`,
      });
    }
  }
  if (spec.health.deadlineMs !== undefined) {
    const need = minimumHealthDeadline(spec.health);
    if (spec.health.deadlineMs < need.totalMs) {
      issues.push({
        path: [...prefix, "health", "deadlineMs"],
        kind: "invalid-value",
        message: `${spec.health.deadlineMs} ms is shorter than these settings need: ${need.arithmetic} = ${need.totalMs} ms; raise deadlineMs or lower those settings`,
      });
    }
  }
  return issues;
}

function checkHostPorts(spec: Spec, prefix: Path): SpecIssue[] {
  const issues: SpecIssue[] = [];
  const count = spec.instances.count;
  spec.instances.ports.forEach((port, index) => {
    if (port.hostPort === undefined) return;
    const path = [...prefix, "instances", "ports", index, "hostPort"];
    if (spec.traffic.proxy) {
      issues.push({ path, kind: "invalid-value", message: "behind traffic.proxy, instances publish no host ports (the proxy does); remove hostPort" });
    } else if (count > 1) {
      issues.push({ path, kind: "invalid-value", message: `host port ${port.hostPort} can be held by one instance only, and count is ${count}; use traffic.proxy to run several behind one address` });
    } else if (spec.rollout.order !== "stop-first") {
      issues.push({
        path,
        kind: "invalid-value",
        message: `a pinned host port cannot be held by the old and the new instance at once: set rollout.order: stop-first (the rollout then has downtime), or use traffic.proxy for a zero-downtime address`,
      });
    }
  });
  return issues;
}

function checkProxy(spec: Spec, prefix: Path): SpecIssue[] {
  const proxy = spec.traffic.proxy;
  if (!proxy) return [];
  const tcpPorts = spec.instances.ports.filter((port) => port.protocol === "tcp");
  if (tcpPorts.length === 0) {
    return [{ path: [...prefix, "traffic", "proxy"], kind: "invalid-value", message: "a proxy sends traffic to an instance port: declare one in instances.ports" }];
  }
  if (proxy.targetPort !== undefined && !tcpPorts.some((port) => port.name === proxy.targetPort)) {
    return [
      {
        path: [...prefix, "traffic", "proxy", "targetPort"],
        kind: "reference",
        message: `"${proxy.targetPort}" is not a tcp port name from instances.ports (${tcpPorts.map((port) => `"${port.name}"`).join(", ")})`,
      },
    ];
  }
  return [];
}

function checkRollout(spec: Spec, prefix: Path): SpecIssue[] {
  const issues: SpecIssue[] = [];
  const { rollout } = spec;
  const count = spec.instances.count;
  if (rollout.order === "stop-first" && rollout.strategy !== "rolling") {
    issues.push({ path: [...prefix, "rollout", "order"], kind: "invalid-value", message: `stop-first applies to the rolling strategy; ${rollout.strategy} always starts the new instances first` });
  }
  if (rollout.strategy === "rolling" && rollout.order !== "stop-first" && resolveSurge(rollout.maxSurge, count) === 0 && resolveUnavailable(rollout.maxUnavailable, count) === 0) {
    issues.push({
      path: [...prefix, "rollout"],
      kind: "invalid-value",
      message: `maxSurge (${String(rollout.maxSurge)}) and maxUnavailable (${String(rollout.maxUnavailable)}) both come to 0 instances of ${count}, so no instance could ever be replaced; set maxSurge to 1 (replace surge-first) or maxUnavailable to 1`,
    });
  }
  if (rollout.strategy !== "canary") {
    // In an environment, steps inherited from a canary top level are simply unused.
    if (rollout.steps && prefix.length === 0) {
      issues.push({ path: [...prefix, "rollout", "steps"], kind: "invalid-value", message: `steps apply to the canary strategy only; this rollout is ${rollout.strategy}` });
    }
    return issues;
  }
  if (!rollout.steps) {
    issues.push({ path: [...prefix, "rollout", "steps"], kind: "invalid-value", message: 'a canary rollout needs steps, e.g. [{ instances: 1, holdMs: 60000 }, { instances: "50%" }]' });
    return issues;
  }
  // Steps at or above count are dropped (the last step, 100%, is implied), so the same steps
  // serve environments of different sizes; below count, each must be larger than the last.
  let previous = 0;
  rollout.steps.forEach((step, index) => {
    const size = resolveStepSize(step.instances, count);
    if (size >= count) return;
    if (size <= previous) {
      issues.push({
        path: [...prefix, "rollout", "steps", index, "instances"],
        kind: "invalid-value",
        message: `step ${index + 1} comes to ${size} of ${count} instances; each step must be larger than the one before (${previous})`,
      });
    }
    previous = Math.max(previous, size);
  });
  return issues;
}

function checkMachine(spec: Spec, prefix: Path, provider: ProviderSpec | undefined): SpecIssue[] {
  const machine = spec.image.machine;
  if (!machine) {
    if (provider?.imageFormat !== "machine") return [];
    return [
      {
        path: [...prefix, "image", "machine"],
        kind: "invalid-value",
        message: `required: the ${spec.provider} provider bakes its images from a machine recipe, not a Dockerfile; add image.machine with its provision steps (and the base settings the provider's docs name)`,
      },
    ];
  }
  const issues: SpecIssue[] = [];
  machine.provision.forEach((step, index) => {
    const kinds = (["file", "shell", "run"] as const).filter((kind) => step[kind] !== undefined);
    if (kinds.length !== 1) {
      issues.push({
        path: [...prefix, "image", "machine", "provision", index],
        kind: "invalid-value",
        message: kinds.length === 0 ? "a step needs one of file, shell and run" : `a step does one thing: give one of ${kinds.join(" and ")}, as separate steps`,
      });
    }
  });
  return issues;
}

/** `instances.count` within the provider's `maxInstanceCount` (when its spec is known). */
function checkInstanceCount(spec: Spec, prefix: Path, provider: ProviderSpec | undefined): SpecIssue[] {
  if (!provider) return [];
  const limit = provider.maxInstanceCount ?? DEFAULT_MAX_INSTANCE_COUNT;
  if (spec.instances.count <= limit) return [];
  return [
    {
      path: [...prefix, "instances", "count"],
      kind: "invalid-value",
      message: `${spec.instances.count} instances is more than the ${spec.provider} provider runs for one target (its maxInstanceCount is ${limit}); lower instances.count to ${limit} or fewer, or split the service into targets`,
    },
  ];
}

/**
 * A load balancer section belongs to its provider: `traffic.loadBalancer.<other>` on a target
 * of another provider is a mistake (put it in the environment that uses that provider); and a
 * target has a front proxy or its provider's load balancer, not both.
 */
function checkLoadBalancer(spec: Spec, prefix: Path): SpecIssue[] {
  const sections = (spec.traffic.loadBalancer ?? {}) as Record<string, unknown>;
  const issues: SpecIssue[] = [];
  for (const name of Object.keys(sections)) {
    if (name === spec.provider || sections[name] === undefined) continue;
    issues.push({
      path: [...prefix, "traffic", "loadBalancer", name],
      kind: "invalid-value",
      message: `a load balancer of the ${name} provider needs the ${name} provider; this target uses ${spec.provider} (set it in the environment that uses ${name})`,
    });
  }
  if (spec.traffic.proxy && sections[spec.provider] !== undefined) {
    issues.push({ path: [...prefix, "traffic"], kind: "invalid-value", message: "give traffic.proxy (a front proxy Kiln runs) or traffic.loadBalancer (the cloud's), not both" });
  }
  return issues;
}
