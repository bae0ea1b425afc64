//! `prun validate FILE...`: every problem of every file, in the format asked for.
//! Output is written as it is produced and errors writing it (a closed pipe) are
//! ignored, so `prun validate f.yaml | head -c 20` ends quietly.

use std::io::IsTerminal;

use super::files::{self, Target};
use super::run::print_human;
use super::{Format, ValidateArgs, emit, emit_err, exit};
use crate::diag::{Diagnostic, FileDiagnostics, Severity};
use crate::load::LoadOptions;

pub(super) fn validate(a: ValidateArgs) -> i32 {
    let color = a.color.use_color(std::io::stderr().is_terminal());
    let targets: Vec<Target> = if a.files.is_empty() {
        match files::target(None) {
            Ok(t) => vec![t],
            Err(msg) => {
                emit_err(&format!("prun: {msg}\n"));
                return exit::USAGE;
            }
        }
    } else {
        a.files
            .iter()
            .map(|p| files::target(Some(p)))
            .collect::<Result<_, _>>()
            .unwrap_or_default()
    };
    if targets
        .iter()
        .filter(|t| matches!(t, Target::Stdin))
        .count()
        > 1
    {
        emit_err("prun: `-` (standard input) can be given only once\n");
        return exit::USAGE;
    }
    let options = LoadOptions {
        sets: a.set.clone(),
        start_dir: None,
        for_run: false,
    };
    let mut results: Vec<FileDiagnostics> = Vec::new();
    let (mut errors, mut warnings) = (0usize, 0usize);
    for target in &targets {
        let mut file = match files::load_target(target, &options) {
            Ok(loaded) => loaded.file,
            Err(msg) => {
                let name = match target {
                    Target::Stdin => "<stdin>".to_string(),
                    Target::Given(p) | Target::Found(p) => p.display().to_string(),
                };
                FileDiagnostics::unreadable(&name, Diagnostic::error("io", msg))
            }
        };
        if a.strict {
            for d in file.diagnostics.iter_mut() {
                d.severity = Severity::Error;
            }
        }
        let e = file
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count();
        let w = file.diagnostics.len() - e;
        errors += e;
        warnings += w;
        if a.format == Format::Human {
            print_human(&file, color);
            if e == 0 {
                emit_err(&format!("{}: valid{}\n", file.path, plural_warnings(w)));
            }
        } else {
            results.push(file);
        }
    }
    match a.format {
        Format::Human => {
            if targets.len() > 1 || errors > 0 {
                emit_err(&format!(
                    "{} file(s) checked: {errors} error(s), {warnings} warning(s)\n",
                    targets.len()
                ));
            }
        }
        Format::Json => {
            let all: Vec<serde_json::Value> = results.iter().flat_map(|f| f.to_json()).collect();
            emit(&format!("{}\n", serde_json::Value::Array(all)));
        }
        Format::Github => {
            let (annotations, rest) = crate::diag::formats::github(&results);
            emit(&annotations);
            emit_err(&rest);
        }
        Format::Sarif => {
            let log = crate::diag::formats::sarif(&results);
            emit(&format!(
                "{}\n",
                serde_json::to_string_pretty(&log).unwrap_or_default()
            ));
        }
    }
    if errors > 0 { exit::INVALID } else { exit::OK }
}

fn plural_warnings(n: usize) -> String {
    match n {
        0 => String::new(),
        1 => " (1 warning)".into(),
        n => format!(" ({n} warnings)"),
    }
}
