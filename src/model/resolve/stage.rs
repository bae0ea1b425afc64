//! Resolving one stage: its command, streams and descriptors, `after`, `sets`,
//! `foreach`, readiness, stop and restart, with `defaults` applied.

use super::*;

impl Resolver<'_> {
    pub(super) fn stage(
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
        // A foreach stage reading a broadcast queue runs all its items at once unless
        // `parallel` says otherwise (SPEC 4.2, GNU parallel `--tee`): an item started
        // later would miss the records handed out before it.
        let mut instances = instances;
        if let (Instances::Foreach { source, parallel }, None) = (&mut instances, parallel) {
            let reads_broadcast = matches!(stdin, Input::Queue(q) if self.broadcast.get(q) == Some(&true))
                || fds.iter().any(|f| {
                    f.direction == FdDirection::Read && self.broadcast.get(f.queue) == Some(&true)
                });
            if reads_broadcast {
                *parallel = source
                    .known_count()
                    .map_or(usize::MAX, |n| (n as usize).max(1));
            }
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
