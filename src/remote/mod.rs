//! What crosses to other hosts: the remote wrapper, its reports, and the engines'
//! command lines (SSH in [`ssh`], Slurm in [`slurm`]).
//!
//! prun installs no agent. Every remote instance runs under a small Perl wrapper
//! ([`WRAPPER`], sent inline with the command, hex-encoded so that any login shell passes
//! it through untouched) that:
//! - starts the instance (in its own process group over SSH, in the task's group under
//!   Slurm, where the engine signals the whole group) and replaces the `${run.dir}`
//!   marker ([`RUN_DIR_MARK`]) by a private scratch directory on that host;
//! - writes exactly two lines into the engine's stderr stream, tagged with a per-instance
//!   nonce: a start line (remote process group, its start time, node, Slurm job and
//!   step) and an end line (exit code, signal name, or why it could not start);
//!   [`Demux`] strips them from the stream, so the instance's stderr is unchanged;
//! - ends the whole remote group (the stop signal, a grace, then SIGKILL; descendants
//!   that left the group included) when its parent changes or its stdout or stderr
//!   loses its reader, i.e. when prun or the connection is gone.
//!
//! The engine's own failures (host unreachable, key refused, no such partition) never
//! produce a start line: [`classify`] turns "no start line" into `could not start` with
//! the engine's message, "start line but no end line" into a lost connection, and the
//! end line into the exact status. That is how a remote exit 255 or a remote SIGKILL is
//! told apart from `ssh`'s own exit 255.

mod demux;
pub use demux::*;
pub mod place;
pub mod slurm;
pub mod ssh;

use std::io::Read;
use std::sync::OnceLock;

/// The wrapper's source (Perl, perl-base modules only).
pub const WRAPPER: &str = include_str!("wrapper.pl");

/// `prun ctl` for remote stages (Perl, perl-base only), installed by the wrapper in the
/// host's run directory for the run.
pub const CTL_CLIENT: &str = include_str!("ctl_client.pl");

/// The remote path of an instance's forwarded control socket (sshd creates it, the
/// wrapper removes it when the instance ends).
pub fn remote_ctl_socket(nonce: &str) -> String {
    format!("/tmp/prun-ctl-{nonce}.sock")
}

/// What `${run.dir}` renders to for a remote instance; the wrapper replaces it with the
/// host's private run directory.
pub const RUN_DIR_MARK: &str = "\u{1}run.dir\u{1}";

/// The Perl that decodes and runs the wrapper: `perl -e BOOT HEXWRAPPER HEXARGS...`.
/// No single quote, no newline: it survives sh, bash, zsh, fish and csh quoting.
pub const BOOT: &str = "eval pack q(H*),shift;die $@ if $@";

/// Protocol version, the first argument of every wrapper call.
const VERSION: &str = "1";

/// The wrapper without comments and indentation, hex-encoded (computed once).
pub fn wrapper_hex() -> &'static str {
    static HEX: OnceLock<String> = OnceLock::new();
    HEX.get_or_init(|| {
        let mut code = String::with_capacity(WRAPPER.len());
        for line in WRAPPER.lines() {
            let t = line.trim_start();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            code.push_str(t);
            code.push('\n');
        }
        hex(code.as_bytes())
    })
}

/// One wrapper argument: `x` and the field's hex (so an empty field is still a word).
fn word(field: &str) -> String {
    format!("x{}", hex(field.as_bytes()))
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

/// Which process group the instance gets on the remote side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// Its own (SSH): stop = a signal to that group.
    Own,
    /// The wrapper's (Slurm): the engine signals the task's whole group.
    Same,
}

/// One remote instance, as data: what the wrapper runs and how it ends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSpec {
    /// Tags the wrapper's report lines in the stderr stream (random per instance).
    pub nonce: String,
    /// Names the host's run directory (`$TMPDIR/prun-UID-RUNID`).
    pub run_id: String,
    pub group: Group,
    /// Sent to the instance when prun or the connection is gone (the stop signal),
    /// without the `SIG` prefix (`TERM`).
    pub death_signal: String,
    /// Then SIGKILL after this many milliseconds.
    pub grace_ms: u64,
    /// Remote working directory (empty: the login directory).
    pub cwd: String,
    /// The `prun ctl` client to put on the instance's PATH (SSH hosts), or none.
    pub ctl_client: bool,
    /// Set in the instance's environment (the stage's `env` and prun's `PRUN_*`).
    pub env: Vec<(String, String)>,
    /// The command; `argv[0]` is looked up on the remote PATH.
    pub argv: Vec<String>,
}

impl RunSpec {
    /// The wrapper's arguments (hex words).
    pub fn words(&self) -> Vec<String> {
        let group = match self.group {
            Group::Own => "own",
            Group::Same => "same",
        };
        let mut fields: Vec<String> = vec![
            VERSION.into(),
            "run".into(),
            self.nonce.clone(),
            self.run_id.clone(),
            group.into(),
            self.death_signal.clone(),
            self.grace_ms.to_string(),
            self.cwd.clone(),
            if self.ctl_client {
                CTL_CLIENT.to_string()
            } else {
                String::new()
            },
            self.env.len().to_string(),
        ];
        fields.extend(self.env.iter().map(|(k, v)| format!("{k}={v}")));
        fields.extend(self.argv.iter().cloned());
        fields.iter().map(|f| word(f)).collect()
    }
}

/// Arguments of a stop: `signal` (a name without `SIG`) to the remote group `pgid`, if
/// its leader is still the process that started at `start` (so a recycled id is never hit).
pub fn stop_words(pgid: i32, start: u64, signal: &str) -> Vec<String> {
    [
        VERSION,
        "stop",
        &pgid.to_string(),
        &start.to_string(),
        signal,
    ]
    .iter()
    .map(|f| word(f))
    .collect()
}

/// Arguments of the end-of-run cleanup: remove the host's run directory.
pub fn cleanup_words(run_id: &str) -> Vec<String> {
    [VERSION, "cleanup", run_id]
        .iter()
        .map(|f| word(f))
        .collect()
}

/// The full remote command as one shell line (what `ssh` sends): the login shell
/// `exec`s perl; every other word is hex.
pub fn shell_line(words: &[String]) -> String {
    let mut s = format!("exec perl -e '{BOOT}' {}", wrapper_hex());
    for w in words {
        s.push(' ');
        s.push_str(w);
    }
    s
}

/// The same as an argv (what `srun` runs, no shell involved).
pub fn argv(words: &[String]) -> Vec<String> {
    let mut v = vec![
        "perl".to_string(),
        "-e".into(),
        BOOT.into(),
        wrapper_hex().to_string(),
    ];
    v.extend(words.iter().cloned());
    v
}

/// How a remote instance ended, from the engine client's exit and what the wrapper said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The remote command exited with this code.
    Exited(i32),
    /// The remote command was killed by this signal (name without `SIG`).
    Signaled { name: String, core: bool },
    /// Never started: the engine failed (its message) or the remote exec failed.
    CouldNotStart(String),
    /// It started, then the engine lost it (connection dropped, node lost).
    Lost(String),
}

/// The engine client's own exit (`code` or `signal`, from its wait status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientExit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

/// Classify. `engine` names the engine and host for messages (`ssh to h2`).
pub fn classify(seen: &Seen, client: ClientExit, engine: &str) -> Outcome {
    match (&seen.started, &seen.ended) {
        (_, Some(Ended::Exit(c))) => Outcome::Exited(*c),
        (_, Some(Ended::Signal { name, core })) => Outcome::Signaled {
            name: name.clone(),
            core: *core,
        },
        (_, Some(Ended::NoStart(m))) => Outcome::CouldNotStart(m.clone()),
        (Some(_), Some(Ended::Gone(why))) => Outcome::Lost(format!(
            "{engine}: the remote side lost its connection ({why})"
        )),
        (Some(_), None) => {
            let how = match (client.code, client.signal) {
                (_, Some(s)) => format!("{engine} client killed by signal {s}"),
                (Some(c), _) => format!("{engine} ended with {c} before the instance did"),
                _ => format!("{engine} ended"),
            };
            let text = match seen.engine_tail.as_str() {
                "" => last_line(&seen.engine_text),
                tail => tail,
            };
            Outcome::Lost(if text.is_empty() {
                format!("connection lost: {how}")
            } else {
                format!("connection lost: {how}: {text}")
            })
        }
        (None, _) => {
            let text = seen.engine_text.trim();
            Outcome::CouldNotStart(if !text.is_empty() {
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect::<Vec<_>>()
                    .join("; ")
            } else {
                match (client.code, client.signal) {
                    (Some(127), _) => format!("{engine}: perl not found on the remote side"),
                    (Some(c), _) => format!("{engine} failed (exit {c}) without a message"),
                    (_, Some(s)) => format!("{engine} client killed by signal {s}"),
                    _ => format!("{engine} failed"),
                }
            })
        }
    }
}

fn last_line(s: &str) -> &str {
    s.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
}

/// A random token (nonce, run id): 16 hex digits from the OS's random source.
pub fn random_token() -> String {
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b = ((t as u64) ^ ((std::process::id() as u64) << 32)).to_le_bytes();
    }
    hex(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demux_all(chunks: &[&[u8]]) -> (Vec<u8>, Seen) {
        let mut d = Demux::new("n1");
        let mut out = Vec::new();
        for c in chunks {
            d.feed(c, &mut out).unwrap();
        }
        d.finish(&mut out).unwrap();
        (out, d.seen)
    }

    #[test]
    fn reports_are_taken_out_of_the_stream() {
        let s = b"engine says hi\n\x1eprun:n1:S pgid=42 start=7 node=h2\nuser line\npartial\x1eprun:n1:D kept\n\x1eprun:n1:E exit 3\n";
        let (out, seen) = demux_all(&[s]);
        assert_eq!(out, b"engine says hi\nuser line\npartial");
        assert_eq!(seen.started.as_ref().unwrap().pgid, 42);
        assert_eq!(seen.started.as_ref().unwrap().node, "h2");
        assert_eq!(seen.ended, Some(Ended::Exit(3)));
        assert_eq!(seen.run_dir, Some(DirEnd::Kept));
        assert_eq!(seen.engine_text, "engine says hi\n");
    }

    #[test]
    fn split_at_every_byte_gives_the_same() {
        let s: &[u8] = b"a\x1eb\x1eprun:n2:S x\n\x1eprun:n1:S pgid=1 start=2 node=n job=5 step=0\nxyz\x1e\x1eprun:n1:E signal KILL core\n\x1e";
        let (whole_out, whole_seen) = demux_all(&[s]);
        for cut in 0..s.len() {
            let (out, seen) = demux_all(&[&s[..cut], &s[cut..]]);
            assert_eq!(out, whole_out, "cut at {cut}");
            assert_eq!(seen, whole_seen, "cut at {cut}");
        }
        assert_eq!(whole_out, b"a\x1eb\x1eprun:n2:S x\nxyz\x1e\x1e");
        assert_eq!(
            whole_seen.ended,
            Some(Ended::Signal {
                name: "KILL".into(),
                core: true
            })
        );
        assert_eq!(whole_seen.started.unwrap().job.as_deref(), Some("5"));
    }

    /// A Slurm demux fed `s` in two chunks cut at `cut`: its output and itself.
    fn slurm_demux_cut(s: &[u8], cut: usize) -> (Vec<u8>, Demux) {
        let mut d = Demux::filtering("n1", EngineLines::Slurm);
        let mut out = Vec::new();
        d.feed(&s[..cut], &mut out).unwrap();
        d.feed(&s[cut..], &mut out).unwrap();
        d.finish(&mut out).unwrap();
        (out, d)
    }

    #[test]
    fn slurm_lines_are_taken_out_once_the_instance_runs_whatever_the_cuts() {
        let s: &[u8] = b"srun: job 5 queued\n\x1eprun:n1:S pgid=1 start=2 node=node1 job=5 step=0\nuser out\nuser: srun: in the middle\nslurmstepd-node1: error: *** STEP 5.0 ON node1 CANCELLED AT 2026-01-01T00:00:00 ***\nslurmstepd: error: Detected 1 oom_kill event\nsrunx\nsrun: error: node1: task 0: Exited with exit code 3\n\x1eprun:n1:E exit 3\nlast";
        let want: &[u8] = b"user out\nuser: srun: in the middle\nslurmstepd: error: Detected 1 oom_kill event\nsrunx\nlast";
        for cut in 0..s.len() {
            let (out, d) = slurm_demux_cut(s, cut);
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(want),
                "cut at {cut}"
            );
            assert_eq!(
                d.seen.engine_tail,
                "srun: error: node1: task 0: Exited with exit code 3"
            );
            assert_eq!(d.seen.ended, Some(Ended::Exit(3)));
        }
    }

    #[test]
    fn srun_account_of_the_end_arriving_before_the_start_line_is_taken_out() {
        // srun's own messages and the task's output come on separate connections: for
        // a quick task, srun's line can come first.
        let s: &[u8] = b"srun: error: node1: task 0: Exited with exit code 4\n\x1eprun:n1:S pgid=1 start=2 node=node1 job=5 step=0\nitem c\n\x1eprun:n1:E exit 4\n";
        for cut in 0..s.len() {
            let (out, d) = slurm_demux_cut(s, cut);
            assert_eq!(String::from_utf8_lossy(&out), "item c\n", "cut at {cut}");
            assert_eq!(d.seen.ended, Some(Ended::Exit(4)));
        }
        // An engine failure before any start keeps its words for `could not start`.
        let (mut d, mut out) = (Demux::filtering("n1", EngineLines::Slurm), Vec::new());
        d.feed(
            b"srun: error: Unable to allocate resources: Invalid partition name specified\n",
            &mut out,
        )
        .unwrap();
        d.finish(&mut out).unwrap();
        assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
        assert!(
            d.seen.engine_text.contains("Invalid partition name"),
            "{:?}",
            d.seen
        );
    }

    #[test]
    fn classify_tells_engine_failures_from_remote_ends() {
        let client = |code| ClientExit {
            code: Some(code),
            signal: None,
        };
        let mut seen = Seen {
            engine_text: "ssh: connect to host 127.0.0.9 port 22: Connection refused\n".into(),
            ..Seen::default()
        };
        assert_eq!(
            classify(&seen, client(255), "ssh to h9"),
            Outcome::CouldNotStart(
                "ssh: connect to host 127.0.0.9 port 22: Connection refused".into()
            )
        );
        seen.started = Some(Started::default());
        assert!(matches!(
            classify(&seen, client(255), "ssh to h9"),
            Outcome::Lost(m) if m.contains("connection lost")
        ));
        seen.ended = Some(Ended::Exit(255));
        assert_eq!(classify(&seen, client(255), "x"), Outcome::Exited(255));
        seen.ended = Some(Ended::Signal {
            name: "KILL".into(),
            core: false,
        });
        assert!(matches!(
            classify(&seen, client(255), "x"),
            Outcome::Signaled { .. }
        ));
    }

    #[test]
    fn words_are_hex_and_the_shell_line_has_one_quoted_word() {
        let spec = RunSpec {
            nonce: "abc".into(),
            run_id: "r".into(),
            group: Group::Own,
            death_signal: "TERM".into(),
            grace_ms: 2000,
            cwd: String::new(),
            ctl_client: false,
            env: vec![("K".into(), "v w'x".into())],
            argv: vec!["sh".into(), "-c".into(), "echo 'hi' \"$HOME\"; `x`".into()],
        };
        let line = shell_line(&spec.words());
        let after_boot = line.split_once(&format!("'{BOOT}'")).unwrap().1;
        assert!(
            after_boot
                .bytes()
                .all(|b| b == b' ' || b == b'x' || b.is_ascii_hexdigit())
        );
        assert!(!BOOT.contains('\'') && !BOOT.contains('\n'));
    }
}
