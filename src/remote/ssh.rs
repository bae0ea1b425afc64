//! SSH as an engine: the OpenSSH client's command lines, as data.
//!
//! One shared connection per host: a master (`ssh -M -N`) owns the TCP connection and
//! a control socket in prun's private run directory; every instance, stop and cleanup
//! is a session multiplexed over it (measured on the test hosts: 0.14 s a session
//! instead of 0.4 s a connection). Always `BatchMode=yes` (a missing key or an unknown
//! host key is an error, never a prompt) and no TTY (`-T`: binary data passes
//! untouched; the wrapper, not a TTY, ends the remote side when the client goes).
//!
//! Option order matters: ssh keeps the first value it is given for each option. prun's
//! own fixed settings come first (`BatchMode`, the control socket), then the host's
//! `options:` from the file, then prun's defaults that a user may override
//! (`ConnectTimeout`, `ServerAlive*`).

use std::path::{Path, PathBuf};

/// How to reach one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    /// `user@host`, `host`, or a `Host` alias of `~/.ssh/config`.
    pub destination: String,
    pub port: Option<u16>,
    /// Extra client arguments from the file (`[-i, keys/ci]`, `[-F, cfg]`).
    pub options: Vec<String>,
    /// The master's control socket (local path, short: a unix socket path has ~100 bytes).
    pub control_path: PathBuf,
}

/// Seconds ssh waits for a TCP connection (overridable with `-o ConnectTimeout=`).
pub const CONNECT_TIMEOUT_S: u32 = 10;
/// A silent connection is declared lost after about 3 × 5 s.
pub const ALIVE_INTERVAL_S: u32 = 5;
pub const ALIVE_COUNT: u32 = 3;

impl SshTarget {
    fn control_path_option(&self) -> String {
        // ssh expands %-tokens in ControlPath: a literal % is %%.
        format!(
            "ControlPath={}",
            self.control_path.to_string_lossy().replace('%', "%%")
        )
    }

    fn common(&self) -> Vec<String> {
        let mut v: Vec<String> = vec![
            "-T".into(),
            "-e".into(),
            "none".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            self.control_path_option(),
        ];
        v.extend(self.options.iter().cloned());
        for o in [
            format!("ConnectTimeout={CONNECT_TIMEOUT_S}"),
            format!("ServerAliveInterval={ALIVE_INTERVAL_S}"),
            format!("ServerAliveCountMax={ALIVE_COUNT}"),
        ] {
            v.push("-o".into());
            v.push(o);
        }
        if let Some(p) = self.port {
            v.push("-p".into());
            v.push(p.to_string());
        }
        v
    }

    fn with(&self, head: &[&str], tail: &[String]) -> Vec<String> {
        let mut v: Vec<String> = vec!["ssh".into()];
        v.extend(head.iter().map(|s| s.to_string()));
        v.extend(self.common());
        v.push("--".into());
        v.push(self.destination.clone());
        v.extend(tail.iter().cloned());
        v
    }

    /// The shared connection: runs until told to exit (or its connection drops).
    pub fn master_argv(&self) -> Vec<String> {
        self.with(
            &[
                "-M",
                "-N",
                "-o",
                "ControlPersist=no",
                "-o",
                "ExitOnForwardFailure=yes",
            ],
            &[],
        )
    }

    /// A session over the master (or, if there is none, a connection of its own).
    pub fn session_argv(&self, remote_line: String) -> Vec<String> {
        self.with(&["-o", "ControlMaster=no"], &[remote_line])
    }

    /// A session that also forwards the remote unix socket `remote` to the local socket
    /// `local` (the instance's `prun ctl`).
    pub fn session_forwarding_argv(
        &self,
        remote_line: String,
        remote: &str,
        local: &Path,
    ) -> Vec<String> {
        let fwd = format!("{remote}:{}", local.to_string_lossy());
        self.with(&["-o", "ControlMaster=no", "-R", &fwd], &[remote_line])
    }

    /// Exit 0 when the master runs and is connected.
    pub fn check_argv(&self) -> Vec<String> {
        self.with(&["-O", "check"], &[])
    }

    /// Tell the master to close the connection.
    pub fn exit_argv(&self) -> Vec<String> {
        self.with(&["-O", "exit"], &[])
    }

    /// Ask the master to forward connections to the remote unix socket `remote` to the
    /// local socket `local` (for `prun ctl` on the remote side).
    pub fn forward_argv(&self, remote: &str, local: &Path) -> Vec<String> {
        self.with(
            &[
                "-O",
                "forward",
                "-R",
                &format!("{remote}:{}", local.to_string_lossy()),
            ],
            &[],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_options_come_before_the_users_and_defaults_after() {
        let t = SshTarget {
            destination: "ops@w1".into(),
            port: Some(2222),
            options: vec!["-o".into(), "ConnectTimeout=3".into()],
            control_path: "/tmp/run/c%0".into(),
        };
        let v = t.session_argv("exec perl".into());
        let pos = |s: &str| v.iter().position(|a| a == s).unwrap();
        assert!(pos("BatchMode=yes") < pos("ConnectTimeout=3"));
        assert!(pos("ConnectTimeout=3") < pos("ConnectTimeout=10"));
        assert!(v.contains(&"ControlPath=/tmp/run/c%%0".to_string()));
        assert_eq!(&v[v.len() - 3..], ["--", "ops@w1", "exec perl"]);
        assert!(v.contains(&"-T".to_string()));
        let m = t.master_argv();
        assert!(m.contains(&"-M".to_string()) && m.contains(&"-N".to_string()));
    }
}
