//! The pipeline file as written: typed, with the span of every key and value.
//!
//! `node` parses YAML into a spanned tree; `decode` walks that tree into the types
//! below, reporting every wrong type, unknown key and bad value at once; `interp`
//! parses `${...}` interpolation. Nothing here resolves a name: a queue named in
//! `stdout` is only a string with a span until the `model` checks it.

pub mod decode;
pub mod envfile;
pub mod files;
pub mod interp;
pub mod keys;
pub mod node;
pub mod schema;
pub mod schema_json;

use std::time::Duration;

pub use node::Span;

use crate::vocab::{
    Condition, Delivery, Framing, HaltWhen, OnFailure, Order, RestartPolicy, Threshold,
};

/// A value and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct S<T> {
    pub value: T,
    pub span: Span,
}

impl<T> S<T> {
    pub fn new(value: T, span: Span) -> S<T> {
        S { value, span }
    }
}

#[derive(Debug, Clone, Default)]
pub struct PipelineSpec {
    pub version: Option<S<i128>>,
    pub name: Option<S<String>>,
    pub description: Option<S<String>>,
    /// `include:` paths as written (relative to this file).
    pub include: Vec<S<String>>,
    pub params: Vec<(S<String>, S<String>)>,
    pub env: Vec<(S<String>, Tmpl)>,
    /// `env_file:` at the top level, as written.
    pub env_file: Vec<EnvFileSpec>,
    /// Variables read from the top-level `env_file`s, in file order (filled by
    /// [`files`], which reads them).
    pub env_file_vars: Vec<(S<String>, String)>,
    pub hosts: Vec<HostSpec>,
    pub queues: Vec<QueueSpec>,
    pub semaphores: Vec<(S<String>, S<i128>)>,
    pub events: Vec<EventSpec>,
    pub defaults: Option<StageSpec>,
    pub shutdown_timeout: Option<S<Duration>>,
    pub shutdown_signal: Option<S<i32>>,
    pub stages: Vec<StageSpec>,
    /// Span of the `stages` key (or of the whole document when it is missing).
    pub stages_span: Span,
}

#[derive(Debug, Clone)]
pub struct QueueSpec {
    pub name: S<String>,
    pub capacity: Option<S<i128>>,
    pub delivery: Option<S<Delivery>>,
    pub framing: Option<S<Framing>>,
    pub sentinel: Option<S<String>>,
    pub order: Option<S<Order>>,
}

/// `env_file: PATH` or `{path: PATH, required: false}`.
#[derive(Debug, Clone)]
pub struct EnvFileSpec {
    /// As written, relative to the file that declares it.
    pub path: S<String>,
    pub required: bool,
}

/// A host of `hosts:` (SPEC 3.5).
#[derive(Debug, Clone)]
pub struct HostSpec {
    pub name: S<String>,
    pub engine: EngineSpec,
    pub slots: Option<S<usize>>,
    pub cwd: Option<Tmpl>,
}

#[derive(Debug, Clone)]
pub enum EngineSpec {
    Ssh {
        destination: Tmpl,
        port: Option<u16>,
        options: Vec<Tmpl>,
    },
    Slurm {
        partition: Option<Tmpl>,
        args: Vec<Tmpl>,
    },
}

/// `halt:` of a foreach stage.
#[derive(Debug, Clone)]
pub struct HaltSpec {
    pub when: HaltWhen,
    pub fail: Option<Threshold>,
    pub success: Option<Threshold>,
}

#[derive(Debug, Clone)]
pub struct EventSpec {
    pub name: S<String>,
    pub initially_set: bool,
}

/// A stage (or the `defaults` block, where `name` is `defaults`).
#[derive(Debug, Clone, Default)]
pub struct StageSpec {
    pub name: S<String>,
    pub cmd: Option<S<Vec<Tmpl>>>,
    pub sh: Option<Tmpl>,
    pub cwd: Option<Tmpl>,
    pub env: Option<Vec<(S<String>, Tmpl)>>,
    pub replicas: Option<S<i128>>,
    pub foreach: Option<S<ForeachSpec>>,
    pub parallel: Option<S<i128>>,
    pub stdin: Option<S<IoSpec>>,
    pub stdout: Option<S<IoSpec>>,
    pub stderr: Option<S<IoSpec>>,
    pub fds: Option<Vec<FdSpec>>,
    pub after: Option<Vec<AfterSpec>>,
    pub waits: Option<Vec<S<String>>>,
    pub sets: Option<Vec<(S<String>, S<TriggerSpec>)>>,
    pub semaphore: Option<Vec<S<String>>>,
    pub ready: Option<S<ReadySpec>>,
    pub daemon: Option<S<bool>>,
    pub timeout: Option<S<Duration>>,
    pub stop: Option<S<StopSpec>>,
    pub restart: Option<S<RestartSpec>>,
    pub on_failure: Option<S<OnFailure>>,
    pub success_codes: Option<S<Vec<S<i128>>>>,
    pub env_file: Option<Vec<EnvFileSpec>>,
    /// Variables read from this stage's `env_file`s (filled by [`files`]).
    pub env_file_vars: Vec<(S<String>, String)>,
    pub on: Option<Vec<S<String>>>,
    pub halt: Option<S<HaltSpec>>,
    /// Whether `cmd`/`sh` were written at all (even with a value that failed to decode),
    /// so a bad `cmd` is not also reported as a missing one.
    pub has_cmd_key: bool,
    pub has_sh_key: bool,
}

impl Default for S<String> {
    fn default() -> Self {
        S::new(String::new(), Span::default())
    }
}

/// A string with `${...}` references, parsed but not resolved.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tmpl {
    pub pieces: Vec<TPiece>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TPiece {
    Lit(String),
    Ref(S<RefName>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum RefName {
    Param(String),
    Env {
        name: String,
        default: Option<String>,
    },
    Stage,
    Instance,
    Replicas,
    Item,
    /// `${item.NAME}`: one part of a matrix item.
    ItemPart(String),
    Index,
    Fd(i32),
    PipelineDir,
    RunDir,
    /// A name that is none of the above (reported by the model, which knows which
    /// names are available where the reference stands).
    Unknown(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum IoSpec {
    Null,
    Inherit,
    Log,
    Queue(S<String>),
    File { path: Tmpl, append: bool },
}

#[derive(Debug, Clone)]
pub struct FdSpec {
    pub fd: S<i32>,
    pub write: bool,
    pub queue: S<String>,
}

#[derive(Debug, Clone)]
pub struct AfterSpec {
    pub stage: S<String>,
    pub condition: S<Condition>,
}

#[derive(Debug, Clone)]
pub enum ForeachSpec {
    Items(Vec<Tmpl>),
    Range {
        from: i64,
        to: i64,
        step: S<i64>,
    },
    Glob(Tmpl),
    Lines(Tmpl),
    Queue {
        queue: S<String>,
        batch: Option<usize>,
    },
    /// Dimensions in file order, each with its values.
    Matrix(Vec<(S<String>, Vec<Tmpl>)>),
}

#[derive(Debug, Clone)]
pub enum TriggerSpec {
    Started,
    Ready,
    Succeeded,
    Failed,
    Exited,
    Line(regex::Regex),
}

#[derive(Debug, Clone)]
pub struct ReadySpec {
    pub kind: ProbeSpec,
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone)]
pub enum ProbeSpec {
    Line(regex::Regex),
    File(Tmpl),
    Delay(Duration),
    Tcp(S<String>),
    Cmd { argv: Vec<Tmpl>, interval: Duration },
}

#[derive(Debug, Clone, Default)]
pub struct StopSpec {
    pub signal: Option<i32>,
    pub timeout: Option<Duration>,
    pub cmd: Option<Vec<Tmpl>>,
}

#[derive(Debug, Clone)]
pub struct RestartSpec {
    pub policy: RestartPolicy,
    pub max: Option<u32>,
    pub backoff: Option<Duration>,
    pub max_backoff: Option<Duration>,
}
