//! The command line (SPEC 8): argument parsing and the one place that maps outcomes to
//! exit codes. Each subcommand is a thin function over the library phases.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use crate::diag::{FileDiagnostics, Severity};
use crate::load::{LoadOptions, load};
use crate::model::Model;
use crate::plan::Plan;

/// Exit codes shared by every command.
pub mod exit {
    pub const OK: i32 = 0;
    /// `validate`: the file has errors.
    pub const INVALID: i32 = 1;
    /// Usage error, or `run` of an invalid pipeline (nothing was started).
    pub const USAGE: i32 = 2;
}

#[derive(Parser, Debug)]
#[command(name = "prun", version, about = "Run a pipeline of processes described in YAML", long_about = None)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a pipeline (also `prun FILE`)
    Run(RunArgs),
    /// Check pipeline files and report every problem
    Validate(ValidateArgs),
    /// Show what `run` would do: instances, roles, waves, wiring, shutdown order
    Plan(PlanArgs),
    /// Draw the pipeline graph
    Graph(GraphArgs),
    /// Print a JSON Schema
    Schema(SchemaArgs),
    /// Talk to the running pipeline from inside a stage (locks, events)
    Ctl(crate::ctl::CtlArgs),
    /// Print shell completions
    Completions(CompletionsArgs),
    /// Watch and steer running pipelines from another terminal
    #[command(flatten)]
    Ops(crate::ops::OpsCommand),
}

#[derive(Args, Debug, Clone)]
pub struct FileArgs {
    /// The pipeline file
    pub file: PathBuf,
    /// Override a param: `--set buns=20` (repeatable)
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_set)]
    pub set: Vec<(String, String)>,
}

fn parse_set(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, found `{s}`")),
    }
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub file: FileArgs,
    /// Write the final report as JSON
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Write a JUnit XML report (one test case per instance)
    #[arg(long, value_name = "FILE", env = "PRUN_JUNIT")]
    pub junit: Option<PathBuf>,
    /// Also write every instance's raw output to DIR/<instance>.log
    #[arg(long, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
    /// Only errors and the report
    #[arg(long, short)]
    pub quiet: bool,
    /// Live status board
    #[arg(long, value_enum, default_value_t = When::Auto)]
    pub progress: When,
    /// Colors (also respects NO_COLOR)
    #[arg(long, value_enum, default_value_t = When::Auto)]
    pub color: When,
    /// Skip the foreach items that succeeded in this earlier report
    #[arg(long, value_name = "REPORT.json")]
    pub resume: Option<PathBuf>,
    /// Print the plan and start nothing (same as `prun plan`)
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    Auto,
    Always,
    Never,
}

impl When {
    fn as_str(self) -> &'static str {
        match self {
            When::Auto => "auto",
            When::Always => "always",
            When::Never => "never",
        }
    }
}

#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// Pipeline files
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// Treat warnings as errors
    #[arg(long)]
    pub strict: bool,
    /// Override a param while validating (repeatable)
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_set)]
    pub set: Vec<(String, String)>,
    #[arg(long, value_enum, default_value_t = When::Auto)]
    pub color: When,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Human,
    Json,
    Github,
}

#[derive(Args, Debug)]
pub struct PlanArgs {
    #[command(flatten)]
    pub file: FileArgs,
}

#[derive(Args, Debug)]
pub struct GraphArgs {
    #[command(flatten)]
    pub file: FileArgs,
    #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
    pub format: GraphFormat,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum GraphFormat {
    Dot,
    Mermaid,
}

#[derive(Args, Debug)]
pub struct SchemaArgs {
    #[arg(value_enum, default_value_t = SchemaKind::Pipeline)]
    pub kind: SchemaKind,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchemaKind {
    Pipeline,
    Report,
}

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    pub shell: clap_complete::Shell,
}

const SUBCOMMANDS: &[&str] = &[
    "run",
    "validate",
    "plan",
    "graph",
    "schema",
    "ctl",
    "completions",
    "help",
];

/// `prun FILE ...` means `prun run FILE ...`.
pub fn normalize_args(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    if let Some(first) = args.get(1).and_then(|a| a.to_str()) {
        let is_flag_for_prun = matches!(first, "-h" | "--help" | "-V" | "--version");
        if !SUBCOMMANDS.contains(&first)
            && !crate::ops::SUBCOMMANDS.contains(&first)
            && !is_flag_for_prun
        {
            args.insert(1, "run".into());
        }
    }
    args
}

/// Parse the process arguments and run; returns the exit code.
pub fn main() -> i32 {
    let args = normalize_args(std::env::args_os().collect());
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    exit::OK
                }
                _ => exit::USAGE,
            };
        }
    };
    match cli.command {
        Command::Run(a) => run(a),
        Command::Validate(a) => validate(a),
        Command::Plan(a) => plan_cmd(&a.file),
        Command::Graph(a) => graph_cmd(a),
        Command::Schema(a) => schema_cmd(a),
        Command::Ctl(a) => crate::ctl::ctl_main(a),
        Command::Ops(c) => crate::ops::main(c),
        Command::Completions(a) => {
            let mut buf = Vec::new();
            clap_complete::generate(a.shell, &mut Cli::command(), "prun", &mut buf);
            emit(&String::from_utf8_lossy(&buf));
            exit::OK
        }
    }
}

fn use_color(when: When, stream_is_tty: bool) -> bool {
    match when {
        When::Always => true,
        When::Never => false,
        When::Auto => stream_is_tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
    }
}

/// Load a file for `run`/`plan`/`graph`: print diagnostics (warnings too) on stderr;
/// `None` means invalid (exit 2, nothing started).
fn load_for_run(f: &FileArgs, color: When, for_run: bool) -> Option<Model> {
    let loaded = load(
        &f.file,
        &LoadOptions {
            sets: f.set.clone(),
            start_dir: None,
            for_run,
        },
    );
    let color = use_color(color, std::io::stderr().is_terminal());
    print_human(&loaded.file, color);
    loaded.model
}

fn print_human(file: &FileDiagnostics, color: bool) {
    let mut err = std::io::stderr().lock();
    for d in &file.diagnostics {
        let _ = write!(err, "{}", file.render_human(d, color));
    }
}

fn run(a: RunArgs) -> i32 {
    let Some(model) = load_for_run(&a.file, a.color, !a.dry_run) else {
        return exit::USAGE;
    };
    let plan = crate::load::plan(model);
    if a.dry_run {
        emit(&crate::plan::show::render(&plan));
        return exit::OK;
    }
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
        color: Some(a.color.as_str().to_string()),
        resume: a.resume,
        pass_stdout: std::io::stdout().is_terminal(),
        file: Some(a.file.file.clone()),
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

fn validate(a: ValidateArgs) -> i32 {
    let color = use_color(a.color, std::io::stderr().is_terminal());
    let mut any_error = false;
    let mut json = Vec::new();
    let mut total = (0usize, 0usize);
    for path in &a.files {
        let mut loaded = load(
            path,
            &LoadOptions {
                sets: a.set.clone(),
                start_dir: None,
                for_run: false,
            },
        );
        if a.strict {
            for d in loaded.file.diagnostics.iter_mut() {
                d.severity = Severity::Error;
            }
        }
        let errors = loaded
            .file
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count();
        let warnings = loaded.file.diagnostics.len() - errors;
        total.0 += errors;
        total.1 += warnings;
        any_error |= errors > 0;
        match a.format {
            Format::Human => {
                print_human(&loaded.file, color);
                if errors == 0 {
                    eprintln!("{}: valid{}", path.display(), plural_warnings(warnings));
                }
            }
            Format::Json => json.extend(loaded.file.to_json()),
            Format::Github => emit(&loaded.file.to_github()),
        }
    }
    match a.format {
        Format::Json => emit(&format!("{}\n", serde_json::Value::Array(json))),
        Format::Human if a.files.len() > 1 || total.0 > 0 => {
            eprintln!(
                "{} file(s) checked: {} error(s), {} warning(s)",
                a.files.len(),
                total.0,
                total.1
            );
        }
        _ => {}
    }
    if any_error { exit::INVALID } else { exit::OK }
}

fn plural_warnings(n: usize) -> String {
    match n {
        0 => String::new(),
        1 => " (1 warning)".into(),
        n => format!(" ({n} warnings)"),
    }
}

fn plan_cmd(f: &FileArgs) -> i32 {
    let Some(model) = load_for_run(f, When::Auto, false) else {
        return exit::USAGE;
    };
    let plan: Plan = crate::load::plan(model);
    emit(&crate::plan::show::render(&plan));
    exit::OK
}

fn graph_cmd(a: GraphArgs) -> i32 {
    let Some(model) = load_for_run(&a.file, When::Auto, false) else {
        return exit::USAGE;
    };
    let out = match a.format {
        GraphFormat::Dot => crate::graph::render::dot(&model),
        GraphFormat::Mermaid => crate::graph::render::mermaid(&model),
    };
    emit(&out);
    exit::OK
}

fn schema_cmd(a: SchemaArgs) -> i32 {
    let schema = match a.kind {
        SchemaKind::Pipeline => crate::syntax::schema::pipeline_schema_json(),
        SchemaKind::Report => crate::report::report_schema_json(),
    };
    emit(&format!("{schema}\n"));
    exit::OK
}

/// Write to stdout; a closed pipe (`prun schema | head`) is not an error worth a panic.
fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
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
