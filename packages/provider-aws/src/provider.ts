import { defineProvider, throwIfAborted, type Provider } from "@kilnjs/core";
import { AwsClients, awsError, requireRegion } from "./client.js";
import { createHealthCapability } from "./health.js";
import { createImageOperations } from "./images.js";
import { createInstanceOperations } from "./instances.js";
import { resolveAwsOptions, type AwsProviderOptions } from "./options.js";
import { createSecretStore } from "./secret-store.js";
import { awsProviderSpec } from "./spec.js";
import { createTrafficCapability } from "./traffic.js";

/** The AWS provider's name, equal to its package suffix. */
export const PROVIDER_NAME = "aws";

/**
 * Creates the AWS provider: it bakes AMIs from the spec's `image.machine` recipe (a builder
 * instance runs the provisioning steps from its user data and powers itself off; no SSH), runs
 * instances with EC2 RunInstances, checks them with EC2 status checks plus Kiln's HTTP/TCP probe,
 * optionally moves traffic through an ELBv2 target group, and reads secrets from Secrets Manager
 * and Parameter Store for targets of any provider (`secrets.<name>.from.aws`; its own EC2
 * instances read theirs at boot). Every resource is tagged with Kiln's
 * {@link @kilnjs/core#LABELS}. See docs/providers/aws.md.
 *
 * Creating a provider does no I/O and does not load the AWS SDK; the first call that needs AWS does.
 * Credentials and region come from the standard AWS chain unless given.
 *
 * @param options - see {@link AwsProviderOptions}; every field is optional
 * @returns a {@link Provider} named {@link PROVIDER_NAME} whose spec is {@link awsProviderSpec} (machine images)
 * @throws KilnError INVALID_ARGUMENT for an endpoint that is not an http(s) URL or a number out of range
 *
 * Its operations throw `PROVIDER_UNAVAILABLE` when the API cannot be reached or refuses the
 * credentials, `THROTTLED` when AWS still throttles after the SDK's adaptive retries, `BUILD_FAILED`
 * when provisioning fails (with the steps' exit status), `LAUNCH_FAILED` and `TERMINATE_FAILED`
 * with AWS's own error code and message, `IMAGE_IN_USE` when `images.remove` meets an AMI an
 * instance or launch template still uses, `TIMEOUT` when a bake or a wait passes its deadline,
 * and `ABORTED` when `ctx.signal` fires. Its secret store throws `SECRET_UNAVAILABLE` for a secret
 * it cannot read, saying what to do (docs/providers/aws.md, "Secrets").
 *
 * @example
 * ```ts
 * import { createAwsProvider } from "@kilnjs/provider-aws";
 * const provider = createAwsProvider({ region: "eu-west-1" });
 * ```
 */
export const createAwsProvider = defineProvider((options?: AwsProviderOptions): Provider => {
  const resolved = resolveAwsOptions(options);
  const clients = new AwsClients(resolved);
  return {
    name: PROVIDER_NAME,
    spec: awsProviderSpec,
    images: createImageOperations(clients),
    instances: createInstanceOperations(clients),
    health: createHealthCapability(clients),
    traffic: createTrafficCapability(clients),
    secrets: createSecretStore(clients),
    async ping(ctx) {
      throwIfAborted(ctx.signal);
      const { sdk, client } = await clients.ec2();
      await requireRegion(client);
      try {
        await client.send(new sdk.DescribeAvailabilityZonesCommand({}), { abortSignal: ctx.signal });
      } catch (error) {
        throw awsError(error, "PROVIDER_UNAVAILABLE", "The EC2 API did not answer", resolved.endpoint);
      }
    },
    close: () => clients.close(),
  };
});
