//! Opening an instance's files off the supervisor loop.
//!
//! `{file: path}` for stdin, stdout or stderr may name a FIFO, whose open waits for
//! the other end, or sit on a filesystem that hangs: the supervisor must never wait on
//! either. So files are opened by a short-lived thread per start ([`start`]), which
//! hands the result back (the supervisor sends it to its loop as a message); the instance is `Starting` meanwhile. An
//! open still waiting at shutdown is released ([`cancel_opens`]).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::event::InstanceId;

/// Files an instance's start needs opened (paths already rendered and resolved).
#[derive(Debug, Default, Clone)]
pub struct FileOpens {
    pub stdin: Option<PathBuf>,
    /// (path, append)
    pub stdout: Option<(PathBuf, bool)>,
    pub stderr: Option<(PathBuf, bool)>,
}

impl FileOpens {
    pub fn is_empty(&self) -> bool {
        self.stdin.is_none() && self.stdout.is_none() && self.stderr.is_none()
    }
}

/// The files, opened.
#[derive(Debug, Default)]
pub struct OpenedFiles {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

/// Open every file of `opens` (blocking: run it off the loop).
pub fn open_files(opens: &FileOpens) -> io::Result<OpenedFiles> {
    let mut out = OpenedFiles::default();
    if let Some(path) = &opens.stdin {
        let f = File::open(path).map_err(|e| with_path(e, path))?;
        out.stdin = Some(f.into());
    }
    let open_out = |(path, append): &(PathBuf, bool)| -> io::Result<OwnedFd> {
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .append(*append)
            .truncate(!*append)
            .open(path)
            .map_err(|e| with_path(e, path))?;
        Ok(f.into())
    };
    out.stdout = opens.stdout.as_ref().map(open_out).transpose()?;
    out.stderr = opens.stderr.as_ref().map(open_out).transpose()?;
    Ok(out)
}

/// Release opens still waiting for the other end of a FIFO: open that other end
/// without blocking (and close it at once), so the opener thread returns. Its result
/// is then ignored. A file on a filesystem that hangs cannot be released; its thread
/// is left behind (it holds nothing of the pipeline).
pub fn cancel_opens(opens: &FileOpens) {
    let is_fifo = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_fifo());
    if let Some(p) = &opens.stdin
        && is_fifo(p)
    {
        // A reader waits in open(): a writer that comes and goes releases it.
        let _ = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(p);
    }
    for (p, _) in [&opens.stdout, &opens.stderr].into_iter().flatten() {
        if is_fifo(p) {
            let _ = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(p);
        }
    }
}

fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Open `opens` on a thread of its own and hand the result to `done` there. Returns
/// false if no thread could be started (then `done` is never called).
pub fn start(
    id: InstanceId,
    opens: FileOpens,
    done: impl FnOnce(io::Result<OpenedFiles>) + Send + 'static,
) -> bool {
    std::thread::Builder::new()
        .name(format!("prun-open-{id}"))
        .spawn(move || done(open_files(&opens)))
        .is_ok()
}
