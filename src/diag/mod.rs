//! Diagnostics: every problem prun finds in a pipeline file.
//!
//! A diagnostic has a stable code (`prun::unknown-queue`), a message, a label on the
//! exact span of the offending key or value, and a help line. They are collected, never
//! thrown, so that one run of `prun validate` reports every problem of a file. The same
//! value renders several ways: miette's graphical report (human), JSON (SPEC 7), GitHub
//! workflow annotations and SARIF. A load may read several files (includes, env
//! files): spans are global offsets and [`FileDiagnostics`] knows which file each is in.

pub mod formats;

use std::fmt;
use std::sync::Arc;

use miette::{LabeledSpan, SourceCode};

/// A byte range in the files of one load. Offsets are global: each file read by a
/// load (the pipeline file, its includes, its `env_file`s) occupies its own range,
/// recorded in [`FileDiagnostics::sources`], so a span alone says which file it is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub offset: usize,
    pub len: usize,
}

impl Span {
    pub fn new(offset: usize, len: usize) -> Span {
        Span { offset, len }
    }

    /// The span moved by `base` bytes (from a file's own offsets to global ones).
    pub fn shifted(self, base: usize) -> Span {
        Span::new(self.offset + base, self.len)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Warning,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Stable code without the `prun::` prefix, e.g. `unknown-queue`.
    pub code: &'static str,
    pub message: String,
    /// Where the problem is; `None` for problems of the file as a whole.
    pub span: Option<Span>,
    pub label: String,
    pub help: Option<String>,
    /// Secondary locations (the other half of a duplicate, the members of a cycle).
    pub related: Vec<(Span, String)>,
}

impl Diagnostic {
    pub fn error(code: &'static str, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            code,
            message: message.into(),
            span: None,
            label: String::new(),
            help: None,
            related: Vec::new(),
        }
    }

    pub fn warning(code: &'static str, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(code, message)
        }
    }

    pub fn at(mut self, span: Span, label: impl Into<String>) -> Diagnostic {
        self.span = Some(span);
        self.label = label.into();
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    pub fn help_opt(mut self, help: Option<String>) -> Diagnostic {
        if help.is_some() {
            self.help = help;
        }
        self
    }

    pub fn related(mut self, span: Span, label: impl Into<String>) -> Diagnostic {
        self.related.push((span, label.into()));
        self
    }

    pub fn full_code(&self) -> String {
        format!("prun::{}", self.code)
    }
}

/// "did you mean `x`?" for the closest candidate, if any is close enough.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    closest(name, candidates).map(|c| format!("did you mean `{c}`?"))
}

pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(name, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// A list of names for a help line: "`a`, `b` or `c`".
pub fn one_of<S: AsRef<str>>(names: &[S]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{}`", n.as_ref())).collect();
    match quoted.len() {
        0 => "none".to_string(),
        1 => quoted[0].clone(),
        n => format!("{} or {}", quoted[..n - 1].join(", "), quoted[n - 1]),
    }
}

/// Lines longer than this (in bytes) are not shown as snippets: the position is
/// printed instead.
const MAX_SNIPPET_LINE: usize = 2_000;

/// Labels at most this many lines apart (beyond their context) share a snippet.
const MERGE_GAP: usize = 6;

/// One file read by a load: the pipeline file, an included file, an `env_file`.
#[derive(Debug, Clone)]
pub struct Source {
    /// As shown to the user (relative paths stay relative).
    pub path: String,
    pub text: Arc<str>,
    /// Global offset of the file's first byte (see [`Span`]).
    pub base: usize,
    /// Byte offset of the start of each line, so positions and snippets cost a
    /// binary search instead of a scan from the top (`validate` stays linear in the
    /// number of problems).
    lines: Arc<Vec<usize>>,
}

impl Source {
    pub fn new(path: String, text: &str, base: usize) -> Source {
        let mut lines = vec![0];
        lines.extend(memchr::memchr_iter(b'\n', text.as_bytes()).map(|i| i + 1));
        Source {
            path,
            text: Arc::from(text),
            base,
            lines: Arc::new(lines),
        }
    }

    /// 1-based line and column (in characters) of a byte offset of this file.
    pub fn line_col(&self, local: usize) -> (usize, usize) {
        let mut local = local.min(self.text.len());
        while !self.text.is_char_boundary(local) {
            local -= 1;
        }
        let line = self
            .lines
            .partition_point(|&s| s <= local)
            .saturating_sub(1);
        let start = self.lines[line];
        (line + 1, self.text[start..local].chars().count() + 1)
    }

    /// Length in bytes of the line that holds a byte offset of this file.
    fn line_len_at(&self, local: usize) -> usize {
        let line = self
            .lines
            .partition_point(|&s| s <= local)
            .saturating_sub(1);
        let start = self.lines[line];
        let end = self.lines.get(line + 1).copied().unwrap_or(self.text.len());
        end - start
    }

    fn snippet(&self) -> Snippet {
        Snippet {
            name: self.path.clone(),
            text: self.text.clone(),
            lines: self.lines.clone(),
        }
    }
}

/// A file as miette reads it: only the lines around a span are looked at, found by a
/// binary search in the line index (miette's own reader scans from the top).
#[derive(Debug, Clone)]
struct Snippet {
    name: String,
    text: Arc<str>,
    lines: Arc<Vec<usize>>,
}

impl SourceCode for Snippet {
    fn read_span<'a>(
        &'a self,
        span: &miette::SourceSpan,
        before: usize,
        after: usize,
    ) -> Result<Box<dyn miette::SpanContents<'a> + 'a>, miette::MietteError> {
        let len = self.text.len();
        let offset = span.offset();
        if offset > len || offset + span.len() > len {
            return Err(miette::MietteError::OutOfBounds);
        }
        let line_of = |o: usize| self.lines.partition_point(|&s| s <= o).saturating_sub(1);
        let first = line_of(offset);
        let last = line_of((offset + span.len()).saturating_sub(1).max(offset));
        let start_line = first.saturating_sub(before);
        let end_line = (last + after + 1).min(self.lines.len());
        let start = self.lines[start_line];
        let mut end = self.lines.get(end_line).copied().unwrap_or(len);
        if end > start && self.text.as_bytes().get(end - 1) == Some(&b'\n') {
            end -= 1;
        }
        let column = if before == 0 {
            offset - self.lines[first]
        } else {
            0
        };
        let data = &self.text.as_bytes()[start..end];
        // miette merges two labels' snippets when the first's line count reaches the
        // second's line: labels a few lines apart share one snippet, far-apart ones
        // (a duplicate 10,000 lines below) get their own instead of everything between.
        let line_count = memchr::memchr_iter(b'\n', data).count() + MERGE_GAP;
        Ok(Box::new(
            miette::MietteSpanContents::new_named(
                self.name.clone(),
                data,
                (start, end - start).into(),
                start_line,
                column,
                line_count,
            )
            .with_language("yaml"),
        ))
    }
}

/// The files of one load and every diagnostic found in them, ready to render.
#[derive(Debug, Clone)]
pub struct FileDiagnostics {
    /// The pipeline file as named on the command line.
    pub path: String,
    /// Every file read, in the order read; `sources[0]` is the pipeline file.
    pub sources: Vec<Source>,
    pub diagnostics: Vec<Diagnostic>,
}

/// Where a span is, for humans and CI: the file and 1-based start and end positions
/// (the end is exclusive, columns count characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub end_line: usize,
    pub end_column: usize,
}

impl FileDiagnostics {
    /// Diagnostics of a file that could not be read at all.
    pub fn unreadable(path: &str, d: Diagnostic) -> FileDiagnostics {
        FileDiagnostics {
            path: path.to_string(),
            sources: vec![Source::new(path.to_string(), "", 0)],
            diagnostics: vec![d],
        }
    }

    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }

    /// The file a global offset falls in (the pipeline file when none does).
    pub fn source_of(&self, offset: usize) -> Option<&Source> {
        let i = self.sources.partition_point(|s| s.base <= offset);
        self.sources.get(i.saturating_sub(1))
    }

    /// The file and the start and end positions of a span; a diagnostic without a
    /// span is about the pipeline file as a whole (line 1, column 1).
    pub fn position(&self, span: Option<Span>) -> Position {
        let fallback = || Position {
            file: self.path.clone(),
            line: 1,
            column: 1,
            end_line: 1,
            end_column: 1,
        };
        let Some(span) = span else { return fallback() };
        let Some(src) = self.source_of(span.offset) else {
            return fallback();
        };
        let local = span.offset - src.base;
        let (line, column) = src.line_col(local);
        let (end_line, end_column) = src.line_col(local.saturating_add(span.len));
        Position {
            file: src.path.clone(),
            line,
            column,
            end_line,
            end_column,
        }
    }

    /// 1-based line and column (in characters) of a global offset, in its own file.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let p = self.position(Some(Span::new(offset, 0)));
        (p.line, p.column)
    }

    /// Render one diagnostic with miette's graphical handler. Labels in other files
    /// than the primary span's are rendered as related reports with their own source.
    pub fn render_human(&self, d: &Diagnostic, color: bool) -> String {
        let theme = if color {
            miette::GraphicalTheme::unicode()
        } else {
            miette::GraphicalTheme::unicode_nocolor()
        };
        let handler = miette::GraphicalReportHandler::new_themed(theme)
            .with_width(100)
            .with_links(false);
        let report = self.rendered(d);
        let mut out = String::new();
        // Rendering into a String cannot fail.
        let _ = handler.render_report(&mut out, &report);
        out
    }

    /// Whether a span sits on a line too long to show as a snippet (the terminal
    /// could not show it, and miette cannot lay out columns past 65,535).
    fn on_long_line(&self, span: Span) -> bool {
        self.source_of(span.offset)
            .is_some_and(|src| src.line_len_at(span.offset - src.base) > MAX_SNIPPET_LINE)
    }

    fn rendered<'a>(&'a self, d: &'a Diagnostic) -> Rendered<'a> {
        if d.span.is_some_and(|s| self.on_long_line(s)) {
            let p = self.position(d.span);
            let label = if d.label.is_empty() {
                String::new()
            } else {
                format!(": {}", d.label)
            };
            return Rendered {
                d,
                named: Source::new(self.path.clone(), "", 0).snippet(),
                has_source: false,
                labels: Vec::new(),
                others: Vec::new(),
                note: Some(format!(
                    "at {}:{}:{}{label} (the line is too long to show)",
                    p.file, p.line, p.column
                )),
            };
        }
        let primary = d.span.and_then(|s| self.source_of(s.offset));
        let base = primary.map(|s| s.base).unwrap_or(0);
        let (named, text) = match primary {
            Some(src) => (src.snippet(), src.text.clone()),
            None => (
                Source::new(self.path.clone(), "", 0).snippet(),
                Arc::from(""),
            ),
        };
        let same_file =
            |s: &Span| self.source_of(s.offset).map(|x| x.base) == primary.map(|x| x.base);
        let mut labels = Vec::new();
        if let Some(span) = d.span {
            labels.push(LabeledSpan::new_primary_with_span(
                (!d.label.is_empty()).then(|| d.label.clone()),
                clamp(span, base, &text),
            ));
        }
        let mut others = Vec::new();
        for (s, l) in &d.related {
            if self.on_long_line(*s) {
                continue;
            }
            if same_file(s) {
                labels.push(LabeledSpan::new_with_span(
                    Some(l.clone()),
                    clamp(*s, base, &text),
                ));
            } else if let Some(src) = self.source_of(s.offset) {
                others.push(Elsewhere {
                    label: l.clone(),
                    named: src.snippet(),
                    span: clamp(*s, src.base, &src.text),
                });
            }
        }
        Rendered {
            d,
            named,
            has_source: d.span.is_some(),
            labels,
            others,
            note: None,
        }
    }

    pub fn to_json(&self) -> Vec<serde_json::Value> {
        self.diagnostics
            .iter()
            .map(|d| {
                let p = self.position(d.span);
                serde_json::json!({
                    "file": p.file,
                    "severity": d.severity.as_str(),
                    "code": d.full_code(),
                    "message": d.message,
                    "line": p.line,
                    "column": p.column,
                    "end_line": p.end_line,
                    "end_column": p.end_column,
                    "help": d.help,
                })
            })
            .collect()
    }

    /// GitHub workflow commands
    /// (`::error file=…,line=…,col=…,endLine=…,endColumn=…,title=…::msg`).
    pub fn to_github(&self) -> String {
        let mut out = String::new();
        for d in &self.diagnostics {
            out.push_str(&self.github_line(d));
        }
        out
    }

    pub fn github_line(&self, d: &Diagnostic) -> String {
        let p = self.position(d.span);
        let mut msg = format!("{} [{}]", d.message, d.full_code());
        if let Some(h) = &d.help {
            msg.push('\n');
            msg.push_str(h);
        }
        format!(
            "::{} file={},line={},col={},endLine={},endColumn={},title={}::{}\n",
            d.severity.as_str(),
            gh_escape_prop(&p.file),
            p.line,
            p.column,
            p.end_line,
            p.end_column,
            gh_escape_prop(&d.full_code()),
            gh_escape_data(&msg)
        )
    }
}

/// 1-based line and column (in characters) of a byte offset of `source`.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let mut start = offset;
    while !source.is_char_boundary(start) {
        start -= 1;
    }
    let before = &source[..start];
    let line = memchr::memchr_iter(b'\n', before.as_bytes()).count() + 1;
    let line_start = memchr::memrchr(b'\n', before.as_bytes())
        .map(|i| i + 1)
        .unwrap_or(0);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

pub(crate) fn gh_escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn gh_escape_prop(s: &str) -> String {
    gh_escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// Adapter that lets miette render one of our diagnostics with its source.
struct Rendered<'a> {
    d: &'a Diagnostic,
    named: Snippet,
    has_source: bool,
    labels: Vec<LabeledSpan>,
    /// Related places in other files.
    others: Vec<Elsewhere>,
    /// Where the problem is, when it cannot be shown as a snippet.
    note: Option<String>,
}

/// A related place in another file than the diagnostic's own (an included file).
struct Elsewhere {
    label: String,
    named: Snippet,
    span: miette::SourceSpan,
}

impl fmt::Debug for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.d.message)
    }
}

impl fmt::Display for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.d.message)?;
        if let Some(note) = &self.note {
            write!(f, "\n  {note}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Rendered<'_> {}

impl miette::Diagnostic for Rendered<'_> {
    fn code<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        Some(Box::new(self.d.full_code()))
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.d.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.d
            .help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.has_source.then_some(&self.named as &dyn SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        if self.labels.is_empty() {
            return None;
        }
        Some(Box::new(self.labels.iter().cloned()))
    }

    fn related<'b>(&'b self) -> Option<Box<dyn Iterator<Item = &'b dyn miette::Diagnostic> + 'b>> {
        if self.others.is_empty() {
            return None;
        }
        Some(Box::new(
            self.others.iter().map(|o| o as &dyn miette::Diagnostic),
        ))
    }
}

impl fmt::Debug for Elsewhere {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label)
    }
}

impl fmt::Display for Elsewhere {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label)
    }
}

impl std::error::Error for Elsewhere {}

impl miette::Diagnostic for Elsewhere {
    fn severity(&self) -> Option<miette::Severity> {
        Some(miette::Severity::Advice)
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        Some(&self.named)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        Some(Box::new(std::iter::once(LabeledSpan::new_with_span(
            Some(self.label.clone()),
            self.span,
        ))))
    }
}

/// A global span as a span of the file that starts at `base` (clamped to its text).
fn clamp(span: Span, base: usize, source: &str) -> miette::SourceSpan {
    let offset = span.offset.saturating_sub(base).min(source.len());
    let len = span.len.min(source.len() - offset);
    (offset, len).into()
}
