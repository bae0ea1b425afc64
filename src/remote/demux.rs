//! The wrapper's report lines and the engine's stderr stream: [`Demux`] takes the
//! tagged start and end lines (and, under Slurm, srun's own account of the task) out of
//! the stream and passes everything else on unchanged.

use std::io::{self, Read, Write};
use std::sync::OnceLock;

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
