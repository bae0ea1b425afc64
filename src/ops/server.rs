//! The ops socket of a running pipeline (SPEC 6.1): `PID.sock` in the user's registry,
//! separate from the stages' control socket. Only peers of the same uid are served
//! (checked with the peer's credentials; the registry directory already keeps others
//! out). One request line (JSON) per connection; answers are JSON lines.
//!
//! Requests: `{"cmd": "status"}`; `{"cmd": "logs", "select": [..], "n": N, "follow":
//! bool}`; `{"cmd": "stop"|"restart", "stages": [..]}`; `{"cmd": "signal", "signal":
//! N, "stages": [..]}`. Watching reads the reporter's [`Live`] view; steering goes to
//! the supervisor as a message ([`SteerRequest`]) and this thread waits for the answer.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crossbeam_channel::Sender;
use serde_json::{Value, json};

use super::registry::{self, Entry};
use crate::report::Live;
use crate::runtime::{Steer, SteerRequest};

/// A run of this process is registered.
static IN_USE: AtomicBool = AtomicBool::new(false);

/// Connections served at once; more are told to come back.
const MAX_CLIENTS: usize = 32;
/// A request line longer than this is refused.
const MAX_REQUEST: u64 = 64 * 1024;

pub struct OpsServer {
    dir: PathBuf,
    entry: Entry,
    stop: Arc<AtomicBool>,
}

struct Ctx {
    entry: Entry,
    live: Live,
    steer: Sender<SteerRequest>,
    clients: AtomicUsize,
}

impl OpsServer {
    /// Bind the socket, register the run, serve until [`OpsServer::finish`]. None when
    /// another run of this process is registered (runs inside one process, as in tests,
    /// share its pid: the first one is the one `prun ps` sees).
    pub fn start(
        entry: Entry,
        live: Live,
        steer: Sender<SteerRequest>,
    ) -> std::io::Result<Option<OpsServer>> {
        if IN_USE.swap(true, Ordering::SeqCst) {
            return Ok(None);
        }
        let started = Self::bind(entry, live, steer);
        if !matches!(started, Ok(Some(_))) {
            IN_USE.store(false, Ordering::SeqCst);
        }
        started
    }

    fn bind(
        entry: Entry,
        live: Live,
        steer: Sender<SteerRequest>,
    ) -> std::io::Result<Option<OpsServer>> {
        let dir = registry::dir()?;
        let path = registry::socket_path(&dir, entry.pid);
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        registry::register(&dir, &entry)?;
        let stop = Arc::new(AtomicBool::new(false));
        let ctx = Arc::new(Ctx {
            entry: entry.clone(),
            live,
            steer,
            clients: AtomicUsize::new(0),
        });
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("prun-ops".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if flag.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    if !same_user(&conn) {
                        continue;
                    }
                    if ctx.clients.fetch_add(1, Ordering::SeqCst) >= MAX_CLIENTS {
                        ctx.clients.fetch_sub(1, Ordering::SeqCst);
                        let _ = reply(&conn, &json!({"error": "busy: too many clients"}));
                        continue;
                    }
                    let ctx = ctx.clone();
                    let spawned = std::thread::Builder::new()
                        .name("prun-ops-client".into())
                        .spawn(move || {
                            serve(&ctx, conn);
                            ctx.clients.fetch_sub(1, Ordering::SeqCst);
                        });
                    if spawned.is_err() {
                        // The closure (and its count) is gone with the failed spawn.
                    }
                }
            })?;
        Ok(Some(OpsServer { dir, entry, stop }))
    }

    /// The run ended: unregister and stop accepting.
    pub fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        let path = registry::socket_path(&self.dir, self.entry.pid);
        // Wake the accept loop so it sees the flag.
        let _ = UnixStream::connect(&path);
        registry::unregister(&self.dir, self.entry.pid);
        IN_USE.store(false, Ordering::SeqCst);
    }
}

fn same_user(conn: &UnixStream) -> bool {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    getsockopt(conn, PeerCredentials).is_ok_and(|c| c.uid() == nix::unistd::geteuid().as_raw())
}

fn reply(mut conn: &UnixStream, v: &Value) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(v).map_err(std::io::Error::other)?;
    line.push(b'\n');
    conn.write_all(&line)
}

fn serve(ctx: &Ctx, conn: UnixStream) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut line = String::new();
    let mut reader = BufReader::new((&conn).take(MAX_REQUEST));
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let req: Value = match serde_json::from_str(&line) {
        Ok(v) => v,
        Err(e) => {
            let _ = reply(&conn, &json!({"error": format!("bad request: {e}")}));
            return;
        }
    };
    let strings = |key: &str| -> Vec<String> {
        req[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let result = match req["cmd"].as_str().unwrap_or("") {
        "status" => {
            let mut status = ctx.live.lock().status();
            status["pid"] = json!(ctx.entry.pid);
            status["file"] = json!(ctx.entry.file);
            status["name"] = json!(ctx.entry.name);
            reply(&conn, &status)
        }
        "logs" => logs(ctx, &conn, strings("select"), &req),
        "stop" => {
            let stages = strings("stages");
            steer(
                ctx,
                &conn,
                if stages.is_empty() {
                    Steer::StopAll
                } else {
                    Steer::Stop(stages)
                },
            )
        }
        "restart" => steer(ctx, &conn, Steer::Restart(strings("stages"))),
        "signal" => match req["signal"].as_i64() {
            Some(sig) => steer(ctx, &conn, Steer::Signal(sig as i32, strings("stages"))),
            None => reply(&conn, &json!({"error": "no signal"})),
        },
        other => reply(
            &conn,
            &json!({"error": format!("unknown request `{other}`")}),
        ),
    };
    let _ = result;
}

fn logs(ctx: &Ctx, conn: &UnixStream, select: Vec<String>, req: &Value) -> std::io::Result<()> {
    let n = req["n"].as_u64().unwrap_or(10) as usize;
    let follow = req["follow"].as_bool().unwrap_or(false);
    // The tail and the subscription under one lock: no line is missed or doubled.
    let (tail, rx) = {
        let mut st = ctx.live.lock();
        if let Some(unknown) = select.iter().find(|s| !st.knows(s)) {
            return reply(
                conn,
                &json!({"error": format!("no stage or instance named `{unknown}`")}),
            );
        }
        let tail = st.tail(&select, n);
        let rx = follow.then(|| st.follow(select.clone()));
        (tail, rx)
    };
    for (name, line) in tail {
        reply(conn, &json!({"instance": name, "line": line}))?;
    }
    if let Some(rx) = rx {
        for (name, line) in rx {
            reply(conn, &json!({"instance": name, "line": line}))?;
        }
    }
    Ok(())
}

fn steer(ctx: &Ctx, conn: &UnixStream, steer: Steer) -> std::io::Result<()> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    if ctx.steer.send(SteerRequest { steer, reply: tx }).is_err() {
        return reply(conn, &json!({"error": "the run is ending"}));
    }
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(msg)) => reply(conn, &json!({"ok": msg})),
        Ok(Err(e)) => reply(conn, &json!({"error": e})),
        Err(_) => reply(conn, &json!({"error": "no answer from the run"})),
    }
}
