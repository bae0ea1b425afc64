//! The files of one pipeline: the pipeline file, the files it `include`s (nested, each
//! read once, cycles refused) and the `env_file`s they name. Every file gets its own
//! range of global offsets (see [`crate::diag::Span`]), so each diagnostic points into
//! the file that holds the offending text, and `prun plan` can say where each
//! definition came from.
//!
//! Merging: an included file's sections come before those of the file that includes
//! it, in `include` order (as if pasted where `include:` stands, at the top). A name
//! defined twice, in one file or across files, is an error that shows both places.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::decode::decode_at;
use super::{EnvFileSpec, PipelineSpec, S, Span, StageSpec, envfile};
use crate::diag::{Diagnostic, Source};

/// Everything read for one pipeline.
pub struct Read {
    /// The merged pipeline, when the main file had the right overall shape.
    pub spec: Option<PipelineSpec>,
    pub diags: Vec<Diagnostic>,
    /// Every file read; `sources[0]` is the pipeline file.
    pub sources: Vec<Source>,
}

/// Decode the pipeline file `text` (shown as `display`, found at `path`) and
/// everything it includes.
pub fn read(display: &str, path: &Path, text: String) -> Read {
    let mut r = Reader {
        sources: Vec::new(),
        diags: Vec::new(),
        seen: HashSet::new(),
        stack: Vec::new(),
    };
    let dir = parent(path);
    let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let base = r.add_source(display.to_string(), &text);
    let (spec, diags) = decode_at(&text, base, false);
    r.diags.extend(diags);
    let spec = spec.map(|mut own| {
        r.seen.insert(canonical.clone());
        r.stack.push(canonical);
        r.env_files(&mut own, &dir, true);
        let mut merged = PipelineSpec::default();
        for inc in std::mem::take(&mut own.include) {
            r.include(&mut merged, &inc, &dir);
        }
        r.stack.pop();
        append(&mut merged, own);
        merged
    });
    if let Some(spec) = &spec {
        check_duplicates(spec, &mut r.diags);
    }
    Read {
        spec,
        diags: r.diags,
        sources: r.sources,
    }
}

struct Reader {
    sources: Vec<Source>,
    diags: Vec<Diagnostic>,
    /// Canonical paths already included (a file included twice is read once).
    seen: HashSet<PathBuf>,
    /// The chain of includes being read, for cycles.
    stack: Vec<PathBuf>,
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// How to show a path found relative to `dir`: relative paths stay relative.
fn shown(dir: &Path, written: &str) -> (PathBuf, String) {
    let full = dir.join(written);
    let display = full
        .strip_prefix("./")
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| full.clone());
    (full, display.display().to_string())
}

impl Reader {
    /// Register a file's text; returns its global base offset.
    fn add_source(&mut self, path: String, text: &str) -> usize {
        let base = self
            .sources
            .last()
            .map(|s| s.base + s.text.len() + 1)
            .unwrap_or(0);
        self.sources.push(Source::new(path, text, base));
        base
    }

    fn include(&mut self, into: &mut PipelineSpec, written: &S<String>, dir: &Path) {
        let (full, display) = shown(dir, &written.value);
        let canonical = full.canonicalize().unwrap_or_else(|_| full.clone());
        if self.stack.contains(&canonical) {
            let chain: Vec<String> = self
                .stack
                .iter()
                .skip_while(|p| **p != canonical)
                .map(|p| p.display().to_string())
                .chain([canonical.display().to_string()])
                .collect();
            self.diags.push(
                Diagnostic::error(
                    "include-cycle",
                    format!("`{}` includes itself: {}", written.value, chain.join(" → ")),
                )
                .at(written.span, "included again here")
                .help("includes nest but cannot loop; remove this include"),
            );
            return;
        }
        if !self.seen.insert(canonical.clone()) {
            // Already merged through another include: read each file once.
            return;
        }
        let text = match read_text(&full) {
            Ok(t) => t,
            Err(why) => {
                self.diags.push(
                    Diagnostic::error(
                        "include-error",
                        format!("cannot include `{}`: {why}", written.value),
                    )
                    .at(written.span, "cannot read this file")
                    .help("include paths are relative to the file that names them"),
                );
                return;
            }
        };
        let base = self.add_source(display, &text);
        let (spec, diags) = decode_at(&text, base, true);
        self.diags.extend(diags);
        let Some(mut spec) = spec else { return };
        let inc_dir = parent(&full);
        self.env_files(&mut spec, &inc_dir, false);
        self.stack.push(canonical);
        for inc in std::mem::take(&mut spec.include) {
            self.include(into, &inc, &inc_dir);
        }
        self.stack.pop();
        append(into, spec);
    }

    /// Read the `env_file`s named in `spec` (top level when `top`, and each stage's),
    /// relative to `dir`, the directory of the file that names them.
    fn env_files(&mut self, spec: &mut PipelineSpec, dir: &Path, top: bool) {
        if top {
            let files = std::mem::take(&mut spec.env_file);
            spec.env_file_vars = self.load_env_files(&files, dir);
            spec.env_file = files;
        }
        if let Some(d) = spec.defaults.as_mut() {
            self.stage_env_files(d, dir);
        }
        for s in spec.stages.iter_mut() {
            self.stage_env_files(s, dir);
        }
    }

    fn stage_env_files(&mut self, s: &mut StageSpec, dir: &Path) {
        if let Some(files) = s.env_file.take() {
            s.env_file_vars = self.load_env_files(&files, dir);
            s.env_file = Some(files);
        }
    }

    fn load_env_files(&mut self, files: &[EnvFileSpec], dir: &Path) -> Vec<(S<String>, String)> {
        let mut out: Vec<(S<String>, String)> = Vec::new();
        for f in files {
            let (full, display) = shown(dir, &f.path.value);
            let text = match read_text(&full) {
                Ok(t) => t,
                Err(_) if !f.required && !full.exists() => continue,
                Err(why) => {
                    self.diags.push(
                        Diagnostic::error(
                            "env-file-error",
                            format!("cannot read env file `{}`: {why}", f.path.value),
                        )
                        .at(f.path.span, "cannot read this file")
                        .help(format!(
                            "env file paths are relative to the file that names them; write `{{path: {}, required: false}}` if it may be missing",
                            f.path.value
                        )),
                    );
                    continue;
                }
            };
            let base = self.add_source(display, &text);
            let (vars, err) = envfile::parse(&text, base);
            if let Some(e) = err {
                self.diags
                    .push(e.related(f.path.span, "env file named here"));
            }
            for (k, v) in vars {
                // A later line or file overrides an earlier one, as dotenv tools do.
                match out.iter_mut().find(|(n, _)| n.value == k.value) {
                    Some(slot) => *slot = (k, v),
                    None => out.push((k, v)),
                }
            }
        }
        out
    }
}

fn read_text(path: &Path) -> Result<String, String> {
    if path.is_dir() {
        return Err("it is a directory".into());
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "it is not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })
}

/// Append the mergeable sections of `from` to `into`; the other keys of `from`
/// (version, name, defaults, ...) replace those of `into` when set (only the main
/// file has them).
fn append(into: &mut PipelineSpec, from: PipelineSpec) {
    let PipelineSpec {
        version,
        name,
        description,
        include: _,
        params,
        env,
        env_file,
        env_file_vars,
        hosts,
        queues,
        semaphores,
        events,
        defaults,
        shutdown_timeout,
        shutdown_signal,
        stages,
        stages_span,
    } = from;
    into.params.extend(params);
    into.env.extend(env);
    into.hosts.extend(hosts);
    into.queues.extend(queues);
    into.semaphores.extend(semaphores);
    into.events.extend(events);
    into.stages.extend(stages);
    into.env_file.extend(env_file);
    into.env_file_vars.extend(env_file_vars);
    into.version = version.or(into.version.take());
    into.name = name.or(into.name.take());
    into.description = description.or(into.description.take());
    into.defaults = defaults.or(into.defaults.take());
    into.shutdown_timeout = shutdown_timeout.or(into.shutdown_timeout.take());
    into.shutdown_signal = shutdown_signal.or(into.shutdown_signal.take());
    if stages_span != Span::default() || into.stages_span == Span::default() {
        into.stages_span = stages_span;
    }
}

/// A name defined twice across the merged files (within one map, the decoder already
/// reported the duplicate key and kept the first).
fn check_duplicates(spec: &PipelineSpec, diags: &mut Vec<Diagnostic>) {
    let lists: [(&str, Vec<&S<String>>); 7] = [
        ("param", spec.params.iter().map(|(k, _)| k).collect()),
        (
            "environment variable",
            spec.env.iter().map(|(k, _)| k).collect(),
        ),
        ("host", spec.hosts.iter().map(|h| &h.name).collect()),
        ("queue", spec.queues.iter().map(|q| &q.name).collect()),
        (
            "semaphore",
            spec.semaphores.iter().map(|(k, _)| k).collect(),
        ),
        ("event", spec.events.iter().map(|e| &e.name).collect()),
        ("stage", spec.stages.iter().map(|s| &s.name).collect()),
    ];
    for (kind, names) in lists {
        let mut first: std::collections::HashMap<&str, Span> = std::collections::HashMap::new();
        for n in names {
            if let Some(prev) = first.get(n.value.as_str()) {
                diags.push(
                    Diagnostic::error(
                        "duplicate-name",
                        format!("{kind} `{}` is defined twice", n.value),
                    )
                    .at(n.span, "defined again here")
                    .related(*prev, "first defined here")
                    .help("names are unique per kind across the pipeline and the files it includes: rename or remove one"),
                );
            } else {
                first.insert(&n.value, n.span);
            }
        }
    }
}
