//! Decoding one stage (or `defaults`): its command, streams, descriptors, `after`,
//! `sets`, readiness, stop and restart blocks.

use super::*;

impl<'a> Decoder<'a> {
    pub fn stage(&mut self, name: S<String>, node: &Node, is_defaults: bool) -> Option<StageSpec> {
        let what = if is_defaults {
            "`defaults`".to_string()
        } else {
            format!("stage `{}`", name.value)
        };
        let f = self.fields(node, &what, &keys::STAGE)?;
        let mut s = StageSpec {
            name,
            has_cmd_key: f.has("cmd"),
            has_sh_key: f.has("sh"),
            ..Default::default()
        };
        if is_defaults {
            for k in NOT_IN_DEFAULTS {
                if let Some(span) = f.key_span(k) {
                    self.push(
                        Diagnostic::error(
                            "not-in-defaults",
                            format!("`{k}` cannot be set in `defaults`"),
                        )
                        .at(span, "not allowed here")
                        .help("`cmd`, `sh`, `foreach` and `halt` belong to each stage"),
                    );
                }
            }
        }
        if let Some(v) = f.get("cmd") {
            s.cmd = self.cmd(v, &format!("`cmd` of {what}"));
        }
        if let Some(v) = f.get("sh") {
            s.sh = self.tmpl(v, &format!("`sh` of {what}"));
        }
        if let Some(v) = f.get("cwd") {
            s.cwd = self.tmpl(v, &format!("`cwd` of {what}"));
        }
        if let Some(v) = f.get("env") {
            s.env = Some(self.env(v, &format!("`env` of {what}")));
        }
        if let Some(v) = f.get("replicas") {
            s.replicas = self.count(v, &format!("`replicas` of {what}"), "replicas");
        }
        if let Some(v) = f.get("parallel") {
            s.parallel = self.count(v, &format!("`parallel` of {what}"), "parallel");
        }
        if let Some(v) = f.get("foreach") {
            s.foreach = self.foreach(v, &what);
        }
        for (key, slot) in [("stdin", 0), ("stdout", 1), ("stderr", 2)] {
            if let Some(v) = f.get(key) {
                let io = self.io(v, &format!("`{key}` of {what}"), key == "stdin");
                match slot {
                    0 => s.stdin = io,
                    1 => s.stdout = io,
                    _ => s.stderr = io,
                }
            }
        }
        if let Some(v) = f.get("fds") {
            s.fds = Some(self.fds(v, &what));
        }
        if let Some(v) = f.get("after") {
            s.after = Some(self.after(v, &what));
        }
        if let Some(v) = f.get("waits") {
            s.waits = Some(self.names(v, "an event name in `waits`"));
        }
        if let Some(v) = f.get("sets") {
            s.sets = Some(self.sets(v, &what));
        }
        if let Some(v) = f.get("semaphore") {
            s.semaphore = Some(self.names(v, "a semaphore name"));
        }
        if let Some(v) = f.get("ready") {
            s.ready = self.ready(v, &what);
        }
        if let Some(v) = f.get("daemon") {
            s.daemon = self.boolean(v, &format!("`daemon` of {what}"));
        }
        if let Some(v) = f.get("timeout") {
            s.timeout = self.duration(v, &format!("`timeout` of {what}"));
        }
        if let Some(v) = f.get("stop") {
            s.stop = self.stop(v, &what);
        }
        if let Some(v) = f.get("restart") {
            s.restart = self.restart(v, &what);
        }
        if let Some(v) = f.get("on_failure") {
            s.on_failure = self.keyword(
                v,
                "`on_failure` policy",
                &[
                    ("stop", OnFailure::Stop),
                    ("continue", OnFailure::Continue),
                    ("ignore", OnFailure::Ignore),
                ],
            );
        }
        if let Some(v) = f.get("env_file") {
            s.env_file = Some(self.env_files(v, &format!("`env_file` of {what}")));
        }
        if let Some(v) = f.get("on") {
            s.on = Some(self.names(v, "a host name in `on`"));
        }
        if let Some(v) = f.get("halt") {
            s.halt = self.halt(v, &what);
        }
        if let Some(v) = f.get("success_codes") {
            let items = self.list_or_one(v);
            let codes: Vec<S<i128>> = items
                .into_iter()
                .filter_map(|n| self.int_in(n, "an exit code in `success_codes`", 0, 255))
                .collect();
            s.success_codes = Some(S::new(codes, v.span));
        }
        Some(s)
    }

    pub(super) fn count(&mut self, node: &Node, what: &str, key: &str) -> Option<S<i128>> {
        let n = self.int(node, what)?;
        if n.value < 1 || n.value > 100_000 {
            self.push(
                Diagnostic::error(
                    if key == "replicas" {
                        "replicas-range"
                    } else {
                        "parallel-range"
                    },
                    format!("{what} must be between 1 and 100000, found {}", n.value),
                )
                .at(node.span, "out of range")
                .help(format!("`{key}` counts processes: use 1 or more")),
            );
            return None;
        }
        Some(n)
    }

    pub(super) fn cmd(&mut self, node: &Node, what: &str) -> Option<S<Vec<Tmpl>>> {
        let Kind::Seq(items) = &node.kind else {
            self.push(
                Diagnostic::error(
                    "invalid-type",
                    format!(
                        "{what} must be a list of arguments, found {}",
                        node.kind.type_name()
                    ),
                )
                .at(node.span, "expected a list")
                .help(if matches!(node.kind, Kind::Str(_)) {
                    "write `cmd: [program, arg1, arg2]`, or use `sh:` to run a string with /bin/sh"
                } else {
                    "write `cmd: [program, arg1, arg2]`"
                }),
            );
            return None;
        };
        if items.is_empty() {
            self.push(
                Diagnostic::error("empty-command", format!("{what} is empty"))
                    .at(node.span, "no program to run")
                    .help("the first element is the program to run: `cmd: [echo, hello]`"),
            );
            return None;
        }
        let argv: Vec<Tmpl> = items
            .iter()
            .filter_map(|i| self.tmpl(i, &format!("an argument of {what}")))
            .collect();
        (argv.len() == items.len()).then(|| S::new(argv, node.span))
    }

    pub(super) fn io(&mut self, node: &Node, what: &str, is_stdin: bool) -> Option<S<IoSpec>> {
        let io = match &node.kind {
            Kind::Null => IoSpec::Null,
            Kind::Str(s) => match s.as_str() {
                "null" => IoSpec::Null,
                "inherit" => IoSpec::Inherit,
                "log" if !is_stdin => IoSpec::Log,
                "log" => {
                    self.push(
                        Diagnostic::error("invalid-value", format!("{what} cannot be `log`"))
                            .at(node.span, "`log` is for output")
                            .help("stdin takes a queue name, `{file: path}`, `inherit` or `null`"),
                    );
                    return None;
                }
                _ => IoSpec::Queue(S::new(s.clone(), node.span)),
            },
            Kind::Map(_) => {
                let f = self.fields(
                    node,
                    what,
                    if is_stdin {
                        &keys::FILE_IN
                    } else {
                        &keys::FILE_OUT
                    },
                )?;
                let Some(path) = f.get("file") else {
                    self.push(
                        Diagnostic::error("missing-key", format!("{what} needs a `file` key"))
                            .at(node.span, "no `file` here")
                            .help("write `{file: path/to/file}`"),
                    );
                    return None;
                };
                let path = self.tmpl(path, &format!("the file of {what}"))?;
                let append = match f.get("append") {
                    Some(a) => self.boolean(a, "`append`")?.value,
                    None => false,
                };
                IoSpec::File { path, append }
            }
            _ => {
                let expected = if is_stdin {
                    "a queue name, `{file: path}`, `inherit` or `null`"
                } else {
                    "a queue name, `{file: path}`, `inherit`, `log` or `null`"
                };
                self.type_error(node, what, expected);
                return None;
            }
        };
        Some(S::new(io, node.span))
    }

    pub(super) fn fds(&mut self, node: &Node, what: &str) -> Vec<FdSpec> {
        let mut out = Vec::new();
        for (k, _, v) in self
            .map(node, &format!("`fds` of {what}"))
            .unwrap_or_default()
        {
            let fd = match k.value.parse::<i32>() {
                Ok(n) if (3..=1023).contains(&n) => n,
                _ => {
                    self.push(
                        Diagnostic::error("invalid-fd", format!("`{}` is not a usable descriptor number", k.value))
                            .at(k.span, "expected a number from 3 to 1023")
                            .help("0, 1 and 2 are `stdin`, `stdout` and `stderr`; extra descriptors start at 3"),
                    );
                    continue;
                }
            };
            let Some(f) = self.fields(v, &format!("descriptor {fd} of {what}"), &keys::FD) else {
                continue;
            };
            let (read, write) = (f.get("read"), f.get("write"));
            let (node, is_write) = match (read, write) {
                (Some(r), None) => (r, false),
                (None, Some(w)) => (w, true),
                _ => {
                    self.push(
                        Diagnostic::error(
                            "invalid-fd",
                            format!(
                                "descriptor {fd} of {what} needs exactly one of `read` or `write`"
                            ),
                        )
                        .at(v.span, "one direction per descriptor")
                        .help("write `{read: queue}` or `{write: queue}`"),
                    );
                    continue;
                }
            };
            if let Some(q) = self.string(node, "a queue name") {
                out.push(FdSpec {
                    fd: S::new(fd, k.span),
                    write: is_write,
                    queue: q,
                });
            }
        }
        out
    }

    pub(super) fn after(&mut self, node: &Node, what: &str) -> Vec<AfterSpec> {
        let conds = [
            ("started", Condition::Started),
            ("ready", Condition::Ready),
            ("succeeded", Condition::Succeeded),
            ("completed", Condition::Completed),
        ];
        match &node.kind {
            Kind::Map(_) => {
                let mut out = Vec::new();
                for (k, _, v) in self
                    .map(node, &format!("`after` of {what}"))
                    .unwrap_or_default()
                {
                    let cond = if v.kind == Kind::Null {
                        Some(S::new(Condition::Succeeded, k.span))
                    } else {
                        self.keyword(v, "`after` condition", &conds)
                    };
                    if let Some(c) = cond {
                        out.push(AfterSpec {
                            stage: k,
                            condition: c,
                        });
                    }
                }
                out
            }
            _ => self
                .names(node, "a stage name in `after`")
                .into_iter()
                .map(|n| {
                    let span = n.span;
                    AfterSpec {
                        stage: n,
                        condition: S::new(Condition::Succeeded, span),
                    }
                })
                .collect(),
        }
    }

    pub(super) fn sets(&mut self, node: &Node, what: &str) -> Vec<(S<String>, S<TriggerSpec>)> {
        let words = [
            ("started", TriggerSpec::Started),
            ("ready", TriggerSpec::Ready),
            ("succeeded", TriggerSpec::Succeeded),
            ("failed", TriggerSpec::Failed),
            ("exited", TriggerSpec::Exited),
        ];
        let mut out = Vec::new();
        for (k, _, v) in self
            .map(node, &format!("`sets` of {what}"))
            .unwrap_or_default()
        {
            let trig = match &v.kind {
                Kind::Map(_) => {
                    let Some(f) = self.fields(
                        v,
                        &format!("the trigger of event `{}`", k.value),
                        &keys::LINE_TRIGGER,
                    ) else {
                        continue;
                    };
                    match f.get("line") {
                        Some(l) => self
                            .regex(l, "`line`")
                            .map(|r| S::new(TriggerSpec::Line(r), v.span)),
                        None => {
                            self.push(
                                Diagnostic::error(
                                    "missing-key",
                                    "a line trigger needs `line: REGEX`",
                                )
                                .at(v.span, "no `line` here")
                                .help("write `{line: \"ready\"}`"),
                            );
                            None
                        }
                    }
                }
                _ => self.keyword(v, "trigger", &words),
            };
            if let Some(t) = trig {
                out.push((k, t));
            }
        }
        out
    }

    pub(super) fn ready(&mut self, node: &Node, what: &str) -> Option<S<ReadySpec>> {
        let w = format!("`ready` of {what}");
        let f = self.fields(node, &w, &keys::READY)?;
        let kinds: Vec<&str> = f
            .present()
            .filter(|k| !matches!(*k, "timeout" | "interval"))
            .collect();
        if kinds.len() != 1 {
            self.push(
                Diagnostic::error("invalid-probe", format!("{w} needs exactly one probe"))
                    .at(
                        node.span,
                        if kinds.is_empty() {
                            "no probe".to_string()
                        } else {
                            format!("found {}", one_of(&kinds))
                        },
                    )
                    .help("use one of `line`, `file`, `delay`, `tcp` or `cmd`"),
            );
            return None;
        }
        let timeout = match f.get("timeout") {
            Some(t) => Some(self.duration(t, "`ready.timeout`")?.value),
            None => None,
        };
        if f.has("interval") && kinds[0] != "cmd" {
            let span = f.key_span("interval").unwrap_or(node.span);
            self.push(
                Diagnostic::error("invalid-probe", "`interval` only applies to a `cmd` probe")
                    .at(span, "not used by this probe")
                    .help("remove `interval`, or use `cmd: [...]` as the probe"),
            );
        }
        let v = f.get(kinds[0])?;
        let kind = match kinds[0] {
            "line" => ProbeSpec::Line(self.regex(v, "`ready.line`")?),
            "file" => ProbeSpec::File(self.tmpl(v, "`ready.file`")?),
            "delay" => ProbeSpec::Delay(self.duration(v, "`ready.delay`")?.value),
            "tcp" => {
                let s = self.scalar_text(v, "`ready.tcp`")?;
                let ok = s
                    .value
                    .rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
                if !ok {
                    self.push(
                        Diagnostic::error(
                            "invalid-value",
                            format!("`{}` is not a `host:port` address", s.value),
                        )
                        .at(s.span, "expected host:port")
                        .help("write `tcp: \"127.0.0.1:8080\"`"),
                    );
                    return None;
                }
                ProbeSpec::Tcp(s)
            }
            _ => {
                let argv = self.cmd(v, "`ready.cmd`")?.value;
                let interval = match f.get("interval") {
                    Some(i) => self.duration(i, "`ready.interval`")?.value,
                    None => Duration::from_secs(1),
                };
                ProbeSpec::Cmd { argv, interval }
            }
        };
        Some(S::new(ReadySpec { kind, timeout }, node.span))
    }

    pub(super) fn stop(&mut self, node: &Node, what: &str) -> Option<S<StopSpec>> {
        let f = self.fields(node, &format!("`stop` of {what}"), &keys::STOP)?;
        let mut s = StopSpec::default();
        if let Some(v) = f.get("signal") {
            s.signal = Some(self.signal(v, "`stop.signal`")?.value);
        }
        if let Some(v) = f.get("timeout") {
            s.timeout = Some(self.duration(v, "`stop.timeout`")?.value);
        }
        if let Some(v) = f.get("cmd") {
            s.cmd = Some(self.cmd(v, "`stop.cmd`")?.value);
        }
        Some(S::new(s, node.span))
    }

    pub(super) fn restart(&mut self, node: &Node, what: &str) -> Option<S<RestartSpec>> {
        let policies = [
            ("never", RestartPolicy::Never),
            ("on-failure", RestartPolicy::OnFailure),
            ("always", RestartPolicy::Always),
        ];
        if !matches!(node.kind, Kind::Map(_)) {
            let p = self.keyword(node, "restart policy", &policies)?;
            return Some(S::new(
                RestartSpec {
                    policy: p.value,
                    max: None,
                    backoff: None,
                    max_backoff: None,
                },
                node.span,
            ));
        }
        let f = self.fields(node, &format!("`restart` of {what}"), &keys::RESTART)?;
        let policy = match f.get("policy") {
            Some(p) => self.keyword(p, "restart policy", &policies)?.value,
            None => RestartPolicy::OnFailure,
        };
        let max = match f.get("max") {
            Some(m) => Some(self.int_in(m, "`restart.max`", 0, u32::MAX as i128)?.value as u32),
            None => None,
        };
        let backoff = match f.get("backoff") {
            Some(b) => Some(self.duration(b, "`restart.backoff`")?.value),
            None => None,
        };
        let max_backoff = match f.get("max_backoff") {
            Some(b) => Some(self.duration(b, "`restart.max_backoff`")?.value),
            None => None,
        };
        Some(S::new(
            RestartSpec {
                policy,
                max,
                backoff,
                max_backoff,
            },
            node.span,
        ))
    }
}
