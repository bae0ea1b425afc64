//! Decoding the spanned YAML tree into [`PipelineSpec`].
//!
//! Hand-written rather than derived so that every problem of a file is reported in one
//! pass, each with the span of the offending key or value and a did-you-mean where a
//! name is close. The key lists here are the single source of truth for what a block
//! accepts; a test checks that the JSON Schema lists the same keys.

mod foreach;
mod scalars;
mod stage;
mod top;

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
    pub(super) fn raw(&self, span: Span) -> &'a str {
        let start = span.offset.saturating_sub(self.base);
        self.src.get(start..start + span.len).unwrap_or("")
    }

    pub(super) fn push(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    pub(super) fn type_error(&mut self, node: &Node, what: &str, expected: &str) {
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
