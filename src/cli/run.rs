//! `prun run` (and `prun FILE`), `prun plan`, `prun graph`.

use std::io::IsTerminal;
use std::path::PathBuf;

use super::files;
use super::{FileArgs, GraphArgs, GraphFormat, RunArgs, When, emit, emit_err, exit};
use crate::diag::FileDiagnostics;
use crate::load::LoadOptions;
use crate::model::Model;
use crate::plan::Plan;

/// Load a file for `run`/`plan`/`graph`: print diagnostics (warnings too) on stderr;
/// `None` means invalid or unreadable (exit 2, nothing started).
fn load_model(f: &FileArgs, color: When, for_run: bool) -> Option<Model> {
    load_named(f, color, for_run).map(|(m, _, _)| m)
}

/// Like [`load_model`], with the file as `prun ps` shows it (`-` for stdin, a found
/// default file by its absolute path) and the files read.
fn load_named(
    f: &FileArgs,
    color: When,
    for_run: bool,
) -> Option<(Model, PathBuf, Vec<crate::diag::Source>)> {
    let target = match files::target(f.file.as_deref()) {
        Ok(t) => t,
        Err(msg) => {
            emit_err(&format!("prun: {msg}\n"));
            return None;
        }
    };
    let options = LoadOptions {
        sets: f.set.clone(),
        start_dir: None,
        for_run,
    };
    let loaded = match files::load_target(&target, &options) {
        Ok(l) => l,
        Err(msg) => {
            emit_err(&format!("prun: {msg}\n"));
            return None;
        }
    };
    print_human(
        &loaded.file,
        color.use_color(std::io::stderr().is_terminal()),
    );
    let shown = match target {
        files::Target::Stdin => PathBuf::from("-"),
        files::Target::Given(p) | files::Target::Found(p) => p,
    };
    let sources = loaded.file.sources;
    loaded.model.map(|m| (m, shown, sources))
}

pub(super) fn print_human(file: &FileDiagnostics, color: bool) {
    for d in &file.diagnostics {
        emit_err(&file.render_human(d, color));
    }
}

pub(super) fn run(mut a: RunArgs) -> i32 {
    if a.file.file.is_none() {
        // The default file may be run from another directory: the paths given here
        // keep meaning what they meant where prun was started.
        a.report = files::absolute(a.report);
        a.junit = files::absolute(a.junit);
        a.log_dir = files::absolute(a.log_dir);
        a.resume = files::absolute(a.resume);
    }
    let Some((model, shown, sources)) = load_named(&a.file, a.color, !a.dry_run) else {
        return exit::USAGE;
    };
    if a.dry_run {
        let origins = crate::load::origins(&model, &sources);
        let plan = crate::load::plan(model);
        emit(&format!("{}{origins}", crate::plan::show::render(&plan)));
        return exit::OK;
    }
    let plan = crate::load::plan(model);
    let progress = match a.progress {
        When::Auto if shares_terminal(&plan, std::io::stdout().is_terminal()) => When::Never,
        p => p,
    };
    let opts = crate::run::RunOptions {
        report: a.report,
        junit: a.junit,
        log_dir: a.log_dir,
        quiet: a.quiet,
        progress: Some(progress.as_str().to_string()),
        color: Some(a.color.color_env().as_str().to_string()),
        resume: a.resume,
        pass_stdout: std::io::stdout().is_terminal(),
        file: Some(shown),
    };
    crate::run::run(plan, &opts)
}

/// True when a stage uses the terminal directly, so `--progress auto` gives the live
/// board up (`always` forces it): it reads it (`stdin: inherit`), or writes to it past
/// prun (`stderr: inherit`: prun never sees those bytes, so the board would be drawn
/// over them). `stdout: inherit` does not: on a terminal prun reads that output and
/// passes it through above the board (`RunOptions::pass_stdout`).
fn shares_terminal(plan: &Plan, _stdout_is_tty: bool) -> bool {
    use crate::plan::{Input, Output};
    plan.stages
        .iter()
        .any(|s| matches!(s.stdin, Input::Inherit) || matches!(s.stderr, Output::Inherit))
}

pub(super) fn plan(f: &FileArgs) -> i32 {
    let Some((model, _, sources)) = load_named(f, When::Auto, false) else {
        return exit::USAGE;
    };
    let origins = crate::load::origins(&model, &sources);
    let plan: Plan = crate::load::plan(model);
    emit(&format!("{}{origins}", crate::plan::show::render(&plan)));
    exit::OK
}

pub(super) fn graph(a: GraphArgs) -> i32 {
    let Some(model) = load_model(&a.file, When::Auto, false) else {
        return exit::USAGE;
    };
    let out = match a.format {
        GraphFormat::Dot => crate::graph::render::dot(&model),
        GraphFormat::Mermaid => crate::graph::render::mermaid(&model),
    };
    emit(&out);
    exit::OK
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_of(yaml: &str) -> Plan {
        let path = std::path::Path::new("t.yaml");
        let options = LoadOptions::default();
        let model = crate::load::load_source("t.yaml", path, yaml.to_string(), &options)
            .model
            .expect("valid pipeline");
        crate::load::plan(model)
    }

    #[test]
    fn the_board_gives_way_to_stages_that_use_the_terminal() {
        let quiet = plan_of("version: 1\nstages:\n  a: {cmd: [true]}\n");
        assert!(!shares_terminal(&quiet, true));
        let reads = plan_of("version: 1\nstages:\n  a: {cmd: [cat], stdin: inherit}\n");
        assert!(shares_terminal(&reads, false));
        let errs = plan_of("version: 1\nstages:\n  a: {cmd: [true], stderr: inherit}\n");
        assert!(shares_terminal(&errs, false));
        // stdout: inherit is passed through above the board on a terminal.
        let outs = plan_of("version: 1\nstages:\n  a: {cmd: [true], stdout: inherit}\n");
        assert!(!shares_terminal(&outs, true));
        assert!(!shares_terminal(&outs, false));
    }
}
