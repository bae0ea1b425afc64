//! Running the real `prun` binary on a pseudo-terminal and reading the bytes it writes
//! (shared by the terminal tests). The child gets the pty's slave as its controlling
//! terminal and as stdin, stdout and stderr; a thread collects everything written to
//! the master side.

#![allow(dead_code)]

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Pty {
    pub child: Child,
    out: Arc<Mutex<Vec<u8>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    master: Option<OwnedFd>,
}

impl Pty {
    /// Start `cmd` on a new pseudo-terminal of `rows` x `cols`.
    pub fn spawn(mut cmd: Command, rows: u16, cols: u16) -> Pty {
        let ws = nix::pty::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&ws), None).expect("openpty");
        let slave = pty.slave;
        cmd.stdin(Stdio::from(slave.try_clone().expect("dup")))
            .stdout(Stdio::from(slave.try_clone().expect("dup")))
            .stderr(Stdio::from(slave));
        // SAFETY: only async-signal-safe calls between fork and exec: a new session,
        // then the pty (now fd 0) as its controlling terminal.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn on the pty");
        drop(cmd);
        let out = Arc::new(Mutex::new(Vec::new()));
        let mut file = std::fs::File::from(pty.master.try_clone().expect("dup master"));
        let sink = out.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            loop {
                match file.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => sink.lock().unwrap().extend_from_slice(&buf[..n]),
                }
            }
        });
        Pty {
            child,
            out,
            reader: Some(reader),
            master: Some(pty.master),
        }
    }

    /// Everything written so far.
    pub fn output(&self) -> Vec<u8> {
        self.out.lock().unwrap().clone()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.output()).into_owned()
    }

    /// Type bytes into the terminal.
    pub fn write(&self, bytes: &[u8]) {
        if let Some(m) = &self.master {
            let _ = nix::unistd::write(m, bytes);
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Wait until `pred` holds on the output, or panic after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) {
        let start = Instant::now();
        while !pred(&self.text()) {
            assert!(
                start.elapsed() < timeout,
                "timed out waiting for {what}; output so far:\n{}",
                escape(&self.output())
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Wait for the child to exit (killing it after `timeout`), then for the reader to
    /// see the end of the output; returns the exit code (None: killed by a signal).
    pub fn finish(mut self, timeout: Duration) -> (Option<i32>, Vec<u8>) {
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            if start.elapsed() > timeout {
                let _ = self.child.kill();
                let out = self.output();
                panic!(
                    "prun did not end within {timeout:?}; output:\n{}",
                    escape(&out)
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        // The slave closes with the last process holding it; give the reader a moment
        // for the bytes still in the pty, then close our master.
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until && !self.reader.as_ref().is_some_and(|r| r.is_finished()) {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.master.take();
        (status.code(), self.output())
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Bytes made readable: control characters as `\x1b`, `\r`.
pub fn escape(bytes: &[u8]) -> String {
    let mut s = String::new();
    for c in String::from_utf8_lossy(bytes).chars() {
        match c {
            '\n' => s.push('\n'),
            c if c.is_control() => s.push_str(&format!("\\x{:02x}", c as u32)),
            c => s.push(c),
        }
    }
    s
}

/// Position of `needle` in `hay`, if any.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Processes whose command line contains `marker` (to prove nothing was left behind).
pub fn processes_with(marker: &str) -> Vec<i32> {
    let mut found = Vec::new();
    let me = std::process::id() as i32;
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if pid == me {
                continue;
            }
            if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline"))
                && String::from_utf8_lossy(&cmd).contains(marker)
            {
                // Zombies have an empty cmdline; a live match is a leftover.
                found.push(pid);
            }
        }
    }
    found
}

pub fn raw(fd: &OwnedFd) -> i32 {
    fd.as_raw_fd()
}
