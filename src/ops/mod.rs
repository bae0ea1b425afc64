//! Control from another terminal (SPEC 6.1): `prun ps | status | logs | stop | restart
//! | signal`, for the user who started the pipeline and nobody else.
//!
//! Each `prun run` registers itself in a per-user registry directory
//! ([`registry`]: 0700, checked) and serves an ops socket there ([`server`], separate
//! from the stages' control socket, peers of the same uid only). These commands find a
//! run by pipeline name or prun's pid (optional when exactly one runs), send it one
//! JSON request, and print the answer for a person, or as JSON with `--json`.
//!
//! Exit codes: 0 done, 1 the run refused (no such stage, shutting down), 2 usage,
//! 3 no such pipeline (none of this user runs, or the target is ambiguous).

pub mod registry;
pub mod server;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use registry::Entry;

pub const OK: i32 = 0;
pub const REFUSED: i32 = 1;
pub const USAGE: i32 = 2;
pub const NOT_FOUND: i32 = 3;

#[derive(Subcommand, Debug)]
pub enum OpsCommand {
    /// The running pipelines of this user
    Ps(PsArgs),
    /// Every instance and queue of a running pipeline
    Status(StatusArgs),
    /// The recent log lines of a running pipeline (`-f` to follow)
    Logs(LogsArgs),
    /// Stop a running pipeline (as SIGINT: drain order, exit 130), or some stages
    Stop(StageArgs),
    /// Restart stages of a running pipeline
    Restart(StageArgs),
    /// Send a signal to stages of a running pipeline: [TARGET] SIGNAL STAGE...
    Signal(StageArgs),
}

#[derive(Args, Debug)]
pub struct PsArgs {
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Pipeline name or prun's pid (optional when one runs)
    pub target: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// [TARGET] [STAGE|INSTANCE...]
    pub args: Vec<String>,
    /// Keep printing new lines until the run ends
    #[arg(short, long)]
    pub follow: bool,
    /// Lines per instance
    #[arg(short = 'n', long = "lines", default_value_t = 10)]
    pub lines: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct StageArgs {
    /// [TARGET] [SIGNAL] STAGE...
    pub args: Vec<String>,
    #[arg(long)]
    pub json: bool,
}

/// The names of the subcommands (for `prun FILE` detection).
pub const SUBCOMMANDS: &[&str] = &["ps", "status", "logs", "stop", "restart", "signal"];

pub fn main(cmd: OpsCommand) -> i32 {
    match run(cmd) {
        Ok(code) => code,
        Err((code, msg)) => {
            eprintln!("prun: {msg}");
            code
        }
    }
}

type Failed = (i32, String);

fn run(cmd: OpsCommand) -> Result<i32, Failed> {
    let dir = registry::dir().map_err(|e| (NOT_FOUND, format!("no registry: {e}")))?;
    let entries = registry::list(&dir);
    match cmd {
        OpsCommand::Ps(a) => ps(&dir, &entries, a.json),
        OpsCommand::Status(a) => {
            let args: Vec<String> = a.target.into_iter().collect();
            let (e, rest) = target(&entries, &args)?;
            if !rest.is_empty() {
                return Err((USAGE, format!("no pipeline `{}` runs", rest[0])));
            }
            let status = request(&dir, e, &json!({"cmd": "status"}))?;
            if a.json {
                println!("{status}");
            } else {
                print!("{}", format_status(&status));
            }
            Ok(OK)
        }
        OpsCommand::Logs(a) => {
            let (e, select) = target(&entries, &a.args)?;
            let req = json!({"cmd": "logs", "select": select, "n": a.lines, "follow": a.follow});
            stream(&dir, e, &req, a.json)
        }
        OpsCommand::Stop(a) => {
            let (e, stages) = target(&entries, &a.args)?;
            steer(&dir, e, &json!({"cmd": "stop", "stages": stages}), a.json)
        }
        OpsCommand::Restart(a) => {
            let (e, stages) = target(&entries, &a.args)?;
            if stages.is_empty() {
                return Err((USAGE, "restart what? name one or more stages".into()));
            }
            steer(
                &dir,
                e,
                &json!({"cmd": "restart", "stages": stages}),
                a.json,
            )
        }
        OpsCommand::Signal(a) => {
            let (e, rest) = target(&entries, &a.args)?;
            let Some((sig, stages)) = rest.split_first() else {
                return Err((USAGE, "usage: prun signal [TARGET] SIGNAL STAGE...".into()));
            };
            let sig = parse_signal(sig).ok_or((USAGE, format!("unknown signal `{sig}`")))?;
            if stages.is_empty() {
                return Err((USAGE, "signal which stages? name one or more".into()));
            }
            steer(
                &dir,
                e,
                &json!({"cmd": "signal", "signal": sig, "stages": stages}),
                a.json,
            )
        }
    }
}

/// `HUP`, `SIGHUP` or `1`.
fn parse_signal(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n).ok().map(|s| s as i32);
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .ok()
        .map(|s| s as i32)
}

/// The run named by the first argument (name or pid), or the only one running; and
/// the arguments left.
fn target<'a>(entries: &'a [Entry], args: &[String]) -> Result<(&'a Entry, Vec<String>), Failed> {
    if let Some(first) = args.first() {
        let by: Vec<&Entry> = entries
            .iter()
            .filter(|e| e.name == *first || e.pid.to_string() == *first)
            .collect();
        match by.len() {
            1 => return Ok((by[0], args[1..].to_vec())),
            0 => {}
            _ => {
                return Err((
                    NOT_FOUND,
                    format!(
                        "several pipelines are named `{first}`: {}; name one by its pid",
                        list(&by)
                    ),
                ));
            }
        }
    }
    match entries {
        [] => Err((NOT_FOUND, "no pipeline of this user is running".into())),
        [one] => Ok((one, args.to_vec())),
        _ => Err((
            NOT_FOUND,
            format!(
                "several pipelines are running: {}; name one (name or pid)",
                list(&entries.iter().collect::<Vec<_>>())
            ),
        )),
    }
}

fn list(entries: &[&Entry]) -> String {
    entries
        .iter()
        .map(|e| format!("{} (pid {})", e.name, e.pid))
        .collect::<Vec<_>>()
        .join(", ")
}

fn connect(dir: &std::path::Path, e: &Entry) -> Result<UnixStream, Failed> {
    UnixStream::connect(registry::socket_path(dir, e.pid)).map_err(|err| {
        (
            NOT_FOUND,
            format!("cannot reach {} (pid {}): {err}", e.name, e.pid),
        )
    })
}

fn send(conn: &mut UnixStream, req: &Value) -> Result<(), Failed> {
    let mut line = serde_json::to_vec(req).map_err(|e| (USAGE, e.to_string()))?;
    line.push(b'\n');
    conn.write_all(&line)
        .map_err(|e| (NOT_FOUND, format!("the run went away: {e}")))
}

/// One request, one JSON answer.
fn request(dir: &std::path::Path, e: &Entry, req: &Value) -> Result<Value, Failed> {
    let mut conn = connect(dir, e)?;
    let _ = conn.set_read_timeout(Some(Duration::from_secs(15)));
    send(&mut conn, req)?;
    let mut line = String::new();
    BufReader::new(&conn)
        .read_line(&mut line)
        .map_err(|err| (NOT_FOUND, format!("no answer from {}: {err}", e.name)))?;
    let v: Value = serde_json::from_str(&line).map_err(|_| {
        (
            NOT_FOUND,
            format!("no answer from {} (pid {})", e.name, e.pid),
        )
    })?;
    if let Some(err) = v["error"].as_str() {
        return Err((REFUSED, err.to_string()));
    }
    Ok(v)
}

fn steer(dir: &std::path::Path, e: &Entry, req: &Value, as_json: bool) -> Result<i32, Failed> {
    let v = request(dir, e, req)?;
    if as_json {
        println!("{v}");
    } else {
        println!("{}: {}", e.name, v["ok"].as_str().unwrap_or("done"));
    }
    Ok(OK)
}

fn stream(dir: &std::path::Path, e: &Entry, req: &Value, as_json: bool) -> Result<i32, Failed> {
    let mut conn = connect(dir, e)?;
    send(&mut conn, req)?;
    let stdout = std::io::stdout();
    for line in BufReader::new(&conn).lines() {
        let Ok(line) = line else { break };
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if let Some(err) = v["error"].as_str() {
            return Err((REFUSED, err.to_string()));
        }
        let mut out = stdout.lock();
        let written = if as_json {
            writeln!(out, "{v}")
        } else {
            writeln!(
                out,
                "{} │ {}",
                v["instance"].as_str().unwrap_or("?"),
                v["line"].as_str().unwrap_or("")
            )
        };
        if written.and_then(|()| out.flush()).is_err() {
            break;
        }
    }
    Ok(OK)
}

fn ps(dir: &std::path::Path, entries: &[Entry], as_json: bool) -> Result<i32, Failed> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut rows = Vec::new();
    for e in entries {
        let counts = request(dir, e, &json!({"cmd": "status"}))
            .map(|s| s["counts"].clone())
            .unwrap_or(Value::Null);
        rows.push(json!({
            "name": e.name, "pid": e.pid, "file": e.file,
            "age_ms": now.saturating_sub(e.started_unix_ms), "instances": counts,
        }));
    }
    if as_json {
        println!("{}", Value::Array(rows));
        return Ok(OK);
    }
    if rows.is_empty() {
        eprintln!("no pipeline of this user is running");
        return Ok(OK);
    }
    let mut table = vec![
        ["NAME", "PID", "AGE", "INSTANCES", "FILE"]
            .map(String::from)
            .to_vec(),
    ];
    for r in &rows {
        table.push(vec![
            r["name"].as_str().unwrap_or("").to_string(),
            r["pid"].to_string(),
            age(r["age_ms"].as_u64().unwrap_or(0)),
            counts_text(&r["instances"]),
            r["file"].as_str().unwrap_or("").to_string(),
        ]);
    }
    print!("{}", columns(&table));
    Ok(OK)
}

fn counts_text(counts: &Value) -> String {
    counts
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{v} {}", k.replace('_', " ")))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_else(|| "-".into())
}

fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s / 60) % 60),
    }
}

fn columns(rows: &[Vec<String>]) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c > 0 {
                line.push_str("  ");
            }
            line.push_str(&format!("{cell:<w$}", w = widths[c]));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `prun status` for a person: a header, the instances, the queues.
pub fn format_status(s: &Value) -> String {
    let mut out = format!(
        "{} (pid {}) · {} · {}\n",
        s["name"].as_str().unwrap_or("?"),
        s["pid"],
        age(s["age_ms"].as_u64().unwrap_or(0)),
        counts_text(&s["counts"]),
    );
    let dash = |v: &Value| {
        if v.is_null() {
            "-".to_string()
        } else {
            v.to_string()
        }
    };
    let mut table = vec![
        ["INSTANCE", "STATE", "PID", "RESTARTS", "IN", "OUT"]
            .map(String::from)
            .to_vec(),
    ];
    for i in s["instances"].as_array().into_iter().flatten() {
        table.push(vec![
            i["name"].as_str().unwrap_or("").to_string(),
            i["detail"].as_str().unwrap_or("").to_string(),
            dash(&i["pid"]),
            dash(&i["restarts"]),
            dash(&i["records_in"]),
            dash(&i["records_out"]),
        ]);
    }
    out.push_str(&columns(&table));
    let queues = s["queues"].as_array().cloned().unwrap_or_default();
    if !queues.is_empty() {
        let mut table = vec![
            ["QUEUE", "RECORDS", "RATE/S", "DEPTH", "CAPACITY"]
                .map(String::from)
                .to_vec(),
        ];
        for q in &queues {
            table.push(vec![
                q["name"].as_str().unwrap_or("").to_string(),
                dash(&q["records"]),
                dash(&q["rate"]),
                dash(&q["depth"]),
                dash(&q["capacity"]),
            ]);
        }
        out.push('\n');
        out.push_str(&columns(&table));
    }
    out
}
