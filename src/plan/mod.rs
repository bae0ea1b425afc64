//! The plan: pure data describing what `prun run` will do.
//!
//! A plan is produced from a validated model and consumed by the runtime. It holds
//! no file descriptors and no processes, so it can be printed (`prun plan`),
//! compared in tests and handed to the supervisor unchanged. Everything that can
//! only be known when an instance starts (its index, foreach item, run directory,
//! the `/dev/fd/N` paths) is kept as a [`Template`] and rendered at spawn time.

pub mod shell;
pub mod show;

use std::path::PathBuf;
use std::time::Duration;

pub use crate::vocab::{
    Condition, Delivery, Framing, HaltWhen, OnFailure, Order, RestartPolicy, Threshold,
};

pub type StageId = usize;
pub type QueueId = usize;
pub type SemId = usize;
pub type EventId = usize;
pub type HostId = usize;

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
    /// Machines other than this one that stages may run on (`hosts:`, SPEC 3.5);
    /// `HostId` indexes this vector, `StagePlan::on` refers to it.
    pub hosts: Vec<HostPlan>,
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
    /// Where the instances may run (`on:`, SPEC 3.5): hosts from `Plan::hosts`, in the
    /// order written; an instance goes to the listed host with the most free slots.
    /// Empty: this machine.
    pub on: Vec<HostId>,
    /// `foreach: {queue: Q, batch: N}`: each instance gets a block of N records of Q
    /// on its stdin (the last block may be shorter) instead of one record as
    /// `${item}`. `None` for every other stage. (Kept beside the source rather than
    /// in `ForeachSource::Queue` so that the queue source keeps its shape.)
    pub batch: Option<usize>,
    /// `halt:` of a foreach stage (SPEC 3.4): when to stop starting items, or stop the
    /// running ones too. `None`: every item runs whatever the others do.
    pub halt: Option<Halt>,
}

/// `halt: {when, fail, success}` of a foreach stage (GNU parallel `--halt`).
/// At least one of `fail` and `success` is set.
#[derive(Debug, Clone, PartialEq)]
pub struct Halt {
    pub when: HaltWhen,
    /// Halt once this many items (or this share of all items) failed.
    pub fail: Option<Threshold>,
    /// Halt once this many items (or this share of all items) succeeded.
    pub success: Option<Threshold>,
}

/// A machine from `hosts:` (SPEC 3.5). Every setting is already interpolated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPlan {
    pub name: String,
    pub engine: Engine,
    /// How many instances may run there at once; `None` is unlimited
    /// (default 1 for `ssh`, unlimited for `slurm`).
    pub slots: Option<usize>,
    /// Remote working directory; `None`: the remote login directory.
    pub cwd: Option<String>,
}

/// The placement rule (SPEC 3.5): of the hosts `on` lists, the one with the most free
/// slots (`free(h)`; `usize::MAX` for unlimited), the first listed on a tie; `None`
/// when all are full. The runtime places by it, `prun plan` shows it.
pub fn most_free_slots(on: &[HostId], free: impl Fn(HostId) -> usize) -> Option<HostId> {
    let mut best: Option<(HostId, usize)> = None;
    for &h in on {
        let f = free(h);
        if f > 0 && best.is_none_or(|(_, b)| f > b) {
            best = Some((h, f));
        }
    }
    best.map(|(h, _)| h)
}

/// How prun reaches a host: it drives the engine's own client, no agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Engine {
    /// The OpenSSH client: `ssh [-p PORT] OPTIONS... DESTINATION` (BatchMode, no TTY).
    Ssh {
        /// `user@host`, `host`, or a Host alias of `~/.ssh/config`.
        destination: String,
        port: Option<u16>,
        /// Extra arguments for `ssh`, before the destination (`[-i, keys/ci]`).
        options: Vec<String>,
    },
    /// One `srun` step per instance.
    Slurm {
        partition: Option<String>,
        /// Extra arguments for `srun` (`[--mem=2G, --time=01:00:00]`).
        args: Vec<String>,
    },
}

/// Derived from wiring, never declared (SPEC 1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Writes to a queue, reads none.
    Producer,
    /// Reads a queue and writes one.
    Filter,
    /// Reads a queue, writes none, its output goes to prun's log.
    Consumer,
    /// Reads a queue and sends its output out of the pipeline (a file or prun's stdout).
    Sink,
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
            Role::Sink => "sink",
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
    /// `${item.NAME}` in a `foreach: {matrix}` stage: the part of the item for the
    /// matrix dimension with this index (`ForeachSource::Matrix`, in file order), from
    /// `InstanceVars::parts`.
    ItemPart(usize),
}

/// Values for the per-instance placeholders.
#[derive(Debug, Clone, Default)]
pub struct InstanceVars<'a> {
    pub stage: &'a str,
    pub index: usize,
    pub replicas: usize,
    pub item: Option<&'a str>,
    pub run_dir: &'a str,
    /// The parts of a `foreach: {matrix}` item, one per dimension in file order
    /// (`${item.NAME}`); empty for every other instance.
    pub parts: Vec<&'a str>,
}

/// The value of a per-instance placeholder.
fn var_value<'a>(var: InstanceVar, vars: &InstanceVars<'a>) -> std::borrow::Cow<'a, str> {
    match var {
        InstanceVar::Stage => vars.stage.into(),
        InstanceVar::Instance | InstanceVar::Index => vars.index.to_string().into(),
        InstanceVar::Replicas => vars.replicas.to_string().into(),
        InstanceVar::Item => vars.item.unwrap_or("").into(),
        InstanceVar::Fd(n) => format!("/dev/fd/{n}").into(),
        InstanceVar::RunDir => vars.run_dir.into(),
        InstanceVar::ItemPart(i) => vars.parts.get(i).copied().unwrap_or("").into(),
    }
}

impl Template {
    pub fn literal(s: impl Into<String>) -> Self {
        Template {
            pieces: vec![Piece::Literal(s.into())],
        }
    }

    /// A value known at load time (a param, an environment value): data, never code.
    pub fn value(s: impl Into<String>) -> Self {
        Template {
            pieces: vec![Piece::Value(s.into())],
        }
    }

    /// Render for argv, a path or an environment value: no quoting.
    pub fn render(&self, vars: &InstanceVars<'_>) -> String {
        self.render_with(vars)
    }

    /// Render for `sh -c`: every substituted value is data, never code, whatever
    /// quoting context it stands in (see [`shell`]).
    pub fn render_shell(&self, vars: &InstanceVars<'_>) -> String {
        let parts: Vec<shell::Part<'_>> = self
            .pieces
            .iter()
            .map(|piece| match piece {
                Piece::Literal(s) => shell::Part::Text(s),
                Piece::Value(v) => shell::Part::Value(v.into()),
                Piece::Var(var) => shell::Part::Value(var_value(*var, vars)),
            })
            .collect();
        shell::render(&parts)
    }

    fn render_with(&self, vars: &InstanceVars<'_>) -> String {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Literal(s) | Piece::Value(s) => out.push_str(s),
                Piece::Var(var) => out.push_str(&var_value(*var, vars)),
            }
        }
        out
    }

    /// True when the template uses `${item}` or `${index}`.
    pub fn uses_item(&self) -> bool {
        self.pieces.iter().any(|p| {
            matches!(
                p,
                Piece::Var(InstanceVar::Item)
                    | Piece::Var(InstanceVar::Index)
                    | Piece::Var(InstanceVar::ItemPart(_))
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
    shell::single_quote(s)
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
    /// One instance per record of this queue, as records arrive (with
    /// `StagePlan::batch`, one per block of records).
    Queue(QueueId),
    /// `{matrix: {NAME: [values...]}}`: one instance per combination, the first
    /// dimension varying slowest (GNU parallel `::: a b ::: c d`). `${item}` is the
    /// parts joined by a space; `${item.NAME}` is one part.
    Matrix(Vec<(String, Vec<String>)>),
}

impl ForeachSource {
    /// The number of items, when it is known before the run (`items`, `range`,
    /// `matrix`); None for `glob`, `lines` and `queue` (and a range with step 0).
    pub fn known_count(&self) -> Option<u64> {
        match self {
            ForeachSource::Items(v) => Some(v.len() as u64),
            ForeachSource::Range { from, to, step } => {
                let (from, to, step) = (*from as i128, *to as i128, *step as i128);
                if step == 0 {
                    return None;
                }
                let span = if step > 0 { to - from } else { from - to };
                let n = if span <= 0 {
                    0
                } else {
                    (span + step.abs() - 1) / step.abs()
                };
                u64::try_from(n).ok()
            }
            ForeachSource::Matrix(dims) => dims
                .iter()
                .try_fold(1u64, |n, (_, v)| n.checked_mul(v.len() as u64)),
            ForeachSource::Glob(_) | ForeachSource::Lines(_) | ForeachSource::Queue(_) => None,
        }
    }
}

/// The items of a matrix as `${item}` renders them: every combination, the first
/// dimension varying slowest, parts joined by a space.
pub fn matrix_items(dims: &[(String, Vec<String>)]) -> Vec<String> {
    let mut items = vec![Vec::<&str>::new()];
    for (_, values) in dims {
        items = items
            .iter()
            .flat_map(|prefix| {
                values.iter().map(move |v| {
                    let mut next = prefix.clone();
                    next.push(v.as_str());
                    next
                })
            })
            .collect();
    }
    items.into_iter().map(|parts| parts.join(" ")).collect()
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

#[derive(Debug, Clone, PartialEq)]
pub struct QueuePlan {
    pub name: String,
    pub capacity: usize,
    pub delivery: Delivery,
    pub framing: Framing,
    /// The sentinel record without its delimiter.
    pub sentinel: Option<Vec<u8>>,
    /// `order:` arrival (default) or grouped by writer (SPEC 4.2).
    pub order: Order,
    pub writers: Vec<Endpoint>,
    pub readers: Vec<Endpoint>,
    pub wiring: Wiring,
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

impl StagePlan {
    /// Every queue this stage is attached to, with the port.
    pub fn queue_ports(&self) -> Vec<(QueueId, Port)> {
        let mut out = Vec::new();
        if let Input::Queue(q) = self.stdin {
            out.push((q, Port::Stdin));
        }
        if let Output::Queue(q) = self.stdout {
            out.push((q, Port::Stdout));
        }
        if let Output::Queue(q) = self.stderr {
            out.push((q, Port::Stderr));
        }
        for f in &self.fds {
            out.push((f.queue, Port::Fd(f.fd)));
        }
        if let Instances::Foreach {
            source: ForeachSource::Queue(q),
            ..
        } = self.instances
        {
            out.push((q, Port::Foreach));
        }
        out
    }

    /// Queues this stage reads (stdin, read fds, foreach source).
    pub fn reads(&self) -> Vec<QueueId> {
        let mut out: Vec<QueueId> = self
            .queue_ports()
            .into_iter()
            .filter(|(_, p)| self.port_reads(*p))
            .map(|(q, _)| q)
            .collect();
        out.dedup();
        out
    }

    /// Queues this stage writes (stdout, stderr, write fds).
    pub fn writes(&self) -> Vec<QueueId> {
        let mut out: Vec<QueueId> = self
            .queue_ports()
            .into_iter()
            .filter(|(_, p)| !self.port_reads(*p))
            .map(|(q, _)| q)
            .collect();
        out.dedup();
        out
    }

    /// True when the stage reads through this port.
    pub fn port_reads(&self, port: Port) -> bool {
        match port {
            Port::Stdin | Port::Foreach => true,
            Port::Stdout | Port::Stderr => false,
            Port::Fd(n) => self
                .fds
                .iter()
                .any(|f| f.fd == n && f.direction == FdDirection::Read),
        }
    }

    pub fn stdin_queue(&self) -> Option<QueueId> {
        match self.stdin {
            Input::Queue(q) => Some(q),
            _ => None,
        }
    }

    /// True when the command line contains `needle` as literal text.
    pub fn mentions(&self, needle: &str) -> bool {
        let lit = |t: &Template| {
            t.pieces
                .iter()
                .any(|p| matches!(p, Piece::Literal(s) | Piece::Value(s) if s.contains(needle)))
        };
        match &self.command {
            CommandTemplate::Argv(argv) => argv.iter().any(lit),
            CommandTemplate::Shell(t) => lit(t),
        }
    }

    pub fn is_foreach(&self) -> bool {
        matches!(self.instances, Instances::Foreach { .. })
    }
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
    fn matrix_items_are_the_cross_product_in_order() {
        let dims = vec![
            ("size".to_string(), vec!["s".to_string(), "m".to_string()]),
            (
                "region".to_string(),
                vec!["eu".to_string(), "us".to_string()],
            ),
        ];
        assert_eq!(matrix_items(&dims), ["s eu", "s us", "m eu", "m us"]);
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
