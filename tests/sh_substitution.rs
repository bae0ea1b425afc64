//! `sh:` substitution is data, never code (SPEC 1.2), proved against the real
//! `/bin/sh`: hostile values (quotes of both kinds, `$()`, backquotes, backslashes,
//! newlines, a here-document terminator, spaces, leading dashes, globs) crossed with
//! every quoting context a reference can stand in. The program must receive exactly
//! the value, and no injected command may ever run. Plus the attacks of issue 14
//! through the `prun` binary.

use std::path::Path;
use std::process::Command;

use proptest::prelude::*;
use prun::plan::{InstanceVars, Piece, Template};

/// `(pieces before the value, pieces after, expected output for value v)`.
type Context = (&'static str, &'static str, &'static str, fn(&str) -> String);

fn same(v: &str) -> String {
    v.to_string()
}
fn line(v: &str) -> String {
    format!("{v}\n")
}
fn glued(v: &str) -> String {
    format!("out-{v}.txt")
}
fn inside(v: &str) -> String {
    format!("a{v}b")
}
fn cmdsub(v: &str) -> String {
    v.trim_end_matches('\n').to_string()
}
fn ok(_: &str) -> String {
    "ok".to_string()
}

const CONTEXTS: &[Context] = &[
    ("bare", "printf '%s' ", "", same),
    ("double quotes", "printf '%s' \"", "\"", same),
    ("single quotes", "printf '%s' '", "'", same),
    ("glued to text", "printf '%s' out-", ".txt", glued),
    ("glued in double quotes", "printf '%s' \"a", "b\"", inside),
    ("glued in single quotes", "printf '%s' 'a", "b'", inside),
    ("here-document", "cat <<EOF\n", "\nEOF\n", line),
    ("quoted here-document", "cat <<'EOF'\n", "\nEOF\n", line),
    (
        "here-document with tabs stripped",
        "cat <<-EOF\n\t",
        "\n\tEOF\n",
        line,
    ),
    (
        "command substitution",
        "printf '%s' \"$(printf '%s' ",
        ")\"",
        cmdsub,
    ),
    (
        "backquotes",
        "x=`printf '%s' ",
        "`; printf '%s' \"$x\"",
        cmdsub,
    ),
    (
        "parameter default",
        "printf '%s' \"${PRUN_UNSET_X:-",
        "}\"",
        same,
    ),
    (
        "bare parameter default",
        "printf '%s' ${PRUN_UNSET_X:-",
        "}",
        same,
    ),
    ("comment", "# ", "\nprintf ok", ok),
];

fn shell(dir: &Path, script: &str) -> (String, String) {
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .env_remove("PRUN_UNSET_X")
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn render(before: &str, value: Piece, after: &str) -> String {
    let t = Template {
        pieces: vec![
            Piece::Literal(before.to_string()),
            value,
            Piece::Literal(after.to_string()),
        ],
    };
    t.render_shell(&InstanceVars {
        item: Some("unused"),
        ..Default::default()
    })
}

fn hostile() -> impl Strategy<Value = String> {
    let fragments = prop::sample::select(vec![
        "'",
        "\"",
        "$(touch PWNED)",
        "`touch PWNED`",
        "\\",
        "\\\\",
        "\n",
        "EOF",
        "\nEOF\ntouch PWNED\n",
        "EOF\n",
        "\tEOF",
        " ",
        "  ",
        "-n",
        "--",
        "-",
        "*",
        "?",
        "[a]",
        "~",
        "$HOME",
        "${HOME}",
        "$",
        "'; touch PWNED; '",
        "\"; touch PWNED; \"",
        "x\"; touch PWNED; \".log",
        "\t",
        "é",
        "%s",
        "a",
        "{",
        "}",
        "#",
        "&",
        ";",
        "|",
        "<<",
        ">",
        "(",
        ")",
        "$((1+1))",
        "!",
        "\r",
    ]);
    prop::collection::vec(fragments, 0..8).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn a_value_is_exactly_one_piece_of_data_in_every_context(value in hostile(), as_item in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        for (name, before, after, expect) in CONTEXTS {
            // A load-time value (param, env) and a per-instance value (item) alike.
            let script = if as_item {
                let t = Template { pieces: vec![
                    Piece::Literal(before.to_string()),
                    Piece::Var(prun::plan::InstanceVar::Item),
                    Piece::Literal(after.to_string()),
                ]};
                t.render_shell(&InstanceVars { item: Some(&value), ..Default::default() })
            } else {
                render(before, Piece::Value(value.clone()), after)
            };
            let (out, err) = shell(dir.path(), &script);
            prop_assert!(!dir.path().join("PWNED").exists(), "{name}: an injected command ran\nscript: {script:?}");
            prop_assert_eq!(out, expect(&value), "{}: script {:?}, stderr {}", name, script, err);
        }
    }
}

#[test]
fn a_value_that_ends_an_exotic_quoted_heredoc_fails_instead_of_running() {
    let dir = tempfile::tempdir().unwrap();
    let script = render(
        "cat <<'END OF'\n",
        Piece::Value("x\nEND OF\ntouch PWNED".into()),
        "\nEND OF\n",
    );
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(!dir.path().join("PWNED").exists());
    // A harmless value in the same heredoc is written as is.
    let script = render(
        "cat <<'END OF'\n",
        Piece::Value("$(x) `y` \\".into()),
        "\nEND OF\n",
    );
    assert_eq!(shell(dir.path(), &script).0, "$(x) `y` \\\n");
}

// ----- through the binary (issue 14's attacks) -----

fn prun(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_prun"))
        .current_dir(dir)
        .args(args)
        .args(["--progress", "never"])
        .output()
        .unwrap()
}

#[test]
fn a_hostile_file_name_from_a_glob_is_data() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("logs")).unwrap();
    std::fs::write(dir.path().join("logs/x\"; touch PWNED; \".log"), "1\n2\n").unwrap();
    std::fs::write(dir.path().join("logs/it's here.log"), "1\n").unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        "version: 1\nstages:\n  count:\n    foreach: {glob: \"logs/*.log\"}\n    parallel: 1\n    sh: |\n      wc -l < \"${item}\" >/dev/null; printf '%s\\n' ${item}\n      cat <<EOF\n      ${item}\n      EOF\n    stdout: inherit\n",
    )
    .unwrap();
    let out = prun(dir.path(), &["p.yaml"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dir.path().join("PWNED").exists());
    assert!(
        stdout.contains("logs/x\"; touch PWNED; \".log\nlogs/x\"; touch PWNED; \".log\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("logs/it's here.log\nlogs/it's here.log\n"),
        "{stdout}"
    );
}

#[test]
fn a_hostile_param_is_data_in_single_quotes_and_heredocs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        "version: 1\nparams:\n  msg: hi\nstages:\n  say:\n    sh: |\n      echo '${params.msg}'\n      cat <<'EOF'\n      ${params.msg}\n      EOF\n      echo \"[${params.msg}]\"\n    stdout: inherit\n",
    )
    .unwrap();
    for value in [
        "$(touch PWNED2)",
        "a b",
        "x\nEOF\ntouch PWNED2",
        "'; touch PWNED2; '",
    ] {
        let set = format!("msg={value}");
        let out = prun(dir.path(), &["p.yaml", "--set", &set]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !dir.path().join("PWNED2").exists(),
            "{value:?} ran a command"
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{value}\n{value}\n[{value}]\n"),
            "{value:?}"
        );
    }
}
