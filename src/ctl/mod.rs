//! `prun ctl`: the control socket (SPEC 6) — protocol, client, server and broker.
//!
//! Stages are ordinary programs; for Lock/Semaphore/Event semantics they talk to prun
//! over a Unix socket, `$PRUN_RUN_DIR/ctl.sock`, exported as `PRUN_CTL`. This module
//! owns the wire protocol and the `prun ctl` client; [`server`] accepts connections
//! and forwards requests to the supervisor; [`broker`] turns requests into `Coord`
//! operations and parks waiters; [`procfs`] maps a peer pid to its instance.
//!
//! # Protocol
//!
//! One request per line (UTF-8, `\n`-terminated, at most 4 KiB), one reply line per
//! request; a connection may carry several requests in turn. Timeouts are in
//! milliseconds; without one, a wait lasts until it is satisfied or the instance ends;
//! `0` means "try once".
//!
//! | request | replies |
//! |---|---|
//! | `EVENT SET name` / `EVENT CLEAR name` | `OK` |
//! | `EVENT WAIT name [ms]` | `OK` (the event was set), `TIMEOUT` |
//! | `EVENT ISSET name` | `TRUE`, `FALSE` |
//! | `SEM ACQUIRE name [ms]` | `OK` (one permit now belongs to the instance), `TIMEOUT` |
//! | `SEM RELEASE name` | `OK` |
//!
//! Any request may also be answered `ERR message` (unknown name, malformed line, a
//! release of a permit the instance does not hold, the instance ended) or
//! `REFUSED reason` (the peer is not a process of this pipeline, or runs as another
//! user). A permit belongs to the *instance* of the asking process (found from
//! `SO_PEERCRED`), not to the connection: it is released by `SEM RELEASE` from any
//! process of that instance, or when the instance ends. A client that hangs up while
//! waiting withdraws its request (a permit granted at that very moment is given back).
//!
//! # Exit codes of `prun ctl`
//!
//! 0 done / event set (`is-set`); 1 event clear (`is-set`); 2 usage; 3 prun answered
//! `ERR`; 4 `REFUSED`; 5 prun cannot be reached (`PRUN_CTL` unset, socket gone,
//! garbled reply); 124 `TIMEOUT` (as `timeout(1)`). `sem run` exits with the
//! command's status (128+N when killed by signal N; 126/127 when it cannot be run).

pub mod broker;

pub mod server;

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::procfs::{group_is_parked, owner_of, parent_of, process_group_of};
pub use crate::rundir::create as create_run_dir;
pub use broker::{BrokerOutcome, CtlBroker};
pub use server::{CtlRequest, CtlServer};

/// Longest request line accepted, newline included.
pub const MAX_LINE: usize = 4096;

pub const EXIT_OK: i32 = 0;
pub const EXIT_FALSE: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_ERR: i32 = 3;
pub const EXIT_REFUSED: i32 = 4;
pub const EXIT_UNREACHABLE: i32 = 5;
pub const EXIT_TIMEOUT: i32 = 124;

/// A parsed request line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CtlCommand {
    EventSet(String),
    EventClear(String),
    EventWait {
        name: String,
        timeout: Option<Duration>,
    },
    EventIsSet(String),
    SemAcquire {
        name: String,
        timeout: Option<Duration>,
    },
    SemRelease(String),
    /// `SEM HOLD`: like `SEM ACQUIRE`, but the permit belongs to this connection: it is
    /// given back when the connection closes (the process that asked died), or by a
    /// `SEM RELEASE` on the same connection. What `prun ctl sem run` uses.
    SemHold {
        name: String,
        timeout: Option<Duration>,
    },
    /// Not on the wire: the server reports that the client of connection `conn`
    /// hung up (while waiting for a reply, or between requests), so its parked request
    /// is withdrawn and its `SEM HOLD` permits given back. `lost` is the reply that
    /// arrived for it but could not be delivered (a lost `OK` to `SEM ACQUIRE` means
    /// the permit is given back).
    Hangup {
        lost: Option<CtlReply>,
    },
}

/// A reply line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CtlReply {
    Ok,
    True,
    False,
    Timeout,
    Refused(String),
    Err(String),
}

fn parse_timeout(word: Option<&str>) -> Result<Option<Duration>, String> {
    match word {
        None => Ok(None),
        Some(w) => w
            .parse::<u64>()
            .map(|ms| Some(Duration::from_millis(ms)))
            .map_err(|_| format!("timeout must be milliseconds, got `{w}`")),
    }
}

impl CtlCommand {
    /// Parse one request line (without its newline).
    pub fn parse(line: &str) -> Result<CtlCommand, String> {
        let words: Vec<&str> = line.split_ascii_whitespace().collect();
        let upper: Vec<String> = words
            .iter()
            .take(2)
            .map(|w| w.to_ascii_uppercase())
            .collect();
        let verb: Vec<&str> = upper.iter().map(String::as_str).collect();
        let name = || -> Result<String, String> {
            words
                .get(2)
                .map(|s| s.to_string())
                .ok_or_else(|| format!("`{}` needs a name", verb.join(" ")))
        };
        let max_words = match verb.as_slice() {
            ["EVENT", "WAIT"] | ["SEM", "ACQUIRE"] | ["SEM", "HOLD"] => 4,
            _ => 3,
        };
        if words.len() > max_words {
            return Err(format!("too many words in `{line}`"));
        }
        Ok(match verb.as_slice() {
            ["EVENT", "SET"] => CtlCommand::EventSet(name()?),
            ["EVENT", "CLEAR"] => CtlCommand::EventClear(name()?),
            ["EVENT", "ISSET"] => CtlCommand::EventIsSet(name()?),
            ["EVENT", "WAIT"] => CtlCommand::EventWait {
                name: name()?,
                timeout: parse_timeout(words.get(3).copied())?,
            },
            ["SEM", "ACQUIRE"] => CtlCommand::SemAcquire {
                name: name()?,
                timeout: parse_timeout(words.get(3).copied())?,
            },
            ["SEM", "RELEASE"] => CtlCommand::SemRelease(name()?),
            ["SEM", "HOLD"] => CtlCommand::SemHold {
                name: name()?,
                timeout: parse_timeout(words.get(3).copied())?,
            },
            _ => {
                return Err(format!(
                    "unknown request `{line}` (expected EVENT SET|CLEAR|WAIT|ISSET or SEM ACQUIRE|HOLD|RELEASE)"
                ));
            }
        })
    }

    /// The request line, without its newline.
    pub fn to_line(&self) -> String {
        let ms = |t: &Option<Duration>| {
            t.map(|d| format!(" {}", d.as_millis().min(u64::MAX as u128)))
                .unwrap_or_default()
        };
        match self {
            CtlCommand::EventSet(n) => format!("EVENT SET {n}"),
            CtlCommand::EventClear(n) => format!("EVENT CLEAR {n}"),
            CtlCommand::EventIsSet(n) => format!("EVENT ISSET {n}"),
            CtlCommand::EventWait { name, timeout } => format!("EVENT WAIT {name}{}", ms(timeout)),
            CtlCommand::SemAcquire { name, timeout } => {
                format!("SEM ACQUIRE {name}{}", ms(timeout))
            }
            CtlCommand::SemRelease(n) => format!("SEM RELEASE {n}"),
            CtlCommand::SemHold { name, timeout } => format!("SEM HOLD {name}{}", ms(timeout)),
            CtlCommand::Hangup { .. } => "HANGUP".to_string(),
        }
    }
}

/// Keep reply text on one line.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

impl CtlReply {
    pub fn to_line(&self) -> String {
        match self {
            CtlReply::Ok => "OK".into(),
            CtlReply::True => "TRUE".into(),
            CtlReply::False => "FALSE".into(),
            CtlReply::Timeout => "TIMEOUT".into(),
            CtlReply::Refused(m) => format!("REFUSED {}", one_line(m)),
            CtlReply::Err(m) => format!("ERR {}", one_line(m)),
        }
    }

    pub fn parse(line: &str) -> Option<CtlReply> {
        let line = line.trim_end_matches(['\n', '\r']);
        let (head, rest) = line.split_once(' ').unwrap_or((line, ""));
        Some(match head {
            "OK" => CtlReply::Ok,
            "TRUE" => CtlReply::True,
            "FALSE" => CtlReply::False,
            "TIMEOUT" => CtlReply::Timeout,
            "REFUSED" => CtlReply::Refused(rest.to_string()),
            "ERR" => CtlReply::Err(rest.to_string()),
            _ => return None,
        })
    }
}

// ---- client -------------------------------------------------------------------------

/// `prun ctl ...` arguments (mounted as a subcommand by the CLI).
#[derive(Debug, Clone, clap::Args)]
pub struct CtlArgs {
    /// Control socket of the running pipeline (set by prun for every stage).
    #[arg(long, env = "PRUN_CTL", value_name = "PATH")]
    pub socket: Option<PathBuf>,
    #[command(subcommand)]
    pub command: CtlSub,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum CtlSub {
    /// Set, clear, wait for or test a pipeline event.
    Event {
        #[command(subcommand)]
        command: EventSub,
    },
    /// Acquire or release a permit of a pipeline semaphore, or hold one around a command.
    Sem {
        #[command(subcommand)]
        command: SemSub,
    },
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum EventSub {
    /// Set the event (wakes every waiter).
    Set { name: String },
    /// Clear the event.
    Clear { name: String },
    /// Block until the event is set (exit 124 on timeout).
    Wait {
        name: String,
        /// Give up after this long (`250ms`, `5s`, a bare number is seconds).
        #[arg(long, value_parser = parse_duration)]
        timeout: Option<Duration>,
    },
    /// Exit 0 when the event is set, 1 when it is clear.
    IsSet { name: String },
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum SemSub {
    /// Take one permit for this stage instance (released by `release` or when it ends).
    Acquire {
        name: String,
        #[arg(long, value_parser = parse_duration)]
        timeout: Option<Duration>,
    },
    /// Give back one permit held by this stage instance.
    Release { name: String },
    /// Hold one permit while CMD runs; exits with CMD's status.
    Run {
        name: String,
        #[arg(long, value_parser = parse_duration)]
        timeout: Option<Duration>,
        /// The command and its arguments (after `--`).
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        cmd: Vec<OsString>,
    },
}

/// A duration as in the YAML files: `250ms`, `5s`, `2m`; a bare number is seconds.
/// (prun has one duration parser: [`crate::vocab::parse_duration`].)
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::vocab::parse_duration(s)
}

/// Send one request on a fresh connection and read its reply.
pub fn request(socket: &Path, command: &CtlCommand) -> Result<CtlReply, String> {
    Session::open(socket)?.ask(command)
}

/// One connection to the control socket, for requests that belong together (`SEM
/// HOLD`: the permit lives as long as the connection).
pub struct Session {
    stream: UnixStream,
}

impl Session {
    pub fn open(socket: &Path) -> Result<Session, String> {
        let stream = UnixStream::connect(socket)
            .map_err(|e| format!("cannot reach prun at {}: {e}", socket.display()))?;
        Ok(Session { stream })
    }

    /// Send one request and read its reply.
    pub fn ask(&mut self, command: &CtlCommand) -> Result<CtlReply, String> {
        let mut line = command.to_line();
        line.push('\n');
        self.stream
            .write_all(line.as_bytes())
            .map_err(|e| format!("cannot send to prun: {e}"))?;
        // One byte at a time up to the newline: nothing past the reply is consumed.
        let mut reply = Vec::new();
        let mut byte = [0u8; 1];
        while reply.len() < MAX_LINE {
            match (&self.stream).read(&mut byte) {
                Ok(0) => break,
                Ok(_) => {
                    reply.push(byte[0]);
                    if byte[0] == b'\n' {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("cannot read prun's reply: {e}")),
            }
        }
        if reply.is_empty() {
            return Err("prun closed the connection without a reply".into());
        }
        let reply = String::from_utf8_lossy(&reply);
        CtlReply::parse(&reply)
            .ok_or_else(|| format!("garbled reply from prun: {:?}", reply.trim_end()))
    }
}

fn report(reply: Result<CtlReply, String>, what: &str) -> i32 {
    match reply {
        Ok(CtlReply::Ok) | Ok(CtlReply::True) => EXIT_OK,
        Ok(CtlReply::False) => EXIT_FALSE,
        Ok(CtlReply::Timeout) => {
            eprintln!("prun ctl: timed out: {what}");
            EXIT_TIMEOUT
        }
        Ok(CtlReply::Refused(m)) => {
            eprintln!("prun ctl: refused: {m}");
            EXIT_REFUSED
        }
        Ok(CtlReply::Err(m)) => {
            eprintln!("prun ctl: {m}");
            EXIT_ERR
        }
        Err(m) => {
            eprintln!("prun ctl: {m}");
            EXIT_UNREACHABLE
        }
    }
}

/// Run `prun ctl` and return its exit code.
pub fn ctl_main(args: CtlArgs) -> i32 {
    let Some(socket) = args.socket.filter(|p| !p.as_os_str().is_empty()) else {
        eprintln!("prun ctl: PRUN_CTL is not set: run this from a stage started by prun");
        return EXIT_UNREACHABLE;
    };
    let (command, what) = match args.command {
        CtlSub::Event { command } => match command {
            EventSub::Set { name } => (
                CtlCommand::EventSet(name.clone()),
                format!("event set {name}"),
            ),
            EventSub::Clear { name } => (
                CtlCommand::EventClear(name.clone()),
                format!("event clear {name}"),
            ),
            EventSub::Wait { name, timeout } => (
                CtlCommand::EventWait {
                    name: name.clone(),
                    timeout,
                },
                format!("waiting for event `{name}`"),
            ),
            EventSub::IsSet { name } => (
                CtlCommand::EventIsSet(name.clone()),
                format!("event is-set {name}"),
            ),
        },
        CtlSub::Sem { command } => match command {
            SemSub::Acquire { name, timeout } => (
                CtlCommand::SemAcquire {
                    name: name.clone(),
                    timeout,
                },
                format!("waiting for a permit of `{name}`"),
            ),
            SemSub::Release { name } => (
                CtlCommand::SemRelease(name.clone()),
                format!("sem release {name}"),
            ),
            SemSub::Run { name, timeout, cmd } => return sem_run(&socket, &name, timeout, &cmd),
        },
    };
    report(request(&socket, &command), &what)
}

/// `sem run`: hold a permit on one connection, run the command as a child, release,
/// forward its status. The permit belongs to this process: if it dies (killed, timed
/// out), its connection closes and prun gives the permit back at once.
fn sem_run(socket: &Path, name: &str, timeout: Option<Duration>, cmd: &[OsString]) -> i32 {
    let mut session = match Session::open(socket) {
        Ok(s) => s,
        Err(e) => return report(Err(e), &format!("waiting for a permit of `{name}`")),
    };
    let hold = CtlCommand::SemHold {
        name: name.to_string(),
        timeout,
    };
    let code = report(
        session.ask(&hold),
        &format!("waiting for a permit of `{name}`"),
    );
    if code != EXIT_OK {
        return code;
    }
    let status = run_child(cmd);
    let release = CtlCommand::SemRelease(name.to_string());
    // Closing the connection gives the permit back too; the explicit release makes
    // it back before this process exits.
    let _ = report(session.ask(&release), &format!("sem release {name}"));
    status
}

/// Run `cmd` with our stdio; SIGINT/SIGQUIT are ignored here meanwhile (as
/// `system(3)` does) so a terminal ^C stops the command, not the permit bookkeeping.
fn run_child(cmd: &[OsString]) -> i32 {
    let Some((prog, rest)) = cmd.split_first() else {
        eprintln!("prun ctl: sem run needs a command");
        return EXIT_USAGE;
    };
    let mut command = std::process::Command::new(prog);
    command.args(rest);
    // SAFETY: only async-signal-safe calls (signal) between fork and exec.
    unsafe {
        command.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            libc::signal(libc::SIGQUIT, libc::SIG_DFL);
            Ok(())
        });
    }
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("prun ctl: cannot run {}: {e}", prog.to_string_lossy());
            return if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
        }
    };
    // SAFETY: setting a signal disposition to ignore has no memory-safety impact.
    let old = unsafe {
        (
            libc::signal(libc::SIGINT, libc::SIG_IGN),
            libc::signal(libc::SIGQUIT, libc::SIG_IGN),
        )
    };
    let status = child.wait();
    // SAFETY: restoring the dispositions saved above.
    unsafe {
        libc::signal(libc::SIGINT, old.0);
        libc::signal(libc::SIGQUIT, old.1);
    }
    match status {
        Ok(s) => s
            .code()
            .or_else(|| s.signal().map(|n| 128 + n))
            .unwrap_or(1),
        Err(e) => {
            eprintln!("prun ctl: waiting for the command failed: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let cmds = [
            CtlCommand::EventSet("go".into()),
            CtlCommand::EventClear("go".into()),
            CtlCommand::EventIsSet("go".into()),
            CtlCommand::EventWait {
                name: "go".into(),
                timeout: None,
            },
            CtlCommand::EventWait {
                name: "go".into(),
                timeout: Some(Duration::from_millis(250)),
            },
            CtlCommand::SemAcquire {
                name: "lock".into(),
                timeout: Some(Duration::ZERO),
            },
            CtlCommand::SemAcquire {
                name: "lock".into(),
                timeout: None,
            },
            CtlCommand::SemRelease("lock".into()),
        ];
        for c in cmds {
            assert_eq!(
                CtlCommand::parse(&c.to_line()),
                Ok(c.clone()),
                "{}",
                c.to_line()
            );
        }
    }

    #[test]
    fn bad_requests_are_errors_not_panics() {
        for bad in [
            "",
            "EVENT",
            "EVENT SET",
            "SEM FLY x",
            "SEM ACQUIRE x soon",
            "EVENT SET a b",
            "HANGUP",
        ] {
            assert!(CtlCommand::parse(bad).is_err(), "{bad:?} should not parse");
        }
        assert_eq!(
            CtlCommand::parse("event set go"),
            Ok(CtlCommand::EventSet("go".into()))
        );
    }

    #[test]
    fn replies_round_trip_and_stay_on_one_line() {
        for r in [
            CtlReply::Ok,
            CtlReply::True,
            CtlReply::False,
            CtlReply::Timeout,
            CtlReply::Refused("not ours".into()),
            CtlReply::Err("unknown semaphore `x`".into()),
        ] {
            assert_eq!(CtlReply::parse(&r.to_line()), Some(r.clone()));
        }
        assert_eq!(CtlReply::Err("a\nb".into()).to_line(), "ERR a b");
        assert_eq!(CtlReply::parse("WHAT"), None);
    }

    #[test]
    fn durations_accept_bare_seconds_and_units() {
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::{CommandFactory, Parser};
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            ctl: CtlArgs,
        }
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "ctl",
            "sem",
            "run",
            "lock",
            "--timeout",
            "2s",
            "--",
            "sh",
            "-c",
            "x",
        ])
        .expect("parses");
        match cli.ctl.command {
            CtlSub::Sem {
                command: SemSub::Run { name, timeout, cmd },
            } => {
                assert_eq!(name, "lock");
                assert_eq!(timeout, Some(Duration::from_secs(2)));
                assert_eq!(cmd, ["sh", "-c", "x"]);
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn missing_socket_is_unreachable() {
        let args = CtlArgs {
            socket: None,
            command: CtlSub::Event {
                command: EventSub::Set { name: "x".into() },
            },
        };
        assert_eq!(ctl_main(args), EXIT_UNREACHABLE);
        let args = CtlArgs {
            socket: Some("/nonexistent/ctl.sock".into()),
            command: CtlSub::Event {
                command: EventSub::Set { name: "x".into() },
            },
        };
        assert_eq!(ctl_main(args), EXIT_UNREACHABLE);
    }
}
