//! Command-line conventions (SPEC 8, issue 14) through the real binary: the default
//! file found upward, `-` for stdin, `PRUN_*` option variables, did-you-mean for
//! commands, `--help` that shows `prun FILE` first, `CLICOLOR_FORCE`, completions of
//! FILE filtered to YAML (driven through a real bash), the man page, `prun init`.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn prun_cmd(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_prun"));
    c.current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("PRUN_") || k == "NO_COLOR" || k == "CLICOLOR_FORCE" {
            c.env_remove(k);
        }
    }
    c
}

fn prun(dir: &Path, args: &[&str]) -> Output {
    prun_cmd(dir).args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const HELLO: &str = "version: 1\nstages:\n  hello:\n    cmd: [echo, hello]\n    stdout: inherit\n";

#[test]
fn bare_prun_runs_the_default_file_found_upward_from_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("a/b");
    std::fs::create_dir_all(&sub).unwrap();
    // The stage reads a file relative to the pipeline's directory, as `just` runs
    // recipes from the justfile's directory.
    std::fs::write(dir.path().join("data.txt"), "from the top\n").unwrap();
    std::fs::write(
        dir.path().join("prun.yml"),
        "version: 1\nstages:\n  show:\n    cmd: [cat, data.txt]\n    stdout: inherit\n",
    )
    .unwrap();
    let out = prun(&sub, &["--progress", "never", "--report", "r.json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "from the top\n");
    // A path given on the command line keeps meaning what it meant where prun started.
    assert!(sub.join("r.json").exists());
    for cmd in [&["plan"][..], &["validate"], &["graph"]] {
        let out = prun(&sub, cmd);
        assert_eq!(out.status.code(), Some(0), "{cmd:?}: {}", text(&out.stderr));
    }
    // prun.yaml wins over prun.yml in the same directory.
    std::fs::write(dir.path().join("prun.yaml"), HELLO).unwrap();
    let out = prun(&sub, &["--progress", "never"]);
    assert_eq!(text(&out.stdout), "hello\n");
}

#[test]
fn no_default_file_is_a_usage_error_that_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let out = prun(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("no prun.yaml or prun.yml"), "{err}");
    assert!(err.contains("prun init"), "{err}");
}

#[test]
fn dash_reads_the_pipeline_from_stdin() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["-", "--progress", "never"][..],
        &["run", "-", "--progress", "never"],
    ] {
        let mut child = prun_cmd(dir.path())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(HELLO.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "hello\n");
    }
    let mut child = prun_cmd(dir.path())
        .args(["validate", "--format", "json", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"version: 1\nstages:\n  a: {cmd: [echo], stdout: bun}\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["file"], "<stdin>");
    assert_eq!(v[0]["line"], 3);
}

#[test]
fn every_run_option_can_come_from_the_environment_and_the_command_line_wins() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.yaml"), HELLO).unwrap();
    let out = prun_cmd(dir.path())
        .args(["p.yaml"])
        .env("PRUN_REPORT", "env.json")
        .env("PRUN_LOG_DIR", "logs")
        .env("PRUN_QUIET", "1")
        .env("PRUN_PROGRESS", "never")
        .env("PRUN_COLOR", "never")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(dir.path().join("env.json").exists());
    assert!(dir.path().join("logs").is_dir());
    // --quiet: no per-stage notices.
    assert!(
        !text(&out.stderr).contains("hello succeeded"),
        "{}",
        text(&out.stderr)
    );
    let out = prun_cmd(dir.path())
        .args(["p.yaml", "--report", "cli.json", "--progress", "never"])
        .env("PRUN_REPORT", "env2.json")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(dir.path().join("cli.json").exists() && !dir.path().join("env2.json").exists());
    // PRUN_DRY_RUN: the plan, nothing started.
    let out = prun_cmd(dir.path())
        .args(["p.yaml"])
        .env("PRUN_DRY_RUN", "true")
        .output()
        .unwrap();
    assert!(
        text(&out.stdout).starts_with("pipeline p"),
        "{}",
        text(&out.stdout)
    );
    // A bad value is a usage error naming the variable.
    let out = prun_cmd(dir.path())
        .args(["p.yaml"])
        .env("PRUN_PROGRESS", "sometimes")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // --junit and PRUN_JUNIT are accepted (the JUnit writer is the report's).
    let out = prun_cmd(dir.path())
        .args(["p.yaml", "--junit", "j.xml", "--progress", "never"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let help = text(&prun(dir.path(), &["run", "--help"]).stdout);
    for var in [
        "PRUN_REPORT",
        "PRUN_JUNIT",
        "PRUN_LOG_DIR",
        "PRUN_QUIET",
        "PRUN_PROGRESS",
        "PRUN_COLOR",
        "PRUN_RESUME",
        "PRUN_DRY_RUN",
    ] {
        assert!(help.contains(var), "{var} missing from --help");
    }
}

#[test]
fn a_mistyped_command_gets_a_suggestion() {
    let dir = tempfile::tempdir().unwrap();
    let out = prun(dir.path(), &["validat", "x.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("did you mean `prun validate`?"),
        "{}",
        text(&out.stderr)
    );
    // A file of that name is run, not taken for a typo.
    std::fs::write(dir.path().join("plna"), HELLO).unwrap();
    let out = prun(dir.path(), &["plna", "--progress", "never"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn help_shows_the_prun_file_form_first() {
    let dir = tempfile::tempdir().unwrap();
    let out = prun(dir.path(), &["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    let usage = help.lines().find(|l| l.starts_with("Usage:")).unwrap();
    assert!(usage.starts_with("Usage: prun [FILE]"), "{usage}");
    assert!(
        help.contains("--report"),
        "the run options are listed: {help}"
    );
}

#[test]
fn clicolor_force_colors_diagnostics_on_a_pipe_and_no_color_wins() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        "version: 1\nstages:\n  a: {cmd: [echo], stdout: bun}\n",
    )
    .unwrap();
    let plain = prun(dir.path(), &["validate", "bad.yaml"]);
    assert!(!text(&plain.stderr).contains('\x1b'));
    let forced = prun_cmd(dir.path())
        .args(["validate", "bad.yaml"])
        .env("CLICOLOR_FORCE", "1")
        .output()
        .unwrap();
    assert!(
        text(&forced.stderr).contains('\x1b'),
        "{}",
        text(&forced.stderr)
    );
    let zero = prun_cmd(dir.path())
        .args(["validate", "bad.yaml"])
        .env("CLICOLOR_FORCE", "0")
        .output()
        .unwrap();
    assert!(!text(&zero.stderr).contains('\x1b'));
    let both = prun_cmd(dir.path())
        .args(["validate", "bad.yaml"])
        .env("CLICOLOR_FORCE", "1")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(!text(&both.stderr).contains('\x1b'));
}

/// Ask prun for completions the way the shell scripts do.
fn complete(dir: &Path, shell: &str, words: &[&str]) -> Vec<String> {
    let out = prun_cmd(dir)
        .env("PRUN_COMPLETE", shell)
        .env("_CLAP_COMPLETE_INDEX", (words.len() - 1).to_string())
        .env("_CLAP_COMPLETE_COMP_TYPE", "9")
        .env("_CLAP_COMPLETE_SPACE", "true")
        .env("_CLAP_IFS", "\n")
        .arg("--")
        .args(words)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .map(|l| l.split(['\t', ':']).next().unwrap_or("").to_string())
        .collect()
}

fn yaml_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["a.yaml", "b.yml", "notes.txt", "sub/c.yaml"] {
        let p = dir.path().join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, "").unwrap();
    }
    dir
}

#[test]
fn file_completion_offers_yaml_files_in_bash_zsh_and_fish() {
    let dir = yaml_tree();
    for shell in ["bash", "zsh", "fish"] {
        for words in [
            &["prun", ""][..],
            &["prun", "run", ""],
            &["prun", "validate", "a.yaml", ""],
            &["prun", "plan", ""],
        ] {
            let got = complete(dir.path(), shell, words);
            for want in ["a.yaml", "b.yml", "sub/"] {
                assert!(
                    got.contains(&want.to_string()),
                    "{shell} {words:?}: {got:?}"
                );
            }
            assert!(
                !got.contains(&"notes.txt".to_string()),
                "{shell} {words:?}: {got:?}"
            );
        }
        let sub = complete(dir.path(), shell, &["prun", "sub/"]);
        assert!(sub.contains(&"sub/c.yaml".to_string()), "{shell}: {sub:?}");
        let cmds = complete(dir.path(), shell, &["prun", "val"]);
        assert!(cmds.contains(&"validate".to_string()), "{shell}: {cmds:?}");
    }
}

#[test]
fn bash_completes_yaml_files_through_the_printed_script() {
    let dir = yaml_tree();
    let exe_dir = Path::new(env!("CARGO_BIN_EXE_prun")).parent().unwrap();
    let path = format!(
        "{}:{}",
        exe_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let script = "source <(prun completions bash)\nCOMP_WORDS=(prun '')\nCOMP_CWORD=1\nCOMP_TYPE=9\n_clap_complete_prun prun '' prun\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n";
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(dir.path())
        .env("PATH", path)
        .output()
        .unwrap();
    let got = text(&out.stdout);
    assert!(
        got.lines().any(|l| l == "a.yaml"),
        "{got}\n{}",
        text(&out.stderr)
    );
    assert!(got.lines().any(|l| l == "b.yml"), "{got}");
    assert!(!got.contains("notes.txt"), "{got}");
}

#[test]
fn completion_scripts_exist_for_each_shell() {
    let dir = tempfile::tempdir().unwrap();
    for (shell, needle) in [
        ("bash", "complete -o"),
        ("zsh", "compdef"),
        ("fish", "complete --keep-order"),
    ] {
        let out = prun(dir.path(), &["completions", shell]);
        assert_eq!(out.status.code(), Some(0));
        let s = text(&out.stdout);
        assert!(
            s.contains(needle) && s.contains("PRUN_COMPLETE"),
            "{shell}: {s}"
        );
    }
}

#[test]
fn the_man_page_is_generated_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let out = prun(dir.path(), &["man"]);
    assert_eq!(out.status.code(), Some(0));
    let page = text(&out.stdout);
    assert!(page.contains(".TH prun 1"), "{page}");
    assert!(
        page.contains("\\-\\-report") && page.contains("validate"),
        "{page}"
    );
    let out = prun(dir.path(), &["man", "--dir", "man1"]);
    assert_eq!(out.status.code(), Some(0));
    for page in ["prun.1", "prun-run.1", "prun-validate.1", "prun-plan.1"] {
        assert!(dir.path().join("man1").join(page).exists(), "{page}");
    }
    // `man` itself can read it, where it is installed.
    if Command::new("man").arg("--version").output().is_ok() {
        let out = Command::new("man")
            .args(["-l", "man1/prun.1"])
            .current_dir(dir.path())
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "100")
            .output()
            .unwrap();
        assert!(text(&out.stdout).contains("prun"), "{}", text(&out.stderr));
    } else {
        eprintln!("note: `man` is not installed here; only the roff text was checked");
    }
}

#[test]
fn init_writes_a_runnable_file_whose_modeline_points_at_a_schema_next_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = prun(dir.path(), &["init"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let yaml = std::fs::read_to_string(dir.path().join("prun.yaml")).unwrap();
    let first = yaml.lines().next().unwrap();
    let schema = first
        .strip_prefix("# yaml-language-server: $schema=")
        .expect("a modeline");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join(schema)).unwrap()).unwrap();
    assert!(schema["$id"].is_string());
    let out = prun(dir.path(), &["--progress", "never"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "item 1\nitem 2\nitem 3\n");
    // It never overwrites a pipeline.
    assert_eq!(prun(dir.path(), &["init"]).status.code(), Some(2));
    // `prun schema --write DIR` for a repository with its own files.
    let out = prun(dir.path(), &["schema", "--write", "schemas"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stdout)
            .starts_with("# yaml-language-server: $schema=schemas/pipeline.schema.json")
    );
    assert!(dir.path().join("schemas/report.schema.json").exists());
}

#[test]
fn fish_completes_yaml_files_through_the_printed_script() {
    if Command::new("fish").arg("--version").output().is_err() {
        eprintln!("NOTE: fish is not installed here (.ci/run installs it); only bash ran");
        return;
    }
    let dir = yaml_tree();
    let exe_dir = Path::new(env!("CARGO_BIN_EXE_prun")).parent().unwrap();
    let path = format!(
        "{}:{}",
        exe_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for line in ["prun ", "prun plan "] {
        let out = Command::new("fish")
            .arg("--no-config")
            .arg("-c")
            .arg(format!(
                "prun completions fish | source; complete -C '{line}'"
            ))
            .current_dir(dir.path())
            .env("PATH", &path)
            .output()
            .unwrap();
        let got: Vec<String> = text(&out.stdout)
            .lines()
            .map(|l| l.split('\t').next().unwrap_or("").to_string())
            .collect();
        assert!(
            got.contains(&"a.yaml".to_string()) && got.contains(&"b.yml".to_string()),
            "{line:?}: {got:?} {}",
            text(&out.stderr)
        );
        assert!(!got.contains(&"notes.txt".to_string()), "{got:?}");
    }
}
