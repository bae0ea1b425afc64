//! The plan: pure data describing what `prun run` will do.
//!
//! A plan is produced from a validated model and consumed by the runtime. It holds
//! no file descriptors and no processes, so it can be printed (`prun plan`),
//! compared in tests and handed to the supervisor unchanged. Everything that can
//! only be known when an instance starts (its index, foreach item, run directory,
//! the `/dev/fd/N` paths) is kept as a [`Template`] and rendered at spawn time.

use std::path::PathBuf;
use std::time::Duration;

pub type StageId = usize;
pub type QueueId = usize;
pub type SemId = usize;
pub type EventId = usize;

/// Everything the runtime needs to run one pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub name: String,
    /// Directory of the YAML file (`${pipeline.dir}`), also the default `cwd` base.
    pub pipeline_dir: PathBuf,
    /// Directory prun was started in: relative `cwd` and file paths resolve from here.
    pub start_dir: PathBuf,
    /// Stages in file order; `StageId` indexes this vector.
    pub stages: Vec<StagePlan>,
    pub queues: Vec<QueuePlan>,
    pub semaphores: Vec<SemaphorePlan>,
    pub events: Vec<EventPlan>,
    /// Stages grouped by the wave in which they may first start (informational:
    /// the runtime starts an instance as soon as its conditions hold).
    pub start_waves: Vec<Vec<StageId>>,
    /// Drain-order shutdown (SPEC 5.2): each step is stopped only after every
    /// earlier step has ended. Producers first, dependencies last.
    pub stop_order: Vec<Vec<StageId>>,
    /// Default grace period between the stop signal and SIGKILL.
    pub shutdown_timeout: Duration,
}

/// A stage as a template for its instances.
#[derive(Debug, Clone, PartialEq)]
pub struct StagePlan {
    pub name: String,
    pub role: Role,
    pub command: CommandTemplate,
    /// Working directory (already joined with the start directory when relative).
    pub cwd: Option<Template>,
    /// Extra environment, after the pipeline-level `env` and before `PRUN_*`.
    pub env: Vec<(String, Template)>,
    pub instances: Instances,
    pub stdin: Input,
    pub stdout: Output,
    pub stderr: Output,
    /// Extra descriptors (fd >= 3) bound to queues.
    pub fds: Vec<FdBinding>,
    pub after: Vec<(StageId, Condition)>,
    pub waits: Vec<EventId>,
    pub sets: Vec<(EventId, Trigger)>,
    pub semaphores: Vec<SemId>,
    pub ready: Option<ReadyProbe>,
    pub daemon: bool,
    pub timeout: Option<Duration>,
    pub stop: StopSpec,
    pub restart: RestartSpec,
    pub on_failure: OnFailure,
    pub success_codes: Vec<i32>,
}

/// Derived from wiring, never declared (SPEC 1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Writes to a queue, reads none.
    Producer,
    /// Reads a queue and writes one.
    Filter,
    /// Reads a queue, writes none.
    Consumer,
    /// Neither reads nor writes queues, `daemon: true`.
    Daemon,
    /// A foreach stage (one instance per item).
    Batch,
    /// Neither reads nor writes queues (a plain job).
    Job,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Producer => "producer",
            Role::Filter => "filter",
            Role::Consumer => "consumer",
            Role::Daemon => "daemon",
            Role::Batch => "batch",
            Role::Job => "job",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum CommandTemplate {
    /// Executed directly; each template renders to exactly one argv element.
    Argv(Vec<Template>),
    /// Run with `/bin/sh -c`; substituted values are shell-quoted when rendered.
    Shell(Template),
}

/// A string with placeholders that are only known per instance.
/// Pipeline-level values (`params`, `env`, `pipeline.dir`) are already resolved
/// into [`Piece::Value`] by the model.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Template {
    pub pieces: Vec<Piece>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Text written in the file (after `$${` unescaping).
    Literal(String),
    /// A value substituted at load time (params, env, pipeline.dir). Shell-quoted in `sh`.
    Value(String),
    /// A value known only when the instance is created.
    Var(InstanceVar),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InstanceVar {
    /// `${stage}`
    Stage,
    /// `${instance}` (index of the replica or foreach item)
    Instance,
    /// `${replicas}`
    Replicas,
    /// `${item}`
    Item,
    /// `${index}`
    Index,
    /// `${fd.N}` → `/dev/fd/N`
    Fd(i32),
    /// `${run.dir}`
    RunDir,
}

/// Values for the per-instance placeholders.
#[derive(Debug, Clone, Default)]
pub struct InstanceVars<'a> {
    pub stage: &'a str,
    pub index: usize,
    pub replicas: usize,
    pub item: Option<&'a str>,
    pub run_dir: &'a str,
}

impl Template {
    pub fn literal(s: impl Into<String>) -> Self {
        Template {
            pieces: vec![Piece::Literal(s.into())],
        }
    }

    /// Render for argv, a path or an environment value: no quoting.
    pub fn render(&self, vars: &InstanceVars<'_>) -> String {
        self.render_with(vars, false)
    }

    /// Render for `sh -c`: every substituted value is shell-quoted.
    pub fn render_shell(&self, vars: &InstanceVars<'_>) -> String {
        self.render_with(vars, true)
    }

    fn render_with(&self, vars: &InstanceVars<'_>, quote: bool) -> String {
        let mut out = String::new();
        for piece in &self.pieces {
            let value: std::borrow::Cow<'_, str> = match piece {
                Piece::Literal(s) => {
                    out.push_str(s);
                    continue;
                }
                Piece::Value(v) => v.into(),
                Piece::Var(InstanceVar::Stage) => vars.stage.into(),
                Piece::Var(InstanceVar::Instance) | Piece::Var(InstanceVar::Index) => {
                    vars.index.to_string().into()
                }
                Piece::Var(InstanceVar::Replicas) => vars.replicas.to_string().into(),
                Piece::Var(InstanceVar::Item) => vars.item.unwrap_or("").into(),
                Piece::Var(InstanceVar::Fd(n)) => format!("/dev/fd/{n}").into(),
                Piece::Var(InstanceVar::RunDir) => vars.run_dir.into(),
            };
            if quote {
                out.push_str(&shell_quote(&value));
            } else {
                out.push_str(&value);
            }
        }
        out
    }

    /// True when the template uses `${item}` or `${index}`.
    pub fn uses_item(&self) -> bool {
        self.pieces.iter().any(|p| {
            matches!(
                p,
                Piece::Var(InstanceVar::Item) | Piece::Var(InstanceVar::Index)
            )
        })
    }
}

/// Quote a value for POSIX sh so it is exactly one word.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b))
    {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

#[derive(Debug, Clone, PartialEq)]
pub enum Instances {
    /// `replicas: N` (N = 1 for a plain stage; then the instance is named `stage`).
    Replicas { count: usize, named_by_index: bool },
    /// One instance per item, at most `parallel` at once.
    Foreach {
        source: ForeachSource,
        parallel: usize,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum ForeachSource {
    Items(Vec<String>),
    Range {
        from: i64,
        to: i64,
        step: i64,
    },
    /// Glob pattern, expanded when the stage is first considered for start.
    Glob(Template),
    /// File with one item per line.
    Lines(Template),
    /// One instance per record of this queue, as records arrive.
    Queue(QueueId),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Null,
    Inherit,
    File(Template),
    Queue(QueueId),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Null,
    Inherit,
    Log,
    File { path: Template, append: bool },
    Queue(QueueId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdDirection {
    Read,
    Write,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdBinding {
    pub fd: i32,
    pub direction: FdDirection,
    pub queue: QueueId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    Started,
    Ready,
    Succeeded,
    Completed,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    Started,
    Ready,
    Succeeded,
    Failed,
    Exited,
    /// A log line of the instance matches.
    Line(Regex),
}

/// A compiled regex that compares by its source text, so plans stay `PartialEq`.
#[derive(Debug, Clone)]
pub struct Regex(pub regex::Regex);

impl PartialEq for Regex {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReadyProbe {
    pub kind: ProbeKind,
    /// Fail the instance when not ready within this time.
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ProbeKind {
    Line(Regex),
    File(Template),
    Delay(Duration),
    /// `host:port`
    Tcp(String),
    Cmd {
        argv: Vec<Template>,
        interval: Duration,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct StopSpec {
    /// Signal number (e.g. `libc::SIGTERM`).
    pub signal: i32,
    pub timeout: Duration,
    pub cmd: Option<Vec<Template>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Never,
    OnFailure,
    Always,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RestartSpec {
    pub policy: RestartPolicy,
    /// Maximum restarts per instance (None: unlimited).
    pub max: Option<u32>,
    pub backoff: Duration,
    pub max_backoff: Duration,
}

impl RestartSpec {
    pub fn never() -> Self {
        RestartSpec {
            policy: RestartPolicy::Never,
            max: Some(3),
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
        }
    }

    /// Delay before restart number `n` (1-based): backoff·2^(n-1), capped.
    pub fn delay(&self, n: u32) -> Duration {
        let factor = 1u32
            .checked_shl(n.saturating_sub(1).min(31))
            .unwrap_or(u32::MAX);
        self.backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    Stop,
    Continue,
    Ignore,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueuePlan {
    pub name: String,
    pub capacity: usize,
    pub delivery: Delivery,
    pub framing: Framing,
    /// The sentinel record without its delimiter.
    pub sentinel: Option<Vec<u8>>,
    pub writers: Vec<Endpoint>,
    pub readers: Vec<Endpoint>,
    pub wiring: Wiring,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Shared,
    Broadcast,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Lines,
    Nul,
    Bytes,
}

impl Framing {
    /// The record delimiter, if any.
    pub fn delimiter(self) -> Option<u8> {
        match self {
            Framing::Lines => Some(b'\n'),
            Framing::Nul => Some(0),
            Framing::Bytes => None,
        }
    }
}

/// Where a stage is attached to a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    pub stage: StageId,
    pub port: Port,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    Stdin,
    Stdout,
    Stderr,
    Fd(i32),
    /// `foreach: {queue: q}`: records become items, read by prun itself.
    Foreach,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wiring {
    /// One writer instance, one reader instance, no sentinel, no restarts:
    /// a plain OS pipe between the two processes.
    Direct,
    /// prun reads writers' pipes and dispatches whole records to readers.
    Routed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SemaphorePlan {
    pub name: String,
    pub count: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventPlan {
    pub name: String,
    pub initially_set: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quote_keeps_one_word() {
        assert_eq!(shell_quote("abc"), "abc");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn restart_backoff_is_exponential_and_capped() {
        let r = RestartSpec {
            policy: RestartPolicy::Always,
            max: None,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(350),
        };
        assert_eq!(r.delay(1), Duration::from_millis(100));
        assert_eq!(r.delay(2), Duration::from_millis(200));
        assert_eq!(r.delay(3), Duration::from_millis(350));
        assert_eq!(r.delay(40), Duration::from_millis(350));
    }
}
