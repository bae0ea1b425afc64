//! Decoding the file's top level: its sections, queues, events, hosts, `env` and
//! `env_file`, and what an included file may hold.

use super::*;

impl<'a> Decoder<'a> {
    pub(super) fn pipeline(&mut self, root: &Node, included: bool) -> Option<PipelineSpec> {
        if root.kind == Kind::Null {
            if included {
                // An empty included file contributes nothing; that is not an error.
                return Some(PipelineSpec::default());
            }
            self.push(
                Diagnostic::error("empty-file", "the pipeline file is empty")
                    .help("a pipeline needs at least `version: 1` and a `stages` map"),
            );
            return None;
        }
        let f = if included {
            self.included_fields(root)?
        } else {
            self.fields(root, "the pipeline", &keys::TOP)?
        };
        let mut p = PipelineSpec {
            stages_span: Span::new(self.base, 0),
            ..Default::default()
        };
        match f.get("version") {
            Some(v) => {
                if let Some(n) = self.int(v, "`version`") {
                    if n.value != 1 {
                        self.push(
                            Diagnostic::error(
                                "unsupported-version",
                                format!("unsupported version {}", n.value),
                            )
                            .at(v.span, "only version 1 exists")
                            .help("write `version: 1`"),
                        );
                    }
                    p.version = Some(n);
                }
            }
            None if included => {}
            None => self.push(
                Diagnostic::error("missing-key", "missing required key `version`")
                    .at(Span::new(self.base, 0), "the pipeline starts here")
                    .help("add `version: 1` at the top of the file"),
            ),
        }
        if let Some(v) = f.get("include") {
            p.include = self.paths(v, "`include`");
        }
        if let Some(v) = f.get("env_file") {
            p.env_file = self.env_files(v, "the pipeline's `env_file`");
        }
        if let Some(v) = f.get("hosts") {
            for (k, _, v) in self.map(v, "`hosts`").unwrap_or_default() {
                self.declared_name(&k, "host");
                if let Some(h) = self.host(k, v) {
                    p.hosts.push(h);
                }
            }
        }
        if let Some(v) = f.get("name") {
            p.name = self.scalar_text(v, "`name`");
        }
        if let Some(v) = f.get("description") {
            p.description = self.scalar_text(v, "`description`");
        }
        if let Some(v) = f.get("params") {
            for (k, _, v) in self.map(v, "`params`").unwrap_or_default() {
                self.declared_name(&k, "param");
                if let Some(val) = self.scalar_text(v, &format!("param `{}`", k.value)) {
                    p.params.push((k, val));
                }
            }
        }
        if let Some(v) = f.get("env") {
            p.env = self.env(v, "the pipeline's `env`");
        }
        if let Some(v) = f.get("queues") {
            for (k, _, v) in self.map(v, "`queues`").unwrap_or_default() {
                self.declared_name(&k, "queue");
                if let Some(q) = self.queue(k, v) {
                    p.queues.push(q);
                }
            }
        }
        if let Some(v) = f.get("semaphores") {
            for (k, _, v) in self.map(v, "`semaphores`").unwrap_or_default() {
                self.declared_name(&k, "semaphore");
                let what = format!("the count of semaphore `{}`", k.value);
                if let Some(n) = self.int(v, &what) {
                    if n.value < 1 {
                        self.push(
                            Diagnostic::error("semaphore-count", format!("{what} must be at least 1, found {}", n.value))
                                .at(v.span, "must be 1 or more")
                                .help("a semaphore with count 1 is a lock; use a higher count to allow more holders"),
                        );
                    }
                    p.semaphores.push((k, n));
                }
            }
        }
        if let Some(v) = f.get("events") {
            p.events = self.events(v);
        }
        if let Some(v) = f.get("defaults") {
            let name = S::new(
                "defaults".to_string(),
                f.key_span("defaults").unwrap_or_default(),
            );
            p.defaults = self.stage(name, v, true);
        }
        if let Some(v) = f.get("shutdown")
            && let Some(sf) = self.fields(v, "`shutdown`", &keys::SHUTDOWN)
        {
            {
                if let Some(t) = sf.get("timeout") {
                    p.shutdown_timeout = self.duration(t, "`shutdown.timeout`");
                }
                if let Some(s) = sf.get("signal") {
                    p.shutdown_signal = self.signal(s, "`shutdown.signal`");
                }
            }
        }
        match f.get("stages") {
            Some(v) => {
                p.stages_span = f.key_span("stages").unwrap_or(v.span);
                let entries = self.map(v, "`stages`").unwrap_or_default();
                if entries.is_empty() && matches!(v.kind, Kind::Null | Kind::Map(_)) {
                    self.push(
                        Diagnostic::error("no-stages", "the pipeline has no stages")
                            .at(p.stages_span, "empty")
                            .help("add at least one stage with a `cmd` or `sh`"),
                    );
                }
                for (k, _, v) in entries {
                    self.declared_name(&k, "stage");
                    if let Some(s) = self.stage(k, v, false) {
                        p.stages.push(s);
                    }
                }
            }
            None if included => {}
            None => self.push(
                Diagnostic::error("missing-key", "missing required key `stages`")
                    .at(Span::new(self.base, 0), "the pipeline starts here")
                    .help("add a `stages:` map with at least one stage"),
            ),
        }
        Some(p)
    }

    pub(super) fn env(&mut self, node: &Node, what: &str) -> Vec<(S<String>, Tmpl)> {
        let mut out = Vec::new();
        for (k, _, v) in self.map(node, what).unwrap_or_default() {
            if k.value.is_empty() || k.value.contains('=') || k.value.contains('\0') {
                self.push(
                    Diagnostic::error(
                        "invalid-name",
                        format!("invalid environment variable name `{}`", k.value),
                    )
                    .at(k.span, "invalid name")
                    .help("environment variable names cannot be empty or contain `=`"),
                );
                continue;
            }
            let vw = format!("environment variable `{}`", k.value);
            if let Some(t) = self.tmpl(v, &vw) {
                out.push((k, t));
            }
        }
        out
    }

    pub(super) fn queue(&mut self, name: S<String>, node: &Node) -> Option<QueueSpec> {
        let what = format!("queue `{}`", name.value);
        if RESERVED_IO.contains(&name.value.as_str()) {
            self.push(
                Diagnostic::error("reserved-name", format!("`{}` cannot be a queue name", name.value))
                    .at(name.span, "reserved word")
                    .help("`null`, `inherit` and `log` are stream modes in `stdin`/`stdout`/`stderr`; rename the queue"),
            );
        }
        let f = self.fields(node, &what, &keys::QUEUE)?;
        let capacity = f
            .get("capacity")
            .and_then(|v| self.int_in(v, &format!("the capacity of {what}"), 1, 1 << 32));
        let delivery = f.get("delivery").and_then(|v| {
            self.keyword(
                v,
                "delivery",
                &[
                    ("shared", Delivery::Shared),
                    ("broadcast", Delivery::Broadcast),
                ],
            )
        });
        let framing = f.get("framing").and_then(|v| {
            self.keyword(
                v,
                "framing",
                &[
                    ("lines", Framing::Lines),
                    ("nul", Framing::Nul),
                    ("bytes", Framing::Bytes),
                ],
            )
        });
        let order = f.get("order").and_then(|v| {
            self.keyword(
                v,
                "queue order",
                &[("arrival", Order::Arrival), ("writers", Order::Writers)],
            )
        });
        let sentinel = f
            .get("sentinel")
            .and_then(|v| self.scalar_text(v, &format!("the sentinel of {what}")));
        if let Some(s) = &sentinel {
            let bad = match framing.as_ref().map(|f| f.value) {
                Some(Framing::Bytes) => Some(
                    "a queue with `framing: bytes` has no records, so it cannot have a sentinel",
                ),
                Some(Framing::Nul) if s.value.contains('\0') => {
                    Some("the sentinel cannot contain the NUL delimiter")
                }
                None | Some(Framing::Lines) if s.value.contains('\n') => {
                    Some("the sentinel cannot contain a newline")
                }
                _ => None,
            };
            if let Some(msg) = bad {
                self.push(Diagnostic::error("invalid-sentinel", msg).at(s.span, "invalid sentinel").help(
                    "a sentinel is one whole record; use `framing: lines` or `nul` and a single-line value",
                ));
            }
        }
        Some(QueueSpec {
            name,
            capacity,
            delivery,
            framing,
            sentinel,
            order,
        })
    }

    pub(super) fn events(&mut self, node: &Node) -> Vec<EventSpec> {
        let mut out: Vec<EventSpec> = Vec::new();
        match &node.kind {
            Kind::Seq(items) => {
                for item in items {
                    if let Some(name) = self.string(item, "an event name") {
                        if let Some(prev) = out.iter().find(|e| e.name.value == name.value) {
                            let ps = prev.name.span;
                            self.push(
                                Diagnostic::error(
                                    "duplicate-name",
                                    format!("event `{}` is declared twice", name.value),
                                )
                                .at(name.span, "declared again here")
                                .related(ps, "first declared here")
                                .help("remove one of them"),
                            );
                            continue;
                        }
                        self.declared_name(&name, "event");
                        out.push(EventSpec {
                            name,
                            initially_set: false,
                        });
                    }
                }
            }
            _ => {
                for (k, _, v) in self.map(node, "`events`").unwrap_or_default() {
                    self.declared_name(&k, "event");
                    let mut initially_set = false;
                    if let Some(f) = self.fields(v, &format!("event `{}`", k.value), &keys::EVENT)
                        && let Some(i) = f.get("initially")
                        && let Some(s) =
                            self.keyword(i, "initial state", &[("set", true), ("clear", false)])
                    {
                        initially_set = s.value;
                    }
                    out.push(EventSpec {
                        name: k,
                        initially_set,
                    });
                }
            }
        }
        out
    }

    /// A host of `hosts:` (SPEC 3.5): exactly one of `ssh` and `slurm`.
    pub(super) fn host(&mut self, name: S<String>, node: &Node) -> Option<HostSpec> {
        let what = format!("host `{}`", name.value);
        let f = self.fields(node, &what, &keys::HOST)?;
        let engine = match (f.get("ssh"), f.get("slurm")) {
            (Some(dest), None) => {
                let destination = self.tmpl(dest, &format!("`ssh` of {what}"))?;
                let port = match f.get("port") {
                    Some(p) => Some(
                        self.int_in(p, &format!("`port` of {what}"), 1, 65535)?
                            .value as u16,
                    ),
                    None => None,
                };
                let options = match f.get("options") {
                    Some(o) => self.tmpl_list(o, &format!("`options` of {what}"))?,
                    None => Vec::new(),
                };
                EngineSpec::Ssh {
                    destination,
                    port,
                    options,
                }
            }
            (None, Some(sl)) => {
                for key in ["port", "options"] {
                    if let Some(span) = f.key_span(key) {
                        self.push(
                            Diagnostic::error(
                                "invalid-host",
                                format!("`{key}` of {what} only applies to `ssh`"),
                            )
                            .at(span, "not used by slurm")
                            .help("pass options to `srun` with `slurm: {args: [...]}`"),
                        );
                    }
                }
                let sf = self.fields(sl, &format!("`slurm` of {what}"), &keys::SLURM)?;
                let partition = match sf.get("partition") {
                    Some(p) => Some(self.tmpl(p, "`slurm.partition`")?),
                    None => None,
                };
                let args = match sf.get("args") {
                    Some(a) => self.tmpl_list(a, "`slurm.args`")?,
                    None => Vec::new(),
                };
                EngineSpec::Slurm { partition, args }
            }
            (s, _) => {
                self.push(
                    Diagnostic::error(
                        "invalid-host",
                        format!("{what} needs exactly one of `ssh` and `slurm`"),
                    )
                    .at(
                        name.span,
                        if s.is_some() {
                            "both engines"
                        } else {
                            "no engine"
                        },
                    )
                    .help("write `{ssh: user@machine}` or `{slurm: {partition: batch}}`"),
                );
                return None;
            }
        };
        let slots = match f.get("slots") {
            Some(v) => Some(S::new(
                self.int_in(v, &format!("`slots` of {what}"), 1, 100_000)?
                    .value as usize,
                v.span,
            )),
            None => None,
        };
        let cwd = match f.get("cwd") {
            Some(v) => Some(self.tmpl(v, &format!("`cwd` of {what}"))?),
            None => None,
        };
        Some(HostSpec {
            name,
            engine,
            slots,
            cwd,
        })
    }

    /// `env_file: .env`, a list, or `{path, required}` entries.
    pub(super) fn env_files(&mut self, node: &Node, what: &str) -> Vec<EnvFileSpec> {
        let mut out = Vec::new();
        for item in self.list_or_one(node) {
            match &item.kind {
                Kind::Map(_) => {
                    let Some(f) = self.fields(item, what, &keys::ENV_FILE) else {
                        continue;
                    };
                    let Some(path) = f.get("path") else {
                        self.push(
                            Diagnostic::error(
                                "missing-key",
                                format!("an entry of {what} needs `path`"),
                            )
                            .at(item.span, "no `path` here")
                            .help("write `{path: .env, required: false}`"),
                        );
                        continue;
                    };
                    let Some(path) = self.string(path, "`env_file.path`") else {
                        continue;
                    };
                    let required = match f.get("required") {
                        Some(r) => match self.boolean(r, "`env_file.required`") {
                            Some(b) => b.value,
                            None => continue,
                        },
                        None => true,
                    };
                    out.push(EnvFileSpec { path, required });
                }
                _ => {
                    if let Some(path) = self.string(item, &format!("a path in {what}")) {
                        out.push(EnvFileSpec {
                            path,
                            required: true,
                        });
                    }
                }
            }
        }
        out
    }

    /// The top-level keys of an included file: the mergeable sections only.
    pub(super) fn included_fields<'n>(&mut self, root: &'n Node) -> Option<Fields<'n>> {
        let entries = self.map(root, "an included file")?;
        let allowed = keys::INCLUDED.names();
        let mut fields = Fields {
            entries: Vec::new(),
        };
        for (key, knode, v) in entries {
            if key.value.starts_with("x-") {
                continue;
            }
            if let Some(a) = allowed.iter().find(|a| **a == key.value) {
                fields.entries.push((a, knode, v));
            } else if keys::TOP.get(&key.value).is_some() {
                self.push(
                    Diagnostic::error(
                        "not-in-include",
                        format!("`{}` cannot be set in an included file", key.value),
                    )
                    .at(key.span, "only in the main pipeline file")
                    .help("an included file contributes `params`, `env`, `hosts`, `queues`, `semaphores`, `events` and `stages`; set this in the file that includes it"),
                );
            } else {
                let help = did_you_mean(&key.value, allowed.iter().copied()).unwrap_or_else(|| {
                    format!(
                        "an included file accepts {}; keys starting with `x-` are ignored",
                        one_of(&allowed)
                    )
                });
                self.push(
                    Diagnostic::error(
                        "unknown-key",
                        format!("unknown key `{}` in an included file", key.value),
                    )
                    .at(key.span, "unknown key")
                    .help(help),
                );
            }
        }
        Some(fields)
    }
}
