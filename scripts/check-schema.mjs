// Checks schemas/pipeline.schema.json with the real Ajv in strict mode, as SchemaStore
// does: it must compile without a single strict-mode complaint, accept every shipped
// pipeline and reject files that are wrong in shape. Run through scripts/check-schema.sh,
// which installs Ajv and a YAML parser from npm into a temporary directory.
import fs from "node:fs";
import path from "node:path";
import Ajv from "ajv";
import YAML from "yaml";

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");
const schema = JSON.parse(fs.readFileSync(path.join(root, "schemas/pipeline.schema.json"), "utf8"));
const warnings = [];
const ajv = new Ajv({
  strict: true,
  allErrors: true,
  logger: { log() {}, warn: (...a) => warnings.push(a.join(" ")), error: (...a) => warnings.push(a.join(" ")) },
});
let failures = 0;
const fail = (msg) => { console.log("FAIL " + msg); failures++; };

let validate;
try {
  validate = ajv.compile(schema);
  console.log("ok   compiles under Ajv " + (await import("ajv/package.json", { with: { type: "json" } })).default.version + " strict mode (draft-07)");
} catch (e) {
  fail("strict-mode compile: " + e.message);
  process.exit(1);
}
for (const w of warnings) fail("strict-mode warning: " + w);
if (schema.$schema !== "http://json-schema.org/draft-07/schema#") fail("$schema is not draft-07: " + schema.$schema);
if (!schema.$id) fail("no $id");

// Every property anywhere has a description.
const undescribed = [];
(function walk(node, where) {
  if (Array.isArray(node)) return node.forEach((n, i) => walk(n, `${where}[${i}]`));
  if (!node || typeof node !== "object") return;
  if (node.properties) for (const [k, v] of Object.entries(node.properties)) if (!v.description) undescribed.push(`${where}.${k}`);
  for (const [k, v] of Object.entries(node)) walk(v, `${where}/${k}`);
})(schema, "#");
if (undescribed.length) fail("properties without a description: " + undescribed.join(", "));
else console.log("ok   every property has a description");

// `merge`: YAML merge keys (`<<: *anchor`), which prun and the YAML language server read.
const load = (f) => YAML.parse(fs.readFileSync(f, "utf8"), { merge: true });
const files = [
  ...fs.readdirSync(path.join(root, "pipelines")).map((f) => path.join(root, "pipelines", f)),
  ...fs.readdirSync(path.join(root, "tests/valid")).filter((f) => f.endsWith(".yaml")).map((f) => path.join(root, "tests/valid", f)),
];
for (const f of files) {
  if (!validate(load(f))) fail(`${path.relative(root, f)} rejected: ${ajv.errorsText(validate.errors)}`);
  else console.log("ok   accepts " + path.relative(root, f));
}
const bad = {
  "unknown key": { version: 1, stages: { a: { cmd: ["x"], replica: 2 } } },
  "both cmd and sh": { version: 1, stages: { a: { cmd: ["x"], sh: "x" } } },
  "neither cmd nor sh": { version: 1, stages: { a: { stdout: "log" } } },
  "a bad delivery": { version: 1, queues: { q: { delivery: "roundrobin" } }, stages: { a: { sh: "x" } } },
  "parallel 0": { version: 1, stages: { a: { sh: "x", foreach: { items: [1] }, parallel: 0 } } },
  "two foreach sources": { version: 1, stages: { a: { sh: "x", foreach: { items: [1], glob: "*" } } } },
  "a host with two engines": { version: 1, hosts: { h: { ssh: "a", slurm: {} } }, stages: { a: { sh: "x" } } },
  "a bad name": { version: 1, stages: { Chef: { sh: "x" } } },
};
for (const f of ["unknown-key", "invalid-value", "ranges", "invalid-signal", "invalid-name"]) {
  bad[`tests/invalid/${f}.yaml`] = load(path.join(root, `tests/invalid/${f}.yaml`));
}
for (const [what, doc] of Object.entries(bad)) {
  if (validate(doc)) fail(`accepts ${what}`);
  else console.log(`ok   rejects ${what}`);
}
console.log(failures ? `${failures} failed` : "schema check passed");
process.exit(failures ? 1 : 0);
