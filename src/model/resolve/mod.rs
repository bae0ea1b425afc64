//! Resolution: names to ids, defaults applied, `${params.*}`/`${env.*}` substituted.

mod stage;

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
        broadcast: spec
            .queues
            .iter()
            .map(|q| q.delivery.as_ref().map(|d| d.value) == Some(Delivery::Broadcast))
            .collect(),
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
    /// Per queue: `delivery: broadcast`.
    broadcast: Vec<bool>,
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
}
