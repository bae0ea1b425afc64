//! `foreach: {glob}` patterns (SPEC 3.4), walked lazily: matches are handed out one by
//! one as the walk finds them, so a glob over a million files starts its first item at
//! once and never holds every match.
//!
//! Syntax: `*`, `?`, `[abc]`, `[a-z]`, `[!x]` (or `[^x]`), `\` escapes and a whole `**`
//! component (any number of directories). As in the shell, wildcards do not match a
//! leading `.` unless the pattern component starts with one, `**` does not enter hidden
//! or symlinked directories, and a pattern that matches nothing gives no items (not an
//! error: the supervisor warns). Items are the paths as written (a relative pattern
//! gives relative paths). Implemented here rather than with the `glob` crate, which
//! collects and sorts every match before returning the first.
//!
//! Order: each directory is listed and sorted by name, and walked depth first, so
//! matches come sorted by path component by component (`a/b` before `a.x`, since the
//! component `a` sorts before `a.x`). Memory: the sorted listing of one directory per
//! level being walked, never the list of matches.
//!
//! The walk is one pass over the directories with the *set* of pattern positions that
//! apply there (like an NFA), so a directory is listed once and a path is matched once
//! even when two `**` could both reach it. Literal components are looked up with one
//! `stat`, without listing their directory (`/data/logs/*.log` never lists `/`).

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A parsed pattern.
#[derive(Debug, Clone)]
pub struct Glob {
    pattern: String,
    absolute: bool,
    comps: Vec<Comp>,
}

#[derive(Debug, Clone, PartialEq)]
enum Comp {
    /// `**`: zero or more directories.
    AnyDirs,
    /// A name with no wildcard (after `\` escapes).
    Literal(String),
    /// A name with wildcards; `dot` when the pattern component starts with `.`.
    Wild { tokens: Vec<Token>, dot: bool },
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Char(char),
    Any,
    Star,
    /// `[...]`: ranges (single chars are a..=a), negated.
    Class(Vec<(char, char)>, bool),
}

/// One directory entry, as the walk needs it.
struct Entry {
    name: OsString,
    /// A directory, or a symlink to one.
    dir: bool,
    link: bool,
}

impl Glob {
    /// Parse `pattern`; a syntax error names the pattern.
    pub fn new(pattern: &str) -> Result<Glob, String> {
        if pattern.is_empty() {
            return Err("foreach glob: the pattern is empty".into());
        }
        let mut comps = Vec::new();
        for c in pattern.split('/').filter(|c| !c.is_empty()) {
            if c == "**" {
                comps.push(Comp::AnyDirs);
                continue;
            }
            if c.contains("**") {
                return Err(format!(
                    "foreach glob `{pattern}`: `**` must be a whole path component (`a/**/b`)"
                ));
            }
            let tokens =
                parse_component(c).map_err(|e| format!("foreach glob `{pattern}`: {e}"))?;
            if tokens.iter().all(|t| matches!(t, Token::Char(_))) {
                let name = tokens
                    .iter()
                    .map(|t| if let Token::Char(c) = t { *c } else { '?' })
                    .collect();
                comps.push(Comp::Literal(name));
            } else {
                comps.push(Comp::Wild {
                    tokens,
                    dot: c.starts_with('.'),
                });
            }
        }
        Ok(Glob {
            pattern: pattern.to_string(),
            absolute: pattern.starts_with('/'),
            comps,
        })
    }

    /// Walk the matches, relative to `base_dir` for a relative pattern, calling `found`
    /// with each path (as bytes: a file name need not be UTF-8) in order. `found`
    /// returns false to stop the walk early.
    pub fn walk(
        &self,
        base_dir: &Path,
        found: &mut dyn FnMut(Vec<u8>) -> bool,
    ) -> Result<(), String> {
        let (start, shown) = if self.absolute {
            (PathBuf::from("/"), b"/".to_vec())
        } else {
            (base_dir.to_path_buf(), Vec::new())
        };
        let mut states = vec![0];
        self.close(&mut states);
        let mut w = Walker {
            glob: self,
            found,
            stopped: false,
        };
        w.dir(&start, &shown, &states)
            .map_err(|e| format!("foreach glob `{}`: {e}", self.pattern))
    }

    /// Add the positions reachable by letting a `**` match zero directories.
    fn close(&self, states: &mut Vec<usize>) {
        let mut i = 0;
        while i < states.len() {
            let p = states[i];
            if self.comps.get(p) == Some(&Comp::AnyDirs) && !states.contains(&(p + 1)) {
                states.push(p + 1);
            }
            i += 1;
        }
        states.sort_unstable();
        states.dedup();
    }
}

struct Walker<'a> {
    glob: &'a Glob,
    found: &'a mut dyn FnMut(Vec<u8>) -> bool,
    stopped: bool,
}

impl Walker<'_> {
    fn emit(&mut self, path: &[u8]) {
        if !self.stopped && !(self.found)(path.to_vec()) {
            self.stopped = true;
        }
    }

    /// Walk directory `fs_dir` (shown as `shown`) with the pattern positions `states`
    /// (closed under `**`) to match against its entries.
    fn dir(&mut self, fs_dir: &Path, shown: &[u8], states: &[usize]) -> Result<(), String> {
        let end = self.glob.comps.len();
        // A trailing `**` matches this directory itself.
        if states.contains(&end) && !shown.is_empty() {
            self.emit(shown);
        }
        let active: Vec<usize> = states.iter().copied().filter(|&p| p < end).collect();
        if active.is_empty() || self.stopped {
            return Ok(());
        }
        // Only literal names to look for: one stat each, no listing.
        if active
            .iter()
            .all(|&p| matches!(self.glob.comps[p], Comp::Literal(_)))
        {
            let mut names: Vec<&str> = active
                .iter()
                .filter_map(|&p| match &self.glob.comps[p] {
                    Comp::Literal(n) => Some(n.as_str()),
                    _ => None,
                })
                .collect();
            names.sort_unstable();
            names.dedup();
            for name in names {
                let path = fs_dir.join(name);
                let Ok(meta) = std::fs::symlink_metadata(&path) else {
                    continue;
                };
                let dir = meta.is_dir() || (meta.file_type().is_symlink() && path.is_dir());
                let entry = Entry {
                    name: name.into(),
                    dir,
                    link: meta.file_type().is_symlink(),
                };
                self.entry(fs_dir, shown, &active, &entry)?;
                if self.stopped {
                    break;
                }
            }
            return Ok(());
        }
        let entries = match list(fs_dir) {
            Ok(e) => e,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                // A directory that does not exist (or is not one) simply matches nothing.
                return Ok(());
            }
            Err(e) => return Err(format!("cannot list {}: {e}", fs_dir.display())),
        };
        for entry in &entries {
            self.entry(fs_dir, shown, &active, entry)?;
            if self.stopped {
                break;
            }
        }
        Ok(())
    }

    /// Match one entry of `fs_dir` against the positions `active`: emit it when the
    /// pattern ends there, descend when it is a directory some position goes on in.
    fn entry(
        &mut self,
        fs_dir: &Path,
        shown: &[u8],
        active: &[usize],
        e: &Entry,
    ) -> Result<(), String> {
        let glob = self.glob;
        let end = glob.comps.len();
        let name = e.name.as_bytes();
        let hidden = name.first() == Some(&b'.');
        let text = String::from_utf8_lossy(name);
        let mut next: Vec<usize> = Vec::new();
        let mut matched_end = false;
        for &p in active {
            match &glob.comps[p] {
                Comp::AnyDirs => {
                    if e.dir && !e.link && !hidden {
                        next.push(p);
                    }
                }
                Comp::Literal(n) => {
                    if n.as_bytes() == name {
                        if p + 1 == end {
                            matched_end = true;
                        } else if e.dir {
                            next.push(p + 1);
                        }
                    }
                }
                Comp::Wild { tokens, dot } => {
                    if hidden && !dot {
                        continue;
                    }
                    let chars: Vec<char> = text.chars().collect();
                    if matches_tokens(tokens, &chars) {
                        if p + 1 == end {
                            matched_end = true;
                        } else if e.dir {
                            next.push(p + 1);
                        }
                    }
                }
            }
        }
        if !matched_end && next.is_empty() {
            return Ok(());
        }
        let mut path = shown.to_vec();
        if !path.is_empty() && path.last() != Some(&b'/') {
            path.push(b'/');
        }
        path.extend_from_slice(name);
        if matched_end {
            self.emit(&path);
        }
        if !next.is_empty() && !self.stopped {
            glob.close(&mut next);
            self.dir(&fs_dir.join(&e.name), &path, &next)?;
        }
        Ok(())
    }
}

/// The entries of a directory, sorted by name.
fn list(dir: &Path) -> std::io::Result<Vec<Entry>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let ft = entry.file_type()?;
        let link = ft.is_symlink();
        let dir = ft.is_dir() || (link && entry.path().is_dir());
        out.push(Entry {
            name: entry.file_name(),
            dir,
            link,
        });
    }
    out.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
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

/// Every match of `pattern`.
#[cfg(test)]
pub fn glob(pattern: &str, base_dir: &Path) -> Result<Vec<String>, String> {
    let g = Glob::new(pattern)?;
    let mut out = Vec::new();
    g.walk(base_dir, &mut |p| {
        out.push(String::from_utf8_lossy(&p).into_owned());
        true
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(parse_component("[abc").is_err());
        assert!(parse_component("[z-a]").is_err());
        assert!(parse_component("x\\").is_err());
    }

    fn tree(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for f in files {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "").unwrap();
        }
        dir
    }

    #[test]
    fn glob_walks_directories_in_order() {
        let dir = tree(&[
            "data/a.log",
            "data/b.log",
            "data/c.txt",
            "data/.hidden.log",
            "data/sub/d.log",
            "data/sub/deep/e.log",
            "data/z.log",
            "other/f.log",
        ]);
        let p = dir.path();
        assert_eq!(
            glob("data/*.log", p).unwrap(),
            ["data/a.log", "data/b.log", "data/z.log"]
        );
        assert_eq!(glob("data/.*.log", p).unwrap(), ["data/.hidden.log"]);
        assert_eq!(
            glob("*/*.log", p).unwrap(),
            ["data/a.log", "data/b.log", "data/z.log", "other/f.log"]
        );
        // Depth first, each directory in name order: `sub` sorts before `z.log`.
        assert_eq!(
            glob("data/**/*.log", p).unwrap(),
            [
                "data/a.log",
                "data/b.log",
                "data/sub/d.log",
                "data/sub/deep/e.log",
                "data/z.log"
            ]
        );
        assert_eq!(glob("data/c.txt", p).unwrap(), ["data/c.txt"]);
        assert!(glob("nothing/*.log", p).unwrap().is_empty());
        assert!(glob("data/*.nope", p).unwrap().is_empty());
        assert!(Glob::new("data/a**.log").is_err());
        assert!(Glob::new("").is_err());
        let abs = format!("{}/data/*.txt", p.display());
        assert_eq!(
            glob(&abs, Path::new("/nonexistent")).unwrap(),
            [format!("{}/data/c.txt", p.display())]
        );
    }

    #[test]
    fn two_double_stars_match_each_path_once() {
        let dir = tree(&["a/b/c/x.log", "a/x.log"]);
        assert_eq!(
            glob("**/**/x.log", dir.path()).unwrap(),
            ["a/b/c/x.log", "a/x.log"]
        );
        assert_eq!(
            glob("a/**", dir.path()).unwrap(),
            ["a", "a/b", "a/b/c"],
            "a trailing ** matches directories"
        );
    }

    #[test]
    fn the_walk_stops_when_asked_and_keeps_non_utf8_names() {
        let dir = tree(&["d/1", "d/2", "d/3"]);
        let name = std::ffi::OsStr::from_bytes(b"d/\xff");
        std::fs::write(dir.path().join(name), "").unwrap();
        let g = Glob::new("d/*").unwrap();
        let mut seen = Vec::new();
        g.walk(dir.path(), &mut |p| {
            seen.push(p);
            seen.len() < 2
        })
        .unwrap();
        assert_eq!(seen, [b"d/1".to_vec(), b"d/2".to_vec()]);
        let all = glob("d/*", dir.path()).unwrap();
        assert_eq!(all.len(), 4);
        assert_eq!(all[3], "d/\u{fffd}");
    }
}
