//! The guardian: kills every stage process group when prun dies, even by SIGKILL, and
//! removes the run directory prun left behind.
//!
//! Why a separate process and not PR_SET_PDEATHSIG on each stage: PDEATHSIG only
//! reaches the direct child, not the rest of its process group, and it fires when the
//! *thread* that forked exits. The guardian is forked once per run; it reads group ids
//! from a pipe whose only write ends live in prun (O_CLOEXEC, so exec'd stages never
//! hold one). When prun dies, the pipe reports EOF and the guardian SIGKILLs every
//! group (and process) it was told about, then removes the run directory with
//! `rm -rf` (exec'd: the guardian itself may only make async-signal-safe calls).
//!
//! The registration race is closed by construction: a stage registers *its own*
//! process group from inside the forked child, before `exec` (see `spawn`). Until it
//! execs, the child holds a copy of the write end, so the guardian cannot see EOF
//! before the registration is in the pipe.
//!
//! Protocol, one line each: `+PGID` (register a group), `-PGID` (the group is gone;
//! forget it so a recycled id is never killed), `*PID` / `/PID` (the same for one
//! process: a descendant that moved into prun's own group, which the guardian must not
//! kill as a group), `.` (prun ends normally and removes the run directory itself).
//! If the guardian dies, prun starts a new one and registers everything again.
//!
//! The child runs only async-signal-safe calls (read, kill, dup2, close_range, execve,
//! _exit) on memory prepared before the fork, because prun is multi-threaded.

use std::ffi::CString;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Most groups (and single processes) the guardian remembers at once.
const MAX_GROUPS: usize = 8192;

/// `rm -rf -- DIR`, prepared before the fork.
struct Remover {
    argv: [CString; 4],
}

pub struct Guardian {
    pid: i32,
    write: Option<std::fs::File>,
}

impl Guardian {
    /// Fork the guardian; `run_dir` is removed if prun dies without saying it ended.
    pub fn start(run_dir: Option<&Path>) -> io::Result<Guardian> {
        let remover = run_dir.and_then(|d| {
            Some(Remover {
                argv: [
                    CString::new("rm").ok()?,
                    CString::new("-rf").ok()?,
                    CString::new("--").ok()?,
                    CString::new(d.as_os_str().as_bytes()).ok()?,
                ],
            })
        });
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let read_fd = read.as_raw_fd();
        // SAFETY: the child only calls async-signal-safe functions and never returns.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: in the forked child; see `guardian_main`.
            unsafe { guardian_main(read_fd, remover.as_ref()) }
        }
        drop(read);
        Ok(Guardian {
            pid,
            write: Some(std::fs::File::from(write)),
        })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Descriptor a forked stage writes its registration to (before exec).
    pub fn fd(&self) -> Option<RawFd> {
        self.write.as_ref().map(|f| f.as_raw_fd())
    }

    /// Register a group prun did not spawn itself (a descendant that left its
    /// instance's group with `setsid`).
    pub fn adopt(&mut self, pgid: i32) {
        self.send(&format!("+{pgid}\n"));
    }

    /// The group has no process left: forget it.
    pub fn forget(&mut self, pgid: i32) {
        self.send(&format!("-{pgid}\n"));
    }

    /// Register one process (a descendant in prun's own group).
    pub fn adopt_process(&mut self, pid: i32) {
        self.send(&format!("*{pid}\n"));
    }

    /// The process is gone: forget it.
    pub fn forget_process(&mut self, pid: i32) {
        self.send(&format!("/{pid}\n"));
    }

    fn send(&mut self, msg: &str) {
        if let Some(w) = self.write.as_mut() {
            // A dead guardian only costs the SIGKILL safety net; the run goes on.
            let _ = w.write_all(msg.as_bytes());
        }
    }

    /// Close the pipe: the guardian kills what is still registered and exits; prun
    /// removes the run directory itself. Returns its pid so the caller reaps it.
    pub fn finish(&mut self) -> i32 {
        self.send(".\n");
        self.write = None;
        self.pid
    }
}

/// Body of the guardian process.
///
/// # Safety
/// Must only be called in a freshly forked child; never returns.
unsafe fn guardian_main(read_fd: RawFd, remover: Option<&Remover>) -> ! {
    // SAFETY: only async-signal-safe system calls, on the stack and on `remover`
    // (prepared before the fork); the process never returns from here.
    unsafe {
        // Own group, so a Ctrl-C aimed at prun's foreground group does not reach it.
        libc::setpgid(0, 0);
        for sig in [
            libc::SIGINT,
            libc::SIGTERM,
            libc::SIGHUP,
            libc::SIGQUIT,
            libc::SIGPIPE,
            libc::SIGTSTP,
            libc::SIGTTIN,
            libc::SIGTTOU,
        ] {
            libc::signal(sig, libc::SIG_IGN);
        }
        let devnull = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if devnull >= 0 {
            for fd in 0..3 {
                libc::dup2(devnull, fd);
            }
        }
        let pipe = 3;
        if read_fd != pipe {
            libc::dup2(read_fd, pipe);
        }
        // Drop every other inherited descriptor (other pipes of prun must not be held
        // open by the guardian, or readers would miss their EOF).
        libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32);

        // Registered ids: a group (> 0) or a single process (stored negated).
        let mut ids = [0i32; MAX_GROUPS];
        let mut count = 0usize;
        let mut ended_normally = false;
        let mut buf = [0u8; 4096];
        let mut op: u8 = 0;
        let mut value: i64 = 0;
        loop {
            let n = libc::read(pipe, buf.as_mut_ptr().cast(), buf.len());
            if n == 0 {
                break;
            }
            if n < 0 {
                if *libc::__errno_location() == libc::EINTR {
                    continue;
                }
                break;
            }
            for &b in &buf[..n as usize] {
                match b {
                    b'+' | b'-' | b'*' | b'/' => {
                        op = b;
                        value = 0;
                    }
                    b'.' => ended_normally = true,
                    b'0'..=b'9' => {
                        value = value.saturating_mul(10).saturating_add((b - b'0') as i64)
                    }
                    b'\n' => {
                        let v = value as i32;
                        if v > 1 {
                            let id = if matches!(op, b'*' | b'/') { -v } else { v };
                            if matches!(op, b'+' | b'*') {
                                if count < MAX_GROUPS {
                                    ids[count] = id;
                                    count += 1;
                                }
                            } else if matches!(op, b'-' | b'/')
                                && let Some(i) = ids[..count].iter().position(|&g| g == id)
                            {
                                ids[i] = ids[count - 1];
                                count -= 1;
                            }
                        }
                        op = 0;
                        value = 0;
                    }
                    _ => {}
                }
            }
        }
        for &id in &ids[..count] {
            // A group g is stored as g: kill(-g) signals the group. A single process p
            // is stored as -p: kill(p) signals that process alone.
            libc::kill(-id, libc::SIGKILL);
        }
        if !ended_normally && let Some(r) = remover {
            let argv = [
                r.argv[0].as_ptr(),
                r.argv[1].as_ptr(),
                r.argv[2].as_ptr(),
                r.argv[3].as_ptr(),
                std::ptr::null(),
            ];
            let envp = [std::ptr::null()];
            for path in [c"/bin/rm", c"/usr/bin/rm"] {
                libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
            }
        }
        libc::_exit(0)
    }
}

/// Format `+PID\n` into `buf` without allocating (for use between fork and exec).
/// Returns the number of bytes written.
pub fn format_registration(pid: i32, buf: &mut [u8; 16]) -> usize {
    let mut digits = [0u8; 12];
    let mut n = 0;
    let mut v = pid.unsigned_abs();
    loop {
        digits[n] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    buf[0] = b'+';
    for i in 0..n {
        buf[1 + i] = digits[n - 1 - i];
    }
    buf[1 + n] = b'\n';
    n + 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_format() {
        let mut buf = [0u8; 16];
        let n = format_registration(40213, &mut buf);
        assert_eq!(&buf[..n], b"+40213\n");
        let n = format_registration(7, &mut buf);
        assert_eq!(&buf[..n], b"+7\n");
    }
}
