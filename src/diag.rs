//! Diagnostics: every problem prun finds in a pipeline file.
//!
//! A diagnostic has a stable code (`prun::unknown-queue`), a message, a label on the
//! exact span of the offending key or value, and a help line. They are collected, never
//! thrown, so that one run of `prun validate` reports every problem of a file. The same
//! value renders three ways: miette's graphical report (human), JSON (SPEC 7) and GitHub
//! workflow annotations.

use std::fmt;
use std::sync::Arc;

use miette::{LabeledSpan, NamedSource, SourceCode};

use crate::syntax::node::Span;

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

/// A source file and its diagnostics, ready to render.
#[derive(Debug, Clone)]
pub struct FileDiagnostics {
    pub path: String,
    pub source: Arc<str>,
    pub diagnostics: Vec<Diagnostic>,
}

impl FileDiagnostics {
    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        line_col(&self.source, offset)
    }

    /// Render one diagnostic with miette's graphical handler.
    pub fn render_human(&self, d: &Diagnostic, color: bool) -> String {
        let named =
            NamedSource::new(self.path.clone(), self.source.to_string()).with_language("yaml");
        let report = Rendered {
            file: self,
            d,
            named,
        };
        let theme = if color {
            miette::GraphicalTheme::unicode()
        } else {
            miette::GraphicalTheme::unicode_nocolor()
        };
        let handler = miette::GraphicalReportHandler::new_themed(theme)
            .with_width(100)
            .with_links(false);
        let mut out = String::new();
        // Rendering into a String cannot fail.
        let _ = handler.render_report(&mut out, &report);
        out
    }

    pub fn to_json(&self) -> Vec<serde_json::Value> {
        self.diagnostics
            .iter()
            .map(|d| {
                let (line, column) = d.span.map(|s| self.line_col(s.offset)).unwrap_or((1, 1));
                serde_json::json!({
                    "file": self.path,
                    "severity": d.severity.as_str(),
                    "code": d.full_code(),
                    "message": d.message,
                    "line": line,
                    "column": column,
                    "help": d.help,
                })
            })
            .collect()
    }

    /// GitHub workflow commands (`::error file=…,line=…,col=…::msg`).
    pub fn to_github(&self) -> String {
        let mut out = String::new();
        for d in &self.diagnostics {
            let (line, col) = d.span.map(|s| self.line_col(s.offset)).unwrap_or((1, 1));
            let mut msg = format!("{} [{}]", d.message, d.full_code());
            if let Some(h) = &d.help {
                msg.push('\n');
                msg.push_str(h);
            }
            out.push_str(&format!(
                "::{} file={},line={},col={},title={}::{}\n",
                d.severity.as_str(),
                gh_escape_prop(&self.path),
                line,
                col,
                gh_escape_prop(&d.full_code()),
                gh_escape_data(&msg)
            ));
        }
        out
    }
}

pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let mut start = offset;
    while !source.is_char_boundary(start) {
        start -= 1;
    }
    let before = &source[..start];
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

fn gh_escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn gh_escape_prop(s: &str) -> String {
    gh_escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// Adapter that lets miette render one of our diagnostics with its source.
struct Rendered<'a> {
    file: &'a FileDiagnostics,
    d: &'a Diagnostic,
    named: NamedSource<String>,
}

impl fmt::Debug for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.d.message)
    }
}

impl fmt::Display for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.d.message)
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
        self.d.span.map(|_| &self.named as &dyn SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let span = self.d.span?;
        let primary = LabeledSpan::new_primary_with_span(
            (!self.d.label.is_empty()).then(|| self.d.label.clone()),
            clamp(span, &self.file.source),
        );
        let related = self.d.related.iter().map(|(s, l)| {
            LabeledSpan::new_with_span(Some(l.clone()), clamp(*s, &self.file.source))
        });
        Some(Box::new(std::iter::once(primary).chain(related)))
    }
}

fn clamp(span: Span, source: &str) -> miette::SourceSpan {
    let offset = span.offset.min(source.len());
    let len = span.len.min(source.len() - offset);
    (offset, len).into()
}
