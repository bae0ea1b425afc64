//! Which pipeline file a command reads: a path as given, `-` for standard input, or,
//! with no FILE, `prun.yaml` or `prun.yml` in the current directory or the nearest
//! parent that has one (as `just` finds its justfile). A file found in a parent
//! directory is run from that directory, as `just` does, so the relative paths in it
//! mean the same wherever prun is started; the paths given on the command line are
//! made absolute first.

use std::io::Read;
use std::path::{Path, PathBuf};

use clap_complete::engine::PathCompleter;

use crate::load::{LoadOptions, Loaded, load, load_source};

/// The names looked for, in order, in each directory.
pub const DEFAULT_NAMES: &[&str] = &["prun.yaml", "prun.yml"];

/// Completion of FILE arguments: YAML files (and directories to descend into).
pub fn yaml_completer() -> PathCompleter {
    PathCompleter::any()
        .filter(|p| {
            p.is_dir()
                || p.extension().is_some_and(|e| {
                    e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml")
                })
        })
        .stdio()
}

/// The default file: `prun.yaml`/`prun.yml` in `start` or its nearest ancestor.
pub fn discover(start: &Path) -> Option<PathBuf> {
    start.ancestors().find_map(|dir| {
        DEFAULT_NAMES
            .iter()
            .map(|n| dir.join(n))
            .find(|p| p.is_file())
    })
}

/// What a command was asked to read.
pub enum Target {
    /// `-`
    Stdin,
    /// A path given on the command line.
    Given(PathBuf),
    /// The default file, found in this directory or a parent (absolute path).
    Found(PathBuf),
}

/// Resolve FILE (or its absence) into a target; `Err` is a usage message.
pub fn target(file: Option<&Path>) -> Result<Target, String> {
    match file {
        Some(p) if p.as_os_str() == "-" => Ok(Target::Stdin),
        Some(p) => Ok(Target::Given(p.to_path_buf())),
        None => {
            let cwd = std::env::current_dir()
                .map_err(|e| format!("cannot read the current directory: {e}"))?;
            discover(&cwd).map(Target::Found).ok_or_else(|| {
                format!(
                    "no pipeline file given, and no prun.yaml or prun.yml in {} or any parent directory\n  help: pass a FILE (`prun pipelines/baozi.yaml`), `-` for standard input, or create one with `prun init`",
                    cwd.display()
                )
            })
        }
    }
}

/// A path given on the command line, made absolute (before moving to another
/// directory).
pub fn absolute(p: Option<PathBuf>) -> Option<PathBuf> {
    p.map(|p| {
        if p.is_absolute() {
            p
        } else {
            std::env::current_dir().map(|d| d.join(&p)).unwrap_or(p)
        }
    })
}

/// Load a target. A found default file is loaded from its own directory, which
/// becomes the current directory when it is not already.
pub fn load_target(target: &Target, options: &LoadOptions) -> Result<Loaded, String> {
    match target {
        Target::Stdin => {
            let mut text = Vec::new();
            std::io::stdin()
                .read_to_end(&mut text)
                .map_err(|e| format!("cannot read standard input: {e}"))?;
            let text = String::from_utf8(text).map_err(|e| {
                format!(
                    "standard input is not UTF-8 text (invalid byte at offset {})",
                    e.utf8_error().valid_up_to()
                )
            })?;
            // Relative paths (includes, env files) start from the current directory.
            Ok(load_source("<stdin>", Path::new("stdin"), text, options))
        }
        Target::Given(p) => Ok(load(p, options)),
        Target::Found(p) => {
            let dir = p.parent().unwrap_or(Path::new("/"));
            let cwd = std::env::current_dir().ok();
            if cwd.as_deref() != Some(dir) {
                std::env::set_current_dir(dir)
                    .map_err(|e| format!("cannot enter {}: {e}", dir.display()))?;
            }
            let name = p
                .file_name()
                .map(PathBuf::from)
                .unwrap_or_else(|| p.clone());
            Ok(load(&name, options))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_walks_up_and_prefers_yaml() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b");
        std::fs::create_dir_all(&deep).unwrap();
        assert_eq!(discover(&deep), None);
        std::fs::write(dir.path().join("prun.yml"), "").unwrap();
        assert_eq!(discover(&deep), Some(dir.path().join("prun.yml")));
        std::fs::write(dir.path().join("prun.yaml"), "").unwrap();
        assert_eq!(discover(&deep), Some(dir.path().join("prun.yaml")));
        std::fs::write(dir.path().join("a/prun.yml"), "").unwrap();
        assert_eq!(discover(&deep), Some(dir.path().join("a/prun.yml")));
    }
}
