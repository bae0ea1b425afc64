//! The control socket's server side: accept, authenticate, forward to the supervisor.
//!
//! One accept thread, one small thread per connection (ctl traffic is a few requests
//! per instance; a thread keeps blocking waits simple). Each connection's peer is
//! identified once with `SO_PEERCRED`: a different uid is refused right here; every
//! request is then forwarded as a [`CtlRequest`] carrying the peer pid, and the
//! supervisor decides which instance (if any) it belongs to and answers on the
//! request's own reply channel. While a reply is pending the connection thread
//! watches for the client hanging up and reports it ([`CtlCommand::Hangup`]) so a
//! parked wait is withdrawn instead of granting a permit to nobody.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::{CtlCommand, CtlReply, MAX_LINE};

/// One request from a stage, for the supervisor to answer on `reply`.
#[derive(Debug)]
pub struct CtlRequest {
    /// Connection id: every request of one connection, and its `Hangup`, share it.
    pub conn: u64,
    /// The instance this connection speaks for when it came through that instance's
    /// own socket ([`CtlServer::listen_for`]: a remote instance's forwarded socket,
    /// whose peer is `ssh`, not the instance); None on the shared socket, where the
    /// peer's pid says who asks.
    pub via: Option<u64>,
    pub peer_pid: i32,
    pub peer_uid: u32,
    pub command: CtlCommand,
    /// Exactly one reply is expected (none for `Hangup`); if the send fails the
    /// client is gone.
    pub reply: Sender<CtlReply>,
}

/// The listening control socket and its accept thread.
pub struct CtlServer {
    path: PathBuf,
    requests: Receiver<CtlRequest>,
    stop: Arc<AtomicBool>,
    /// A duplicate of the listening socket, to wake the accept thread on stop.
    listener_fd: Option<OwnedFd>,
    accept: Option<JoinHandle<()>>,
    /// Where requests go (for the instances' own sockets).
    tx: Sender<CtlRequest>,
    /// The instances' own sockets: instance, path, a duplicate of the listener, accept
    /// thread.
    own: Vec<(u64, PathBuf, OwnedFd, JoinHandle<()>)>,
}

impl CtlServer {
    /// Bind `<run_dir>/ctl.sock` and start accepting. `run_dir` must be a directory
    /// that only this user can enter (mode 0700), as made by [`crate::rundir::create`].
    pub fn start(run_dir: &Path) -> std::io::Result<CtlServer> {
        crate::rundir::check(run_dir)?;
        let path = run_dir.join("ctl.sock");
        let listener = UnixListener::bind(&path).map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot bind {}: {e}", path.display()))
        })?;
        let listener_fd = listener.as_fd().try_clone_to_owned()?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let tx2 = tx.clone();
        let accept = std::thread::Builder::new()
            .name("prun-ctl-accept".into())
            .spawn(move || accept_loop(listener, tx2, stop2, None))?;
        Ok(CtlServer {
            path,
            requests: rx,
            stop,
            listener_fd: Some(listener_fd),
            accept: Some(accept),
            tx,
            own: Vec::new(),
        })
    }

    /// Also accept on `path` (in the private run directory), every request of which
    /// speaks for instance `via`: a remote instance's control socket, forwarded by
    /// ssh (the peer is then ssh itself, so credentials cannot tell the instance).
    pub fn listen_for(&mut self, path: &Path, via: u64) -> std::io::Result<()> {
        let listener = UnixListener::bind(path).map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot bind {}: {e}", path.display()))
        })?;
        let fd = listener.as_fd().try_clone_to_owned()?;
        let (tx, stop) = (self.tx.clone(), Arc::clone(&self.stop));
        let accept = std::thread::Builder::new()
            .name(format!("prun-ctl-accept-{via}"))
            .spawn(move || accept_loop(listener, tx, stop, Some(via)))?;
        self.own.push((via, path.to_path_buf(), fd, accept));
        Ok(())
    }

    /// Stop accepting on instance `via`'s own socket and remove it (connections in
    /// progress are served to their end).
    pub fn close_own(&mut self, via: u64) {
        let (mine, rest): (Vec<_>, Vec<_>) = self.own.drain(..).partition(|o| o.0 == via);
        self.own = rest;
        for (_, path, fd, accept) in mine {
            let _ = nix::sys::socket::shutdown(fd.as_raw_fd(), nix::sys::socket::Shutdown::Both);
            let _ = accept.join();
            let _ = std::fs::remove_file(path);
        }
    }

    /// The socket path, to export as `PRUN_CTL`.
    pub fn socket_path(&self) -> &Path {
        &self.path
    }

    /// Requests to answer (add it to the supervisor's `select!`).
    pub fn requests(&self) -> &Receiver<CtlRequest> {
        &self.requests
    }

    /// Stop accepting and remove the socket. Connections in progress get
    /// `ERR prun is shutting down` once their reply channel is dropped.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(fd) = self.listener_fd.take() {
            // shutdown(2) on a listening socket wakes a blocked accept(2) on Linux.
            let _ = nix::sys::socket::shutdown(fd.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        }
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
        for (_, path, fd, accept) in self.own.drain(..) {
            let _ = nix::sys::socket::shutdown(fd.as_raw_fd(), nix::sys::socket::Shutdown::Both);
            let _ = accept.join();
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Drop for CtlServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Most connections served at once (one thread each): a stage that opens connections
/// without end cannot make prun spawn threads without end.
pub const MAX_CONNECTIONS: usize = 256;

/// Connection ids, unique across every socket of the process.
static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

fn accept_loop(
    listener: UnixListener,
    tx: Sender<CtlRequest>,
    stop: Arc<AtomicBool>,
    via: Option<u64>,
) {
    let next_conn = &NEXT_CONN;
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let my_uid = nix::unistd::geteuid().as_raw();
    loop {
        let accepted = listener.accept();
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e)
                if e.raw_os_error() == Some(libc::EMFILE)
                    || e.raw_os_error() == Some(libc::ENFILE) =>
            {
                // Out of descriptors: back off instead of spinning.
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            Err(_) => return,
        };
        let conn = next_conn.fetch_add(1, Ordering::Relaxed);
        if open.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
            let mut stream = stream;
            write_reply(
                &mut stream,
                &CtlReply::Err(format!(
                    "too many open control connections (at most {MAX_CONNECTIONS}); try again"
                )),
            );
            continue;
        }
        open.fetch_add(1, Ordering::Relaxed);
        let tx = tx.clone();
        let count = Arc::clone(&open);
        let spawned = std::thread::Builder::new()
            .name(format!("prun-ctl-{conn}"))
            .spawn(move || {
                serve(stream, conn, via, my_uid, &tx);
                count.fetch_sub(1, Ordering::Relaxed);
            });
        // If no thread can be made the stream is dropped: the client sees EOF.
        if spawned.is_err() {
            open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

fn write_reply(stream: &mut UnixStream, reply: &CtlReply) -> bool {
    let mut line = reply.to_line();
    line.push('\n');
    stream.write_all(line.as_bytes()).is_ok()
}

/// True when the client closed its end (checked while a reply is pending).
fn peer_gone(stream: &UnixStream) -> bool {
    use nix::errno::Errno;
    use nix::sys::socket::{MsgFlags, recv};
    // Peek without waiting: 0 bytes is the peer's orderly close.
    let mut byte = [0u8; 1];
    match recv(
        stream.as_raw_fd(),
        &mut byte,
        MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
    ) {
        Ok(0) => true,
        Ok(_) | Err(Errno::EAGAIN) | Err(Errno::EINTR) => false,
        Err(_) => true,
    }
}

/// Serve one connection; when it ends, tell the supervisor (its `SEM HOLD` permits
/// go back).
fn serve(stream: UnixStream, conn: u64, via: Option<u64>, my_uid: u32, tx: &Sender<CtlRequest>) {
    let peer = serve_requests(stream, conn, via, my_uid, tx);
    if let Some((pid, uid)) = peer {
        let (dead_tx, _) = crossbeam_channel::bounded(1);
        let _ = tx.send(CtlRequest {
            conn,
            via,
            peer_pid: pid,
            peer_uid: uid,
            command: CtlCommand::Hangup { lost: None },
            reply: dead_tx,
        });
    }
}

/// Answer requests until the client leaves. Returns the peer's (pid, uid) when it
/// was let in and the connection ended without a hangup already reported.
fn serve_requests(
    mut stream: UnixStream,
    conn: u64,
    via: Option<u64>,
    my_uid: u32,
    tx: &Sender<CtlRequest>,
) -> Option<(i32, u32)> {
    let cred =
        match nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials) {
            Ok(c) => c,
            Err(e) => {
                write_reply(
                    &mut stream,
                    &CtlReply::Refused(format!("cannot identify the peer: {e}")),
                );
                return None;
            }
        };
    if cred.uid() != my_uid {
        write_reply(
            &mut stream,
            &CtlReply::Refused(format!("uid {} is not prun's user", cred.uid())),
        );
        return None;
    }
    let peer = Some((cred.pid(), cred.uid()));
    let Ok(read_half) = stream.try_clone() else {
        return peer;
    };
    let mut reader = BufReader::new(read_half);
    loop {
        let mut buf = Vec::new();
        match (&mut reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut buf)
        {
            Ok(0) | Err(_) => return peer,
            Ok(_) => {}
        }
        if buf.last() != Some(&b'\n') {
            if buf.len() >= MAX_LINE {
                write_reply(
                    &mut stream,
                    &CtlReply::Err(format!("request longer than {MAX_LINE} bytes")),
                );
            }
            // A line cut by EOF or the size limit: no request follows reliably.
            return peer;
        }
        let command = match std::str::from_utf8(&buf)
            .map_err(|_| "request is not UTF-8".to_string())
            .and_then(|line| CtlCommand::parse(line.trim_end_matches(['\n', '\r'])))
        {
            Ok(c) => c,
            Err(m) => {
                if !write_reply(&mut stream, &CtlReply::Err(m)) {
                    return peer;
                }
                continue;
            }
        };
        let (reply_tx, reply_rx) = crossbeam_channel::bounded(1);
        let request = CtlRequest {
            conn,
            via,
            peer_pid: cred.pid(),
            peer_uid: cred.uid(),
            command,
            reply: reply_tx,
        };
        if tx.send(request).is_err() {
            write_reply(&mut stream, &CtlReply::Err("prun is shutting down".into()));
            return None;
        }
        let hangup = |lost: Option<CtlReply>| {
            let (dead_tx, _) = crossbeam_channel::bounded(1);
            let _ = tx.send(CtlRequest {
                conn,
                via,
                peer_pid: cred.pid(),
                peer_uid: cred.uid(),
                command: CtlCommand::Hangup { lost },
                reply: dead_tx,
            });
        };
        let reply = loop {
            match reply_rx.recv_timeout(Duration::from_millis(100)) {
                Ok(r) => break r,
                Err(RecvTimeoutError::Disconnected) => {
                    break CtlReply::Err("prun is shutting down".into());
                }
                Err(RecvTimeoutError::Timeout) => {
                    if peer_gone(&stream) {
                        // Drop the receiver first: a grant racing with this hangup
                        // then fails to send and the broker gives the permit back.
                        drop(reply_rx);
                        hangup(None);
                        return None;
                    }
                }
            }
        };
        // The client may have left after the last check: a reply it can never read
        // is handed back rather than written into a dead socket.
        if peer_gone(&stream) {
            hangup(Some(reply));
            return None;
        }
        if !write_reply(&mut stream, &reply) {
            return peer;
        }
    }
}
