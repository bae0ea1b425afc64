//! Decoding the spanned YAML tree into [`PipelineSpec`].
//!
//! Hand-written rather than derived so that every problem of a file is reported in one
//! pass, each with the span of the offending key or value and a did-you-mean where a
//! name is close. The key lists here are the single source of truth for what a block
//! accepts; a test checks that the JSON Schema lists the same keys.

use std::time::Duration;

use super::node::{Kind, Node, Span};
use super::*;
use crate::diag::{Diagnostic, did_you_mean, one_of};
use crate::vocab::{
    Condition, Delivery, Framing, HaltWhen, OnFailure, Order, RestartPolicy, Threshold,
};

pub use super::keys::NOT_IN_DEFAULTS;
use super::keys::{self, Block};

/// Decode a whole pipeline file. Returns the spec (when the document had the right
/// overall shape) and every diagnostic found.
pub fn decode(src: &str) -> (Option<PipelineSpec>, Vec<Diagnostic>) {
    decode_at(src, 0, false)
}

/// Decode a file whose first byte has the global offset `base` (see
/// [`crate::diag::Span`]); `included`: a file named by another's `include`, which may
/// only hold the mergeable sections.
pub fn decode_at(
    src: &str,
    base: usize,
    included: bool,
) -> (Option<PipelineSpec>, Vec<Diagnostic>) {
    let mut d = Decoder {
        src,
        base,
        diags: Vec::new(),
    };
    let mut root = match node::parse(src) {
        Ok(n) => n,
        Err(e) => {
            d.diags.push(syntax_error(src, base, &e));
            return (None, d.diags);
        }
    };
    root.shift(base);
    let spec = d.pipeline(&root, included);
    (spec, d.diags)
}

fn syntax_error(src: &str, base: usize, e: &serde_saphyr::Error) -> Diagnostic {
    let text = e.without_snippet().to_string();
    let message = match text.rfind(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text.clone(),
    };
    let span = e.location().map(|l| {
        let offset = offset_of(src, l.line() as usize, l.column() as usize);
        Span::new(base + offset, usize::from(offset < src.len()))
    });
    let mut diag = Diagnostic::error("yaml-syntax", format!("invalid YAML: {message}")).help(
        if message.contains("tab") {
            "YAML indentation must use spaces, not tabs"
        } else if message.contains("duplicate") {
            "each key may appear once per map"
        } else {
            "check the indentation and the quoting around this point"
        },
    );
    if let Some(span) = span {
        diag = diag.at(span, "here");
    }
    diag
}

/// Byte offset of a 1-based line and column (in characters).
fn offset_of(src: &str, line: usize, column: usize) -> usize {
    let mut offset = 0;
    for (i, l) in src.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            let col = l
                .char_indices()
                .nth(column.saturating_sub(1))
                .map(|(b, _)| b);
            return offset + col.unwrap_or(l.len());
        }
        offset += l.len();
    }
    src.len()
}

pub struct Decoder<'a> {
    src: &'a str,
    /// Global offset of `src`'s first byte.
    base: usize,
    pub diags: Vec<Diagnostic>,
}

/// The entries of a map whose keys were checked against a list of allowed keys.
pub struct Fields<'n> {
    entries: Vec<(&'static str, &'n Node, &'n Node)>,
}

impl<'n> Fields<'n> {
    pub fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, _, v)| *v)
    }

    pub fn key_span(&self, key: &str) -> Option<Span> {
        self.entries
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, k, _)| k.span)
    }

    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn present(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.entries.iter().map(|(k, _, _)| *k)
    }
}

impl<'a> Decoder<'a> {
    fn raw(&self, span: Span) -> &'a str {
        let start = span.offset.saturating_sub(self.base);
        self.src.get(start..start + span.len).unwrap_or("")
    }

    fn push(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    fn type_error(&mut self, node: &Node, what: &str, expected: &str) {
        self.push(
            Diagnostic::error(
                "invalid-type",
                format!("{what} must be {expected}, found {}", node.kind.type_name()),
            )
            .at(node.span, format!("expected {expected}"))
            .help(format!(
                "write {expected} here (docs/format.md lists every key and its type)"
            )),
        );
    }

    /// Map entries with string keys; `null` counts as an empty map.
    pub fn map<'n>(
        &mut self,
        node: &'n Node,
        what: &str,
    ) -> Option<Vec<(S<String>, &'n Node, &'n Node)>> {
        match &node.kind {
            Kind::Null => Some(Vec::new()),
            Kind::Map(entries) => {
                let mut out: Vec<(S<String>, &'n Node, &'n Node)> = Vec::new();
                // Where each key was first written (a map, so that a map of n keys
                // costs O(n), whatever its duplicates).
                let mut first: std::collections::HashMap<String, Span> =
                    std::collections::HashMap::new();
                for (k, v) in entries {
                    let key = match &k.kind {
                        Kind::Str(s) => s.clone(),
                        Kind::Int(_) | Kind::Float(_) | Kind::Bool(_) => {
                            self.raw(k.span).to_string()
                        }
                        _ => {
                            self.type_error(k, &format!("a key of {what}"), "a string");
                            continue;
                        }
                    };
                    if let Some(&first_span) = first.get(&key) {
                        self.push(
                            Diagnostic::error(
                                "duplicate-key",
                                format!("duplicate key `{key}` in {what}"),
                            )
                            .at(k.span, "written again here")
                            .related(first_span, "first written here")
                            .help("each key may appear once per map: remove or rename one of them"),
                        );
                        continue;
                    }
                    first.insert(key.clone(), k.span);
                    out.push((S::new(key, k.span), k, v));
                }
                Some(out)
            }
            _ => {
                self.type_error(node, what, "a map");
                None
            }
        }
    }

    /// A map whose keys must be among `allowed` (keys starting with `x-` are ignored).
    pub fn fields<'n>(&mut self, node: &'n Node, what: &str, block: &Block) -> Option<Fields<'n>> {
        self.fields_of(node, what, &block.names())
    }

    /// Like [`Decoder::fields`], for a subset of a block's keys.
    pub fn fields_of<'n>(
        &mut self,
        node: &'n Node,
        what: &str,
        allowed: &[&'static str],
    ) -> Option<Fields<'n>> {
        let entries = self.map(node, what)?;
        let mut fields = Fields {
            entries: Vec::new(),
        };
        for (key, knode, v) in entries {
            if key.value.starts_with("x-") {
                continue;
            }
            match allowed.iter().find(|a| **a == key.value) {
                Some(a) => fields.entries.push((a, knode, v)),
                None => {
                    let help =
                        did_you_mean(&key.value, allowed.iter().copied()).unwrap_or_else(|| {
                            format!(
                                "{what} accepts {}; keys starting with `x-` are ignored",
                                one_of(allowed)
                            )
                        });
                    self.push(
                        Diagnostic::error(
                            "unknown-key",
                            format!("unknown key `{}` in {what}", key.value),
                        )
                        .at(key.span, "unknown key")
                        .help(help),
                    );
                }
            }
        }
        Some(fields)
    }

    pub fn string(&mut self, node: &Node, what: &str) -> Option<S<String>> {
        match &node.kind {
            Kind::Str(s) => Some(S::new(s.clone(), node.span)),
            _ => {
                self.type_error(node, what, "a string");
                None
            }
        }
    }

    /// A scalar as written: strings, and numbers or booleans in their source spelling.
    pub fn scalar_text(&mut self, node: &Node, what: &str) -> Option<S<String>> {
        match &node.kind {
            Kind::Str(s) => Some(S::new(s.clone(), node.span)),
            Kind::Int(_) | Kind::Float(_) | Kind::Bool(_) => {
                Some(S::new(self.raw(node.span).trim().to_string(), node.span))
            }
            _ => {
                self.type_error(node, what, "a string");
                None
            }
        }
    }

    pub fn tmpl(&mut self, node: &Node, what: &str) -> Option<Tmpl> {
        let s = self.scalar_text(node, what)?;
        let raw = self.raw(node.span);
        Some(interp::parse(&s.value, s.span, raw, &mut self.diags))
    }

    pub fn int(&mut self, node: &Node, what: &str) -> Option<S<i128>> {
        match &node.kind {
            Kind::Int(i) => Some(S::new(*i, node.span)),
            Kind::Float(_)
                if self
                    .raw(node.span)
                    .trim()
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b == b'-' || b == b'+') =>
            {
                self.push(
                    Diagnostic::error("out-of-range", format!("{what} is too large"))
                        .at(node.span, "too large")
                        .help("use a smaller whole number"),
                );
                None
            }
            Kind::Str(s) if s.trim().parse::<i128>().is_ok() => {
                self.type_error(node, what, "an integer (write it without quotes)");
                None
            }
            _ => {
                self.type_error(node, what, "an integer");
                None
            }
        }
    }

    /// An integer in `min..=max`.
    pub fn int_in(&mut self, node: &Node, what: &str, min: i128, max: i128) -> Option<S<i128>> {
        let v = self.int(node, what)?;
        if v.value < min || v.value > max {
            self.push(
                Diagnostic::error(
                    "out-of-range",
                    format!("{what} must be between {min} and {max}, found {}", v.value),
                )
                .at(node.span, "out of range")
                .help(format!("use a whole number from {min} to {max}")),
            );
            return None;
        }
        Some(v)
    }

    pub fn boolean(&mut self, node: &Node, what: &str) -> Option<S<bool>> {
        match &node.kind {
            Kind::Bool(b) => Some(S::new(*b, node.span)),
            _ => {
                self.type_error(node, what, "`true` or `false`");
                None
            }
        }
    }

    pub fn duration(&mut self, node: &Node, what: &str) -> Option<S<Duration>> {
        let parsed = match &node.kind {
            Kind::Int(i) if *i >= 0 => u64::try_from(*i).ok().map(Duration::from_secs),
            Kind::Float(f) => crate::vocab::seconds(*f),
            Kind::Str(s) => crate::vocab::parse_duration(s).ok(),
            Kind::Int(_) => None,
            _ => {
                self.type_error(node, what, "a duration such as `250ms`, `5s`, `2m` or `1h`");
                return None;
            }
        };
        match parsed {
            Some(d) => Some(S::new(d, node.span)),
            None => {
                self.push(
                    Diagnostic::error("invalid-duration", format!("{what} is not a valid duration"))
                        .at(node.span, "not a duration")
                        .help("write a duration such as `250ms`, `5s`, `2m` or `1h` (a bare number is seconds)"),
                );
                None
            }
        }
    }

    /// One of a fixed set of words.
    pub fn keyword<T: Clone>(
        &mut self,
        node: &Node,
        what: &str,
        words: &[(&str, T)],
    ) -> Option<S<T>> {
        let names: Vec<&str> = words.iter().map(|(n, _)| *n).collect();
        let text = match &node.kind {
            Kind::Str(s) => s.clone(),
            Kind::Bool(_) | Kind::Int(_) | Kind::Float(_) | Kind::Null => {
                self.raw(node.span).to_string()
            }
            _ => {
                self.type_error(node, what, &format!("one of {}", one_of(&names)));
                return None;
            }
        };
        if let Some((_, v)) = words.iter().find(|(n, _)| *n == text) {
            return Some(S::new(v.clone(), node.span));
        }
        let help = did_you_mean(&text, names.iter().copied())
            .unwrap_or_else(|| format!("use {}", one_of(&names)));
        self.push(
            Diagnostic::error("invalid-value", format!("`{text}` is not a valid {what}"))
                .at(node.span, format!("expected {}", one_of(&names)))
                .help(help),
        );
        None
    }

    /// A name declared by the user (stage, queue, ...): `[a-z][a-z0-9_-]*`.
    pub fn declared_name(&mut self, key: &S<String>, kind: &str) -> bool {
        if matches!(key.value.as_str(), "true" | "false" | "null") {
            // Valid as a key, but every unquoted reference (`stdout: true`) reads as a
            // boolean or null, so the name could never be used as written.
            self.push(
                Diagnostic::error(
                    "invalid-name",
                    format!("invalid {kind} name `{}`", key.value),
                )
                .at(key.span, "reads as a YAML boolean or null where it is used")
                .help(format!(
                    "`{}` is a YAML keyword: references to it would need quotes everywhere; pick another name",
                    key.value
                )),
            );
            return false;
        }
        if interp::valid_ident(&key.value) {
            return true;
        }
        let suggestion = key.value.to_lowercase().replace([' ', '.'], "_");
        let help = if interp::valid_ident(&suggestion) {
            format!(
                "names start with a lowercase letter and use only `a-z`, `0-9`, `_` and `-`: try `{suggestion}`"
            )
        } else {
            "names start with a lowercase letter and use only `a-z`, `0-9`, `_` and `-`".to_string()
        };
        self.push(
            Diagnostic::error(
                "invalid-name",
                format!("invalid {kind} name `{}`", key.value),
            )
            .at(key.span, "invalid name")
            .help(help),
        );
        false
    }

    pub fn regex(&mut self, node: &Node, what: &str) -> Option<regex::Regex> {
        let s = self.string(node, what)?;
        match regex::Regex::new(&s.value) {
            Ok(r) => Some(r),
            Err(e) => {
                let detail = e.to_string();
                let last = detail.lines().last().unwrap_or("").trim().to_string();
                self.push(
                    Diagnostic::error("invalid-regex", format!("{what} is not a valid regular expression"))
                        .at(node.span, last)
                        .help("the syntax is that of Rust's `regex` crate; escape special characters with `\\`"),
                );
                None
            }
        }
    }

    pub fn signal(&mut self, node: &Node, what: &str) -> Option<S<i32>> {
        let text = match &node.kind {
            Kind::Str(s) => s.trim().to_string(),
            Kind::Int(i) => i.to_string(),
            _ => {
                self.type_error(node, what, "a signal name such as `TERM`");
                return None;
            }
        };
        match parse_signal(&text) {
            Some(n) => Some(S::new(n, node.span)),
            None => {
                let names: Vec<&str> = SIGNALS.iter().map(|(n, _)| *n).collect();
                let upper = text.to_uppercase();
                let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
                self.push(
                    Diagnostic::error("invalid-signal", format!("`{text}` is not a signal name"))
                        .at(node.span, "unknown signal")
                        .help(did_you_mean(bare, names.iter().copied()).unwrap_or_else(|| {
                            "use a name such as TERM, INT, HUP, QUIT, KILL, USR1 or USR2 (with or without SIG)".into()
                        })),
                );
                None
            }
        }
    }

    /// A list, or a single value standing for a list of one.
    fn list_or_one<'n>(&mut self, node: &'n Node) -> Vec<&'n Node> {
        match &node.kind {
            Kind::Seq(items) => items.iter().collect(),
            Kind::Null => Vec::new(),
            _ => vec![node],
        }
    }

    fn names(&mut self, node: &Node, what: &str) -> Vec<S<String>> {
        let items = self.list_or_one(node);
        items
            .into_iter()
            .filter_map(|n| self.string(n, what))
            .collect()
    }

    // ----- the document -----

    fn pipeline(&mut self, root: &Node, included: bool) -> Option<PipelineSpec> {
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

    fn env(&mut self, node: &Node, what: &str) -> Vec<(S<String>, Tmpl)> {
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

    fn queue(&mut self, name: S<String>, node: &Node) -> Option<QueueSpec> {
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

    fn events(&mut self, node: &Node) -> Vec<EventSpec> {
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

    fn count(&mut self, node: &Node, what: &str, key: &str) -> Option<S<i128>> {
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

    fn cmd(&mut self, node: &Node, what: &str) -> Option<S<Vec<Tmpl>>> {
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

    fn io(&mut self, node: &Node, what: &str, is_stdin: bool) -> Option<S<IoSpec>> {
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

    fn fds(&mut self, node: &Node, what: &str) -> Vec<FdSpec> {
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

    fn after(&mut self, node: &Node, what: &str) -> Vec<AfterSpec> {
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

    fn sets(&mut self, node: &Node, what: &str) -> Vec<(S<String>, S<TriggerSpec>)> {
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

    fn foreach(&mut self, node: &Node, what: &str) -> Option<S<ForeachSpec>> {
        let w = format!("`foreach` of {what}");
        let f = self.fields(node, &w, &keys::FOREACH)?;
        let present: Vec<&str> = f.present().filter(|k| *k != "batch").collect();
        let batch = match f.get("batch") {
            Some(b) => {
                let n = self.int_in(b, "`foreach.batch`", 1, 100_000_000)?;
                if !f.has("queue") {
                    self.push(
                        Diagnostic::error(
                            "invalid-foreach",
                            "`batch` only applies to `foreach: {queue}`",
                        )
                        .at(
                            f.key_span("batch").unwrap_or(b.span),
                            "no queue to cut into blocks",
                        )
                        .help("write `foreach: {queue: Q, batch: 1000}`, or remove `batch`"),
                    );
                    return None;
                }
                Some(n.value as usize)
            }
            None => None,
        };
        if present.len() != 1 {
            self.push(
                Diagnostic::error("invalid-foreach", format!("{w} needs exactly one source"))
                    .at(
                        node.span,
                        if present.is_empty() {
                            "no source".to_string()
                        } else {
                            format!("found {}", one_of(&present))
                        },
                    )
                    .help("use one of `items`, `range`, `glob`, `lines`, `queue` or `matrix`"),
            );
            return None;
        }
        let key = present[0];
        let v = f.get(key)?;
        let spec = match key {
            "items" => {
                let Kind::Seq(items) = &v.kind else {
                    self.type_error(v, "`foreach.items`", "a list");
                    return None;
                };
                ForeachSpec::Items(
                    items
                        .iter()
                        .filter_map(|i| self.tmpl(i, "an item"))
                        .collect(),
                )
            }
            "range" => {
                let rf = self.fields(v, "`foreach.range`", &keys::RANGE)?;
                let get = |d: &mut Self, k: &str| -> Option<S<i128>> {
                    rf.get(k).and_then(|n| {
                        d.int_in(
                            n,
                            &format!("`range.{k}`"),
                            i64::MIN as i128,
                            i64::MAX as i128,
                        )
                    })
                };
                let from = get(self, "from").map(|s| s.value as i64).unwrap_or(0);
                let Some(to) = rf.get("to") else {
                    self.push(
                        Diagnostic::error("missing-key", "`foreach.range` needs `to`")
                            .at(v.span, "no `to` here")
                            .help("write `range: {from: 0, to: 10}` (`to` is exclusive, like Python's range)"),
                    );
                    return None;
                };
                let to = self
                    .int_in(to, "`range.to`", i64::MIN as i128, i64::MAX as i128)?
                    .value as i64;
                let step = match rf.get("step") {
                    Some(sn) => {
                        let s =
                            self.int_in(sn, "`range.step`", i64::MIN as i128, i64::MAX as i128)?;
                        if s.value == 0 {
                            self.push(
                                Diagnostic::error("invalid-value", "`range.step` cannot be 0")
                                    .at(sn.span, "zero step")
                                    .help("use a positive step to count up or a negative one to count down"),
                            );
                            return None;
                        }
                        S::new(s.value as i64, sn.span)
                    }
                    None => S::new(1, v.span),
                };
                let count = if step.value > 0 {
                    ((to as i128 - from as i128).max(0) + step.value as i128 - 1)
                        / step.value as i128
                } else {
                    ((from as i128 - to as i128).max(0) + (-step.value as i128) - 1)
                        / (-step.value as i128)
                };
                if count > 10_000_000 {
                    self.push(
                        Diagnostic::error(
                            "out-of-range",
                            format!("`foreach.range` has {count} items"),
                        )
                        .at(v.span, "too many items")
                        .help(
                            "a foreach runs one process per item; keep it under 10,000,000 items",
                        ),
                    );
                    return None;
                }
                ForeachSpec::Range { from, to, step }
            }
            "glob" => ForeachSpec::Glob(self.tmpl(v, "`foreach.glob`")?),
            "lines" => ForeachSpec::Lines(self.tmpl(v, "`foreach.lines`")?),
            "matrix" => ForeachSpec::Matrix(self.matrix(v)?),
            _ => ForeachSpec::Queue {
                queue: self.string(v, "`foreach.queue`")?,
                batch,
            },
        };
        Some(S::new(spec, node.span))
    }

    /// `matrix: {NAME: [values...]}`: named dimensions, each a non-empty list.
    fn matrix(&mut self, node: &Node) -> Option<Vec<(S<String>, Vec<Tmpl>)>> {
        let entries = self.map(node, "`foreach.matrix`")?;
        if entries.is_empty() {
            self.push(
                Diagnostic::error("invalid-foreach", "`foreach.matrix` has no dimension")
                    .at(node.span, "empty matrix")
                    .help("write `matrix: {size: [s, m], region: [eu, us]}`"),
            );
            return None;
        }
        let mut dims = Vec::new();
        let mut total: u128 = 1;
        for (k, _, v) in entries {
            self.declared_name(&k, "matrix dimension");
            let Kind::Seq(items) = &v.kind else {
                self.type_error(v, &format!("matrix dimension `{}`", k.value), "a list");
                continue;
            };
            if items.is_empty() {
                self.push(
                    Diagnostic::error(
                        "invalid-foreach",
                        format!("matrix dimension `{}` is empty", k.value),
                    )
                    .at(v.span, "no values")
                    .help(
                        "a cross product with an empty list has no items; list at least one value",
                    ),
                );
                continue;
            }
            total = total.saturating_mul(items.len() as u128);
            let values: Vec<Tmpl> = items
                .iter()
                .filter_map(|i| self.tmpl(i, "a matrix value"))
                .collect();
            dims.push((k, values));
        }
        if total > 10_000_000 {
            self.push(
                Diagnostic::error(
                    "out-of-range",
                    format!("`foreach.matrix` has {total} items"),
                )
                .at(node.span, "too many items")
                .help("a foreach runs one process per item; keep it under 10,000,000 items"),
            );
            return None;
        }
        Some(dims)
    }

    /// `halt: {when: soon|now, fail: N|"N%", success: N|"N%"}`.
    fn halt(&mut self, node: &Node, what: &str) -> Option<S<HaltSpec>> {
        let w = format!("`halt` of {what}");
        let f = self.fields(node, &w, &keys::HALT)?;
        let when = match f.get("when") {
            Some(v) => {
                self.keyword(
                    v,
                    "`halt.when`",
                    &[("soon", HaltWhen::Soon), ("now", HaltWhen::Now)],
                )?
                .value
            }
            None => HaltWhen::Soon,
        };
        let fail = match f.get("fail") {
            Some(v) => Some(self.threshold(v, "`halt.fail`")?),
            None => None,
        };
        let success = match f.get("success") {
            Some(v) => Some(self.threshold(v, "`halt.success`")?),
            None => None,
        };
        if fail.is_none() && success.is_none() {
            self.push(
                Diagnostic::error("invalid-halt", format!("{w} needs `fail` or `success`"))
                    .at(node.span, "no threshold")
                    .help("write `halt: {when: soon, fail: 1}` (stop after the first failure) or a share such as `fail: \"10%\"`"),
            );
            return None;
        }
        Some(S::new(
            HaltSpec {
                when,
                fail,
                success,
            },
            node.span,
        ))
    }

    /// A halt threshold: a whole number ≥ 1, or `"N%"` with 0 < N ≤ 100.
    fn threshold(&mut self, node: &Node, what: &str) -> Option<Threshold> {
        let bad = |d: &mut Self| {
            d.push(
                Diagnostic::error("invalid-halt", format!("{what} must be a count or a percentage"))
                    .at(node.span, "expected N or \"N%\"")
                    .help("write a number of items (`3`) or a share of all the items in quotes (`\"10%\"`, above 0 and at most 100)"),
            );
            None
        };
        match &node.kind {
            Kind::Int(n) if *n >= 1 && *n <= u64::MAX as i128 => Some(Threshold::Count(*n as u64)),
            Kind::Str(s) => match s.trim().strip_suffix('%').map(|p| p.trim().parse::<f64>()) {
                Some(Ok(p)) if p > 0.0 && p <= 100.0 => Some(Threshold::Percent(p)),
                _ => bad(self),
            },
            _ => bad(self),
        }
    }

    /// A host of `hosts:` (SPEC 3.5): exactly one of `ssh` and `slurm`.
    fn host(&mut self, name: S<String>, node: &Node) -> Option<HostSpec> {
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

    /// A list of strings with interpolation (arguments for a client).
    fn tmpl_list(&mut self, node: &Node, what: &str) -> Option<Vec<Tmpl>> {
        let Kind::Seq(items) = &node.kind else {
            self.type_error(node, what, "a list of strings");
            return None;
        };
        let out: Vec<Tmpl> = items
            .iter()
            .filter_map(|i| self.tmpl(i, &format!("an element of {what}")))
            .collect();
        (out.len() == items.len()).then_some(out)
    }

    /// `include: [a.yaml, ...]` (or one path).
    fn paths(&mut self, node: &Node, what: &str) -> Vec<S<String>> {
        let items = self.list_or_one(node);
        items
            .into_iter()
            .filter_map(|n| self.string(n, &format!("a path in {what}")))
            .collect()
    }

    /// `env_file: .env`, a list, or `{path, required}` entries.
    fn env_files(&mut self, node: &Node, what: &str) -> Vec<EnvFileSpec> {
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
    fn included_fields<'n>(&mut self, root: &'n Node) -> Option<Fields<'n>> {
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

    fn ready(&mut self, node: &Node, what: &str) -> Option<S<ReadySpec>> {
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

    fn stop(&mut self, node: &Node, what: &str) -> Option<S<StopSpec>> {
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

    fn restart(&mut self, node: &Node, what: &str) -> Option<S<RestartSpec>> {
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

/// Words that are stream modes, not queue names.
pub const RESERVED_IO: &[&str] = &["null", "inherit", "log"];

pub const SIGNALS: &[(&str, i32)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ABRT", libc::SIGABRT),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("WINCH", libc::SIGWINCH),
];

/// `TERM`, `SIGTERM`, `sigterm` or `15`.
pub fn parse_signal(text: &str) -> Option<i32> {
    if let Ok(n) = text.parse::<i32>() {
        return SIGNALS.iter().find(|(_, v)| *v == n).map(|(_, v)| *v);
    }
    let upper = text.to_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    SIGNALS.iter().find(|(n, _)| *n == bare).map(|(_, v)| *v)
}

pub fn signal_name(n: i32) -> String {
    SIGNALS
        .iter()
        .find(|(_, v)| *v == n)
        .map(|(name, _)| format!("SIG{name}"))
        .unwrap_or_else(|| format!("signal {n}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(src: &str) -> Vec<&'static str> {
        decode(src).1.iter().map(|d| d.code).collect()
    }

    #[test]
    fn minimal_file_decodes() {
        let (spec, diags) = decode("version: 1\nstages:\n  a:\n    cmd: [seq, 1, 3]\n");
        assert!(diags.is_empty(), "{diags:?}");
        let spec = spec.unwrap();
        let cmd = spec.stages[0].cmd.as_ref().unwrap();
        assert_eq!(cmd.value[1].pieces, vec![TPiece::Lit("1".into())]);
    }

    #[test]
    fn every_problem_at_once() {
        let c = codes(
            "version: 2\nstages:\n  a:\n    cmnd: [x]\n    replicas: zero\n  B:\n    sh: x\n",
        );
        assert!(c.contains(&"unsupported-version"), "{c:?}");
        assert!(c.contains(&"unknown-key"), "{c:?}");
        assert!(c.contains(&"invalid-type"), "{c:?}");
        assert!(c.contains(&"invalid-name"), "{c:?}");
    }

    #[test]
    fn x_keys_are_ignored() {
        assert!(
            codes(
                "version: 1\nx-common: &c {a: 1}\nstages:\n  a:\n    x-note: hi\n    sh: 'true'\n"
            )
            .is_empty()
        );
    }

    #[test]
    fn durations() {
        let (spec, d) = decode(
            "version: 1\nstages:\n  a:\n    sh: x\n    timeout: 250ms\n  b:\n    sh: x\n    timeout: 2\n",
        );
        assert!(d.is_empty(), "{d:?}");
        let s = spec.unwrap();
        assert_eq!(
            s.stages[0].timeout.as_ref().unwrap().value,
            Duration::from_millis(250)
        );
        assert_eq!(
            s.stages[1].timeout.as_ref().unwrap().value,
            Duration::from_secs(2)
        );
        assert_eq!(
            codes("version: 1\nstages:\n  a:\n    sh: x\n    timeout: soon\n"),
            vec!["invalid-duration"]
        );
    }

    #[test]
    fn signals() {
        assert_eq!(parse_signal("TERM"), Some(libc::SIGTERM));
        assert_eq!(parse_signal("SIGint"), Some(libc::SIGINT));
        assert_eq!(parse_signal("9"), Some(libc::SIGKILL));
        assert_eq!(parse_signal("TERMINATE"), None);
    }

    #[test]
    fn syntax_error_has_location() {
        let (_, d) = decode("version: 1\nstages:\n\ta: 1\n");
        assert_eq!(d[0].code, "yaml-syntax");
        assert!(d[0].span.is_some());
    }
}
