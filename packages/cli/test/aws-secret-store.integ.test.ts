/**
 * A Docker target whose secret comes from AWS Secrets Manager (on moto), deployed through core with
 * both first-party providers, as `kiln deploy` composes them. It lives here because the CLI is the
 * one package that depends on both providers; providers never import each other.
 *
 * Checked: the value reaches the launch (and, once the docker provider hands secrets over as
 * environment variables, the container's environment), a changed value in AWS makes a new release,
 * and the state files, events, results, status and history hold no value in plain, JSON-escaped
 * or base64 form, nor do the container's labels.
 */
import { mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { CreateSecretCommand, DeleteSecretCommand, PutSecretValueCommand, SecretsManagerClient } from "@aws-sdk/client-secrets-manager";
import { DEFAULT_PROVIDER_SPEC, createKiln, type DeployResult, type Kiln, type KilnEvent, type LaunchRequest, type Provider, type SpecInput } from "@kilnjs/core";
import { createAwsProvider } from "@kilnjs/provider-aws";
import { createDockerProvider } from "@kilnjs/provider-docker";
import { motoEndpoint, requireDockerEngine, requireMoto } from "@kilnjs/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LABEL_ENVIRONMENT, containersWith, dockerClient, execIn, randomSuffix, removeLabelled } from "./harness.js";

const engine = await requireDockerEngine();
const moto = await requireMoto();

const MOTO_REGION = "us-east-1";
const credentials = { accessKeyId: "testing", secretAccessKey: "testing" };

/** Whether the docker provider hands secrets to containers as environment variables (another change of issue 11). */
const dockerDeliversEnv = createDockerProvider().spec?.secretDelivery?.includes("env") ?? false;

describe.skipIf(!engine || !moto)("a Docker target's secret from AWS Secrets Manager (moto)", () => {
  const docker = dockerClient();
  const secretsManager = new SecretsManagerClient({ endpoint: motoEndpoint(), region: MOTO_REGION, credentials });
  const suffix = randomSuffix(4);
  const service = `aws-secret-${suffix}`;
  const environment = `itest-awssecret-${suffix}`;
  const secretId = `kiln-itest/${suffix}/db`;
  const values = [`first-${suffix}-"q"\\s`, `second-${suffix}-é`];
  const launches: LaunchRequest[] = [];
  const events: KilnEvent[] = [];
  const results: DeployResult[] = [];
  let dir: string;
  let kiln: Kiln;

  const spec: SpecInput = {
    service,
    provider: "docker",
    image: { dockerfile: { context: "." } },
    instances: { count: 1, command: ["sleep", "600"], stopGracePeriodMs: 1000 },
    secrets: { DB_PASSWORD: { from: { aws: { secretsManager: { id: secretId, key: "password" } } } } },
    environments: { [environment]: {} },
  };

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "kiln-aws-secret-"));
    await writeFile(path.join(dir, "Dockerfile"), "FROM kiln-local/busybox\nCOPY id.txt /id.txt\n");
    await writeFile(path.join(dir, "id.txt"), `${service}\n`); // this run's own fingerprint
    await secretsManager.send(new CreateSecretCommand({ Name: secretId, SecretString: JSON.stringify({ username: "app", password: values[0] }) }));

    const dockerProvider = createDockerProvider();
    // Until the docker provider declares env delivery itself, the test declares it so core reads
    // and hands over the secret; the container then cannot have it (checked only once it can).
    const recorded: Provider = {
      ...dockerProvider,
      spec: dockerDeliversEnv ? dockerProvider.spec : { ...(dockerProvider.spec ?? DEFAULT_PROVIDER_SPEC), secretDelivery: ["env"] },
      instances: {
        ...dockerProvider.instances,
        launch: (request, ctx) => {
          launches.push(request);
          return dockerProvider.instances.launch(request, ctx);
        },
      },
    };
    kiln = createKiln({
      providers: { docker: recorded, aws: () => createAwsProvider({ endpoint: motoEndpoint(), region: MOTO_REGION, credentials, maxAttempts: 2 }) },
      dataDir: path.join(dir, ".kiln"),
      env: {},
      onEvent: (event) => events.push(event),
    });
    results.push(await kiln.deploy({ spec, baseDir: dir, environment }));
  });

  afterAll(async () => {
    await kiln?.close();
    const problems = await removeLabelled(docker, `${LABEL_ENVIRONMENT}=${environment}`);
    await secretsManager.send(new DeleteSecretCommand({ SecretId: secretId, ForceDeleteWithoutRecovery: true })).catch(() => undefined);
    secretsManager.destroy();
    if (dir) await rm(dir, { recursive: true, force: true });
    if (problems.length > 0) throw new Error(`cleanup problems:\n${problems.join("\n")}`);
  });

  it("reads the secret from Secrets Manager at the deploy and hands it to the launch", () => {
    expect(results[0]?.outcome).toBe("deployed");
    expect(launches).toHaveLength(1);
    expect(launches[0]!.secrets?.get("DB_PASSWORD")?.reveal()).toBe(values[0]);
    expect(launches[0]!.config.secrets).toEqual([
      {
        name: "DB_PASSWORD",
        source: { kind: "store", provider: "aws", reference: { secretsManager: { id: secretId, key: "password", versionStage: "AWSCURRENT" } } },
        to: { kind: "env", name: "DB_PASSWORD" },
        digest: expect.stringMatching(/^hmac-sha256:[0-9a-f]{64}$/) as unknown,
      },
    ]);
  });

  it.skipIf(!dockerDeliversEnv)("gives the container the value as DB_PASSWORD", async () => {
    const [container] = await containersWith(docker, `${LABEL_ENVIRONMENT}=${environment}`);
    expect(container).toBeDefined();
    // What a process in the container sees (busybox's shell; the image has no printenv).
    const { exitCode, output } = await execIn(docker, container!.Id, ["sh", "-c", 'printf "%s" "$DB_PASSWORD"']);
    expect([exitCode, output]).toEqual([0, values[0]]); // runs before the value changes below
  });

  it("makes a new release when the value changes in AWS, with the new value", async () => {
    await secretsManager.send(new PutSecretValueCommand({ SecretId: secretId, SecretString: JSON.stringify({ username: "app", password: values[1] }) }));
    const second = await kiln.deploy({ spec, baseDir: dir, environment });
    results.push(second);
    expect(second.outcome).toBe("deployed");
    expect(second.release.number).toBe(results[0]!.release.number + 1);
    expect(second.release.fingerprint).toBe(results[0]!.release.fingerprint); // no rebuild
    expect(launches.at(-1)!.secrets?.get("DB_PASSWORD")?.reveal()).toBe(values[1]);
  });

  it("keeps every value out of state, events, results, status, history and the container's labels", async () => {
    const stateDir = path.join(dir, ".kiln", "state");
    const stateFiles = await readdir(stateDir, { recursive: true, withFileTypes: true });
    const state = await Promise.all(stateFiles.filter((entry) => entry.isFile()).map((entry) => readFile(path.join(entry.parentPath, entry.name), "utf8")));
    expect(state.length).toBeGreaterThan(0);
    const containers = await containersWith(docker, `${LABEL_ENVIRONMENT}=${environment}`);
    const everything = [
      ...state,
      JSON.stringify(events),
      JSON.stringify(results),
      JSON.stringify(await kiln.status({ target: { service, environment } })),
      JSON.stringify(await kiln.history({ target: { service, environment } })),
      JSON.stringify(containers.map((container) => container.Labels)),
    ].join("\n");
    for (const value of values) {
      for (const form of [value, JSON.stringify(value).slice(1, -1), Buffer.from(value).toString("base64")]) expect(everything).not.toContain(form);
    }
    expect(everything).toContain(secretId); // the reference is recorded
  });
});
