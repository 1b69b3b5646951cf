/**
 * Plays the builder's last step for moto, which runs no user data: for every running bake builder
 * (tag dev.kiln.role=builder) it sets dev.kiln.provision-status=0 and stops the instance, as the
 * provisioning script does on a real VM when its steps succeed. Run it beside `kiln deploy` against
 * moto; Ctrl-C stops it.
 *
 *   eval "$(bash scripts/moto.sh env | tail -1)"
 *   node --import tsx examples/aws/play-builders.ts [--exit-status N]
 */
import { motoEndpoint } from "@kilnjs/testkit";
import { motoClient, playBuilders } from "../../packages/provider-aws/src/test-support.js";

const statusFlag = process.argv.indexOf("--exit-status");
const exitStatus = statusFlag >= 0 ? Number(process.argv[statusFlag + 1]) : 0;
const endpoint = motoEndpoint();
const client = motoClient(endpoint);
const player = playBuilders(client, { exitStatus, intervalMs: 200 });
process.stderr.write(`playing bake builders on ${endpoint} (reporting exit status ${exitStatus}); Ctrl-C to stop\n`);
let reported = 0;
const report = setInterval(() => {
  for (const id of player.finished.slice(reported)) process.stderr.write(`builder ${id}: tagged and stopped\n`);
  reported = player.finished.length;
}, 500);
const stop = () => {
  clearInterval(report);
  void player.stop().then(() => client.destroy());
};
process.once("SIGINT", stop);
process.once("SIGTERM", stop);
