//! foreach item sources (SPEC 3.4) and `--resume` (skip items that already succeeded).
//!
//! [`expand`] turns `items`, `range`, `glob` and `lines` sources into the list of items
//! known before the stage starts; `queue` sources are fed record by record by the
//! router and are not expanded here. Decisions, written down:
//! - `range` follows Python's `range(from, to, step)`: `to` is excluded, `step` may be
//!   negative, never 0; `{from: 0, to: 10}` gives the 10 items `0`…`9`.
//! - `glob` supports `*`, `?`, `[abc]`, `[a-z]`, `[!x]` (or `[^x]`), `\` escapes and a
//!   whole `**` component (any number of directories). As in the shell, wildcards do
//!   not match a leading `.` unless the pattern component starts with one, `**` does
//!   not enter hidden or symlinked directories, and results are sorted. Items are
//!   the paths as written (a relative pattern gives relative paths). A pattern that
//!   matches nothing gives no items (not an error: the supervisor may warn).
//!   Implemented here (60 lines) rather than adding the `glob` crate for one key.
//! - `lines`: one item per line; `\r\n` endings are accepted; empty lines are skipped.
//!
//! [`succeeded_items`] reads a previous JSON report (SPEC 7) and returns the
//! `(stage, item)` pairs whose state was `succeeded`, or that were themselves skipped
//! as `resumed` (so resuming a resumed run's report keeps skipping them).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::plan::{ForeachSource, InstanceVars};

/// More items than this is almost certainly a mistake (and would exhaust memory).
pub const MAX_ITEMS: usize = 10_000_000;

/// Expand a source into its items. `vars` renders templates (`${run.dir}`, ...);
/// relative paths are resolved from `base_dir` (the directory prun was started in).
pub fn expand(
    source: &ForeachSource,
    vars: &InstanceVars<'_>,
    base_dir: &Path,
) -> Result<Vec<String>, String> {
    match source {
        ForeachSource::Items(items) => Ok(items.clone()),
        ForeachSource::Range { from, to, step } => range(*from, *to, *step),
        ForeachSource::Glob(pattern) => glob(&pattern.render(vars), base_dir),
        ForeachSource::Lines(path) => lines(&path.render(vars), base_dir),
        ForeachSource::Queue(_) => {
            Err("a `foreach: {queue}` source is fed by its queue, it has no items to expand".into())
        }
        ForeachSource::Matrix(dims) => Ok(crate::plan::matrix_items(dims)),
    }
}

/// Python's `range(from, to, step)` as strings.
pub fn range(from: i64, to: i64, step: i64) -> Result<Vec<String>, String> {
    if step == 0 {
        return Err("foreach range: `step` must not be 0".into());
    }
    let (from, to, step) = (from as i128, to as i128, step as i128);
    let span = if step > 0 { to - from } else { from - to };
    let count = if span <= 0 {
        0
    } else {
        (span + step.abs() - 1) / step.abs()
    };
    if count > MAX_ITEMS as i128 {
        return Err(format!(
            "foreach range: {count} items is more than the limit of {MAX_ITEMS}"
        ));
    }
    Ok((0..count).map(|i| (from + i * step).to_string()).collect())
}

/// Items from a file, one per line.
pub fn lines(path: &str, base_dir: &Path) -> Result<Vec<String>, String> {
    let full = base_dir.join(path);
    let bytes = std::fs::read(&full)
        .map_err(|e| format!("foreach lines: cannot read {}: {e}", full.display()))?;
    let mut items = Vec::new();
    for (n, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let text = std::str::from_utf8(line).map_err(|_| {
            format!(
                "foreach lines: {} line {} is not valid UTF-8",
                full.display(),
                n + 1
            )
        })?;
        items.push(text.to_string());
        if items.len() > MAX_ITEMS {
            return Err(format!(
                "foreach lines: {} has more than {MAX_ITEMS} items",
                full.display()
            ));
        }
    }
    Ok(items)
}

/// Expand a glob pattern (module doc for the syntax) relative to `base_dir`.
pub fn glob(pattern: &str, base_dir: &Path) -> Result<Vec<String>, String> {
    if pattern.is_empty() {
        return Err("foreach glob: the pattern is empty".into());
    }
    let absolute = pattern.starts_with('/');
    let comps: Vec<&str> = pattern.split('/').filter(|c| !c.is_empty()).collect();
    for c in &comps {
        if c.contains("**") && *c != "**" {
            return Err(format!(
                "foreach glob `{pattern}`: `**` must be a whole path component (`a/**/b`)"
            ));
        }
        parse_component(c).map_err(|e| format!("foreach glob `{pattern}`: {e}"))?;
    }
    let start = if absolute {
        PathBuf::from("/")
    } else {
        base_dir.to_path_buf()
    };
    let shown = if absolute {
        "/".to_string()
    } else {
        String::new()
    };
    let mut out = Vec::new();
    walk(&start, &shown, &comps, &mut out).map_err(|e| format!("foreach glob `{pattern}`: {e}"))?;
    out.sort();
    out.dedup();
    Ok(out)
}

fn join_shown(shown: &str, name: &str) -> String {
    if shown.is_empty() || shown.ends_with('/') {
        format!("{shown}{name}")
    } else {
        format!("{shown}/{name}")
    }
}

fn walk(fs_dir: &Path, shown: &str, comps: &[&str], out: &mut Vec<String>) -> Result<(), String> {
    let Some((&comp, rest)) = comps.split_first() else {
        if !shown.is_empty() {
            out.push(shown.to_string());
        }
        return Ok(());
    };
    if out.len() > MAX_ITEMS {
        return Err(format!("more than {MAX_ITEMS} matches"));
    }
    let tokens = parse_component(comp)?;
    let wild = comp == "**" || tokens.iter().any(|t| !matches!(t, Token::Char(_)));
    if !wild {
        let name: String = tokens
            .iter()
            .map(|t| if let Token::Char(c) = t { *c } else { '?' })
            .collect();
        let path = fs_dir.join(&name);
        if rest.is_empty() {
            if std::fs::symlink_metadata(&path).is_ok() {
                out.push(join_shown(shown, &name));
            }
        } else if path.is_dir() {
            walk(&path, &join_shown(shown, &name), rest, out)?;
        }
        return Ok(());
    }
    let entries = match std::fs::read_dir(fs_dir) {
        Ok(e) => e,
        // A directory that does not exist (or is not one) simply matches nothing.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(());
        }
        Err(e) => return Err(format!("cannot list {}: {e}", fs_dir.display())),
    };
    let mut names: Vec<(String, bool, bool)> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot list {}: {e}", fs_dir.display()))?;
        let Some(name) = entry.file_name().to_str().map(String::from) else {
            return Err(format!(
                "{} is not valid UTF-8 and cannot be an item",
                entry.path().display()
            ));
        };
        let ft = entry.file_type().map_err(|e| e.to_string())?;
        let is_dir = ft.is_dir() || (ft.is_symlink() && entry.path().is_dir());
        names.push((name, is_dir, ft.is_symlink()));
    }
    if comp == "**" {
        // Zero directories...
        walk(fs_dir, shown, rest, out)?;
        // ...or one more, then still `**`.
        for (name, is_dir, is_link) in &names {
            if *is_dir && !*is_link && !name.starts_with('.') {
                walk(&fs_dir.join(name), &join_shown(shown, name), comps, out)?;
            }
        }
        return Ok(());
    }
    for (name, is_dir, _) in &names {
        if name.starts_with('.') && !comp.starts_with('.') {
            continue;
        }
        let chars: Vec<char> = name.chars().collect();
        if !matches_tokens(&tokens, &chars) {
            continue;
        }
        if rest.is_empty() {
            out.push(join_shown(shown, name));
        } else if *is_dir {
            walk(&fs_dir.join(name), &join_shown(shown, name), rest, out)?;
        }
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Char(char),
    Any,
    Star,
    /// `[...]`: ranges (single chars are a..=a), negated.
    Class(Vec<(char, char)>, bool),
}

fn parse_component(comp: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = comp.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => {
                let c = *chars.get(i + 1).ok_or("a trailing `\\` escapes nothing")?;
                tokens.push(Token::Char(c));
                i += 2;
                continue;
            }
            '*' => {
                if tokens.last() != Some(&Token::Star) {
                    tokens.push(Token::Star);
                }
            }
            '?' => tokens.push(Token::Any),
            '[' => {
                let mut j = i + 1;
                let negated = matches!(chars.get(j), Some('!') | Some('^'));
                if negated {
                    j += 1;
                }
                let mut ranges = Vec::new();
                let mut first = true;
                loop {
                    let c = *chars
                        .get(j)
                        .ok_or_else(|| format!("unclosed `[` in `{comp}`"))?;
                    if c == ']' && !first {
                        break;
                    }
                    first = false;
                    if chars.get(j + 1) == Some(&'-') && chars.get(j + 2).is_some_and(|&e| e != ']')
                    {
                        let end = chars[j + 2];
                        if end < c {
                            return Err(format!("reversed range `{c}-{end}` in `{comp}`"));
                        }
                        ranges.push((c, end));
                        j += 3;
                    } else {
                        ranges.push((c, c));
                        j += 1;
                    }
                }
                tokens.push(Token::Class(ranges, negated));
                i = j + 1;
                continue;
            }
            c => tokens.push(Token::Char(c)),
        }
        i += 1;
    }
    Ok(tokens)
}

/// Wildcard match with backtracking over the last `*` (linear in practice).
fn matches_tokens(tokens: &[Token], name: &[char]) -> bool {
    let (mut t, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        let ok = match tokens.get(t) {
            Some(Token::Star) => {
                star = Some((t, n));
                t += 1;
                continue;
            }
            Some(Token::Any) => true,
            Some(Token::Char(c)) => *c == name[n],
            Some(Token::Class(ranges, negated)) => {
                ranges.iter().any(|&(a, b)| a <= name[n] && name[n] <= b) != *negated
            }
            None => false,
        };
        if ok {
            t += 1;
            n += 1;
        } else if let Some((st, sn)) = star {
            t = st + 1;
            n = sn + 1;
            star = Some((st, sn + 1));
        } else {
            return false;
        }
    }
    tokens[t..].iter().all(|tok| *tok == Token::Star)
}

/// `(stage, item)` pairs that succeeded in a previous JSON report (SPEC 7 shape).
pub fn succeeded_items(report_json: &str) -> Result<HashSet<(String, String)>, String> {
    let value: serde_json::Value =
        serde_json::from_str(report_json).map_err(|e| format!("not a prun JSON report: {e}"))?;
    let instances = value
        .get("instances")
        .and_then(|v| v.as_array())
        .ok_or("not a prun JSON report: no `instances` array")?;
    let mut done = HashSet::new();
    for (i, inst) in instances.iter().enumerate() {
        let stage = inst
            .get("stage")
            .and_then(|v| v.as_str())
            .ok_or_else(|| format!("instances[{i}] has no `stage` string"))?;
        let item = match inst.get("item") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            // Not a foreach instance: nothing to resume.
            _ => continue,
        };
        let state = inst.get("state").and_then(|v| v.as_str()).unwrap_or("");
        // An item skipped because it succeeded in the report before that one.
        let resumed = inst.get("resumed").and_then(|v| v.as_bool()) == Some(true);
        if state == "succeeded" || resumed {
            done.insert((stage.to_string(), item));
        }
    }
    Ok(done)
}

/// [`succeeded_items`] of the report file at `path` (`--resume REPORT.json`).
pub fn load_resume(path: &Path) -> Result<HashSet<(String, String)>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    succeeded_items(&text).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Template;

    fn vars() -> InstanceVars<'static> {
        InstanceVars {
            stage: "s",
            index: 0,
            replicas: 1,
            item: None,
            run_dir: "/run",
        }
    }

    #[test]
    fn items_and_ranges() {
        let src = ForeachSource::Items(vec!["a b".into(), "".into()]);
        assert_eq!(expand(&src, &vars(), Path::new("/")).unwrap(), ["a b", ""]);
        assert_eq!(range(0, 5, 1).unwrap(), ["0", "1", "2", "3", "4"]);
        assert_eq!(range(0, 10, 3).unwrap(), ["0", "3", "6", "9"]);
        assert_eq!(range(5, 0, -2).unwrap(), ["5", "3", "1"]);
        assert!(range(3, 3, 1).unwrap().is_empty());
        assert!(range(5, 0, 1).unwrap().is_empty());
        assert!(range(0, 1, 0).is_err());
        assert!(
            range(i64::MIN, i64::MAX, 1).is_err(),
            "too many items is an error, not an OOM"
        );
        assert_eq!(
            range(i64::MAX - 1, i64::MAX, 5).unwrap(),
            [(i64::MAX - 1).to_string()]
        );
        assert!(expand(&ForeachSource::Queue(0), &vars(), Path::new("/")).is_err());
    }

    #[test]
    fn lines_skip_empty_and_accept_crlf() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("l.txt"), "one\r\ntwo words\n\nthree").unwrap();
        let src = ForeachSource::Lines(Template::literal("l.txt"));
        assert_eq!(
            expand(&src, &vars(), dir.path()).unwrap(),
            ["one", "two words", "three"]
        );
        std::fs::write(dir.path().join("bad.txt"), b"ok\n\xff\n").unwrap();
        let e = lines("bad.txt", dir.path()).unwrap_err();
        assert!(e.contains("line 2"), "{e}");
        let e = lines("missing.txt", dir.path()).unwrap_err();
        assert!(e.contains("missing.txt"), "{e}");
    }

    #[test]
    fn component_matching() {
        let m = |p: &str, n: &str| {
            matches_tokens(&parse_component(p).unwrap(), &n.chars().collect::<Vec<_>>())
        };
        assert!(m("*.log", "a.log"));
        assert!(m("*.log", ".log"));
        assert!(!m("*.log", "a.log.1"));
        assert!(m("a*b*c", "aXbYbZc"));
        assert!(!m("a*b*c", "aXbYbZ"));
        assert!(m("?.txt", "x.txt"));
        assert!(!m("?.txt", "xy.txt"));
        assert!(m("[a-c]1", "b1"));
        assert!(!m("[!a-c]1", "b1"));
        assert!(m("[^a-c]1", "d1"));
        assert!(m("[]]", "]"));
        assert!(m("\\*", "*"));
        assert!(!m("\\*", "x"));
        assert!(m("**", "anything"));
        assert!(parse_component("[abc").is_err());
        assert!(parse_component("[z-a]").is_err());
        assert!(parse_component("x\\").is_err());
    }

    #[test]
    fn glob_walks_directories() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        for f in [
            "data/a.log",
            "data/b.log",
            "data/c.txt",
            "data/.hidden.log",
            "data/sub/d.log",
            "data/sub/deep/e.log",
            "other/f.log",
        ] {
            std::fs::create_dir_all(p.join(f).parent().unwrap()).unwrap();
            std::fs::write(p.join(f), "").unwrap();
        }
        assert_eq!(glob("data/*.log", p).unwrap(), ["data/a.log", "data/b.log"]);
        assert_eq!(glob("data/.*.log", p).unwrap(), ["data/.hidden.log"]);
        assert_eq!(
            glob("*/*.log", p).unwrap(),
            ["data/a.log", "data/b.log", "other/f.log"]
        );
        assert_eq!(
            glob("data/**/*.log", p).unwrap(),
            [
                "data/a.log",
                "data/b.log",
                "data/sub/d.log",
                "data/sub/deep/e.log"
            ]
        );
        assert_eq!(glob("data/c.txt", p).unwrap(), ["data/c.txt"]);
        assert!(glob("nothing/*.log", p).unwrap().is_empty());
        assert!(glob("data/*.nope", p).unwrap().is_empty());
        assert!(glob("data/a**.log", p).is_err());
        let abs = format!("{}/data/*.txt", p.display());
        assert_eq!(
            glob(&abs, Path::new("/nonexistent")).unwrap(),
            [format!("{}/data/c.txt", p.display())]
        );
        // Through a template, as the plan stores it.
        let src = ForeachSource::Glob(Template::literal("data/?.log"));
        assert_eq!(
            expand(&src, &vars(), p).unwrap(),
            ["data/a.log", "data/b.log"]
        );
    }

    #[test]
    fn resume_reads_succeeded_items() {
        let report = r#"{ "pipeline": "p", "status": "failed", "exit_code": 1, "duration_ms": 5,
          "instances": [
            {"name": "job.0", "stage": "job", "index": 0, "item": "a.log", "state": "succeeded"},
            {"name": "job.1", "stage": "job", "index": 1, "item": "b.log", "state": "failed"},
            {"name": "job.2", "stage": "job", "index": 2, "item": 7, "state": "succeeded"},
            {"name": "job.3", "stage": "job", "index": 3, "item": "c.log", "state": "skipped"},
            {"name": "web", "stage": "web", "index": 0, "item": null, "state": "succeeded"}
          ], "queues": [] }"#;
        let done = succeeded_items(report).unwrap();
        let expected: HashSet<(String, String)> = [
            ("job".to_string(), "a.log".to_string()),
            ("job".to_string(), "7".to_string()),
        ]
        .into();
        assert_eq!(done, expected);
        assert!(succeeded_items("not json").is_err());
        assert!(succeeded_items("{}").unwrap_err().contains("instances"));
        assert!(succeeded_items(r#"{"instances": [{"item": "x"}]}"#).is_err());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("r.json"), report).unwrap();
        assert_eq!(load_resume(&dir.path().join("r.json")).unwrap().len(), 2);
        assert!(load_resume(&dir.path().join("none.json")).is_err());
    }
}
