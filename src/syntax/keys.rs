//! Every key of the file format, with its meaning and default: the one source that the
//! decoder's key checks (`decode`), the JSON Schema's descriptions and defaults
//! (`schema`) and the key tables of docs/format.md are made from. Tests fail when the
//! schema or the docs drift from this file (`tests/keys.rs` regenerates the docs with
//! `PRUN_BLESS=1`).

/// One key of a block.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    pub name: &'static str,
    /// One or two sentences: the hover text in editors and the "meaning" in the docs.
    pub doc: &'static str,
    /// The default as the docs show it (Markdown); empty when there is none.
    pub default: &'static str,
    /// The default as JSON, for the schema; empty when there is none (or it depends
    /// on something else, like the number of CPUs).
    pub json_default: &'static str,
}

const fn k(name: &'static str, doc: &'static str) -> Key {
    Key {
        name,
        doc,
        default: "",
        json_default: "",
    }
}

const fn d(name: &'static str, doc: &'static str, default: &'static str) -> Key {
    Key {
        name,
        doc,
        default,
        json_default: "",
    }
}

const fn j(
    name: &'static str,
    doc: &'static str,
    default: &'static str,
    json: &'static str,
) -> Key {
    Key {
        name,
        doc,
        default,
        json_default: json,
    }
}

/// A map of the format whose keys are fixed.
#[derive(Debug, Clone, Copy)]
pub struct Block {
    /// Name of the block in docs/format.md markers (`<!-- keys:NAME -->`).
    pub name: &'static str,
    /// Definitions of the JSON Schema that list exactly these keys (`""` is the root).
    pub schema: &'static [&'static str],
    pub keys: &'static [Key],
}

impl Block {
    pub fn names(&self) -> Vec<&'static str> {
        self.keys.iter().map(|k| k.name).collect()
    }

    pub fn get(&self, name: &str) -> Option<&'static Key> {
        self.keys.iter().find(|k| k.name == name)
    }
}

pub const TOP: Block = Block {
    name: "top",
    schema: &[""],
    keys: &[
        d("version", "Format version; must be `1`.", "required"),
        d(
            "name",
            "Pipeline name, shown in logs, `prun ps` and the report.",
            "file name without `.yaml`",
        ),
        k(
            "description",
            "Free text describing the pipeline, shown by `prun plan`.",
        ),
        k(
            "include",
            "Other pipeline files (paths relative to this file) whose `params`, `env`, `hosts`, `queues`, `semaphores`, `events` and `stages` are merged into this one.",
        ),
        k(
            "params",
            "Values for `${params.NAME}`, overridable with `--set NAME=VALUE`.",
        ),
        k(
            "env",
            "Environment variables for every stage (also seen by `${env.NAME}`); values may use interpolation.",
        ),
        k(
            "env_file",
            "A dotenv file (or a list) of `KEY=VALUE` lines loaded into every stage's environment, below `env`. Paths are relative to this file; `{path: .env, required: false}` allows a missing file.",
        ),
        k(
            "hosts",
            "Machines other than this one that stages may run on (`on:`), through `ssh` or `slurm`.",
        ),
        k(
            "queues",
            "Named queues joining stages: name → queue settings.",
        ),
        k(
            "semaphores",
            "Counting semaphores: name → number of permits (1 is a lock).",
        ),
        k(
            "events",
            "Events: a list of names (initially clear), or a map name → `{initially: set|clear}`.",
        ),
        k(
            "defaults",
            "Stage fields applied to every stage; a stage's own value wins.",
        ),
        d(
            "shutdown",
            "Default stop settings of every stage: `timeout` (grace period before SIGKILL) and `signal`.",
            "`{timeout: 10s, signal: TERM}`",
        ),
        d(
            "stages",
            "The stages, in order: name → stage. Each stage runs one or more instances of a command.",
            "required",
        ),
    ],
};

/// Keys an included file may hold (the mergeable sections, plus `version` and
/// `include` for nesting).
pub const INCLUDED: Block = Block {
    name: "included",
    schema: &[],
    keys: &[
        k("version", "Format version; must be `1` when given."),
        k("description", "Free text about the included file."),
        k(
            "include",
            "Files this file includes in turn (relative to it).",
        ),
        k("params", "Params merged into the including pipeline."),
        k(
            "env",
            "Environment variables merged into the including pipeline.",
        ),
        k("hosts", "Hosts merged into the including pipeline."),
        k("queues", "Queues merged into the including pipeline."),
        k(
            "semaphores",
            "Semaphores merged into the including pipeline.",
        ),
        k("events", "Events merged into the including pipeline."),
        k("stages", "Stages merged into the including pipeline."),
    ],
};

pub const STAGE: Block = Block {
    name: "stage",
    schema: &["Stage", "Defaults"],
    keys: &[
        d(
            "cmd",
            "The argv, executed directly without a shell; each element is exactly one argument, numbers are taken as written (`[seq, 1, 3]`). Exactly one of `cmd` and `sh` is required.",
            "one of `cmd`/`sh` required",
        ),
        k(
            "sh",
            "A command line run with `/bin/sh -c`; substituted values are always data, never code, in any quoting context.",
        ),
        d(
            "cwd",
            "Working directory of each instance; relative paths start from where prun was started.",
            "directory prun was started in",
        ),
        k(
            "env",
            "Extra environment variables of this stage, above the pipeline's `env`; values may use interpolation.",
        ),
        k(
            "env_file",
            "A dotenv file (or a list) loaded into this stage's environment, below its `env`; relative to the file that declares it.",
        ),
        j(
            "replicas",
            "Run N identical instances `stage.0 … stage.N-1` (a Pool of N); each is a separate writer/reader of the stage's queues.",
            "`1`",
            "1",
        ),
        k(
            "foreach",
            "One instance per item: `{items: [...]}`, `{range: {from, to, step}}`, `{glob: PATTERN}`, `{lines: FILE}`, `{queue: Q}` or `{matrix: {NAME: [values]}}`.",
        ),
        d(
            "parallel",
            "With `foreach`: at most this many items run at once.",
            "number of CPUs (with `on`: the hosts' slots); reading a `broadcast` queue: every item at once",
        ),
        j(
            "stdin",
            "Where the instance reads: a queue name, `{file: path}`, `inherit` (prun's own stdin, the terminal) or `null` (`/dev/null`).",
            "`null`",
            "null",
        ),
        j(
            "stdout",
            "Where the instance writes: a queue name, `{file: path, append: bool}`, `log` (prefixed lines on prun's stderr), `inherit` (prun's stdout) or `null`.",
            "`log`",
            "\"log\"",
        ),
        j(
            "stderr",
            "Where the instance's errors go: same choices as `stdout`.",
            "`log`",
            "\"log\"",
        ),
        k(
            "fds",
            "Extra descriptors bound to queues: `{3: {read: q}, 4: {write: q2}}`; `${fd.3}` expands to `/dev/fd/3`.",
        ),
        k(
            "after",
            "Stages that must reach a condition first: a list (condition `succeeded`), or a map stage → `started`|`ready`|`succeeded`|`completed`.",
        ),
        k(
            "waits",
            "Events that must be set before an instance starts.",
        ),
        k(
            "sets",
            "Events this stage sets, and when: event → `started`|`ready`|`succeeded`|`failed`|`exited`|`{line: REGEX}`.",
        ),
        k(
            "semaphore",
            "A semaphore name or a list of them; each running instance holds one permit of each, taken all at once.",
        ),
        d(
            "on",
            "Where the instances run: a host name from `hosts`, or a list of them (an instance goes to the listed host with the most free slots).",
            "this machine",
        ),
        d(
            "ready",
            "Readiness probe: `{line: REGEX}`, `{file: path}`, `{delay: 2s}`, `{tcp: \"127.0.0.1:8080\"}` or `{cmd: [...], interval: 1s}`; optional `timeout`.",
            "ready when started",
        ),
        j(
            "daemon",
            "`true`: a service; the pipeline does not wait for it and stops it at the end, after its queues are drained.",
            "`false`",
            "false",
        ),
        k(
            "timeout",
            "Kill an instance that runs longer than this (state `timed out`, exit code 124).",
        ),
        d(
            "stop",
            "How prun stops an instance: `{signal: TERM, timeout: 10s, cmd: [...]}`; SIGKILL to its process group after `timeout`.",
            "`TERM`, then SIGKILL after `shutdown.timeout`",
        ),
        d(
            "restart",
            "Restart policy: `never`, `on-failure`, `always`, or `{policy, max, backoff, max_backoff}` (exponential backoff).",
            "`never`",
        ),
        j(
            "on_failure",
            "What a failed instance does to the pipeline: `stop` it (drain-order shutdown), `continue` (it fails at the end) or `ignore`.",
            "`stop`",
            "\"stop\"",
        ),
        j(
            "success_codes",
            "Exit codes that count as success; the report keeps the real code.",
            "`[0]`",
            "[0]",
        ),
        k(
            "halt",
            "Foreach stages only: `{when: soon|now, fail: N|\"N%\", success: N|\"N%\"}`: stop starting items (`soon`) or stop the running ones too (`now`) once that many items failed or succeeded.",
        ),
    ],
};

/// Stage keys that make no sense for every stage at once.
pub const NOT_IN_DEFAULTS: &[&str] = &["cmd", "sh", "foreach", "halt"];

pub const QUEUE: Block = Block {
    name: "queue",
    schema: &["Queue"],
    keys: &[
        j(
            "capacity",
            "Records buffered inside prun before writers block (`Queue(maxsize)`); a queue with one writer and one reader instance is a direct pipe instead.",
            "`1024`",
            "1024",
        ),
        j(
            "delivery",
            "`shared`: each record to exactly one reader instance (a work queue); `broadcast`: every reader instance gets every record.",
            "`shared`",
            "\"shared\"",
        ),
        j(
            "framing",
            "How the stream is cut into records: `lines` (newline), `nul` (NUL byte) or `bytes` (not at all).",
            "`lines`",
            "\"lines\"",
        ),
        k(
            "sentinel",
            "A record sent to every reader once all writers have ended (e.g. `\"None\"`); a writer that writes it itself ends its stream there.",
        ),
        j(
            "order",
            "`arrival`: records as they come; `writers`: grouped by writer, in writer order (stages in file order, then instance, then foreach item), like `cat <(a) <(b)`.",
            "`arrival`",
            "\"arrival\"",
        ),
    ],
};

pub const SHUTDOWN: Block = Block {
    name: "shutdown",
    schema: &["Shutdown"],
    keys: &[
        j(
            "timeout",
            "Grace period between a stage's stop signal and SIGKILL to its process group.",
            "`10s`",
            "\"10s\"",
        ),
        j(
            "signal",
            "Default stop signal of every stage (`TERM`, `INT`, `SIGHUP`, `15`...).",
            "`TERM`",
            "\"TERM\"",
        ),
    ],
};

pub const EVENT: Block = Block {
    name: "event",
    schema: &["EventDecl"],
    keys: &[j(
        "initially",
        "The event's state when the pipeline starts: `set` or `clear`.",
        "`clear`",
        "\"clear\"",
    )],
};

pub const READY: Block = Block {
    name: "ready",
    schema: &["Ready"],
    keys: &[
        k(
            "line",
            "Ready when a log line of the instance matches this regular expression.",
        ),
        k("file", "Ready when this file exists."),
        k("delay", "Ready this long after the instance started."),
        k(
            "tcp",
            "Ready when a TCP connection to this `host:port` succeeds.",
        ),
        k(
            "cmd",
            "Ready when this command (an argv list) exits 0; tried every `interval`.",
        ),
        j(
            "interval",
            "How often the `cmd` probe is tried.",
            "`1s`",
            "\"1s\"",
        ),
        k(
            "timeout",
            "Fail the instance when it is not ready this long after it started.",
        ),
    ],
};

pub const STOP: Block = Block {
    name: "stop",
    schema: &["Stop"],
    keys: &[
        d(
            "signal",
            "The signal sent to the instance's process group to stop it.",
            "`shutdown.signal` (`TERM`)",
        ),
        d(
            "timeout",
            "How long to wait after the signal (or `cmd`) before SIGKILL.",
            "`shutdown.timeout` (`10s`)",
        ),
        k(
            "cmd",
            "A command (an argv list) run instead of sending the signal, e.g. a graceful shutdown request.",
        ),
    ],
};

pub const RESTART: Block = Block {
    name: "restart",
    schema: &["RestartFull"],
    keys: &[
        j(
            "policy",
            "When to restart an instance that ended: `never`, `on-failure` or `always`.",
            "`on-failure` (in a map)",
            "\"on-failure\"",
        ),
        j("max", "Restarts per instance at most.", "`3`", "3"),
        j(
            "backoff",
            "Delay before the first restart; it doubles each time.",
            "`1s`",
            "\"1s\"",
        ),
        j(
            "max_backoff",
            "The longest delay between restarts.",
            "`30s`",
            "\"30s\"",
        ),
    ],
};

pub const FOREACH: Block = Block {
    name: "foreach",
    schema: &["Foreach"],
    keys: &[
        k("items", "The listed values, one instance each."),
        k(
            "range",
            "Integers from `from` (default 0) up to, not including, `to`, by `step` (default 1).",
        ),
        k("glob", "Paths matching this pattern, sorted."),
        k("lines", "Each line of this file."),
        k(
            "queue",
            "Each record of this queue, as records arrive (`${item}`); with `batch`, blocks of records on stdin.",
        ),
        k(
            "batch",
            "With `queue`: one instance per block of this many records, fed to its stdin (the last block may be shorter).",
        ),
        k(
            "matrix",
            "The cross product of named lists: `{size: [s, m], region: [eu, us]}`; `${item.size}` names a part, `${item}` is the parts joined by a space.",
        ),
    ],
};

pub const RANGE: Block = Block {
    name: "range",
    schema: &["Range"],
    keys: &[
        j("from", "First number.", "`0`", "0"),
        d(
            "to",
            "End of the range, not included (like Python's `range`).",
            "required",
        ),
        j(
            "step",
            "Increment; negative to count down, never 0.",
            "`1`",
            "1",
        ),
    ],
};

pub const FILE_OUT: Block = Block {
    name: "file",
    schema: &["FileOut"],
    keys: &[
        d(
            "file",
            "Path of the file (relative to where prun was started).",
            "required",
        ),
        j(
            "append",
            "Append to the file instead of truncating it.",
            "`false`",
            "false",
        ),
    ],
};

pub const FILE_IN: Block = Block {
    name: "file-in",
    schema: &["FileIn"],
    keys: &[d(
        "file",
        "Path of the file to read (relative to where prun was started).",
        "required",
    )],
};

pub const FD: Block = Block {
    name: "fd",
    schema: &["FdRead", "FdWrite"],
    keys: &[
        k("read", "The queue this descriptor reads."),
        k("write", "The queue this descriptor writes."),
    ],
};

pub const LINE_TRIGGER: Block = Block {
    name: "line-trigger",
    schema: &["LineMatch"],
    keys: &[k(
        "line",
        "A regular expression matched against the instance's log lines (stderr, and stdout when it is `log`).",
    )],
};

pub const HOST: Block = Block {
    name: "host",
    schema: &["Host"],
    keys: &[
        k(
            "ssh",
            "Run instances through the OpenSSH client on this destination: `user@host`, `host` or a Host alias of `~/.ssh/config`. Exactly one of `ssh` and `slurm`.",
        ),
        k("port", "SSH port (`ssh -p`)."),
        k(
            "options",
            "Extra arguments for `ssh`, before the destination (`[-i, keys/ci]`).",
        ),
        k(
            "slurm",
            "Run each instance as one Slurm `srun` step: `{partition, args}`.",
        ),
        d(
            "slots",
            "How many instances may run on this host at once.",
            "1 for `ssh`, unlimited for `slurm`",
        ),
        d(
            "cwd",
            "Remote working directory of the instances.",
            "the remote login directory",
        ),
    ],
};

pub const SLURM: Block = Block {
    name: "slurm",
    schema: &["Slurm"],
    keys: &[
        k("partition", "Slurm partition (`srun --partition`)."),
        k(
            "args",
            "Extra arguments for `srun` (`[--mem=2G, --time=01:00:00]`).",
        ),
    ],
};

pub const HALT: Block = Block {
    name: "halt",
    schema: &["Halt"],
    keys: &[
        j(
            "when",
            "`soon`: stop starting new items, let the running ones finish; `now`: stop the running ones too.",
            "`soon`",
            "\"soon\"",
        ),
        k(
            "fail",
            "Halt once this many items failed (`3`), or this share of all the items (`\"10%\"`).",
        ),
        k(
            "success",
            "Halt once this many items succeeded (`1`), or this share of all the items (`\"50%\"`).",
        ),
    ],
};

pub const ENV_FILE: Block = Block {
    name: "env-file",
    schema: &["EnvFileEntry"],
    keys: &[
        d(
            "path",
            "The dotenv file, relative to the file that declares it.",
            "required",
        ),
        j(
            "required",
            "`false`: a missing file is not an error.",
            "`true`",
            "true",
        ),
    ],
};

/// Every block, for the drift tests and the docs.
pub const ALL: &[&Block] = &[
    &TOP,
    &INCLUDED,
    &STAGE,
    &QUEUE,
    &SHUTDOWN,
    &EVENT,
    &READY,
    &STOP,
    &RESTART,
    &FOREACH,
    &RANGE,
    &FILE_OUT,
    &FILE_IN,
    &FD,
    &LINE_TRIGGER,
    &HOST,
    &SLURM,
    &HALT,
    &ENV_FILE,
];

/// The Markdown table of a block, as docs/format.md shows it between
/// `<!-- keys:NAME -->` and `<!-- /keys -->`.
pub fn markdown(block: &Block) -> String {
    let mut out = String::from("| key | default | meaning |\n|---|---|---|\n");
    for key in block.keys {
        let default = if key.default.is_empty() {
            "none"
        } else {
            key.default
        };
        out.push_str(&format!(
            "| `{}` | {} | {} |\n",
            key.name,
            default,
            key.doc.replace('|', "\\|")
        ));
    }
    out
}

/// Replace every `<!-- keys:NAME -->` … `<!-- /keys -->` region of `doc` with the
/// block's current table. Unknown names are left alone (and reported by the test).
pub fn render_doc(doc: &str) -> String {
    let mut out = String::with_capacity(doc.len());
    let mut rest = doc;
    while let Some(start) = rest.find("<!-- keys:") {
        let Some(open_end) = rest[start..].find("-->").map(|i| start + i + 3) else {
            break;
        };
        let name = rest[start + "<!-- keys:".len()..open_end - 3].trim();
        let Some(close) = rest[open_end..]
            .find("<!-- /keys -->")
            .map(|i| open_end + i)
        else {
            break;
        };
        out.push_str(&rest[..open_end]);
        out.push('\n');
        match ALL.iter().find(|b| b.name == name) {
            Some(b) => out.push_str(&markdown(b)),
            None => out.push_str(rest[open_end..close].trim_start_matches('\n')),
        }
        rest = &rest[close..];
        out.push_str("<!-- /keys -->");
        rest = &rest["<!-- /keys -->".len()..];
    }
    out.push_str(rest);
    out
}
