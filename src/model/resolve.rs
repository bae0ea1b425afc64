//! Resolution: names to ids, defaults applied, `${params.*}`/`${env.*}` substituted.

use std::path::Path;
use std::time::Duration;

use super::{Model, QueueModel, StageSpans};
use crate::diag::{Diagnostic, did_you_mean, one_of};
use crate::plan::*;
use crate::syntax::{
    AfterSpec, EngineSpec, ForeachSpec, HostSpec, IoSpec, PipelineSpec, ProbeSpec, RefName, S,
    StageSpec, TPiece, Tmpl, TriggerSpec,
};

pub struct Context<'a> {
    pub pipeline_dir: &'a Path,
    pub start_dir: &'a Path,
    pub file_stem: String,
}

/// Default grace period between the stop signal and SIGKILL.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

pub fn resolve(
    spec: &PipelineSpec,
    ctx: &Context<'_>,
    sets: &[(String, String)],
    diags: &mut Vec<Diagnostic>,
) -> Option<Model> {
    let mut params: Vec<(String, String)> = spec
        .params
        .iter()
        .map(|(k, v)| (k.value.clone(), v.value.clone()))
        .collect();
    for (k, v) in sets {
        match params.iter_mut().find(|(n, _)| n == k) {
            Some(slot) => slot.1 = v.clone(),
            None => {
                let known: Vec<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
                diags.push(
                    Diagnostic::error(
                        "unknown-param",
                        format!("`--set {k}=...` names no param of this pipeline"),
                    )
                    .help(
                        did_you_mean(k, known.iter().copied()).unwrap_or_else(|| {
                            if known.is_empty() {
                                "this pipeline declares no `params`".to_string()
                            } else {
                                format!("the params are {}", one_of(&known))
                            }
                        }),
                    ),
                );
            }
        }
    }

    let mut r = Resolver {
        diags,
        params,
        pipeline_env: Vec::new(),
        pipeline_dir: ctx.pipeline_dir.display().to_string(),
        queues: spec.queues.iter().map(|q| q.name.value.clone()).collect(),
        semaphores: spec
            .semaphores
            .iter()
            .map(|(n, _)| n.value.clone())
            .collect(),
        events: spec.events.iter().map(|e| e.name.value.clone()).collect(),
        stages: spec.stages.iter().map(|s| s.name.value.clone()).collect(),
        hosts: spec.hosts.iter().map(|h| h.name.value.clone()).collect(),
    };

    // The pipeline's environment: its `env_file`s, then its `env`, whose values may use
    // params, the process environment and the variables defined before them.
    let scope = Scope::pipeline();
    let mut env_spans: Vec<(String, crate::syntax::Span)> = Vec::new();
    for (k, v) in &spec.env_file_vars {
        set_var(&mut r.pipeline_env, &k.value, Template::value(v.clone()));
        set_span(&mut env_spans, &k.value, k.span);
    }
    for (k, t) in &spec.env {
        let t = r.template(t, &scope);
        set_var(&mut r.pipeline_env, &k.value, t);
        set_span(&mut env_spans, &k.value, k.span);
    }

    let host_scope = Scope::once("a host's settings are the same for every instance");
    let hosts: Vec<HostPlan> = spec.hosts.iter().map(|h| r.host(h, &host_scope)).collect();

    let queues = spec
        .queues
        .iter()
        .map(|q| QueueModel {
            name: q.name.value.clone(),
            capacity: q
                .capacity
                .as_ref()
                .map(|c| c.value as usize)
                .unwrap_or(1024),
            delivery: q
                .delivery
                .as_ref()
                .map(|d| d.value)
                .unwrap_or(Delivery::Shared),
            framing: q
                .framing
                .as_ref()
                .map(|f| f.value)
                .unwrap_or(Framing::Lines),
            sentinel: q.sentinel.as_ref().map(|s| s.value.clone().into_bytes()),
            order: q.order.as_ref().map(|o| o.value).unwrap_or_default(),
        })
        .collect();

    let shutdown_timeout = spec
        .shutdown_timeout
        .as_ref()
        .map(|d| d.value)
        .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT);
    let default_signal = spec
        .shutdown_signal
        .as_ref()
        .map(|s| s.value)
        .unwrap_or(libc::SIGTERM);
    let empty = StageSpec::default();
    let defaults = spec.defaults.as_ref().unwrap_or(&empty);
    let mut stages = Vec::new();
    let mut stage_spans = Vec::new();
    for s in &spec.stages {
        let (plan, spans) = r.stage(s, defaults, shutdown_timeout, default_signal, &hosts);
        stages.push(plan);
        stage_spans.push(spans);
    }

    let model = Model {
        name: spec
            .name
            .as_ref()
            .map(|n| n.value.clone())
            .unwrap_or_else(|| ctx.file_stem.clone()),
        description: spec.description.as_ref().map(|d| d.value.clone()),
        pipeline_dir: ctx.pipeline_dir.to_path_buf(),
        start_dir: ctx.start_dir.to_path_buf(),
        params: r.params.clone(),
        queues,
        semaphores: spec
            .semaphores
            .iter()
            .map(|(n, c)| SemaphorePlan {
                name: n.value.clone(),
                count: c.value.clamp(1, u32::MAX as i128) as u32,
            })
            .collect(),
        events: spec
            .events
            .iter()
            .map(|e| EventPlan {
                name: e.name.value.clone(),
                initially_set: e.initially_set,
            })
            .collect(),
        hosts,
        stages,
        stage_spans,
        event_spans: spec.events.iter().map(|e| e.name.span).collect(),
        queue_spans: spec.queues.iter().map(|q| q.name.span).collect(),
        host_spans: spec.hosts.iter().map(|h| h.name.span).collect(),
        param_spans: spec.params.iter().map(|(k, _)| k.span).collect(),
        semaphore_spans: spec.semaphores.iter().map(|(k, _)| k.span).collect(),
        env_spans,
        shutdown_timeout,
    };
    Some(model)
}

/// Which per-instance references a template may use.
struct Scope {
    foreach: bool,
    fds: Vec<i32>,
    /// `${stage}`, `${instance}`... (false for values read once, such as foreach
    /// sources and host settings).
    instance: bool,
    /// Why per-instance values are not available here (when `instance` is false).
    once_because: &'static str,
    /// The dimensions of a `foreach: {matrix}` stage, for `${item.NAME}`.
    matrix: Vec<String>,
}

impl Scope {
    fn pipeline() -> Scope {
        Scope {
            foreach: true,
            fds: Vec::new(),
            instance: true,
            once_because: "",
            matrix: Vec::new(),
        }
    }

    /// A value computed once, for the whole pipeline or stage.
    fn once(because: &'static str) -> Scope {
        Scope {
            foreach: false,
            fds: Vec::new(),
            instance: false,
            once_because: because,
            matrix: Vec::new(),
        }
    }
}

fn set_var(env: &mut Vec<(String, Template)>, name: &str, t: Template) {
    match env.iter_mut().find(|(n, _)| n == name) {
        Some(slot) => slot.1 = t,
        None => env.push((name.to_string(), t)),
    }
}

fn set_span(spans: &mut Vec<(String, crate::syntax::Span)>, name: &str, span: crate::syntax::Span) {
    match spans.iter_mut().find(|(n, _)| n == name) {
        Some(slot) => slot.1 = span,
        None => spans.push((name.to_string(), span)),
    }
}

struct Resolver<'d> {
    diags: &'d mut Vec<Diagnostic>,
    params: Vec<(String, String)>,
    pipeline_env: Vec<(String, Template)>,
    pipeline_dir: String,
    queues: Vec<String>,
    semaphores: Vec<String>,
    events: Vec<String>,
    stages: Vec<String>,
    hosts: Vec<String>,
}

impl Resolver<'_> {
    fn template(&mut self, t: &Tmpl, scope: &Scope) -> Template {
        let mut pieces = Vec::new();
        for p in &t.pieces {
            match p {
                TPiece::Lit(s) => pieces.push(Piece::Literal(s.clone())),
                TPiece::Ref(r) => {
                    if let Some(mut ps) = self.reference(r, scope) {
                        pieces.append(&mut ps);
                    }
                }
            }
        }
        Template { pieces }
    }

    fn reference(&mut self, r: &S<RefName>, scope: &Scope) -> Option<Vec<Piece>> {
        let var = |v| Some(vec![Piece::Var(v)]);
        match &r.value {
            RefName::Param(name) => match self.params.iter().find(|(n, _)| n == name) {
                Some((_, v)) => Some(vec![Piece::Value(v.clone())]),
                None => {
                    let known: Vec<&str> = self.params.iter().map(|(n, _)| n.as_str()).collect();
                    let help = did_you_mean(name, known.iter().copied()).unwrap_or_else(|| {
                        format!("declare it under `params:` (known: {})", one_of(&known))
                    });
                    self.diags.push(
                        Diagnostic::error("unknown-param", format!("unknown param `{name}`"))
                            .at(r.span, "no such param")
                            .help(help),
                    );
                    None
                }
            },
            RefName::Env { name, default } => {
                if let Some((_, t)) = self.pipeline_env.iter().find(|(n, _)| n == name) {
                    return Some(t.pieces.clone());
                }
                match (std::env::var(name), default) {
                    (Ok(v), _) => Some(vec![Piece::Value(v)]),
                    (Err(_), Some(d)) => Some(vec![Piece::Value(d.clone())]),
                    (Err(_), None) => {
                        self.diags.push(
                            Diagnostic::error("unset-env", format!("environment variable `{name}` is not set"))
                                .at(r.span, "not set")
                                .help(format!(
                                    "set it before running prun, declare it in the pipeline's `env`, or give a default: `${{env.{name}:-default}}`"
                                )),
                        );
                        None
                    }
                }
            }
            RefName::Unknown(name) => {
                let foreach = scope.foreach && scope.instance;
                self.diags.push(
                    Diagnostic::error(
                        "unknown-variable",
                        format!("unknown interpolation `${{{name}}}`"),
                    )
                    .at(r.span, "not a known name")
                    .help(crate::syntax::interp::unknown_help(name, foreach)),
                );
                None
            }
            RefName::PipelineDir => Some(vec![Piece::Value(self.pipeline_dir.clone())]),
            RefName::RunDir => var(InstanceVar::RunDir),
            RefName::Stage | RefName::Instance | RefName::Replicas if !scope.instance => {
                self.not_here(r, scope.once_because);
                None
            }
            RefName::Stage => var(InstanceVar::Stage),
            RefName::Instance => var(InstanceVar::Instance),
            RefName::Replicas => var(InstanceVar::Replicas),
            RefName::Item | RefName::Index if !scope.instance => {
                self.not_here(r, scope.once_because);
                None
            }
            RefName::Item | RefName::Index if !scope.foreach => {
                self.not_here(
                    r,
                    "`${item}` and `${index}` exist only in a stage with `foreach`",
                );
                None
            }
            RefName::Item => var(InstanceVar::Item),
            RefName::ItemPart(_) if !scope.instance => {
                self.not_here(r, scope.once_because);
                None
            }
            RefName::ItemPart(part) => match scope.matrix.iter().position(|d| d == part) {
                Some(i) => var(InstanceVar::ItemPart(i)),
                None if scope.matrix.is_empty() => {
                    self.not_here(
                        r,
                        "`${item.NAME}` exists only in a stage with `foreach: {matrix: {NAME: [...]}}`",
                    );
                    None
                }
                None => {
                    let help = did_you_mean(part, scope.matrix.iter().map(String::as_str))
                        .unwrap_or_else(|| {
                            format!("the matrix dimensions are {}", one_of(&scope.matrix))
                        });
                    self.diags.push(
                        Diagnostic::error(
                            "unknown-variable",
                            format!("the matrix has no dimension `{part}`"),
                        )
                        .at(r.span, "not a dimension of this stage's matrix")
                        .help(help),
                    );
                    None
                }
            },
            RefName::Index => var(InstanceVar::Index),
            RefName::Fd(n) => {
                if scope.fds.contains(n) {
                    var(InstanceVar::Fd(*n))
                } else {
                    self.diags.push(
                        Diagnostic::error(
                            "unknown-fd",
                            format!("descriptor {n} is not bound in this stage's `fds`"),
                        )
                        .at(r.span, "no such descriptor")
                        .help(format!("bind it first: `fds: {{{n}: {{read: QUEUE}}}}`")),
                    );
                    None
                }
            }
        }
    }

    /// A host's settings, interpolated once (params, env, `${pipeline.dir}`).
    fn host(&mut self, h: &HostSpec, scope: &Scope) -> HostPlan {
        let vars = InstanceVars::default();
        let text = |r: &mut Self, t: &Tmpl| r.template(t, scope).render(&vars);
        let engine = match &h.engine {
            EngineSpec::Ssh {
                destination,
                port,
                options,
            } => Engine::Ssh {
                destination: text(self, destination),
                port: *port,
                options: options.iter().map(|o| text(self, o)).collect(),
            },
            EngineSpec::Slurm { partition, args } => Engine::Slurm {
                partition: partition.as_ref().map(|p| text(self, p)),
                args: args.iter().map(|a| text(self, a)).collect(),
            },
        };
        let slots = match (&h.slots, &engine) {
            (Some(n), _) => Some(n.value),
            (None, Engine::Ssh { .. }) => Some(1),
            (None, Engine::Slurm { .. }) => None,
        };
        let written = match &h.engine {
            EngineSpec::Ssh { destination, .. } => Some(destination),
            _ => None,
        };
        let has_refs =
            written.is_some_and(|t| t.pieces.iter().any(|p| matches!(p, TPiece::Ref(_))));
        if let (Engine::Ssh { destination, .. }, Some(written)) = (&engine, written)
            && ((destination.trim().is_empty() && !has_refs) || destination.starts_with('-'))
        {
            let span = written.span;
            self.diags.push(
                Diagnostic::error(
                    "invalid-host",
                    format!("`{destination}` is not an SSH destination"),
                )
                .at(span, "expected user@host or a host name")
                .help("write `ssh: user@machine` or a Host alias of ~/.ssh/config; options go in `options: [...]`"),
            );
        }
        HostPlan {
            name: h.name.value.clone(),
            engine,
            slots,
            cwd: h.cwd.as_ref().map(|c| text(self, c)),
        }
    }

    fn not_here(&mut self, r: &S<RefName>, help: &str) {
        self.diags.push(
            Diagnostic::error(
                "variable-not-available",
                "this interpolation is not available here",
            )
            .at(r.span, "not available here")
            .help(help.to_string()),
        );
    }

    fn lookup(&mut self, name: &S<String>, kind: &str, declare: &str) -> Option<usize> {
        let table: &[String] = match kind {
            "queue" => &self.queues,
            "stage" => &self.stages,
            "event" => &self.events,
            "host" => &self.hosts,
            _ => &self.semaphores,
        };
        if let Some(i) = table.iter().position(|n| *n == name.value) {
            return Some(i);
        }
        let help =
            did_you_mean(&name.value, table.iter().map(String::as_str)).unwrap_or_else(|| {
                if table.is_empty() {
                    format!("declare it under `{declare}:`")
                } else {
                    format!(
                        "declare it under `{declare}:`, or use one of {}",
                        one_of(table)
                    )
                }
            });
        let help = if kind == "queue" && (name.value.contains('.') || name.value.contains('/')) {
            // Queue names have neither dots nor slashes: this is a path.
            format!(
                "a queue name has no `.` or `/`: for a file, write `{{file: {}}}`",
                name.value
            )
        } else {
            help
        };
        self.diags.push(
            Diagnostic::error(
                match kind {
                    "queue" => "unknown-queue",
                    "stage" => "unknown-stage",
                    "event" => "unknown-event",
                    "host" => "unknown-host",
                    _ => "unknown-semaphore",
                },
                format!("unknown {kind} `{}`", name.value),
            )
            .at(name.span, format!("no {kind} with this name"))
            .help(help),
        );
        None
    }

    fn queue(&mut self, name: &S<String>) -> Option<QueueId> {
        self.lookup(name, "queue", "queues")
    }

    fn stage(
        &mut self,
        s: &StageSpec,
        d: &StageSpec,
        shutdown_timeout: Duration,
        default_signal: i32,
        hosts: &[HostPlan],
    ) -> (StagePlan, StageSpans) {
        let name = s.name.value.clone();
        let mut spans = StageSpans {
            name: s.name.span,
            ..Default::default()
        };

        let foreach = s.foreach.as_ref();
        let fds_spec = s.fds.as_ref().or(d.fds.as_ref());
        let fds_nums: Vec<i32> = fds_spec
            .map(|f| f.iter().map(|x| x.fd.value).collect())
            .unwrap_or_default();
        let matrix: Vec<String> = match foreach.map(|f| &f.value) {
            Some(ForeachSpec::Matrix(dims)) => dims.iter().map(|(n, _)| n.value.clone()).collect(),
            _ => Vec::new(),
        };
        let scope = Scope {
            foreach: foreach.is_some(),
            fds: fds_nums,
            instance: true,
            once_because: "",
            matrix,
        };

        // cmd / sh
        let command = match (&s.cmd, &s.sh) {
            (Some(_), Some(_)) => {
                self.diags.push(
                    Diagnostic::error("cmd-and-sh", format!("stage `{name}` has both `cmd` and `sh`"))
                        .at(s.name.span, "pick one")
                        .help("use `cmd` for an argv run directly, or `sh` for a shell command line, not both"),
                );
                CommandTemplate::Argv(Vec::new())
            }
            (Some(_), None) | (None, Some(_)) if s.has_cmd_key && s.has_sh_key => {
                self.diags.push(
                    Diagnostic::error("cmd-and-sh", format!("stage `{name}` has both `cmd` and `sh`"))
                        .at(s.name.span, "pick one")
                        .help("use `cmd` for an argv run directly, or `sh` for a shell command line, not both"),
                );
                CommandTemplate::Argv(Vec::new())
            }
            (None, None) if s.has_cmd_key || s.has_sh_key => CommandTemplate::Argv(Vec::new()),
            (None, None) => {
                self.diags.push(
                    Diagnostic::error(
                        "missing-command",
                        format!("stage `{name}` has no `cmd` or `sh`"),
                    )
                    .at(s.name.span, "nothing to run")
                    .help("add `cmd: [program, args...]` or `sh: \"shell command\"`"),
                );
                CommandTemplate::Argv(Vec::new())
            }
            (Some(cmd), None) => {
                spans.program = cmd.value.first().map(|t| t.span);
                CommandTemplate::Argv(cmd.value.iter().map(|t| self.template(t, &scope)).collect())
            }
            (None, Some(sh)) => CommandTemplate::Shell(self.template(sh, &scope)),
        };

        let cwd = s
            .cwd
            .as_ref()
            .or(d.cwd.as_ref())
            .map(|t| self.template(t, &scope));
        // Precedence, lowest first: the pipeline's env_file and env, the stage's
        // env_file (defaults' then its own), the stage's env (defaults' then its own).
        let mut env: Vec<(String, Template)> = self
            .pipeline_env
            .iter()
            .map(|(k, t)| (k.clone(), t.clone()))
            .collect();
        for (k, v) in d.env_file_vars.iter().chain(&s.env_file_vars) {
            set_var(&mut env, &k.value, Template::value(v.clone()));
        }
        for block in [d.env.as_ref(), s.env.as_ref()].into_iter().flatten() {
            for (k, t) in block {
                let t = self.template(t, &scope);
                match env.iter_mut().find(|(n, _)| *n == k.value) {
                    Some(slot) => slot.1 = t,
                    None => env.push((k.value.clone(), t)),
                }
            }
        }

        // instances
        let replicas = s.replicas.as_ref().or(d.replicas.as_ref());
        let parallel = s.parallel.as_ref().or(d.parallel.as_ref());
        if let (Some(f), Some(r)) = (foreach, s.replicas.as_ref()) {
            self.diags.push(
                Diagnostic::error("foreach-with-replicas", format!("stage `{name}` has both `foreach` and `replicas`"))
                    .at(r.span, "replicas of a foreach stage")
                    .related(f.span, "foreach here")
                    .help("a foreach stage runs one instance per item; limit concurrency with `parallel` instead"),
            );
        }
        if let (None, Some(p)) = (foreach, s.parallel.as_ref()) {
            self.diags.push(
                Diagnostic::warning(
                    "parallel-without-foreach",
                    format!("`parallel` has no effect on stage `{name}`"),
                )
                .at(p.span, "ignored")
                .help(
                    "`parallel` limits a `foreach` stage; for N copies of a stage use `replicas`",
                ),
            );
        }
        // Where the instances run (SPEC 3.5).
        let mut on = Vec::new();
        for n in s.on.as_ref().or(d.on.as_ref()).into_iter().flatten() {
            if let Some(id) = self.lookup(n, "host", "hosts")
                && !on.contains(&id)
            {
                on.push(id);
            }
        }
        // A foreach stage on hosts runs as many items at once as they have slots
        // (unless a host's slots are unlimited: then as many as this machine's CPUs).
        let on_slots: Option<usize> = if on.is_empty() {
            None
        } else {
            on.iter()
                .map(|h| hosts.get(*h).and_then(|h| h.slots))
                .sum::<Option<usize>>()
        };
        let instances = match foreach {
            Some(f) => {
                let source_scope = Scope::once(
                    "a foreach source is read once for the whole stage, not per instance",
                );
                let source = match &f.value {
                    ForeachSpec::Items(items) => ForeachSource::Items(
                        items
                            .iter()
                            .map(|t| {
                                self.template(t, &source_scope)
                                    .render(&InstanceVars::default())
                            })
                            .collect(),
                    ),
                    ForeachSpec::Range { from, to, step } => ForeachSource::Range {
                        from: *from,
                        to: *to,
                        step: step.value,
                    },
                    ForeachSpec::Glob(t) => ForeachSource::Glob(self.template(t, &source_scope)),
                    ForeachSpec::Lines(t) => ForeachSource::Lines(self.template(t, &source_scope)),
                    ForeachSpec::Queue { queue, .. } => {
                        ForeachSource::Queue(self.queue(queue).unwrap_or(usize::MAX))
                    }
                    ForeachSpec::Matrix(dims) => ForeachSource::Matrix(
                        dims.iter()
                            .map(|(n, values)| {
                                let values = values
                                    .iter()
                                    .map(|t| {
                                        self.template(t, &source_scope)
                                            .render(&InstanceVars::default())
                                    })
                                    .collect();
                                (n.value.clone(), values)
                            })
                            .collect(),
                    ),
                };
                let parallel = parallel.map(|p| p.value as usize).unwrap_or_else(|| {
                    on_slots.unwrap_or_else(|| {
                        std::thread::available_parallelism()
                            .map(|n| n.get())
                            .unwrap_or(1)
                    })
                });
                Instances::Foreach { source, parallel }
            }
            None => Instances::Replicas {
                count: replicas.map(|r| r.value as usize).unwrap_or(1),
                named_by_index: replicas.is_some(),
            },
        };

        // streams
        let stdin = match s.stdin.as_ref().or(d.stdin.as_ref()) {
            None => Input::Null,
            Some(io) => match &io.value {
                IoSpec::Null => Input::Null,
                IoSpec::Inherit => Input::Inherit,
                IoSpec::Log => Input::Null,
                IoSpec::Queue(q) => self.queue(q).map(Input::Queue).unwrap_or(Input::Null),
                IoSpec::File { path, .. } => Input::File(self.template(path, &scope)),
            },
        };
        let output = |r: &mut Self, io: Option<&S<IoSpec>>| match io {
            None => Output::Log,
            Some(io) => match &io.value {
                IoSpec::Null => Output::Null,
                IoSpec::Inherit => Output::Inherit,
                IoSpec::Log => Output::Log,
                IoSpec::Queue(q) => r.queue(q).map(Output::Queue).unwrap_or(Output::Null),
                IoSpec::File { path, append } => Output::File {
                    path: r.template(path, &scope),
                    append: *append,
                },
            },
        };
        let stdout = output(self, s.stdout.as_ref().or(d.stdout.as_ref()));
        let stderr = output(self, s.stderr.as_ref().or(d.stderr.as_ref()));
        let mut fds = Vec::new();
        for f in fds_spec.into_iter().flatten() {
            if let Some(q) = self.queue(&f.queue) {
                fds.push(FdBinding {
                    fd: f.fd.value,
                    direction: if f.write {
                        FdDirection::Write
                    } else {
                        FdDirection::Read
                    },
                    queue: q,
                });
            }
        }

        // coordination
        let mut after = Vec::new();
        for a in s.after.as_ref().or(d.after.as_ref()).into_iter().flatten() {
            let AfterSpec { stage, condition } = a;
            if let Some(id) = self.lookup(stage, "stage", "stages") {
                after.push((id, condition.value));
                spans.after.push(stage.span);
            }
        }
        let mut waits = Vec::new();
        for e in s.waits.as_ref().or(d.waits.as_ref()).into_iter().flatten() {
            if let Some(id) = self.lookup(e, "event", "events") {
                waits.push(id);
                spans.waits.push(e.span);
            }
        }
        let mut sets = Vec::new();
        for (e, t) in s.sets.as_ref().or(d.sets.as_ref()).into_iter().flatten() {
            if let Some(id) = self.lookup(e, "event", "events") {
                let trigger = match &t.value {
                    TriggerSpec::Started => Trigger::Started,
                    TriggerSpec::Ready => Trigger::Ready,
                    TriggerSpec::Succeeded => Trigger::Succeeded,
                    TriggerSpec::Failed => Trigger::Failed,
                    TriggerSpec::Exited => Trigger::Exited,
                    TriggerSpec::Line(r) => Trigger::Line(Regex(r.clone())),
                };
                sets.push((id, trigger));
                spans.sets.push(e.span);
            }
        }
        let mut semaphores = Vec::new();
        for n in s
            .semaphore
            .as_ref()
            .or(d.semaphore.as_ref())
            .into_iter()
            .flatten()
        {
            if let Some(id) = self.lookup(n, "semaphore", "semaphores") {
                semaphores.push(id);
            }
        }

        let ready = s.ready.as_ref().or(d.ready.as_ref()).map(|r| ReadyProbe {
            timeout: r.value.timeout,
            kind: match &r.value.kind {
                ProbeSpec::Line(re) => ProbeKind::Line(Regex(re.clone())),
                ProbeSpec::File(t) => ProbeKind::File(self.template(t, &scope)),
                ProbeSpec::Delay(d) => ProbeKind::Delay(*d),
                ProbeSpec::Tcp(a) => ProbeKind::Tcp(a.value.clone()),
                ProbeSpec::Cmd { argv, interval } => ProbeKind::Cmd {
                    argv: argv.iter().map(|t| self.template(t, &scope)).collect(),
                    interval: *interval,
                },
            },
        });

        let stop_spec = s.stop.as_ref().or(d.stop.as_ref()).map(|x| &x.value);
        let stop = StopSpec {
            signal: stop_spec.and_then(|x| x.signal).unwrap_or(default_signal),
            timeout: stop_spec
                .and_then(|x| x.timeout)
                .unwrap_or(shutdown_timeout),
            cmd: stop_spec
                .and_then(|x| x.cmd.as_ref())
                .map(|argv| argv.iter().map(|t| self.template(t, &scope)).collect()),
        };
        let restart = match s.restart.as_ref().or(d.restart.as_ref()) {
            None => RestartSpec::never(),
            Some(r) => {
                let base = RestartSpec::never();
                RestartSpec {
                    policy: r.value.policy,
                    max: r.value.max.or(base.max),
                    backoff: r.value.backoff.unwrap_or(base.backoff),
                    max_backoff: r.value.max_backoff.unwrap_or(base.max_backoff),
                }
            }
        };
        let success_codes = match s.success_codes.as_ref().or(d.success_codes.as_ref()) {
            Some(c) if c.value.is_empty() => {
                self.diags.push(
                    Diagnostic::error(
                        "invalid-value",
                        format!("`success_codes` of stage `{name}` is empty"),
                    )
                    .at(c.span, "no exit code would count as success")
                    .help("list at least one code, e.g. `success_codes: [0, 1]`"),
                );
                vec![0]
            }
            Some(c) => c.value.iter().map(|v| v.value as i32).collect(),
            None => vec![0],
        };
        let batch = match foreach.map(|f| &f.value) {
            Some(ForeachSpec::Queue { batch, .. }) => *batch,
            _ => None,
        };
        let halt = s.halt.as_ref().map(|h| Halt {
            when: h.value.when,
            fail: h.value.fail,
            success: h.value.success,
        });
        if let (Some(h), None) = (s.halt.as_ref(), foreach) {
            self.diags.push(
                Diagnostic::error(
                    "halt-without-foreach",
                    format!("`halt` has no meaning on stage `{name}`, which has no `foreach`"),
                )
                .at(h.span, "not a foreach stage")
                .help("`halt` stops a foreach stage's items early; remove it, or give the stage a `foreach`"),
            );
        }
        let plan = StagePlan {
            name,
            role: Role::Job,
            command,
            cwd,
            env,
            instances,
            stdin,
            stdout,
            stderr,
            fds,
            after,
            waits,
            sets,
            semaphores,
            ready,
            daemon: s
                .daemon
                .as_ref()
                .or(d.daemon.as_ref())
                .map(|b| b.value)
                .unwrap_or(false),
            timeout: s.timeout.as_ref().or(d.timeout.as_ref()).map(|t| t.value),
            stop,
            restart,
            on_failure: s
                .on_failure
                .as_ref()
                .or(d.on_failure.as_ref())
                .map(|o| o.value)
                .unwrap_or(OnFailure::Stop),
            success_codes,
            on,
            batch,
            halt,
        };
        (plan, spans)
    }
}
