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

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::signal::{SigSet, SigmaskHow, pthread_sigmask};

use super::guardian::format_registration;

/// Where one of the child's standard descriptors comes from.
#[derive(Debug)]
pub enum ChildFd {
    Null,
    Inherit,
    Fd(OwnedFd),
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
    /// Signal the child gets when the thread that spawned it ends (`PR_SET_PDEATHSIG`):
    /// for engine clients (`ssh`, `srun`), so they die with prun even when nothing else
    /// is left to kill them. Spawn these only from a thread that lives as long as prun.
    pub pdeathsig: Option<i32>,
    /// A terminal (prun's controlling one) whose foreground process group the child's
    /// new group becomes before exec, so it can read it (SPEC 5.3).
    pub foreground: Option<RawFd>,
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
            pdeathsig: None,
            foreground: None,
        }
    }
}

/// Start the process in a new process group; returns its pid (= its pgid).
///
/// When `guardian` is given, the child registers its group there before exec, so a
/// SIGKILLed prun never leaves it behind (see `guardian`).
///
/// How: `clone(CLONE_VM | CLONE_VFORK)`, as `posix_spawn` does, rather than `fork`.
/// prun is multi-threaded and a fork copies its page tables, takes copy-on-write
/// faults on both sides and throws the copy away at exec: measured, that was most of
/// prun's CPU in a foreach of thousands of short items. With `CLONE_VM` the child
/// borrows prun's memory until it execs (prun's calling thread is suspended
/// meanwhile), so everything it needs — argv, envp, candidate paths, descriptors,
/// the guardian registration — is prepared here, and the child only makes system
/// calls on that memory (see [`child_main`]).
pub fn spawn(spec: SpawnSpec, guardian: Option<RawFd>) -> io::Result<i32> {
    if spec.program.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty command"));
    }
    let prepared = Prepared::new(&spec, guardian)?;
    // The child's stack: it runs a handful of syscalls, no recursion.
    let mut stack = vec![0u8; 64 * 1024];
    // The stack grows down from its end; align it as the ABI requires.
    let top = ((stack.as_mut_ptr_range().end as usize) & !15) as *mut libc::c_void;

    // Block every signal so no handler of prun runs in the child (which shares
    // prun's memory) before it has reset the dispositions; restored right after.
    let mut old = SigSet::empty();
    pthread_sigmask(
        SigmaskHow::SIG_SETMASK,
        Some(&SigSet::all()),
        Some(&mut old),
    )?;
    // SAFETY: `child_main` only makes async-signal-safe system calls on `prepared`,
    // which outlives the child's use of it: with CLONE_VFORK this call returns only
    // once the child has exec'd or exited.
    let pid = unsafe {
        libc::clone(
            child_main,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&prepared as *const Prepared).cast_mut().cast(),
        )
    };
    let clone_error = io::Error::last_os_error();
    let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    drop(stack);
    if pid < 0 {
        return Err(clone_error);
    }
    let failed = prepared.error.load(Ordering::Acquire);
    if failed != 0 {
        // The child has exited already (vfork semantics): reap it here, so the
        // supervisor's waitpid(-1) never sees a pid it does not know.
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
        return Err(io::Error::from_raw_os_error(failed));
    }
    drop(spec.extra_fds);
    Ok(pid)
}

/// Everything the child needs, built before `clone` (no allocation after).
struct Prepared {
    /// Full paths to try in order (PATH search done here, as `execvp` would).
    candidates: Vec<CString>,
    argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    envp: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
    cwd: Option<CString>,
    /// (target descriptor in the child, source descriptor in prun).
    fds: Vec<(i32, RawFd)>,
    /// Scratch for the staged copies of `fds`.
    staged: std::cell::UnsafeCell<Vec<RawFd>>,
    high: i32,
    guardian: Option<RawFd>,
    foreground: Option<RawFd>,
    /// (signal, prun's pid): PR_SET_PDEATHSIG, then exit if prun is already gone.
    pdeathsig: Option<(i32, i32)>,
    /// Keeps `/dev/null` open for `ChildFd::Null` until the child has exec'd (the
    /// other sources belong to the `SpawnSpec`, alive until `spawn` returns).
    _null: Option<OwnedFd>,
    /// errno of the step that failed in the child (0: it exec'd).
    error: AtomicI32,
}

impl Prepared {
    fn new(spec: &SpawnSpec, guardian: Option<RawFd>) -> io::Result<Prepared> {
        let cstr = |s: &OsStr| {
            CString::new(s.as_bytes()).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{}: contains a NUL byte", s.to_string_lossy()),
                )
            })
        };
        // The child's environment: prun's own, then the spec's (later wins).
        let mut env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
        for (k, v) in &spec.env {
            match env.iter_mut().find(|(ek, _)| ek == k) {
                Some(e) => e.1 = v.clone(),
                None => env.push((k.clone(), v.clone())),
            }
        }
        let mut envp = Vec::with_capacity(env.len());
        for (k, v) in &env {
            let mut kv = k.clone();
            kv.push("=");
            kv.push(v);
            envp.push(cstr(&kv)?);
        }
        let mut argv = vec![cstr(&spec.program)?];
        for a in &spec.args {
            argv.push(cstr(a)?);
        }
        let path = env
            .iter()
            .rev()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone());
        let candidates = candidates(&spec.program, path.as_deref())
            .iter()
            .map(|c| cstr(c.as_os_str()))
            .collect::<io::Result<Vec<_>>>()?;
        let cwd = spec.cwd.as_ref().map(|c| cstr(c.as_os_str())).transpose()?;

        let mut null: Option<OwnedFd> = None;
        let mut fds: Vec<(i32, RawFd)> = Vec::new();
        for (target, child_fd) in [(0, &spec.stdin), (1, &spec.stdout), (2, &spec.stderr)] {
            match child_fd {
                ChildFd::Inherit => {}
                ChildFd::Null => {
                    if null.is_none() {
                        null = Some(
                            std::fs::OpenOptions::new()
                                .read(true)
                                .write(true)
                                .open("/dev/null")?
                                .into(),
                        );
                    }
                    if let Some(n) = &null {
                        fds.push((target, n.as_raw_fd()));
                    }
                }
                ChildFd::Fd(fd) => fds.push((target, fd.as_raw_fd())),
            }
        }
        for (t, fd) in &spec.extra_fds {
            fds.push((*t, fd.as_raw_fd()));
        }
        let high = fds.iter().map(|(t, _)| *t).max().unwrap_or(2).max(2) + 1;
        let mut p = Prepared {
            argv_ptrs: Vec::new(),
            envp_ptrs: Vec::new(),
            candidates,
            argv,
            envp,
            cwd,
            staged: std::cell::UnsafeCell::new(vec![-1; fds.len()]),
            fds,
            high,
            guardian,
            pdeathsig: spec.pdeathsig.map(|sig| (sig, std::process::id() as i32)),
            foreground: spec.foreground,
            _null: null,
            error: AtomicI32::new(0),
        };
        p.argv_ptrs = p.argv.iter().map(|c| c.as_ptr()).collect();
        p.argv_ptrs.push(std::ptr::null());
        p.envp_ptrs = p.envp.iter().map(|c| c.as_ptr()).collect();
        p.envp_ptrs.push(std::ptr::null());
        Ok(p)
    }
}

/// Where `execvp` would look for `program`: itself when it contains a `/`, else
/// each directory of `path` (an empty entry is the current directory).
fn candidates(program: &OsStr, path: Option<&OsStr>) -> Vec<PathBuf> {
    if program.as_bytes().contains(&b'/') {
        return vec![PathBuf::from(program)];
    }
    let path = path.unwrap_or(OsStr::new("/usr/local/bin:/usr/bin:/bin"));
    path.as_bytes()
        .split(|&b| b == b':')
        .map(|dir| {
            if dir.is_empty() {
                PathBuf::from(program)
            } else {
                Path::new(OsStr::from_bytes(dir)).join(program)
            }
        })
        .collect()
}

/// The child between `clone` and `exec`. It shares prun's memory and must not
/// allocate, lock or unwind: only system calls on the prepared data. Every failure
/// stores its errno in `Prepared::error` and exits 127.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `Prepared` the parent keeps alive (it is suspended).
    let p = unsafe { &*(arg as *const Prepared) };
    let fail = |p: &Prepared| -> libc::c_int {
        // SAFETY: reading errno and exiting without running any destructor.
        unsafe {
            let e = *libc::__errno_location();
            p.error
                .store(if e == 0 { libc::EINVAL } else { e }, Ordering::Release);
            libc::_exit(127)
        }
    };
    // SAFETY: async-signal-safe system calls on memory prepared by the parent.
    unsafe {
        // Handlers of prun must not run here, and prun ignores SIGPIPE (the router)
        // where a stage expects the default: every caught or ignored-by-prun signal
        // goes back to its default; other ignored signals stay ignored (nohup).
        for sig in 1..=libc::SIGRTMAX() {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) != 0 {
                continue;
            }
            if old.sa_sigaction != libc::SIG_DFL
                && (old.sa_sigaction != libc::SIG_IGN || sig == libc::SIGPIPE)
            {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
        if libc::setpgid(0, 0) != 0 {
            return fail(p);
        }
        // Every signal is still blocked here, so taking the terminal from the
        // background does not stop the child with SIGTTOU.
        if let Some(tty) = p.foreground
            && libc::tcsetpgrp(tty, libc::getpid()) != 0
        {
            return fail(p);
        }
        if let Some((sig, prun)) = p.pdeathsig {
            if libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) != 0 {
                return fail(p);
            }
            // prun died before the prctl took effect: nobody would send the signal
            if libc::getppid() != prun {
                libc::_exit(127);
            }
        }
        if let Some(gfd) = p.guardian {
            let mut buf = [0u8; 16];
            let n = format_registration(libc::getpid(), &mut buf);
            if libc::write(gfd, buf.as_ptr().cast(), n) != n as isize {
                return fail(p);
            }
        }
        // Move every source above every target first, so a source numbered like
        // another binding's target is never overwritten before it is used.
        let staged = &mut *p.staged.get();
        for (i, (_, src)) in p.fds.iter().enumerate() {
            let fd = libc::fcntl(*src, libc::F_DUPFD_CLOEXEC, p.high);
            if fd < 0 {
                return fail(p);
            }
            staged[i] = fd;
        }
        for (i, (target, _)) in p.fds.iter().enumerate() {
            // dup2 clears O_CLOEXEC on the target: only these survive exec.
            if libc::dup2(staged[i], *target) < 0 {
                return fail(p);
            }
        }
        if let Some(cwd) = &p.cwd
            && libc::chdir(cwd.as_ptr()) != 0
        {
            return fail(p);
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        // As execvp: try each candidate; "not found" errors move on, and a
        // permission error found on the way is the one reported.
        let mut saw_eacces = false;
        for c in &p.candidates {
            libc::execve(c.as_ptr(), p.argv_ptrs.as_ptr(), p.envp_ptrs.as_ptr());
            match *libc::__errno_location() {
                libc::EACCES => saw_eacces = true,
                libc::ENOENT | libc::ENOTDIR | libc::ELOOP | libc::ENAMETOOLONG => {}
                _ => return fail(p),
            }
        }
        *libc::__errno_location() = if saw_eacces {
            libc::EACCES
        } else {
            libc::ENOENT
        };
        fail(p)
    }
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
    fn pdeathsig_fires_when_the_spawning_thread_ends() {
        let _lock = crate::runtime::exclusive();
        let pid = std::thread::spawn(|| {
            let mut spec = SpawnSpec::new(vec!["sleep".into(), "100".into()]);
            spec.pdeathsig = Some(libc::SIGKILL);
            spawn(spec, None).unwrap()
        })
        .join()
        .unwrap();
        let status = wait(pid);
        assert!(libc::WIFSIGNALED(status), "{status:#x}");
        assert_eq!(libc::WTERMSIG(status), libc::SIGKILL);
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

    fn output_of(mut spec: SpawnSpec) -> String {
        let (r, w) = pipe().unwrap();
        spec.stdout = ChildFd::Fd(w);
        let pid = spawn(spec, None).unwrap();
        let mut out = String::new();
        std::fs::File::from(r).read_to_string(&mut out).unwrap();
        wait(pid);
        out
    }

    #[test]
    fn the_child_path_is_searched_and_sigpipe_is_default() {
        let _lock = crate::runtime::exclusive();
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("prun-hello");
        std::fs::write(&script, "#!/bin/sh\ngrep ^SigIgn /proc/self/status\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        // prun ignores SIGPIPE (the router); its stages must not inherit that.
        // SAFETY: setting a signal disposition in a test.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        let mut spec = SpawnSpec::new(vec!["prun-hello".into()]);
        let path = format!("/nonexistent:{}:/usr/bin:/bin", dir.path().display());
        spec.env.push(("PATH".into(), path.into()));
        let out = output_of(spec);
        let mask = out
            .trim()
            .strip_prefix("SigIgn:")
            .map(|m| u64::from_str_radix(m.trim(), 16).unwrap())
            .unwrap_or_else(|| panic!("{out:?}"));
        assert_eq!(mask & (1 << (libc::SIGPIPE - 1)), 0, "{out}");
    }

    #[test]
    fn env_cwd_and_arguments_reach_the_child() {
        let _lock = crate::runtime::exclusive();
        let dir = tempfile::tempdir().unwrap();
        let mut spec = SpawnSpec::new(vec![
            "/bin/sh".into(),
            "-c".into(),
            "printf '%s|%s|%s' \"$1\" \"$PRUN_TEST_VAR\" \"$(pwd -P)\"".into(),
            "sh".into(),
            "one arg".into(),
        ]);
        spec.env.push(("PRUN_TEST_VAR".into(), "v=1".into()));
        spec.cwd = Some(dir.path().to_path_buf());
        let out = output_of(spec);
        let real = dir.path().canonicalize().unwrap();
        assert_eq!(out, format!("one arg|v=1|{}", real.display()));
    }

    #[test]
    fn permission_denied_and_bad_cwd_are_errors() {
        let _lock = crate::runtime::exclusive();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-executable");
        std::fs::write(&file, "echo hi\n").unwrap();
        let err = spawn(SpawnSpec::new(vec![file.into()]), None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(exec_error_code(&err), 126);
        let mut spec = SpawnSpec::new(vec!["/bin/true".into()]);
        spec.cwd = Some(dir.path().join("missing"));
        let err = spawn(spec, None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
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
