//! Spawning: turn a [`SpawnSpec`] (a command as plain data) into a running process.
//!
//! Kept apart from the supervisor so that deciding *what* to run (rendering templates,
//! choosing descriptors) is testable data, and the one unsafe step (the code between
//! fork and exec) is small and reviewed in one place.
//!
//! Every child gets its own process group (so prun can signal the whole group, and a
//! Ctrl-C on the terminal reaches prun only). Every descriptor prun creates is
//! O_CLOEXEC; the ends meant for the child are moved into the spec and dropped by the
//! parent as soon as `spawn` returns. Exec failures come back as `io::Error` through
//! std's CLOEXEC error pipe, which is how `could not start` gets the OS error.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::guardian::format_registration;

/// Where one of the child's standard descriptors comes from.
#[derive(Debug)]
pub enum ChildFd {
    Null,
    Inherit,
    Fd(OwnedFd),
}

impl ChildFd {
    fn into_stdio(self) -> Stdio {
        match self {
            ChildFd::Null => Stdio::null(),
            ChildFd::Inherit => Stdio::inherit(),
            ChildFd::Fd(fd) => Stdio::from(fd),
        }
    }
}

/// A command ready to run: pure data plus the descriptors it will own.
#[derive(Debug)]
pub struct SpawnSpec {
    pub program: OsString,
    pub args: Vec<OsString>,
    pub cwd: Option<PathBuf>,
    /// Added to (or overriding) prun's own environment.
    pub env: Vec<(OsString, OsString)>,
    pub stdin: ChildFd,
    pub stdout: ChildFd,
    pub stderr: ChildFd,
    /// Extra descriptors: (number in the child, ≥ 3; descriptor in prun).
    pub extra_fds: Vec<(i32, OwnedFd)>,
}

impl SpawnSpec {
    pub fn new(argv: Vec<OsString>) -> SpawnSpec {
        let mut argv = argv.into_iter();
        SpawnSpec {
            program: argv.next().unwrap_or_default(),
            args: argv.collect(),
            cwd: None,
            env: Vec::new(),
            stdin: ChildFd::Null,
            stdout: ChildFd::Null,
            stderr: ChildFd::Null,
            extra_fds: Vec::new(),
        }
    }
}

/// Start the process in a new process group; returns its pid (= its pgid).
///
/// When `guardian` is given, the child registers its group there before exec, so a
/// SIGKILLed prun never leaves it behind (see `guardian`).
pub fn spawn(spec: SpawnSpec, guardian: Option<RawFd>) -> io::Result<i32> {
    if spec.program.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty command"));
    }
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args);
    if let Some(cwd) = &spec.cwd {
        cmd.current_dir(cwd);
    }
    cmd.envs(spec.env.iter().map(|(k, v)| (k, v)));
    cmd.stdin(spec.stdin.into_stdio());
    cmd.stdout(spec.stdout.into_stdio());
    cmd.stderr(spec.stderr.into_stdio());
    cmd.process_group(0);

    // Everything the child needs is computed here, before fork: no allocation after.
    let targets: Vec<(i32, RawFd)> = spec
        .extra_fds
        .iter()
        .map(|(t, fd)| (*t, fd.as_raw_fd()))
        .collect();
    let high = targets.iter().map(|(t, _)| *t).max().unwrap_or(2) + 1;
    let mut staged: Vec<RawFd> = vec![-1; targets.len()];
    // SAFETY: the closure runs between fork and exec and only calls async-signal-safe
    // functions (getpid, write, fcntl, dup2) on memory allocated before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(gfd) = guardian {
                let mut buf = [0u8; 16];
                let n = format_registration(libc::getpid(), &mut buf);
                if libc::write(gfd, buf.as_ptr().cast(), n) != n as isize {
                    return Err(io::Error::last_os_error());
                }
            }
            // Move every source above every target first, so a source numbered like
            // another binding's target is never overwritten before it is used.
            for (i, (_, src)) in targets.iter().enumerate() {
                let fd = libc::fcntl(*src, libc::F_DUPFD_CLOEXEC, high);
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                staged[i] = fd;
            }
            for (i, (target, _)) in targets.iter().enumerate() {
                // dup2 clears O_CLOEXEC on the target: only these survive exec.
                if libc::dup2(staged[i], *target) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    // `child` holds no descriptors (all were given as Stdio::from/null/inherit);
    // the supervisor reaps by pid, so dropping the handle is right.
    let pid = child.id() as i32;
    drop(spec.extra_fds);
    Ok(pid)
}

/// A pipe with both ends O_CLOEXEC: (read, write).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)
}

/// Exit code a shell would give for this exec error: 127 not found, 126 otherwise.
pub fn exec_error_code(err: &io::Error) -> i32 {
    if err.kind() == io::ErrorKind::NotFound {
        127
    } else {
        126
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn wait(pid: i32) -> i32 {
        let mut status = 0;
        // SAFETY: plain waitpid on our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        status
    }

    #[test]
    fn extra_fds_and_own_group() {
        let _lock = crate::runtime::exclusive();
        let (r, w) = pipe().unwrap();
        let mut spec = SpawnSpec::new(vec![
            "/bin/sh".into(),
            "-c".into(),
            "echo $$ $(cut -d' ' -f5 /proc/$$/stat) >&4".into(),
        ]);
        spec.extra_fds.push((4, w));
        let pid = spawn(spec, None).unwrap();
        let mut out = String::new();
        std::fs::File::from(r).read_to_string(&mut out).unwrap();
        wait(pid);
        let parts: Vec<&str> = out.split_whitespace().collect();
        assert_eq!(parts.len(), 2, "{out:?}");
        assert_eq!(parts[0], parts[1], "child must lead its own group");
        assert_eq!(parts[0], pid.to_string());
    }

    #[test]
    fn exec_failure_is_an_error() {
        let _lock = crate::runtime::exclusive();
        let spec = SpawnSpec::new(vec!["/nonexistent/prun-test-cmd".into()]);
        let err = spawn(spec, None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert_eq!(exec_error_code(&err), 127);
    }
}
