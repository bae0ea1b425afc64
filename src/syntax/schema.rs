//! JSON Schema of the pipeline file, generated from the Rust types below (schemars).
//!
//! These types mirror the file as a user writes it, for editors and CI; the decoder
//! in `decode` is what prun itself uses (it reports every problem with a span). A test
//! checks that both accept the same keys, and another that `schemas/` is up to date.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Serialize;

/// A prun pipeline file.
#[derive(JsonSchema, Serialize)]
#[schemars(deny_unknown_fields, title = "prun pipeline")]
#[allow(dead_code)]
pub struct PipelineFile {
    /// Format version; must be 1.
    #[schemars(range(min = 1, max = 1))]
    version: u32,
    /// Pipeline name (defaults to the file name).
    name: Option<String>,
    description: Option<String>,
    include: Option<OneOrManyPaths>,
    /// Values for `${params.NAME}`, overridable with `--set NAME=VALUE`.
    params: Option<BTreeMap<Name, Scalar>>,
    /// Environment for every stage; values may use interpolation.
    env: Option<BTreeMap<String, Scalar>>,
    env_file: Option<EnvFile>,
    hosts: Option<BTreeMap<Name, Host>>,
    queues: Option<BTreeMap<Name, Option<Queue>>>,
    /// Counting semaphores: name → number of permits (1 = a lock).
    semaphores: Option<BTreeMap<Name, Count>>,
    events: Option<Events>,
    /// Stage fields applied to every stage (a stage's own value wins).
    defaults: Option<Defaults>,
    shutdown: Option<Shutdown>,
    /// The stages, in order.
    stages: BTreeMap<Name, Stage>,
}

/// A name: lowercase letter first, then `a-z`, `0-9`, `_`, `-`.
#[derive(JsonSchema, Serialize, PartialEq, Eq, PartialOrd, Ord)]
struct Name(#[schemars(regex(pattern = r"^[a-z][a-z0-9_-]*$"))] String);

/// A string, a number or a boolean, taken as written. (Written as "not a map, a list
/// or null" rather than as three alternatives, which editors would show as such.)
#[derive(Serialize)]
#[serde(untagged)]
#[allow(dead_code)]
enum Scalar {
    String(String),
    Number(f64),
    Bool(bool),
}

impl JsonSchema for Scalar {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Scalar".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "not": {
                "anyOf": [{"type": "object"}, {"type": "array"}, {"type": "null"}]
            }
        })
    }
}

#[derive(JsonSchema, Serialize)]
struct Count(#[schemars(range(min = 1))] u32);

/// `250ms`, `5s`, `2m`, `1h`, or a number of seconds.
#[derive(JsonSchema, Serialize)]
#[serde(untagged)]
#[allow(dead_code)]
enum Duration {
    Text(
        #[schemars(regex(
            pattern = r"^\s*[0-9]+(\.[0-9]+)?\s*[a-zA-Z]*(\s*[0-9]+\s*[a-zA-Z]+)*\s*$"
        ))]
        String,
    ),
    Seconds(#[schemars(range(min = 0))] f64),
}

#[derive(JsonSchema, Serialize)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
struct Queue {
    /// Records buffered inside prun before writers block.
    #[schemars(range(min = 1))]
    capacity: Option<u64>,
    delivery: Option<Delivery>,
    framing: Option<Framing>,
    /// End-of-stream record sent to every reader (e.g. "None").
    sentinel: Option<Scalar>,
    order: Option<QueueOrder>,
}

#[derive(JsonSchema, Serialize)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum QueueOrder {
    /// Records as they arrive.
    Arrival,
    /// Grouped by writer, in writer order.
    Writers,
}

/// One path or a list of paths.
#[derive(JsonSchema, Serialize)]
#[serde(untagged)]
#[allow(dead_code)]
enum OneOrManyPaths {
    One(String),
    Many(Vec<String>),
}

/// A dotenv file, a list of them, or `{path, required}` entries.
#[derive(JsonSchema, Serialize)]
#[serde(untagged)]
#[allow(dead_code)]
enum EnvFile {
    One(EnvFileItem),
    Many(Vec<EnvFileItem>),
}

#[derive(JsonSchema, Serialize)]
#[serde(untagged)]
#[allow(dead_code)]
enum EnvFileItem {
    Path(String),
    Entry(EnvFileEntry),
}

#[derive(JsonSchema, Serialize)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
struct EnvFileEntry {
    path: String,
    required: Option<bool>,
}

/// A machine that stages may run on: exactly one of `ssh` and `slurm`.
#[derive(JsonSchema, Serialize)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
struct Host {
    ssh: Option<String>,
    #[schemars(range(min = 1, max = 65535))]
    port: Option<u32>,
    options: Option<Vec<String>>,
    slurm: Option<Slurm>,
    #[schemars(range(min = 1))]
    slots: Option<u32>,
    cwd: Option<String>,
}

#[derive(JsonSchema, Serialize)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
struct Slurm {
    partition: Option<String>,
    args: Option<Vec<String>>,
}

#[derive(JsonSchema, Serialize)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
struct Halt {
    when: Option<HaltWhen>,
    fail: Option<Threshold>,
    success: Option<Threshold>,
}

#[derive(JsonSchema, Serialize)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum HaltWhen {
    Soon,
    Now,
}

/// A number of items, or a share of all the items such as `"10%"`.
#[derive(JsonSchema, Serialize)]
#[serde(untagged)]
#[allow(dead_code)]
enum Threshold {
    Count(#[schemars(range(min = 1))] u64),
    Percent(#[schemars(regex(pattern = r"^\s*[0-9]+(\.[0-9]+)?\s*%\s*$"))] String),
}

#[derive(JsonSchema, Serialize)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum Delivery {
    /// Each record to exactly one reader (a work queue).
    Shared,
    /// Every record to every reader.
    Broadcast,
}

#[derive(JsonSchema, Serialize)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum Framing {
    Lines,
    Nul,
    Bytes,
}

#[derive(JsonSchema, Serialize)]
#[serde(untagged)]
#[allow(dead_code)]
enum Events {
    List(Vec<Name>),
    Map(BTreeMap<Name, Option<EventDecl>>),
}

#[derive(JsonSchema, Serialize)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
struct EventDecl {
    initially: Option<SetClear>,
}

#[derive(JsonSchema, Serialize)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum SetClear {
    Set,
    Clear,
}

#[derive(JsonSchema, Serialize)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
struct Shutdown {
    /// Grace period between the stop signal and SIGKILL (default 10s).
    timeout: Option<Duration>,
    /// Default stop signal (default TERM).
    signal: Option<Signal>,
}

/// A signal name (`TERM`, `SIGINT`, ...) or number.
#[derive(JsonSchema, Serialize)]
#[serde(untagged)]
#[allow(dead_code)]
enum Signal {
    Name(
        #[schemars(regex(
            pattern = r"^(SIG|sig)?(HUP|INT|QUIT|ABRT|KILL|USR1|USR2|PIPE|ALRM|TERM|CONT|STOP|TSTP|WINCH|hup|int|quit|abrt|kill|usr1|usr2|pipe|alrm|term|cont|stop|tstp|winch)$"
        ))]
        String,
    ),
    Number(u8),
}

macro_rules! stage_fields {
    ($(#[$m:meta])* $vis:vis struct $name:ident { $($extra:tt)* }) => {
        $(#[$m])*
        #[derive(JsonSchema, Serialize)]
        #[schemars(deny_unknown_fields)]
        #[allow(dead_code)]
        $vis struct $name {
            $($extra)*
            /// Working directory (default: where prun was started).
            cwd: Option<String>,
            /// Extra environment variables.
            env: Option<BTreeMap<String, Scalar>>,
            env_file: Option<EnvFile>,
            /// N identical instances `stage.0 … stage.N-1`.
            #[schemars(range(min = 1))]
            replicas: Option<u32>,
            /// With `foreach`: at most this many items at once (default: number of CPUs).
            #[schemars(range(min = 1))]
            parallel: Option<u32>,
            stdin: Option<Input>,
            stdout: Option<Output>,
            stderr: Option<Output>,
            /// Extra descriptors bound to queues: `{3: {read: q}}`.
            fds: Option<BTreeMap<String, Fd>>,
            after: Option<After>,
            /// Events that must be set before an instance starts.
            waits: Option<OneOrMany>,
            /// Events this stage sets, and when.
            sets: Option<BTreeMap<Name, Trigger>>,
            /// Semaphores each running instance holds one permit of.
            semaphore: Option<OneOrMany>,
            on: Option<OneOrMany>,
            ready: Option<Ready>,
            /// A service: the pipeline does not wait for it and stops it at the end.
            daemon: Option<bool>,
            /// Kill an instance that runs longer (state `timed out`).
            timeout: Option<Duration>,
            stop: Option<Stop>,
            restart: Option<Restart>,
            on_failure: Option<OnFailure>,
            /// Exit codes that count as success (default [0]).
            success_codes: Option<Vec<u8>>,
        }
    };
}

stage_fields! {
    /// A stage: one or more instances of a command.
    struct Stage {
        /// argv, executed directly (no shell). Numbers are taken as written.
        cmd: Option<Vec<Scalar>>,
        /// A command line run with `/bin/sh -c`.
        sh: Option<String>,
        /// One instance per item.
        foreach: Option<Foreach>,
        halt: Option<Halt>,
    }
}

stage_fields! {
    /// Fields applied to every stage.
    struct Defaults {}
}

#[derive(JsonSchema, Serialize)]
#[serde(untagged)]
#[allow(dead_code)]
enum OneOrMany {
    One(Name),
    Many(Vec<Name>),
}

/// A queue name, `{file: path}`, `inherit` or `null`.
#[derive(JsonSchema, Serialize)]
#[serde(untagged)]
#[allow(dead_code)]
enum Input {
    Null(()),
    Word(String),
    File(FileIn),
}

#[derive(JsonSchema, Serialize)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
struct FileIn {
    file: String,
}

/// A queue name, `{file: path, append: bool}`, `log`, `inherit` or `null`.
#[derive(JsonSchema, Serialize)]
#[serde(untagged)]
#[allow(dead_code)]
enum Output {
    Null(()),
    Word(String),
    File(FileOut),
}

#[derive(JsonSchema, Serialize)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
struct FileOut {
    file: String,
    append: Option<bool>,
}

#[derive(JsonSchema, Serialize)]
#[serde(untagged)]
#[allow(dead_code)]
enum Fd {
    Read(FdRead),
    Write(FdWrite),
}

#[derive(JsonSchema, Serialize)]
#[schemars(deny_unknown_fields)]
struct FdRead {
    read: Name,
}

#[derive(JsonSchema, Serialize)]
#[schemars(deny_unknown_fields)]
struct FdWrite {
    write: Name,
}

/// A list of stages (condition `succeeded`), or a map stage → condition.
#[derive(JsonSchema, Serialize)]
#[serde(untagged)]
#[allow(dead_code)]
enum After {
    List(OneOrMany),
    Map(BTreeMap<Name, Option<Condition>>),
}

#[derive(JsonSchema, Serialize)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum Condition {
    Started,
    Ready,
    Succeeded,
    Completed,
}

#[derive(JsonSchema, Serialize)]
#[serde(untagged)]
#[allow(dead_code)]
enum Trigger {
    Word(TriggerWord),
    Line(LineMatch),
}

#[derive(JsonSchema, Serialize)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum TriggerWord {
    Started,
    Ready,
    Succeeded,
    Failed,
    Exited,
}

#[derive(JsonSchema, Serialize)]
#[schemars(deny_unknown_fields)]
struct LineMatch {
    /// A regular expression matched against the instance's log lines.
    line: String,
}

/// Exactly one source: `items`, `range`, `glob`, `lines`, `queue` (with an optional
/// `batch`) or `matrix`.
#[derive(JsonSchema, Serialize)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
struct Foreach {
    items: Option<Vec<Scalar>>,
    range: Option<Range>,
    glob: Option<String>,
    lines: Option<String>,
    queue: Option<Name>,
    #[schemars(range(min = 1))]
    batch: Option<u32>,
    matrix: Option<BTreeMap<Name, Vec<Scalar>>>,
}

#[derive(JsonSchema, Serialize)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
struct Range {
    from: Option<i64>,
    /// Exclusive end, like Python's `range`.
    to: i64,
    step: Option<i64>,
}

/// Readiness probe: exactly one of `line`, `file`, `delay`, `tcp`, `cmd`.
#[derive(JsonSchema, Serialize)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
struct Ready {
    line: Option<String>,
    file: Option<String>,
    delay: Option<Duration>,
    /// `host:port`
    tcp: Option<String>,
    cmd: Option<Vec<Scalar>>,
    /// How often `cmd` is retried (default 1s).
    interval: Option<Duration>,
    /// Fail the instance when it is not ready in time.
    timeout: Option<Duration>,
}

#[derive(JsonSchema, Serialize)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
struct Stop {
    signal: Option<Signal>,
    timeout: Option<Duration>,
    cmd: Option<Vec<Scalar>>,
}

#[derive(JsonSchema, Serialize)]
#[serde(untagged)]
#[allow(dead_code)]
enum Restart {
    Policy(RestartPolicy),
    Full(RestartFull),
}

#[derive(JsonSchema, Serialize)]
#[serde(rename_all = "kebab-case")]
#[allow(dead_code)]
enum RestartPolicy {
    Never,
    OnFailure,
    Always,
}

#[derive(JsonSchema, Serialize)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
struct RestartFull {
    policy: Option<RestartPolicy>,
    max: Option<u32>,
    backoff: Option<Duration>,
    max_backoff: Option<Duration>,
}

#[derive(JsonSchema, Serialize)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum OnFailure {
    Stop,
    Continue,
    Ignore,
}

/// The pipeline schema as editors and validators get it (see [`super::schema_json`]).
pub fn pipeline_schema() -> serde_json::Value {
    let generator = schemars::generate::SchemaSettings::draft07().into_generator();
    let schema = generator.into_root_schema_for::<PipelineFile>();
    let mut value = serde_json::to_value(&schema).unwrap_or_default();
    super::schema_json::publish(&mut value);
    value
}

pub fn pipeline_schema_json() -> String {
    serde_json::to_string_pretty(&pipeline_schema()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syntax::keys;

    fn props<'a>(schema: &'a serde_json::Value, def: &str) -> Vec<&'a str> {
        let obj = if def.is_empty() {
            schema
        } else {
            &schema["definitions"][def]
        };
        let mut keys: Vec<&str> = obj["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("{def} has no properties"))
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort();
        keys
    }

    /// Every block of the key table is exactly the properties of its schema
    /// definitions, and each property carries the table's description.
    #[test]
    fn schema_keys_match_the_key_table() {
        let s = pipeline_schema();
        for block in keys::ALL {
            // A block split over several definitions (`fds`: read or write) is their union.
            let mut union: Vec<&str> = Vec::new();
            for def in block.schema {
                union.extend(props(&s, def));
            }
            if !block.schema.is_empty() && block.schema != ["Stage", "Defaults"] {
                let mut names = block.names();
                names.sort();
                union.sort();
                assert_eq!(union, names, "block {}", block.name);
                continue;
            }
            for def in block.schema {
                let mut expected: Vec<&str> = block
                    .names()
                    .into_iter()
                    .filter(|k| *def != "Defaults" || !keys::NOT_IN_DEFAULTS.contains(k))
                    .collect();
                expected.sort();
                assert_eq!(props(&s, def), expected, "block {} vs {def}", block.name);
                let obj = if def.is_empty() {
                    &s
                } else {
                    &s["$defs"][*def]
                };
                for key in block.keys {
                    if let Some(p) = obj["properties"].get(key.name) {
                        assert_eq!(p["description"], key.doc, "{def}.{}", key.name);
                    }
                }
            }
        }
    }
}
