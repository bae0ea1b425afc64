// Drives the real yaml-language-server over LSP (stdio) against
// schemas/pipeline.schema.json, the way an editor does through the modeline, and prints
// what it answers: completion inside a stage, hover on `restart`, a diagnostic for an
// unknown key, and the snippet inserted for `parallel`. Exits 1 when an answer is not
// the expected one. Run through scripts/lsp-check.sh.
import { spawn } from "node:child_process";
import path from "node:path";
import { pathToFileURL } from "node:url";

const root = process.env.PRUN_ROOT;
const server = process.env.YAML_LS;
const ls = spawn(process.execPath, [server, "--stdio"], { stdio: ["pipe", "pipe", "inherit"] });

let buf = Buffer.alloc(0);
let nextId = 1;
const waiting = new Map();
const diagnostics = new Map();
const diagWaiters = [];
ls.stdout.on("data", (chunk) => {
  buf = Buffer.concat([buf, chunk]);
  for (;;) {
    const head = buf.indexOf("\r\n\r\n");
    if (head < 0) return;
    const len = Number(/Content-Length: (\d+)/i.exec(buf.subarray(0, head).toString())[1]);
    if (buf.length < head + 4 + len) return;
    const msg = JSON.parse(buf.subarray(head + 4, head + 4 + len).toString());
    buf = buf.subarray(head + 4 + len);
    if (msg.id !== undefined && waiting.has(msg.id)) {
      waiting.get(msg.id)(msg);
      waiting.delete(msg.id);
    } else if (msg.id !== undefined && msg.method) {
      // A request from the server (configuration, capabilities): answer it.
      const result = msg.method === "workspace/configuration" ? msg.params.items.map(() => ({ validate: true, hover: true, completion: true, schemaStore: { enable: false } })) : null;
      send({ jsonrpc: "2.0", id: msg.id, result });
    } else if (msg.method === "textDocument/publishDiagnostics") {
      diagnostics.set(msg.params.uri, msg.params.diagnostics);
      diagWaiters.forEach((w) => w());
    }
  }
});
function send(msg) {
  const body = Buffer.from(JSON.stringify(msg));
  ls.stdin.write(`Content-Length: ${body.length}\r\n\r\n`);
  ls.stdin.write(body);
}
function request(method, params) {
  const id = nextId++;
  send({ jsonrpc: "2.0", id, method, params });
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no answer to ${method}`)), 20000);
    waiting.set(id, (m) => { clearTimeout(t); resolve(m.result); });
  });
}
const notify = (method, params) => send({ jsonrpc: "2.0", method, params });
function diagnosticsFor(uri) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error("no diagnostics")), 20000);
    const check = () => { const d = diagnostics.get(uri); if (d && d.length) { clearTimeout(t); resolve(d); } };
    diagWaiters.push(check);
    check();
  });
}

let failures = 0;
const expect = (ok, what) => { console.log(`${ok ? "ok  " : "FAIL"} ${what}`); if (!ok) failures++; };

const dir = path.join(root, "tests", "valid");
const modeline = "# yaml-language-server: $schema=../../schemas/pipeline.schema.json\n";
const open = (name, text) => {
  const uri = pathToFileURL(path.join(dir, name)).href;
  notify("textDocument/didOpen", { textDocument: { uri, languageId: "yaml", version: 1, text } });
  return uri;
};

await request("initialize", { processId: process.pid, rootUri: pathToFileURL(root).href, capabilities: { textDocument: { completion: { completionItem: { snippetSupport: true, documentationFormat: ["markdown", "plaintext"] } }, hover: { contentFormat: ["markdown", "plaintext"] } }, workspace: { configuration: true } } });
notify("initialized", {});
notify("workspace/didChangeConfiguration", { settings: { yaml: { validate: true, hover: true, completion: true, schemaStore: { enable: false } } } });

// 1. Completion inside a stage.
const c = open("lsp-completion.yaml", modeline + "version: 1\nstages:\n  a:\n    cmd: [echo]\n    \n");
const completion = await request("textDocument/completion", { textDocument: { uri: c }, position: { line: 5, character: 4 } });
const items = (completion.items || completion).map((i) => i.label);
console.log("completion inside a stage: " + items.join(", "));
for (const k of ["restart", "replicas", "on_failure", "stdout", "halt", "on"]) expect(items.includes(k), `completion offers \`${k}\``);
expect(!items.includes("version"), "completion does not offer top-level keys inside a stage");
const parallel = (completion.items || completion).find((i) => i.label === "parallel");
console.log("snippet for `parallel`: " + JSON.stringify(parallel && (parallel.insertText || parallel.textEdit?.newText)));
expect(parallel && !/\$\{1:0\}/.test(parallel.insertText || parallel.textEdit?.newText || ""), "the `parallel` snippet does not insert 0");

// Completion of a value: the enum of `delivery` without `null`.
const v = open("lsp-values.yaml", modeline + "version: 1\nqueues:\n  q:\n    delivery: \nstages:\n  a: {sh: x, stdout: q}\n  b: {sh: x, stdin: q}\n");
const values = await request("textDocument/completion", { textDocument: { uri: v }, position: { line: 4, character: 14 } });
const words = (values.items || values).map((i) => i.label);
console.log("values offered for `delivery`: " + words.join(", "));
expect(words.includes("shared") && words.includes("broadcast") && !words.includes("null"), "`delivery` offers shared and broadcast, not null");

// 2. Hover on `restart`.
const h = open("lsp-hover.yaml", modeline + "version: 1\nstages:\n  a:\n    cmd: [echo]\n    restart: on-failure\n");
const hover = await request("textDocument/hover", { textDocument: { uri: h }, position: { line: 5, character: 6 } });
const shown = hover && (typeof hover.contents === "string" ? hover.contents : hover.contents.value || JSON.stringify(hover.contents));
console.log("hover on `restart`: " + JSON.stringify(shown));
expect(shown && shown.includes("Restart policy"), "hover on `restart` shows its description");
const hs = open("lsp-hover2.yaml", modeline + "version: 1\nqueues:\n  q:\n    sentinel: None\nstages:\n  a: {sh: x, stdout: q}\n  b: {sh: x, stdin: q}\n");
const hover2 = await request("textDocument/hover", { textDocument: { uri: hs }, position: { line: 4, character: 6 } });
const shown2 = hover2 && (hover2.contents.value || JSON.stringify(hover2.contents));
console.log("hover on `sentinel`: " + JSON.stringify(shown2));
expect(shown2 && shown2.includes("A record sent to every reader"), "hover on `sentinel` shows its description");

// Keys whose values take several shapes: the key's own description, not `||` pieces.
const m = open("lsp-hover3.yaml", modeline + "version: 1\nevents: [green]\nqueues:\n  q: {}\nstages:\n  a:\n    sh: x\n    waits: [green]\n    stdout: q\n  b: {sh: x, stdin: q, sets: {green: started}}\n");
for (const [line, key, text] of [[8, "waits", "Events that must be set"], [9, "stdout", "Where the instance writes"], [2, "events", "Events: a list of names"]]) {
  const hv = await request("textDocument/hover", { textDocument: { uri: m }, position: { line, character: key === "events" ? 2 : 6 } });
  const got = hv && (hv.contents.value || JSON.stringify(hv.contents));
  console.log(`hover on \`${key}\`: ` + JSON.stringify(got));
  expect(got && got.includes(text) && !got.includes("||"), `hover on \`${key}\` shows its description`);
}

// 3. A diagnostic for an unknown key.
const d = open("lsp-diagnostic.yaml", modeline + "version: 1\nstages:\n  a:\n    cmd: [echo]\n    replica: 2\n");
const diags = await diagnosticsFor(d);
console.log("diagnostics for `replica: 2`: " + JSON.stringify(diags.map((x) => ({ line: x.range.start.line, character: x.range.start.character, message: x.message }))));
expect(diags.some((x) => x.range.start.line === 5 && /replica/.test(x.message)), "an unknown key is flagged on its line");

const both = open("lsp-both.yaml", modeline + "version: 1\nstages:\n  a:\n    cmd: [echo]\n    sh: echo\n");
const bd = await diagnosticsFor(both);
console.log("diagnostics for both `cmd` and `sh`: " + JSON.stringify(bd.map((x) => x.message)));
expect(bd.length > 0, "both `cmd` and `sh` is flagged");

await request("shutdown", null);
notify("exit", null);
console.log(failures ? `${failures} failed` : "language server check passed");
process.exit(failures ? 1 : 0);
