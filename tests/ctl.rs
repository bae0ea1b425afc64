//! End-to-end test of `prun ctl`: a real control socket, real `sh` stages in their own
//! process groups calling the real client, and this test playing the supervisor
//! (owner lookup by process group, a `Coord`, a `CtlBroker`, instance ends).
//!
//! The client is this very test binary re-executed: when `PRUN_TEST_CTL_ARGS` is set,
//! the `ctl_client_entry` test runs `ctl_main` with those arguments and exits.

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use crossbeam_channel::{Receiver, Sender, select};
use prun::coord::{Coord, HolderId};
use prun::ctl::{CtlArgs, CtlBroker, CtlServer, create_run_dir, ctl_main, owner_of};
use prun::plan::{EventPlan, SemaphorePlan};

const ARGS_ENV: &str = "PRUN_TEST_CTL_ARGS";
const SEP: char = '\u{1f}';

#[derive(Parser)]
struct ClientCli {
    #[command(flatten)]
    ctl: CtlArgs,
}

/// Not a test: the entry point of the re-executed client.
#[test]
fn ctl_client_entry() {
    let Ok(joined) = std::env::var(ARGS_ENV) else {
        return;
    };
    let args = std::iter::once("ctl".to_string()).chain(joined.split(SEP).map(String::from));
    let code = match ClientCli::try_parse_from(args) {
        Ok(cli) => ctl_main(cli.ctl),
        Err(e) => {
            let _ = e.print();
            2
        }
    };
    std::process::exit(code);
}

/// Write `$dir/ctl`, a wrapper that re-executes this binary as the client.
fn write_wrapper(dir: &Path) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let path = dir.join("ctl");
    let script = format!(
        "#!/bin/sh\nIFS=$(printf '\\037')\n{ARGS_ENV}=\"$*\" exec '{}' --exact ctl_client_entry --nocapture --test-threads=1 >/dev/null\n",
        exe.display()
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path
}

enum Note {
    Ended(HolderId, i32),
}

/// The pretend supervisor: instances by process group, one Coord, one broker.
struct Harness {
    _server_dir: tempfile::TempDir,
    run_dir: PathBuf,
    work: tempfile::TempDir,
    wrapper: PathBuf,
    socket: PathBuf,
    /// pgid → holder; locked while spawning so a request is never resolved before
    /// its instance is registered (as in the real supervisor's single loop).
    groups: Arc<Mutex<HashMap<i32, HolderId>>>,
    notes: Sender<Note>,
    ended: Arc<Mutex<HashMap<HolderId, i32>>>,
    next: HolderId,
    sup: Option<std::thread::JoinHandle<()>>,
    stop: Sender<()>,
}

impl Harness {
    fn new(sems: &[(&str, u32)], events: &[&str]) -> Harness {
        // Keep the socket path short (sun_path is 108 bytes).
        let server_dir = tempfile::Builder::new()
            .prefix("prunt")
            .tempdir_in("/tmp")
            .unwrap();
        let run_dir = server_dir.path().join("run");
        std::fs::DirBuilder::new().create(&run_dir).unwrap();
        std::fs::set_permissions(
            &run_dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        let server = CtlServer::start(&run_dir).expect("server starts");
        let socket = server.socket_path().to_path_buf();
        let work = tempfile::tempdir().unwrap();
        let wrapper = write_wrapper(work.path());
        let sems: Vec<SemaphorePlan> = sems
            .iter()
            .map(|(n, c)| SemaphorePlan {
                name: n.to_string(),
                count: *c,
            })
            .collect();
        let evs: Vec<EventPlan> = events
            .iter()
            .map(|n| EventPlan {
                name: n.to_string(),
                initially_set: false,
            })
            .collect();
        let groups: Arc<Mutex<HashMap<i32, HolderId>>> = Arc::default();
        let ended: Arc<Mutex<HashMap<HolderId, i32>>> = Arc::default();
        let (notes_tx, notes_rx) = crossbeam_channel::unbounded();
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
        let g2 = Arc::clone(&groups);
        let e2 = Arc::clone(&ended);
        let sup = std::thread::spawn(move || {
            supervise(server, Coord::new(&sems, &evs), g2, e2, notes_rx, stop_rx)
        });
        Harness {
            _server_dir: server_dir,
            run_dir,
            work,
            wrapper,
            socket,
            groups,
            notes: notes_tx,
            ended,
            next: 1,
            sup: Some(sup),
            stop: stop_tx,
        }
    }

    fn dir(&self) -> &Path {
        self.work.path()
    }

    /// Start an "instance": `sh -c script` in its own process group.
    fn spawn(&mut self, script: &str) -> (HolderId, i32) {
        let holder = self.next;
        self.next += 1;
        let mut groups = self.groups.lock().unwrap();
        let child: Child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(self.work.path())
            .env("PRUN_CTL", &self.socket)
            .env("CTL", &self.wrapper)
            .env("D", self.work.path())
            .process_group(0)
            .spawn()
            .expect("spawn sh");
        let pid = child.id() as i32;
        groups.insert(pid, holder);
        drop(groups);
        let notes = self.notes.clone();
        std::thread::spawn(move || {
            let mut child = child;
            let code = child.wait().map(|s| s.code().unwrap_or(-1)).unwrap_or(-1);
            let _ = notes.send(Note::Ended(holder, code));
        });
        (holder, pid)
    }

    /// Wait (generously) for an instance to end; returns its exit code.
    fn wait(&self, holder: HolderId) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(&code) = self.ended.lock().unwrap().get(&holder) {
                return code;
            }
            assert!(Instant::now() < deadline, "instance {holder} did not end");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Run the client from outside any instance (this test process is not registered).
    fn outsider(&self, args: &[&str]) -> std::process::Output {
        Command::new(&self.wrapper)
            .args(args)
            .env("PRUN_CTL", &self.socket)
            .process_group(0)
            .output()
            .unwrap()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        for (&pgid, _) in self.groups.lock().unwrap().iter() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::SIGKILL,
            );
        }
        let _ = self.stop.send(());
        if let Some(t) = self.sup.take() {
            let _ = t.join();
        }
        let _ = &self.run_dir;
    }
}

fn supervise(
    mut server: CtlServer,
    mut coord: Coord,
    groups: Arc<Mutex<HashMap<i32, HolderId>>>,
    ended: Arc<Mutex<HashMap<HolderId, i32>>>,
    notes: Receiver<Note>,
    stop: Receiver<()>,
) {
    let mut broker = CtlBroker::new();
    let requests = server.requests().clone();
    loop {
        let timeout = broker
            .next_deadline()
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(3600));
        select! {
            recv(requests) -> req => {
                let Ok(req) = req else { break };
                let holder = {
                    let g = groups.lock().unwrap();
                    let alive = |h: &HolderId| !ended.lock().unwrap().contains_key(h);
                    owner_of(req.peer_pid, |pgid| g.get(&pgid).copied().filter(alive))
                };
                broker.handle(&mut coord, req, holder, Instant::now());
            }
            recv(notes) -> note => {
                let Ok(Note::Ended(h, code)) = note else { break };
                broker.on_instance_end(&mut coord, h);
                ended.lock().unwrap().insert(h, code);
            }
            recv(stop) -> _ => break,
            default(timeout) => {}
        }
        broker.expire(&mut coord, Instant::now());
    }
    server.stop();
}

fn wait_for_file(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn ticket_sale_with_one_lock_sells_each_ticket_once() {
    let mut h = Harness::new(&[("lock", 1)], &[]);
    std::fs::write(h.dir().join("sold"), "0\n").unwrap();
    // Read, sleep, write: without the lock, buyers would overwrite each other.
    let buyer = r#"$CTL sem run lock -- sh -c '
        mkdir "$D/inside" 2>/dev/null || echo overlap >> "$D/overlaps"
        n=$(cat "$D/sold"); sleep 0.02; echo $((n + 1)) > "$D/sold"
        rmdir "$D/inside"'"#;
    let buyers: Vec<HolderId> = (0..10).map(|_| h.spawn(buyer).0).collect();
    for b in buyers {
        assert_eq!(h.wait(b), 0, "buyer {b} failed");
    }
    assert_eq!(
        std::fs::read_to_string(h.dir().join("sold"))
            .unwrap()
            .trim(),
        "10"
    );
    assert!(
        !h.dir().join("overlaps").exists(),
        "two buyers were inside at once"
    );
}

#[test]
fn counting_semaphore_never_exceeds_its_count() {
    let mut h = Harness::new(&[("pool", 2)], &[]);
    let worker = r#"$CTL sem run pool -- sh -c '
        touch "$D/in.$$"; ls "$D" | grep -c "^in\." >> "$D/seen"; sleep 0.1; rm "$D/in.$$"'"#;
    let ws: Vec<HolderId> = (0..6).map(|_| h.spawn(worker).0).collect();
    for w in ws {
        assert_eq!(h.wait(w), 0);
    }
    let seen = std::fs::read_to_string(h.dir().join("seen")).unwrap();
    let counts: Vec<u32> = seen.lines().map(|l| l.trim().parse().unwrap()).collect();
    assert_eq!(counts.len(), 6);
    assert!(
        counts.iter().all(|&c| (1..=2).contains(&c)),
        "concurrency seen: {counts:?}"
    );
}

#[test]
fn a_holder_that_dies_releases_its_permit() {
    let mut h = Harness::new(&[("lock", 1)], &[]);
    // A takes the lock and is killed without releasing it.
    let (a, a_pid) =
        h.spawn(r#"$CTL sem acquire lock && touch "$D/a_has" && sleep 0.3 && kill -9 $$"#);
    wait_for_file(&h.dir().join("a_has"));
    let b_script = format!(
        r#"$CTL sem acquire lock --timeout 20s || exit 7
           kill -0 {a_pid} 2>/dev/null && exit 9
           exit 0"#
    );
    let (b, _) = h.spawn(&b_script);
    assert_eq!(h.wait(a), -1, "A was killed");
    assert_eq!(h.wait(b), 0, "B got the lock only after A ended");
}

#[test]
fn timeouts_exit_124_and_leave_no_request_behind() {
    let mut h = Harness::new(&[("lock", 1)], &["never"]);
    let (a, _) = h.spawn(r#"$CTL sem acquire lock && touch "$D/a_has" && while [ ! -e "$D/go" ]; do sleep 0.02; done; $CTL sem release lock"#);
    wait_for_file(&h.dir().join("a_has"));
    let (b, _) = h.spawn(r#"$CTL sem acquire lock --timeout 200ms; echo $? > "$D/b_code"; $CTL event wait never --timeout 0.1; echo $? >> "$D/b_code""#);
    assert_eq!(h.wait(b), 0);
    assert_eq!(
        std::fs::read_to_string(h.dir().join("b_code")).unwrap(),
        "124\n124\n"
    );
    std::fs::write(h.dir().join("go"), "").unwrap();
    assert_eq!(h.wait(a), 0);
    // The timed-out request did not steal the permit: C gets it at once.
    let (c, _) = h.spawn("$CTL sem acquire lock --timeout 0");
    assert_eq!(h.wait(c), 0);
}

#[test]
fn events_set_wait_and_is_set() {
    let mut h = Harness::new(&[], &["go", "other"]);
    let (w, _) = h.spawn(r#"$CTL event wait go --timeout 20s && touch "$D/woke""#);
    let (s, _) =
        h.spawn(r#"sleep 0.2; $CTL event is-set go; echo $? > "$D/before"; $CTL event set go"#);
    assert_eq!(h.wait(s), 0);
    assert_eq!(h.wait(w), 0);
    assert!(h.dir().join("woke").exists());
    assert_eq!(
        std::fs::read_to_string(h.dir().join("before")).unwrap(),
        "1\n"
    );
    let (c, _) = h.spawn(r#"$CTL event is-set go && ! $CTL event is-set other && $CTL event clear go && ! $CTL event is-set go"#);
    assert_eq!(h.wait(c), 0);
    // Errors: unknown names and releasing what is not held exit 3.
    let (e, _) =
        h.spawn(r#"$CTL event set nope; a=$?; $CTL sem release nope; echo "$a $?" > "$D/errs""#);
    assert_eq!(h.wait(e), 0);
    assert_eq!(
        std::fs::read_to_string(h.dir().join("errs")).unwrap(),
        "3 3\n"
    );
}

#[test]
fn outsiders_are_refused() {
    let h = Harness::new(&[("lock", 1)], &["go"]);
    let out = h.outsider(&["event", "set", "go"]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("not part of this pipeline"));
    let out = h.outsider(&["sem", "acquire", "lock"]);
    assert_eq!(out.status.code(), Some(4));
}

#[test]
fn a_descendant_in_another_group_still_belongs_to_its_instance() {
    let mut h = Harness::new(&[("lock", 1)], &["go"]);
    // setsid -w: a new session and group, but still a descendant of the instance.
    let (a, _) = h.spawn("setsid -w sh -c '$CTL event set go'");
    assert_eq!(h.wait(a), 0);
    let (b, _) = h.spawn("$CTL event is-set go");
    assert_eq!(h.wait(b), 0);
}

#[test]
fn a_client_that_gives_up_withdraws_its_wait() {
    let mut h = Harness::new(&[("lock", 1)], &[]);
    let (a, _) = h.spawn(r#"$CTL sem acquire lock && touch "$D/a_has" && while [ ! -e "$D/b_done" ]; do sleep 0.02; done; $CTL sem release lock"#);
    wait_for_file(&h.dir().join("a_has"));
    // B's client is killed while it waits, but B's instance lives on.
    let (b, _) = h.spawn(
        r#"$CTL sem acquire lock & p=$!; sleep 0.5; kill $p; wait $p; touch "$D/b_done"; sleep 5"#,
    );
    assert_eq!(h.wait(a), 0);
    // If B's abandoned request had been granted, C would time out.
    let (c, _) = h.spawn("$CTL sem acquire lock --timeout 3s");
    assert_eq!(h.wait(c), 0, "the abandoned wait kept the permit");
    let _ = b;
}

#[test]
fn sem_run_forwards_the_exit_status_and_releases() {
    let mut h = Harness::new(&[("lock", 1)], &[]);
    let (a, _) = h.spawn(r#"$CTL sem run lock -- sh -c 'exit 42'; echo $? > "$D/code"; $CTL sem run lock -- /nonexistent/cmd; echo $? >> "$D/code"; $CTL sem acquire lock --timeout 0"#);
    assert_eq!(h.wait(a), 0, "the permit was released after each run");
    assert_eq!(
        std::fs::read_to_string(h.dir().join("code")).unwrap(),
        "42\n127\n"
    );
}

#[test]
fn run_dir_is_private() {
    let dir = create_run_dir().unwrap();
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&dir).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o700);
    let server = CtlServer::start(&dir).unwrap();
    assert!(server.socket_path().starts_with(&dir));
    drop(server);
    assert!(!dir.join("ctl.sock").exists(), "socket removed on stop");
    std::fs::remove_dir(&dir).unwrap();
    // A world-readable directory is rejected.
    let open = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        open.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    assert!(CtlServer::start(open.path()).is_err());
}
