//! The command line (SPEC 8): the clap definition and the one place that maps outcomes
//! to exit codes. Each subcommand is a thin function over the library phases:
//! `run.rs` (run, plan, graph), `validate.rs`, `tools.rs` (schema, init, completions,
//! man), `files.rs` (which file: a path, `-` for stdin, or the default `prun.yaml`
//! found upward).
//!
//! `prun FILE` is `prun run FILE`: the run options are flattened into the top level,
//! so `--help`, completions and the man page show that form first.

mod files;
mod run;
mod tools;
mod validate;

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum, ValueHint};
use clap_complete::engine::ArgValueCompleter;

/// Exit codes shared by every command ([`crate::exit`]).
pub use crate::exit;

/// The environment variable that asks prun for shell completions (set by the scripts
/// `prun completions SHELL` prints; never needed by hand).
pub const COMPLETE_VAR: &str = "PRUN_COMPLETE";

const USAGE: &str =
    "prun [FILE] [OPTIONS]     run a pipeline (FILE: default prun.yaml, found upward; - is stdin)
       prun <COMMAND> [ARGS]";

const AFTER_HELP: &str =
    "Every run option can also come from the environment: PRUN_ + the option in capitals
(PRUN_REPORT=r.json, PRUN_LOG_DIR, PRUN_QUIET=1, PRUN_PROGRESS, PRUN_COLOR, PRUN_JUNIT,
PRUN_RESUME, PRUN_DRY_RUN); the command line wins. Colors follow NO_COLOR and
CLICOLOR_FORCE. Docs: docs/cli.md; the man page: `prun man`.";

#[derive(Parser, Debug)]
#[command(
    name = "prun",
    version,
    about = "Run a pipeline of processes described in YAML",
    long_about = None,
    override_usage = USAGE,
    after_help = AFTER_HELP,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(flatten)]
    pub run: RunArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a pipeline (also `prun FILE`, and `prun` alone for ./prun.yaml)
    Run(RunArgs),
    /// Check pipeline files and report every problem
    Validate(ValidateArgs),
    /// Show what `run` would do: instances, roles, hosts, waves, wiring, shutdown order
    Plan(PlanArgs),
    /// Draw the pipeline graph
    Graph(GraphArgs),
    /// Print a JSON Schema, or write both into a directory for editors
    Schema(SchemaArgs),
    /// Start a pipeline here: a prun.yaml that editors complete, with its schema
    Init(InitArgs),
    /// Talk to the running pipeline from inside a stage (locks, events)
    Ctl(crate::ctl::CtlArgs),
    /// Print the shell code that completes prun's commands, options and FILEs
    Completions(CompletionsArgs),
    /// Print the man page (roff), or write one page per command into a directory
    Man(ManArgs),
    /// Watch and steer running pipelines from another terminal
    #[command(flatten)]
    Ops(crate::ops::OpsCommand),
}

/// The pipeline file and `--set`.
#[derive(Args, Debug, Clone)]
pub struct FileArgs {
    /// The pipeline file (default: prun.yaml or prun.yml here or in the nearest parent
    /// directory; `-` reads standard input)
    #[arg(
        value_name = "FILE",
        value_hint = ValueHint::FilePath,
        add = ArgValueCompleter::new(files::yaml_completer())
    )]
    pub file: Option<PathBuf>,
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

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub file: FileArgs,
    /// Write the final report as JSON
    #[arg(long, value_name = "FILE", env = "PRUN_REPORT", value_hint = ValueHint::FilePath)]
    pub report: Option<PathBuf>,
    /// Write a JUnit XML report (one test case per instance)
    #[arg(long, value_name = "FILE", env = "PRUN_JUNIT", value_hint = ValueHint::FilePath)]
    pub junit: Option<PathBuf>,
    /// Also write every instance's raw output to DIR/<instance>.log
    #[arg(long, value_name = "DIR", env = "PRUN_LOG_DIR", value_hint = ValueHint::DirPath)]
    pub log_dir: Option<PathBuf>,
    /// Only errors and the report
    #[arg(long, short, env = "PRUN_QUIET", value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::SetTrue)]
    pub quiet: bool,
    /// Live status board
    #[arg(long, value_enum, default_value_t = When::Auto, env = "PRUN_PROGRESS")]
    pub progress: When,
    /// Colors (also respects NO_COLOR and CLICOLOR_FORCE)
    #[arg(long, value_enum, default_value_t = When::Auto, env = "PRUN_COLOR")]
    pub color: When,
    /// Skip the foreach items that succeeded in this earlier report
    #[arg(long, value_name = "REPORT.json", env = "PRUN_RESUME", value_hint = ValueHint::FilePath)]
    pub resume: Option<PathBuf>,
    /// Print the plan and start nothing (same as `prun plan`)
    #[arg(long, env = "PRUN_DRY_RUN", value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::SetTrue)]
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

    /// `auto` decided by the environment: `NO_COLOR` (set and not empty) turns colors
    /// off, else `CLICOLOR_FORCE` (set, not empty, not `0`) turns them on, else the
    /// terminal decides. An explicit `always`/`never` wins over both.
    pub fn color_env(self) -> When {
        let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
        match self {
            When::Auto if set("NO_COLOR") => When::Never,
            When::Auto
                if set("CLICOLOR_FORCE")
                    && std::env::var_os("CLICOLOR_FORCE") != Some("0".into()) =>
            {
                When::Always
            }
            w => w,
        }
    }

    /// Whether to color a stream.
    pub fn use_color(self, is_tty: bool) -> bool {
        match self.color_env() {
            When::Always => true,
            When::Never => false,
            When::Auto => is_tty,
        }
    }
}

#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// Pipeline files (default: prun.yaml found upward; `-` reads standard input)
    #[arg(value_name = "FILE", value_hint = ValueHint::FilePath, add = ArgValueCompleter::new(files::yaml_completer()))]
    pub files: Vec<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// Treat warnings as errors
    #[arg(long)]
    pub strict: bool,
    /// Override a param while validating (repeatable)
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_set)]
    pub set: Vec<(String, String)>,
    #[arg(long, value_enum, default_value_t = When::Auto, env = "PRUN_COLOR")]
    pub color: When,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Annotated source snippets on stderr
    Human,
    /// One JSON array on stdout
    Json,
    /// GitHub Actions workflow annotations on stdout
    Github,
    /// SARIF 2.1.0 on stdout, for code-scanning tools
    Sarif,
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
    /// Write pipeline.schema.json and report.schema.json into DIR (created if needed)
    /// and print the modeline that points editors at them
    #[arg(long, value_name = "DIR", value_hint = ValueHint::DirPath)]
    pub write: Option<PathBuf>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchemaKind {
    Pipeline,
    Report,
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// The pipeline file to create
    #[arg(default_value = "prun.yaml", value_hint = ValueHint::FilePath)]
    pub file: PathBuf,
    /// Replace the file if it exists
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell
    pub shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Write prun.1 and one page per command (prun-run.1, ...) into DIR
    #[arg(long, value_name = "DIR", value_hint = ValueHint::DirPath)]
    pub dir: Option<PathBuf>,
}

/// The names of the subcommands (and `help`), from the clap definition.
fn subcommand_names() -> Vec<String> {
    let mut names: Vec<String> = Cli::command()
        .get_subcommands()
        .flat_map(|c| {
            std::iter::once(c.get_name().to_string()).chain(c.get_all_aliases().map(str::to_string))
        })
        .collect();
    names.push("help".into());
    names
}

/// `prun validat x.yaml`: a first word that is neither a command nor a file, but
/// close to a command, is a typo of the command (not a pipeline file to run).
fn mistyped_command(args: &[std::ffi::OsString]) -> Option<String> {
    let first = args.get(1)?.to_str()?;
    if first.starts_with('-') || first.contains('/') || std::path::Path::new(first).exists() {
        return None;
    }
    let names = subcommand_names();
    if names.iter().any(|n| n == first) {
        return None;
    }
    crate::diag::closest(first, names.iter().map(String::as_str)).map(|c| {
        format!(
            "error: `{first}` is not a prun command, nor a file\n\n  tip: did you mean `prun {c}`?\n\nFor more information, try '--help'.\n"
        )
    })
}

/// Parse the process arguments and run; returns the exit code.
pub fn main() -> i32 {
    clap_complete::CompleteEnv::with_factory(Cli::command)
        .var(COMPLETE_VAR)
        .complete();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(msg) = mistyped_command(&args) {
        let _ = std::io::stderr().write_all(msg.as_bytes());
        return exit::USAGE;
    }
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
        None => run::run(cli.run),
        Some(Command::Run(a)) => run::run(a),
        Some(Command::Validate(a)) => validate::validate(a),
        Some(Command::Plan(a)) => run::plan(&a.file),
        Some(Command::Graph(a)) => run::graph(a),
        Some(Command::Schema(a)) => tools::schema(a),
        Some(Command::Init(a)) => tools::init(a),
        Some(Command::Ctl(a)) => crate::ctl::ctl_main(a),
        Some(Command::Completions(a)) => tools::completions(a),
        Some(Command::Man(a)) => tools::man(a),
        Some(Command::Ops(c)) => crate::ops::main(c),
    }
}

/// Write to stdout; a closed pipe (`prun schema | head`) is not an error worth a panic.
pub(crate) fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
}

/// Write to stderr, ignoring a closed stream.
pub(crate) fn emit_err(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes()).and_then(|_| err.flush());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_typo_of_a_command_is_caught_but_a_file_is_not() {
        let args = |a: &str| vec!["prun".into(), a.into()];
        assert!(
            mistyped_command(&args("validat"))
                .unwrap()
                .contains("prun validate")
        );
        assert!(mistyped_command(&args("plna")).is_some());
        assert!(mistyped_command(&args("validate")).is_none());
        assert!(mistyped_command(&args("pipelines/baozi.yaml")).is_none());
        assert!(mistyped_command(&args("--help")).is_none());
        assert!(mistyped_command(&args("zzzzzzzz.yaml")).is_none());
    }
}
