/**
 * Writes the files generated from the spec schema (packages/core/src/spec/schema.ts), composed
 * with the sections of the first-party providers (packages/cli/src/first-party.ts):
 *
 * - packages/core/schema/kiln.schema.json  the JSON Schema of kiln.yaml, shipped as `@kilnjs/core/schema.json`
 * - docs/reference/kiln-yaml.md            the kiln.yaml reference
 *
 * Usage:
 *   node --import tsx scripts/generate-spec-docs.ts           write both files
 *   node --import tsx scripts/generate-spec-docs.ts --check   exit 1 if a committed file differs
 */
import { mkdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { FIRST_PARTY_PROVIDER_SPECS } from "../packages/cli/src/first-party.js";
import { renderSpecReference, specJsonSchema } from "../packages/core/src/spec/json-schema.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const schema = specJsonSchema({ providers: FIRST_PARTY_PROVIDER_SPECS });
const outputs = [
  { file: "packages/core/schema/kiln.schema.json", text: `${JSON.stringify(schema, null, 2)}\n` },
  { file: "docs/reference/kiln-yaml.md", text: renderSpecReference(schema) },
];

const check = process.argv.includes("--check");
const stale: string[] = [];
for (const { file, text } of outputs) {
  const target = path.join(root, file);
  const current = await readFile(target, "utf8").catch(() => undefined);
  if (current === text) continue;
  if (check) stale.push(file);
  else {
    await mkdir(path.dirname(target), { recursive: true });
    await writeFile(target, text);
    process.stdout.write(`wrote ${file}\n`);
  }
}
if (stale.length > 0) {
  process.stderr.write(
    `These generated files are out of date with the spec schema (core's and the first-party providers'):\n${stale.map((file) => `  ${file}\n`).join("")}` +
      "Run `node --import tsx scripts/generate-spec-docs.ts` and commit the result.\n",
  );
  process.exit(1);
}
if (check) process.stdout.write("generated spec files are up to date\n");
