//! From the schema schemars generates to the one prun publishes: what SchemaStore
//! accepts and editors use well. Draft-07; valid under Ajv's strict mode (no `format`
//! keywords Ajv does not know, no union `type` arrays); an `$id`; every key's
//! description and default from [`super::keys`], and examples; optional keys without
//! a `null` alternative (so enums complete without `null` and hovers read plainly);
//! "exactly one of" for `cmd`/`sh`, the foreach sources, the readiness probes and the
//! host engines; keys starting with `x-` allowed wherever unknown keys are not.

use serde_json::{Map, Value, json};

/// The schema's identifier (a URN: the file is published with each prun, and
/// `prun init` / `prun schema --write DIR` put a copy next to the pipelines).
pub const PIPELINE_ID: &str = "urn:prun:schema:pipeline:1";

/// Examples shown by editors, per `block.key` (as in [`super::keys`]).
const EXAMPLES: &[(&str, &str, &str)] = &[
    ("top", "name", r#"["baozi"]"#),
    ("top", "include", r#"[["common.yaml"]]"#),
    ("top", "params", r#"[{"buns": 5}]"#),
    ("top", "env", r#"[{"PYTHONUNBUFFERED": "1"}]"#),
    (
        "top",
        "env_file",
        r#"[".env", [".env", {"path": ".env.local", "required": false}]]"#,
    ),
    (
        "top",
        "hosts",
        r#"[{"h1": {"ssh": "ops@worker1", "slots": 4}}]"#,
    ),
    (
        "top",
        "queues",
        r#"[{"buns": {"capacity": 16, "sentinel": "None"}}]"#,
    ),
    ("top", "semaphores", r#"[{"lock": 1}]"#),
    ("top", "events", r#"[["green"]]"#),
    (
        "top",
        "shutdown",
        r#"[{"timeout": "5s", "signal": "TERM"}]"#,
    ),
    (
        "stage",
        "cmd",
        r#"[["python3", "worker.py", "--count", "${params.count}"]]"#,
    ),
    ("stage", "sh", r#"["wc -l \"${item}\""]"#),
    ("stage", "cwd", r#"["${pipeline.dir}/work"]"#),
    ("stage", "env", r#"[{"LANG": "C.UTF-8"}]"#),
    ("stage", "env_file", r#"["api.env"]"#),
    ("stage", "replicas", "[2]"),
    (
        "stage",
        "foreach",
        r#"[{"glob": "logs/*.log"}, {"range": {"from": 0, "to": 10}}]"#,
    ),
    ("stage", "parallel", "[4]"),
    (
        "stage",
        "stdin",
        r#"["buns", {"file": "input.txt"}, "inherit"]"#,
    ),
    (
        "stage",
        "stdout",
        r#"["buns", {"file": "out.txt", "append": true}, "inherit"]"#,
    ),
    (
        "stage",
        "stderr",
        r#"[{"file": "${run.dir}/${stage}.err"}]"#,
    ),
    ("stage", "fds", r#"[{"3": {"write": "good"}}]"#),
    ("stage", "after", r#"[["setup"], {"server": "ready"}]"#),
    ("stage", "waits", r#"[["green"]]"#),
    ("stage", "sets", r#"[{"green": {"line": "^GREEN"}}]"#),
    ("stage", "semaphore", r#"["lock"]"#),
    ("stage", "on", r#"["h1", ["h1", "h2"]]"#),
    (
        "stage",
        "ready",
        r#"[{"line": "listening on", "timeout": "10s"}]"#,
    ),
    ("stage", "timeout", r#"["30s"]"#),
    ("stage", "stop", r#"[{"signal": "INT", "timeout": "5s"}]"#),
    (
        "stage",
        "restart",
        r#"["on-failure", {"policy": "always", "max": 5}]"#,
    ),
    ("stage", "success_codes", "[[0, 1]]"),
    ("stage", "halt", r#"[{"when": "soon", "fail": 1}]"#),
    ("queue", "capacity", "[16]"),
    ("queue", "sentinel", r#"["None"]"#),
    ("host", "ssh", r#"["ops@worker1.example.org"]"#),
    ("host", "slots", "[4]"),
    ("foreach", "batch", "[1000]"),
    (
        "foreach",
        "matrix",
        r#"[{"size": ["s", "m"], "region": ["eu", "us"]}]"#,
    ),
    ("ready", "delay", r#"["2s"]"#),
    ("ready", "tcp", r#"["127.0.0.1:8080"]"#),
    ("restart", "backoff", r#"["1s"]"#),
    ("halt", "fail", r#"[1, "10%"]"#),
];

/// "Exactly one of these keys", per definition.
const EXACTLY_ONE: &[(&str, &[&str])] = &[
    ("Stage", &["cmd", "sh"]),
    (
        "Foreach",
        &["items", "range", "glob", "lines", "queue", "matrix"],
    ),
    ("Ready", &["line", "file", "delay", "tcp", "cmd"]),
    ("Host", &["ssh", "slurm"]),
];

pub fn publish(schema: &mut Value) {
    strip(schema, "format");
    visit(schema, &mut |obj| {
        if let Some(Value::Object(props)) = obj.get_mut("properties") {
            for prop in props.values_mut() {
                drop_null(prop);
            }
        }
    });
    unite_types(schema);
    allow_x_keys(schema);
    describe_keys(schema);
    describe_shapes(schema);
    exactly_one(schema);
    if let Some(obj) = schema.as_object_mut() {
        let mut out = Map::new();
        out.insert(
            "$schema".into(),
            json!("http://json-schema.org/draft-07/schema#"),
        );
        out.insert("$id".into(), json!(PIPELINE_ID));
        out.insert("title".into(), json!("prun pipeline"));
        out.insert(
            "description".into(),
            json!("A prun pipeline file: stages (OS processes) joined by queues, coordinated by semaphores and events. See docs/format.md."),
        );
        for (k, v) in std::mem::take(obj) {
            if !matches!(k.as_str(), "$schema" | "title" | "description") {
                out.insert(k, v);
            }
        }
        *obj = out;
    }
}

/// Apply `f` to every object of the schema.
fn visit(v: &mut Value, f: &mut dyn FnMut(&mut Map<String, Value>)) {
    match v {
        Value::Object(obj) => {
            f(obj);
            for child in obj.values_mut() {
                visit(child, f);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| visit(i, f)),
        _ => {}
    }
}

fn strip(v: &mut Value, key: &str) {
    visit(v, &mut |obj| {
        obj.remove(key);
    });
}

/// An optional key is optional by being absent, not by accepting `null`.
fn drop_null(prop: &mut Value) {
    let Some(obj) = prop.as_object_mut() else {
        return;
    };
    if let Some(Value::Array(types)) = obj.get_mut("type") {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            let t = types[0].clone();
            obj.insert("type".into(), t);
        }
    }
    if let Some(Value::Array(any)) = obj.get_mut("anyOf") {
        any.retain(|s| s != &json!({"type": "null"}));
        if any.len() == 1 {
            let only = any[0].clone();
            obj.remove("anyOf");
            if let Value::Object(inner) = only {
                if inner.contains_key("$ref") {
                    obj.insert("allOf".into(), Value::Array(vec![Value::Object(inner)]));
                } else {
                    for (k, v) in inner {
                        obj.entry(k).or_insert(v);
                    }
                }
            }
        }
    }
}

/// Ajv's strict mode refuses `"type": [a, b]` (without `allowUnionTypes`): write
/// those as `anyOf`.
fn unite_types(schema: &mut Value) {
    visit(schema, &mut |obj| {
        if let Some(Value::Array(types)) = obj.get("type").cloned() {
            obj.remove("type");
            let any: Vec<Value> = types.into_iter().map(|t| json!({ "type": t })).collect();
            obj.insert("anyOf".into(), Value::Array(any));
        }
    });
}

fn allow_x_keys(schema: &mut Value) {
    visit(schema, &mut |obj| {
        if obj.get("additionalProperties") == Some(&Value::Bool(false)) {
            let patterns = obj.entry("patternProperties").or_insert_with(|| json!({}));
            if let Some(p) = patterns.as_object_mut() {
                p.insert(
                    "^x-".into(),
                    json!({"description": "Ignored by prun: for YAML anchors and tooling."}),
                );
            }
        }
    });
}

fn definition<'a>(schema: &'a mut Value, def: &str) -> Option<&'a mut Map<String, Value>> {
    if def.is_empty() {
        schema.as_object_mut()
    } else {
        schema
            .get_mut("definitions")
            .and_then(|d| d.get_mut(def))
            .and_then(|d| d.as_object_mut())
    }
}

/// Every key's description, default and examples from the key table.
fn describe_keys(schema: &mut Value) {
    for block in super::keys::ALL {
        for def in block.schema {
            let Some(props) = definition(schema, def)
                .and_then(|d| d.get_mut("properties"))
                .and_then(|p| p.as_object_mut())
            else {
                continue;
            };
            for key in block.keys {
                let Some(prop) = props.get_mut(key.name).and_then(|p| p.as_object_mut()) else {
                    continue;
                };
                prop.insert("description".into(), key.doc.into());
                if let Ok(default) = serde_json::from_str::<Value>(key.json_default) {
                    prop.insert("default".into(), default);
                }
                let block_name = if block.name == "stage" {
                    "stage"
                } else {
                    block.name
                };
                if let Some((_, _, ex)) = EXAMPLES
                    .iter()
                    .find(|(b, k, _)| *b == block_name && *k == key.name)
                    && let Ok(examples) = serde_json::from_str::<Value>(ex)
                {
                    prop.insert("examples".into(), examples);
                }
            }
        }
    }
}

/// Editors (the YAML language server) show the description of the most specific
/// schema a value matches, so a shape's own description would hide the key's: shapes
/// keep none, keys carry them all. Alternatives that nothing tells apart get a
/// `title` instead (without one, the server joins them into an empty `||` hover).
fn describe_shapes(schema: &mut Value) {
    visit(schema, &mut |obj| {
        if let Some(Value::Object(props)) = obj.get_mut("properties") {
            for p in props.values_mut() {
                strip_shape_docs(p);
            }
        }
    });
    if let Some(Value::Object(defs)) = schema.get_mut("definitions") {
        for d in defs.values_mut() {
            if let Some(obj) = d.as_object_mut() {
                obj.remove("description");
            }
            strip_shape_docs(d);
        }
    }
    visit(schema, &mut |obj| {
        for key in ["anyOf", "oneOf"] {
            let Some(Value::Array(branches)) = obj.get_mut(key) else {
                continue;
            };
            for b in branches.iter_mut() {
                let Some(b) = b.as_object_mut() else { continue };
                if b.contains_key("title") || b.contains_key("$ref") || b.contains_key("const") {
                    continue;
                }
                let title = match b.get("type").and_then(|t| t.as_str()) {
                    Some("string") => "text",
                    Some("integer") => "whole number",
                    Some("number") => "number",
                    Some("boolean") => "boolean",
                    Some("null") => "null",
                    Some("array") => "list",
                    Some("object") => "map",
                    _ => continue,
                };
                b.insert("title".into(), json!(title));
            }
        }
    });
}

/// Remove the `description` of a shape and of its alternatives (not of the keys
/// inside them).
fn strip_shape_docs(v: &mut Value) {
    let Some(obj) = v.as_object_mut() else { return };
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(Value::Array(branches)) = obj.get_mut(key) {
            for b in branches.iter_mut() {
                if let Some(inner) = b.as_object_mut() {
                    inner.remove("description");
                }
                strip_shape_docs(b);
            }
        }
    }
}

fn exactly_one(schema: &mut Value) {
    for (def, keys) in EXACTLY_ONE {
        if let Some(obj) = definition(schema, def) {
            // Ajv's strictRequired wants each required key defined beside `required`;
            // the definition only repeats the key's description.
            let props = obj.get("properties").cloned().unwrap_or_default();
            let branches: Vec<Value> = keys
                .iter()
                .map(|k| {
                    let doc = props.get(*k).and_then(|p| p.get("description")).cloned();
                    json!({ "required": [k], "properties": { *k: { "description": doc } } })
                })
                .collect();
            obj.insert("oneOf".into(), Value::Array(branches));
        }
    }
}
