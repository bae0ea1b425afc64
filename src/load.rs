//! The one place that runs the static phases in order: read the files (`syntax`:
//! the pipeline file, its includes and env files) → resolve and check (`model`) →
//! the graph rules (`graph`) → the plan (`graph::plan`). Every command that takes a
//! pipeline file goes through here.

use std::path::{Path, PathBuf};

use crate::diag::{Diagnostic, FileDiagnostics, Severity};
use crate::model::{Model, resolve, rules};
use crate::plan::Plan;
use crate::syntax::files;

/// What a load needs to know besides the file.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `--set k=v` overrides, in order.
    pub sets: Vec<(String, String)>,
    /// Directory relative paths resolve from (defaults to the current directory).
    pub start_dir: Option<PathBuf>,
    /// The file is about to be run: parts of the format the runtime does not run yet
    /// are errors ([`rules::not_yet_supported`]).
    pub for_run: bool,
}

/// A loaded file: the model when there were no errors, and every diagnostic.
pub struct Loaded {
    pub model: Option<Model>,
    pub file: FileDiagnostics,
}

/// Read, decode, resolve and check a pipeline file.
pub fn load(path: &Path, options: &LoadOptions) -> Loaded {
    let display = path.display().to_string();
    match read_source(path) {
        Ok(source) => load_source(&display, path, source, options),
        Err(d) => Loaded {
            model: None,
            file: FileDiagnostics::unreadable(&display, *d),
        },
    }
}

/// Like [`load`], for text already in memory (`path` gives the pipeline directory:
/// for standard input, a path in the current directory).
pub fn load_source(display: &str, path: &Path, source: String, options: &LoadOptions) -> Loaded {
    let read = files::read(display, path, source);
    let mut diags = read.diags;
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
    if let Some(spec) = read.spec {
        let ctx = resolve::Context {
            pipeline_dir: &pipeline_dir,
            start_dir: &start_dir,
            file_stem: file_stem(path),
        };
        if let Some(m) = resolve::resolve(&spec, &ctx, &options.sets, &mut diags) {
            rules::check(&spec, &m, &mut diags);
            crate::graph::check(&m, &mut diags);
            model = Some(m);
        }
        if options.for_run {
            diags.extend(rules::not_yet_supported(&spec));
        }
    }
    sort(&mut diags);
    let has_errors = diags.iter().any(|d| d.severity == Severity::Error);
    Loaded {
        model: if has_errors { None } else { model },
        file: FileDiagnostics {
            path: display.to_string(),
            sources: read.sources,
            diagnostics: diags,
        },
    }
}

/// Where each definition came from, for `prun plan` when a pipeline is made of
/// several files (includes, env files): one line per file with what it defines.
/// Empty when everything is in the pipeline file.
pub fn origins(model: &Model, sources: &[crate::diag::Source]) -> String {
    use std::fmt::Write;
    if sources.len() < 2 {
        return String::new();
    }
    let file_of = |span: crate::diag::Span| {
        let i = sources.partition_point(|s| s.base <= span.offset);
        i.saturating_sub(1)
    };
    let mut per_file: Vec<Vec<(&str, Vec<String>)>> = vec![Vec::new(); sources.len()];
    let mut add = |span, kind: &'static str, name: &str| {
        let f = &mut per_file[file_of(span)];
        match f.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, names)) => names.push(name.to_string()),
            None => f.push((kind, vec![name.to_string()])),
        }
    };
    for (i, (p, _)) in model.params.iter().enumerate() {
        if let Some(span) = model.param_spans.get(i) {
            add(*span, "params", p);
        }
    }
    for (name, span) in &model.env_spans {
        add(*span, "env", name);
    }
    for (i, h) in model.hosts.iter().enumerate() {
        add(model.host_spans[i], "hosts", &h.name);
    }
    for (i, q) in model.queues.iter().enumerate() {
        add(model.queue_spans[i], "queues", &q.name);
    }
    for (i, s) in model.semaphores.iter().enumerate() {
        if let Some(span) = model.semaphore_spans.get(i) {
            add(*span, "semaphores", &s.name);
        }
    }
    for (i, e) in model.events.iter().enumerate() {
        add(model.event_spans[i], "events", &e.name);
    }
    for (i, s) in model.stages.iter().enumerate() {
        add(model.stage_spans[i].name, "stages", &s.name);
    }
    let mut out = String::from("\ndefined in:\n");
    for (src, defs) in sources.iter().zip(&per_file) {
        let what = if defs.is_empty() {
            "(an env file of a stage, or nothing to define)".to_string()
        } else {
            defs.iter()
                .map(|(kind, names)| format!("{kind} {}", names.join(", ")))
                .collect::<Vec<_>>()
                .join("; ")
        };
        let _ = writeln!(out, "  {}: {what}", src.path);
    }
    out
}

/// The plan of a valid model.
pub fn plan(model: Model) -> Plan {
    crate::graph::plan::build(model)
}

/// Errors before warnings, then in file order; exact repeats once.
fn sort(diags: &mut Vec<Diagnostic>) {
    diags.sort_by_key(|d| {
        (
            std::cmp::Reverse(d.severity),
            d.span.map(|s| s.offset).unwrap_or(0),
        )
    });
    diags.dedup();
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
