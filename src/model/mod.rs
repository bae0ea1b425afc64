//! The model: a pipeline whose names are resolved and whose rules are checked.
//!
//! It takes the [`PipelineSpec`](crate::syntax::PipelineSpec) as written and produces
//! stages with ids instead of names, defaults applied, params and environment
//! substituted and durations in place. Every rule of SPEC section 2 that needs more
//! than one value at a time lives here (`rules`), except those about the shape of the
//! graph (cycles), which live in `graph`. Spans are kept beside the resolved values so
//! that later phases can still point at the file.

mod resolve;
mod rules;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::diag::{Diagnostic, FileDiagnostics, Severity};
use crate::plan::{EventPlan, SemaphorePlan, StagePlan};
use crate::syntax::{Span, decode};

/// A validated, resolved pipeline.
#[derive(Debug, Clone)]
pub struct Model {
    pub name: String,
    pub description: Option<String>,
    pub pipeline_dir: PathBuf,
    pub start_dir: PathBuf,
    pub params: Vec<(String, String)>,
    pub queues: Vec<QueueModel>,
    pub semaphores: Vec<SemaphorePlan>,
    pub events: Vec<EventPlan>,
    pub stages: Vec<StagePlan>,
    /// Where each stage (same index) was written, for later diagnostics.
    pub stage_spans: Vec<StageSpans>,
    pub event_spans: Vec<Span>,
    pub queue_spans: Vec<Span>,
    pub shutdown_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct QueueModel {
    pub name: String,
    pub capacity: usize,
    pub delivery: crate::plan::Delivery,
    pub framing: crate::plan::Framing,
    pub sentinel: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Default)]
pub struct StageSpans {
    pub name: Span,
    /// Span of each `after` entry (same order as `StagePlan::after`).
    pub after: Vec<Span>,
    /// Span of each `waits` entry.
    pub waits: Vec<Span>,
    /// Span of each `sets` entry.
    pub sets: Vec<Span>,
    /// Span of `cmd[0]`, when the command is an argv.
    pub program: Option<Span>,
}

/// What `load` needs to know besides the file.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `--set k=v` overrides, in order.
    pub sets: Vec<(String, String)>,
    /// Directory relative paths resolve from (defaults to the current directory).
    pub start_dir: Option<PathBuf>,
}

/// A loaded file: the model when there were no errors, and every diagnostic.
pub struct Loaded {
    pub model: Option<Model>,
    pub file: FileDiagnostics,
}

/// Read, decode, resolve and check a pipeline file.
pub fn load(path: &Path, options: &LoadOptions) -> Loaded {
    let display = path.display().to_string();
    let source = match read_source(path) {
        Ok(s) => s,
        Err(d) => {
            return Loaded {
                model: None,
                file: FileDiagnostics {
                    path: display,
                    source: Arc::from(""),
                    diagnostics: vec![*d],
                },
            };
        }
    };
    load_source(&display, path, source, options)
}

/// Like [`load`], for text already in memory (`path` gives the pipeline directory).
pub fn load_source(display: &str, path: &Path, source: String, options: &LoadOptions) -> Loaded {
    let (spec, mut diags) = decode::decode(&source);
    let start_dir = options
        .start_dir
        .clone()
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_else(|| PathBuf::from("."));
    let pipeline_dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => start_dir.join(p),
        _ => start_dir.clone(),
    };
    let pipeline_dir = pipeline_dir.canonicalize().unwrap_or(pipeline_dir);
    let mut model = None;
    if let Some(spec) = spec {
        let ctx = resolve::Context {
            pipeline_dir: &pipeline_dir,
            start_dir: &start_dir,
            file_stem: file_stem(path),
        };
        if let Some(m) = resolve::resolve(&spec, &ctx, &options.sets, &mut diags) {
            rules::check(&spec, &m, &mut diags);
            model = Some(m);
        }
    }
    diags.sort_by_key(|d| {
        (
            std::cmp::Reverse(d.severity),
            d.span.map(|s| s.offset).unwrap_or(0),
        )
    });
    diags.dedup();
    let has_errors = diags.iter().any(|d| d.severity == Severity::Error);
    Loaded {
        model: if has_errors { None } else { model },
        file: FileDiagnostics {
            path: display.to_string(),
            source: Arc::from(source),
            diagnostics: diags,
        },
    }
}

fn file_stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "pipeline".into())
}

fn read_source(path: &Path) -> Result<String, Box<Diagnostic>> {
    let shown = path.display();
    if path.is_dir() {
        return Err(Box::new(
            Diagnostic::error(
                "io",
                format!("`{shown}` is a directory, not a pipeline file"),
            )
            .help("pass the YAML file itself, e.g. `pipelines/baozi.yaml`"),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| {
        let help = if e.kind() == std::io::ErrorKind::NotFound {
            "check the path; it is relative to the current directory"
        } else {
            "check that the file is readable"
        };
        Box::new(Diagnostic::error("io", format!("cannot read `{shown}`: {e}")).help(help))
    })?;
    String::from_utf8(bytes).map_err(|e| {
        Box::new(
            Diagnostic::error(
                "not-utf8",
                format!(
                    "`{shown}` is not UTF-8 text (invalid byte at offset {})",
                    e.utf8_error().valid_up_to()
                ),
            )
            .help("a pipeline file is YAML text encoded as UTF-8"),
        )
    })
}

impl Model {
    pub fn stage_id(&self, name: &str) -> Option<usize> {
        self.stages.iter().position(|s| s.name == name)
    }
}
