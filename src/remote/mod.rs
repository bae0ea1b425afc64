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

pub mod place;
pub mod slurm;
pub mod ssh;

use std::io::{self, Read, Write};
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

/// The wrapper's start line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Started {
    /// The remote process group (0 when it never started).
    pub pgid: i32,
    /// Its leader's start time (clock ticks since boot), checked by a stop.
    pub start: u64,
    /// The host name (Slurm: the node name).
    pub node: String,
    /// Slurm job id and step id, when run by `srun`.
    pub job: Option<String>,
    pub step: Option<String>,
}

/// The wrapper's end line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    Exit(i32),
    /// Killed by this signal (a name without `SIG`, as the remote host calls it).
    Signal {
        name: String,
        core: bool,
    },
    /// The command could not be started there (exec error, cwd, run directory).
    NoStart(String),
    /// The wrapper ended the instance because prun or the connection was gone.
    Gone(String),
}

/// What became of the host's run directory when an instance ended (SSH hosts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirEnd {
    /// The last user removed it (nothing but prun's own files was in it).
    Gone,
    /// The last user left it: it holds files (the end of the run removes it).
    Kept,
    /// Other instances of the run still use it.
    Shared,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    Started(Started),
    Dir(DirEnd),
    Ended(Ended),
}

fn parse_report(line: &str) -> Option<Report> {
    if let Some(rest) = line.strip_prefix("S ") {
        let mut s = Started::default();
        for kv in rest.split(' ') {
            let (k, v) = kv.split_once('=')?;
            match k {
                "pgid" => s.pgid = v.parse().ok()?,
                "start" => s.start = v.parse().ok()?,
                "node" => s.node = v.to_string(),
                "job" => s.job = Some(v.to_string()).filter(|v| !v.is_empty()),
                "step" => s.step = Some(v.to_string()).filter(|v| !v.is_empty()),
                _ => {}
            }
        }
        return Some(Report::Started(s));
    }
    if let Some(rest) = line.strip_prefix("D ") {
        return Some(Report::Dir(match rest {
            "gone" => DirEnd::Gone,
            "kept" => DirEnd::Kept,
            "shared" => DirEnd::Shared,
            _ => return None,
        }));
    }
    let rest = line.strip_prefix("E ")?;
    let (kind, arg) = rest.split_once(' ').unwrap_or((rest, ""));
    Some(Report::Ended(match kind {
        "exit" => Ended::Exit(arg.parse().ok()?),
        "signal" => {
            let (name, core) = match arg.strip_suffix(" core") {
                Some(n) => (n, true),
                None => (arg, false),
            };
            Ended::Signal {
                name: name.to_string(),
                core,
            }
        }
        "nostart" => Ended::NoStart(arg.to_string()),
        "gone" => Ended::Gone(arg.to_string()),
        _ => return None,
    }))
}

/// At most this much of the engine's own text (before the start line) is kept for the
/// `could not start` message.
const ENGINE_TEXT_MAX: usize = 4096;

/// What [`Demux`] saw in one engine stderr stream.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Seen {
    pub started: Option<Started>,
    pub ended: Option<Ended>,
    /// What the wrapper did with the host's run directory (SSH hosts).
    pub run_dir: Option<DirEnd>,
    /// What the engine wrote before the start line (its own messages), trimmed.
    pub engine_text: String,
    /// The engine's last status line taken out of the stream after the start line
    /// (Slurm: `srun: error: Node failure on node1`), for a lost instance's message.
    pub engine_tail: String,
}

/// Which of the engine's own lines are taken out of the instance's stream once it
/// runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineLines {
    /// Nothing (ssh adds nothing to a session's stderr once it runs).
    Keep,
    /// `srun: …` lines (srun's own account of the task's end, which prun reports
    /// exactly) and slurmstepd's plain `*** STEP … CANCELLED AT … ***` banner (what
    /// a stop by prun prints). Other slurmstepd lines (an OOM kill, a time limit)
    /// stay: they tell the user something prun does not.
    Slurm,
}

/// Longest engine line held back to decide whether it is the engine's own.
const ENGINE_LINE_MAX: usize = 4096;

fn slurm_noise(line: &[u8]) -> bool {
    static BANNER: OnceLock<regex::bytes::Regex> = OnceLock::new();
    let banner = BANNER.get_or_init(|| {
        regex::bytes::Regex::new(
            r"^slurmstepd[^:\s]*: error: \*\*\* (STEP|JOB) \S+ ON \S+ CANCELLED AT \S+ \*\*\*\r?\n?$",
        )
        .expect("valid regex")
    });
    line.starts_with(b"srun: ") || banner.is_match(line)
}

/// Could this start of a line still become an engine line (`EngineLines::Slurm`)?
fn slurm_candidate(start: &[u8]) -> bool {
    [b"srun: ".as_slice(), b"slurmstepd".as_slice()]
        .iter()
        .any(|p| start.starts_with(p) || p.starts_with(start))
}

/// Splits an engine's stderr stream: the wrapper's tagged report lines are taken out;
/// everything else goes on to `out` unchanged, byte for byte (the engine's own messages
/// too, so a user sees them in the log).
pub struct Demux {
    tag: Vec<u8>,
    /// Bytes held back: a possible start of a tag, or a tagged line not yet complete.
    held: Vec<u8>,
    pub seen: Seen,
    engine: EngineLines,
    /// The output is at the start of a line.
    line_start: bool,
    /// The start of an output line held back while it may be an engine line.
    line: Vec<u8>,
}

impl Demux {
    pub fn new(nonce: &str) -> Demux {
        Demux::filtering(nonce, EngineLines::Keep)
    }

    /// A demux that also takes the engine's own lines out once the instance runs.
    pub fn filtering(nonce: &str, engine: EngineLines) -> Demux {
        Demux {
            tag: format!("\u{1e}prun:{nonce}:").into_bytes(),
            held: Vec::new(),
            seen: Seen::default(),
            engine,
            line_start: true,
            line: Vec::new(),
        }
    }

    /// Feed one chunk; returns the reports found in it, writes the rest to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut dyn Write) -> io::Result<Vec<Report>> {
        let mut reports = Vec::new();
        if self.held.is_empty() {
            let mut data = chunk;
            self.feed_slice(&mut data, out, &mut reports)?;
        } else {
            let mut owned = std::mem::take(&mut self.held);
            owned.extend_from_slice(chunk);
            let mut data: &[u8] = &owned;
            self.feed_slice(&mut data, out, &mut reports)?;
        }
        Ok(reports)
    }

    fn feed_slice(
        &mut self,
        data: &mut &[u8],
        out: &mut dyn Write,
        reports: &mut Vec<Report>,
    ) -> io::Result<()> {
        loop {
            let Some(at) = memchr::memchr(self.tag[0], data) else {
                self.pass(data, out)?;
                return Ok(());
            };
            self.pass(&data[..at], out)?;
            let rest = &data[at..];
            let n = rest.len().min(self.tag.len());
            if rest[..n] != self.tag[..n] {
                // not our tag: pass the byte on
                self.pass(&rest[..1], out)?;
                *data = &rest[1..];
                continue;
            }
            if n < self.tag.len() {
                self.held = rest.to_vec();
                return Ok(());
            }
            let Some(nl) = memchr::memchr(b'\n', &rest[self.tag.len()..]) else {
                if rest.len() > 64 * 1024 {
                    // not a report line after all (a forged tag?): pass it on
                    self.pass(rest, out)?;
                } else {
                    self.held = rest.to_vec();
                }
                return Ok(());
            };
            let line = &rest[self.tag.len()..self.tag.len() + nl];
            match parse_report(&String::from_utf8_lossy(line)) {
                Some(r) => {
                    match &r {
                        Report::Started(s) if self.seen.started.is_none() => {
                            self.seen.started = Some(s.clone())
                        }
                        Report::Ended(e) if self.seen.ended.is_none() => {
                            self.seen.ended = Some(e.clone())
                        }
                        Report::Dir(d) => self.seen.run_dir = Some(*d),
                        _ => {}
                    }
                    reports.push(r);
                }
                None => self.pass(&rest[..self.tag.len() + nl + 1], out)?,
            }
            *data = &rest[self.tag.len() + nl + 1..];
        }
    }

    fn pass(&mut self, bytes: &[u8], out: &mut dyn Write) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        if self.seen.started.is_none() {
            if self.seen.engine_text.len() < ENGINE_TEXT_MAX {
                let room = ENGINE_TEXT_MAX - self.seen.engine_text.len();
                let take = &bytes[..bytes.len().min(room)];
                self.seen
                    .engine_text
                    .push_str(&String::from_utf8_lossy(take));
            }
            // srun's I/O and its own messages come on different connections: its
            // account of a quick task's end can arrive before the task's first line
            // (the start report), so its lines are taken out here too; a `could not
            // start` message still has them (engine_text).
            return match self.engine {
                EngineLines::Keep => {
                    self.line_start = bytes.last() == Some(&b'\n');
                    out.write_all(bytes)
                }
                EngineLines::Slurm => self.filter(bytes, out),
            };
        }
        match self.engine {
            EngineLines::Keep => out.write_all(bytes),
            EngineLines::Slurm => self.filter(bytes, out),
        }
    }

    /// Pass `bytes` on, holding back line starts that may be the engine's own lines
    /// and dropping those that are.
    fn filter(&mut self, mut bytes: &[u8], out: &mut dyn Write) -> io::Result<()> {
        while !bytes.is_empty() {
            if !self.line_start {
                // In the middle of a line that is passed on: up to its end.
                match memchr::memchr(b'\n', bytes) {
                    Some(nl) => {
                        out.write_all(&bytes[..=nl])?;
                        bytes = &bytes[nl + 1..];
                        self.line_start = true;
                    }
                    None => return out.write_all(bytes),
                }
                continue;
            }
            let nl = memchr::memchr(b'\n', bytes);
            let end = nl.map_or(bytes.len(), |n| n + 1);
            self.line.extend_from_slice(&bytes[..end]);
            bytes = &bytes[end..];
            let whole = nl.is_some();
            let head = &self.line[..self.line.len().min(16)];
            if !slurm_candidate(head) || (!whole && self.line.len() > ENGINE_LINE_MAX) {
                // Not an engine line: pass on what was held.
                let line = std::mem::take(&mut self.line);
                out.write_all(&line)?;
                self.line_start = whole;
                continue;
            }
            if !whole {
                return Ok(());
            }
            let line = std::mem::take(&mut self.line);
            if slurm_noise(&line) {
                self.seen.engine_tail = String::from_utf8_lossy(&line).trim().to_string();
            } else {
                out.write_all(&line)?;
            }
        }
        Ok(())
    }

    /// The stream ended: anything held back was not a report after all.
    pub fn finish(&mut self, out: &mut dyn Write) -> io::Result<()> {
        let held = std::mem::take(&mut self.held);
        self.pass(&held, out)?;
        let line = std::mem::take(&mut self.line);
        if !line.is_empty() {
            if slurm_noise(&line) {
                self.seen.engine_tail = String::from_utf8_lossy(&line).trim().to_string();
            } else {
                out.write_all(&line)?;
            }
        }
        out.flush()
    }

    /// Read `input` to its end, writing to `out`; `on_report` sees each report as it
    /// comes (the start line is how prun learns the remote group). A write error on
    /// `out` (its reader is gone) stops forwarding but reading goes on, so the reports
    /// still arrive and the engine never blocks on a full pipe.
    pub fn run(
        mut self,
        input: &mut dyn Read,
        out: &mut dyn Write,
        mut on_report: impl FnMut(&Report),
    ) -> Seen {
        let mut buf = vec![0u8; 64 * 1024];
        let mut sink = io::sink();
        let mut out_ok = true;
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            let target: &mut dyn Write = if out_ok { &mut *out } else { &mut sink };
            match self.feed(&buf[..n], target) {
                Ok(reports) => reports.iter().for_each(&mut on_report),
                Err(_) => out_ok = false,
            }
        }
        let target: &mut dyn Write = if out_ok { &mut *out } else { &mut sink };
        let _ = self.finish(target);
        self.seen.engine_text = self.seen.engine_text.trim().to_string();
        self.seen
    }
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

    #[test]
    fn slurm_lines_are_taken_out_once_the_instance_runs_whatever_the_cuts() {
        let s: &[u8] = b"srun: job 5 queued\n\x1eprun:n1:S pgid=1 start=2 node=node1 job=5 step=0\nuser out\nuser: srun: in the middle\nslurmstepd-node1: error: *** STEP 5.0 ON node1 CANCELLED AT 2026-01-01T00:00:00 ***\nslurmstepd: error: Detected 1 oom_kill event\nsrunx\nsrun: error: node1: task 0: Exited with exit code 3\n\x1eprun:n1:E exit 3\nlast";
        let want: &[u8] = b"user out\nuser: srun: in the middle\nslurmstepd: error: Detected 1 oom_kill event\nsrunx\nlast";
        for cut in 0..s.len() {
            let mut d = Demux::filtering("n1", EngineLines::Slurm);
            let mut out = Vec::new();
            d.feed(&s[..cut], &mut out).unwrap();
            d.feed(&s[cut..], &mut out).unwrap();
            d.finish(&mut out).unwrap();
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
            let mut d = Demux::filtering("n1", EngineLines::Slurm);
            let mut out = Vec::new();
            d.feed(&s[..cut], &mut out).unwrap();
            d.feed(&s[cut..], &mut out).unwrap();
            d.finish(&mut out).unwrap();
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
