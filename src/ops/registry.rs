//! The per-user registry of running pipelines: a private directory (0700, owned by
//! this user, checked with [`crate::rundir::check`]) under `$XDG_RUNTIME_DIR/prun`
//! when that is this user's, else `/tmp/prun-UID`. Each run puts there its socket
//! `PID.sock` and `PID.json` (name, pid, file, start time). Another user never finds
//! them: their registry is another directory, and this one lets nobody else in.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What a run says about itself in the registry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub name: String,
    pub pid: u32,
    pub file: String,
    /// Start time, in milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
}

/// This user's registry directory (created if needed, always checked).
pub fn dir() -> io::Result<PathBuf> {
    let uid = nix::unistd::geteuid().as_raw();
    let xdg = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.is_dir() && m.uid() == uid));
    let dir = match xdg {
        Some(base) => base.join("prun"),
        None => std::env::temp_dir().join(format!("prun-{uid}")),
    };
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    crate::rundir::check(&dir)?;
    Ok(dir)
}

pub fn socket_path(dir: &Path, pid: u32) -> PathBuf {
    dir.join(format!("{pid}.sock"))
}

fn entry_path(dir: &Path, pid: u32) -> PathBuf {
    dir.join(format!("{pid}.json"))
}

/// Write this run's entry (after its socket is bound).
pub fn register(dir: &Path, entry: &Entry) -> io::Result<()> {
    let text = serde_json::to_string(entry).map_err(io::Error::other)?;
    let tmp = dir.join(format!(".{}.json.tmp", entry.pid));
    std::fs::write(&tmp, text)?;
    std::fs::rename(tmp, entry_path(dir, entry.pid))
}

pub fn unregister(dir: &Path, pid: u32) {
    let _ = std::fs::remove_file(entry_path(dir, pid));
    let _ = std::fs::remove_file(socket_path(dir, pid));
}

/// The runs registered, oldest first; entries of processes that are gone (a prun
/// that was SIGKILLed) are removed on the way.
pub fn list(dir: &Path) -> Vec<Entry> {
    let mut out = Vec::new();
    let Ok(read) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in read.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_suffix(".json")
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok();
        if !alive {
            unregister(dir, pid);
            continue;
        }
        if let Ok(text) = std::fs::read_to_string(e.path())
            && let Ok(entry) = serde_json::from_str::<Entry>(&text)
        {
            out.push(entry);
        }
    }
    out.sort_by_key(|e| (e.started_unix_ms, e.pid));
    out
}
