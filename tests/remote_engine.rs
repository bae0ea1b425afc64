//! The remote side on the real test hosts (scripts/testhosts.sh), below the runtime: the
//! wrapper run through `ssh` and `srun` exactly as prun sends it, its reports taken out
//! of the stderr stream, outcomes classified. A missing test host fails these tests with
//! a hint (see tests/remote_util).

mod remote_util;

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prun::remote::slurm::{self, SlurmTarget};
use prun::remote::ssh::SshTarget;
use prun::remote::{self, ClientExit, Demux, Group, Outcome, RUN_DIR_MARK, RunSpec, Seen, Started};
use remote_util::{Hosts, hosts, mark, wait_for};

const LONG: Duration = Duration::from_secs(30);

struct Remote {
    child: Child,
    started: mpsc::Receiver<Started>,
    demux: JoinHandle<(Seen, Vec<u8>)>,
    nonce: String,
}

fn spec(argv: &[&str], env: &[&str]) -> RunSpec {
    RunSpec {
        nonce: remote::random_token(),
        run_id: remote::random_token(),
        group: Group::Own,
        death_signal: "TERM".into(),
        grace_ms: 2000,
        cwd: String::new(),
        ctl_client: false,
        env: env
            .iter()
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect(),
        argv: argv.iter().map(|s| s.to_string()).collect(),
    }
}

fn launch(argv: Vec<String>, nonce: &str, stdin: Stdio, slurm_conf: Option<&Hosts>) -> Remote {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(h) = slurm_conf {
        cmd.env("SLURM_CONF", h.slurm_conf());
    }
    let mut child = cmd.spawn().expect("spawn the engine client");
    let mut err = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let d = Demux::new(nonce);
    let demux = std::thread::spawn(move || {
        let mut passed = Vec::new();
        let seen = d.run(&mut err, &mut passed, |r| {
            if let remote::Report::Started(s) = r {
                let _ = tx.send(s.clone());
            }
        });
        (seen, passed)
    });
    Remote {
        child,
        started: rx,
        demux,
        nonce: nonce.to_string(),
    }
}

impl Remote {
    fn wait_started(&self) -> Started {
        self.started.recv_timeout(LONG).expect("the start line")
    }

    /// Read stdout to its end, wait for the client; classify.
    fn finish(mut self, engine: &str) -> (Outcome, String, Vec<u8>) {
        let mut out = Vec::new();
        if let Some(mut o) = self.child.stdout.take() {
            o.read_to_end(&mut out).unwrap();
        }
        let status = self.child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        let client = ClientExit {
            code: status.code(),
            signal: status.signal(),
        };
        let (seen, passed) = self.demux.join().unwrap();
        let _ = self.nonce;
        (
            remote::classify(&seen, client, engine),
            String::from_utf8_lossy(&passed).into_owned(),
            out,
        )
    }
}

fn target(h: &Hosts, dest: &str, dir: &std::path::Path) -> SshTarget {
    SshTarget {
        destination: dest.into(),
        port: None,
        options: h.ssh_options(),
        control_path: dir.join("c0"),
    }
}

fn ssh_run(h: &Hosts, dest: &str, s: &RunSpec, stdin: Stdio) -> Remote {
    let dir = tempfile::tempdir().unwrap();
    let t = target(h, dest, dir.path());
    launch(
        t.session_argv(remote::shell_line(&s.words())),
        &s.nonce,
        stdin,
        None,
    )
}

#[test]
fn ssh_exit_codes_and_signals_come_back_exactly() {
    let Some(h) = hosts() else { return };
    let cases: [(&str, Outcome); 5] = [
        ("exit 0", Outcome::Exited(0)),
        ("exit 3", Outcome::Exited(3)),
        ("exit 255", Outcome::Exited(255)),
        (
            "kill -KILL $$",
            Outcome::Signaled {
                name: "KILL".into(),
                core: false,
            },
        ),
        (
            "kill -TERM $$",
            Outcome::Signaled {
                name: "TERM".into(),
                core: false,
            },
        ),
    ];
    for (script, want) in cases {
        let s = spec(&["sh", "-c", script], &[]);
        let (got, _, _) = ssh_run(&h, "h2", &s, Stdio::null()).finish("ssh to h2");
        assert_eq!(got, want, "{script}");
    }
}

#[test]
fn ssh_output_and_stderr_pass_untouched_and_env_arrives() {
    let Some(h) = hosts() else { return };
    let s = spec(
        &[
            "sh",
            "-c",
            "printf 'out %s\\n' \"$GREETING\"; printf 'err line\\n' >&2; printf 'no newline' >&2",
        ],
        &["GREETING=hello 'quoted' $HOME `x`"],
    );
    let (got, err, out) = ssh_run(&h, "h3", &s, Stdio::null()).finish("ssh to h3");
    assert_eq!(got, Outcome::Exited(0));
    assert_eq!(
        String::from_utf8_lossy(&out),
        "out hello 'quoted' $HOME `x`\n"
    );
    assert_eq!(err, "err line\nno newline");
}

#[test]
fn ssh_binary_data_through_a_remote_cat_is_intact() {
    let Some(h) = hosts() else { return };
    let mut data = vec![0u8; 5 << 20];
    let mut seed = 0x9e3779b97f4a7c15u64;
    for b in data.iter_mut() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        *b = seed as u8;
    }
    let s = spec(&["cat"], &[]);
    let mut r = ssh_run(&h, "h2", &s, Stdio::piped());
    let mut stdin = r.child.stdin.take().unwrap();
    let feed = {
        let data = data.clone();
        std::thread::spawn(move || {
            stdin.write_all(&data).unwrap();
        })
    };
    let (got, _, out) = r.finish("ssh to h2");
    feed.join().unwrap();
    assert_eq!(got, Outcome::Exited(0));
    assert!(out == data, "{} bytes back of {}", out.len(), data.len());
}

#[test]
fn ssh_unreachable_host_and_refused_key_are_could_not_start_fast() {
    let Some(h) = hosts() else { return };
    let t0 = Instant::now();
    let s = spec(&["true"], &[]);
    // nothing listens on 127.0.0.9:22
    let (got, _, _) = ssh_run(&h, "root@127.0.0.9", &s, Stdio::null()).finish("ssh to h9");
    match got {
        Outcome::CouldNotStart(m) => assert!(m.contains("Connection refused"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(10));

    // a key the host does not know
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("stranger");
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(ok.success());
    let t = SshTarget {
        destination: "127.0.0.2".into(),
        port: None,
        options: vec![
            "-o".into(),
            format!("UserKnownHostsFile={}", h.dir.join("known_hosts").display()),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-i".into(),
            key.display().to_string(),
        ],
        control_path: dir.path().join("c0"),
    };
    let (got, _, _) = launch(
        t.session_argv(remote::shell_line(&s.words())),
        &s.nonce,
        Stdio::null(),
        None,
    )
    .finish("ssh to h2");
    match got {
        Outcome::CouldNotStart(m) => assert!(m.contains("Permission denied"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn ssh_remote_exec_failure_is_could_not_start_with_the_os_error() {
    let Some(h) = hosts() else { return };
    let s = spec(&["no-such-program-here"], &[]);
    let (got, _, _) = ssh_run(&h, "h2", &s, Stdio::null()).finish("ssh to h2");
    match got {
        Outcome::CouldNotStart(m) => {
            assert!(m.contains("no-such-program-here: No such file"), "{m}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn ssh_client_killed_ends_the_whole_remote_group_and_runs_its_term_handler() {
    let Some(h) = hosts() else { return };
    let m = mark();
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("term-ran");
    let script = format!(
        "trap 'echo term >&2; echo term > {}; exit 0' TERM; sleep 1000 & setsid sleep 1001 & while :; do sleep 0.1; done",
        flag.display()
    );
    let s = spec(&["sh", "-c", &script], &[&m]);
    let mut r = ssh_run(&h, "h3", &s, Stdio::null());
    r.wait_started();
    wait_for("the remote processes", LONG, || {
        h.marked("h3", &m).len() >= 3
    });
    r.child.kill().unwrap(); // SIGKILL to the local ssh client
    let killed = Instant::now();
    h.wait_none_marked("h3", &m, Duration::from_secs(5));
    eprintln!("remote group gone {:?} after the client", killed.elapsed());
    assert!(flag.exists(), "the TERM handler did not run");
    let (got, _, _) = r.finish("ssh to h3");
    assert!(matches!(got, Outcome::Lost(_)), "{got:?}");
}

#[test]
fn ssh_stop_signal_reaches_the_remote_group_over_the_shared_connection() {
    let Some(h) = hosts() else { return };
    let dir = tempfile::tempdir().unwrap();
    let t = target(&h, "h2", dir.path());
    let mut master = Command::new("ssh")
        .args(&t.master_argv()[1..])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the master connection", LONG, || {
        Command::new("ssh")
            .args(&t.check_argv()[1..])
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    });
    let s = spec(
        &[
            "sh",
            "-c",
            "trap 'echo got term >&2; exit 7' TERM; echo ready >&2; while :; do sleep 0.1; done",
        ],
        &[],
    );
    let r = launch(
        t.session_argv(remote::shell_line(&s.words())),
        &s.nonce,
        Stdio::null(),
        None,
    );
    let st = r.wait_started();
    assert!(st.pgid > 1 && st.start > 0, "{st:?}");
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let stop = Command::new("ssh")
        .args(
            &t.session_argv(remote::shell_line(&remote::stop_words(
                st.pgid, st.start, "TERM",
            )))[1..],
        )
        .status()
        .unwrap();
    assert!(stop.success());
    let (got, err, _) = r.finish("ssh to h2");
    assert_eq!(got, Outcome::Exited(7));
    assert!(err.contains("got term"), "{err}");
    eprintln!("stop over the master: {:?}", t0.elapsed());
    // a stop aimed at a group that is gone (or recycled) does nothing
    let stale = Command::new("ssh")
        .args(
            &t.session_argv(remote::shell_line(&remote::stop_words(
                st.pgid, st.start, "KILL",
            )))[1..],
        )
        .status()
        .unwrap();
    assert_eq!(stale.code(), Some(3));
    Command::new("ssh")
        .args(&t.exit_argv()[1..])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    // told to exit, the master leaves (ssh's status for that is 255)
    master.wait().unwrap();
}

#[test]
fn ssh_run_dir_is_private_shared_and_removed_by_cleanup() {
    let Some(h) = hosts() else { return };
    let mut s = spec(
        &[
            "sh",
            "-c",
            "test \"$PRUN_RUN_DIR\" = \"$1\" && stat -c %a \"$1\" && echo data > \"$1/f\"",
            "sh",
            RUN_DIR_MARK,
        ],
        &[],
    );
    let (got, err, out) = ssh_run(&h, "h2", &s, Stdio::null()).finish("ssh to h2");
    assert_eq!(got, Outcome::Exited(0), "{err}");
    assert_eq!(String::from_utf8_lossy(&out), "700\n");
    // a second instance of the same run on that host sees the same directory
    s.nonce = remote::random_token();
    s.argv = vec![
        "sh".into(),
        "-c".into(),
        "cat \"$PRUN_RUN_DIR/f\"; echo \"$PRUN_RUN_DIR\"".into(),
    ];
    let (_, _, out) = ssh_run(&h, "h2", &s, Stdio::null()).finish("ssh to h2");
    let out = String::from_utf8_lossy(&out).into_owned();
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("data"));
    let path = std::path::PathBuf::from(lines.next().unwrap());
    assert!(path.is_dir()); // the hosts share this machine's filesystem
    let dir = tempfile::tempdir().unwrap();
    let t = target(&h, "h2", dir.path());
    let ok = Command::new("ssh")
        .args(&t.session_argv(remote::shell_line(&remote::cleanup_words(&s.run_id)))[1..])
        .status()
        .unwrap();
    assert!(ok.success());
    assert!(!path.exists(), "{} still there", path.display());
}

// ------------------------------------------------------------------ Slurm

fn slurm_spec(argv: &[&str], env: &[&str]) -> RunSpec {
    RunSpec {
        group: Group::Same,
        ..spec(argv, env)
    }
}

fn srun(h: &Hosts, t: &SlurmTarget, name: &str, s: &RunSpec) -> Remote {
    launch(
        t.srun_argv(name, remote::argv(&s.words())),
        &s.nonce,
        Stdio::null(),
        Some(h),
    )
}

#[test]
fn slurm_exit_codes_signals_and_node_come_back_exactly() {
    let Some(h) = hosts() else { return };
    let run = remote::random_token();
    let t = SlurmTarget::default();
    for (script, want) in [
        ("exit 0", Outcome::Exited(0)),
        ("exit 3", Outcome::Exited(3)),
        (
            "kill -KILL $$",
            Outcome::Signaled {
                name: "KILL".into(),
                core: false,
            },
        ),
    ] {
        let s = slurm_spec(&["sh", "-c", script], &[]);
        let r = srun(&h, &t, &slurm::job_name(&run, "x"), &s);
        let st = r.wait_started();
        assert_eq!(st.node, "node1");
        assert!(st.job.is_some());
        let (got, _, _) = r.finish("srun");
        assert_eq!(got, want, "{script}");
    }
}

#[test]
fn slurm_unknown_partition_is_could_not_start_with_srun_message() {
    let Some(h) = hosts() else { return };
    let t = SlurmTarget {
        partition: Some("no-such-partition".into()),
        ..SlurmTarget::default()
    };
    let s = slurm_spec(&["true"], &[]);
    let t0 = Instant::now();
    let (got, _, _) = srun(&h, &t, "prun-x-bad", &s).finish("srun");
    match got {
        Outcome::CouldNotStart(m) => assert!(m.contains("partition"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(10));
}

#[test]
fn slurm_stop_is_scancel_with_the_stop_signal() {
    let Some(h) = hosts() else { return };
    let run = remote::random_token();
    let t = SlurmTarget::default();
    let s = slurm_spec(
        &[
            "sh",
            "-c",
            "trap 'echo got term >&2; exit 7' TERM; while :; do sleep 0.1; done",
        ],
        &[],
    );
    let r = srun(&h, &t, &slurm::job_name(&run, "stop"), &s);
    let st = r.wait_started();
    let job = st.job.clone().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let argv = t.signal_argv(&job, st.step.as_deref(), "TERM");
    let ok = Command::new(&argv[0])
        .args(&argv[1..])
        .env("SLURM_CONF", h.slurm_conf())
        .status()
        .unwrap();
    assert!(ok.success());
    let (got, err, _) = r.finish("srun");
    assert_eq!(got, Outcome::Exited(7), "{err}");
    assert!(err.contains("got term"), "{err}");
}

#[test]
fn slurm_sweep_cancels_what_a_killed_srun_left() {
    let Some(h) = hosts() else { return };
    let run = remote::random_token();
    let prefix = slurm::name_prefix(&run);
    let t = SlurmTarget::default();
    // the sweeper waits for the end of its stdin
    let mut sweeper = Command::new("sh")
        .args(["-c", &slurm::sweep_script(&run, None)])
        .env("SLURM_CONF", h.slurm_conf())
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let s = slurm_spec(&["sleep", "1000"], &[]);
    // srun in its own group, killed with its helper: the job would run on
    let mut cmd = Command::new("srun");
    let argv = t.srun_argv(&slurm::job_name(&run, "a"), remote::argv(&s.words()));
    use std::os::unix::process::CommandExt;
    cmd.args(&argv[1..])
        .env("SLURM_CONF", h.slurm_conf())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    let mut child = cmd.spawn().unwrap();
    wait_for("the job to run", LONG, || {
        h.slurm_jobs(&prefix).iter().any(|l| l.ends_with("RUNNING"))
    });
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !h.slurm_jobs(&prefix).is_empty(),
        "the job ended by itself: this test shows nothing"
    );
    drop(sweeper.stdin.take()); // as when prun dies
    assert!(sweeper.wait().unwrap().success());
    h.wait_no_jobs(&prefix, Duration::from_secs(20));
}

// ------------------------------------------------------------------ launch (the place seam)

#[test]
fn launch_runs_an_instance_over_the_hosts_shared_connection() {
    use prun::plan::{Engine, HostPlan};
    use prun::remote::place::{Connect, Hosts as Places};
    use prun::runtime::place::remote::{self as launch, PumpMsg, RemoteInstance};
    use prun::runtime::spawn::{self, ChildFd};
    let Some(h) = hosts() else { return };
    let _lock = prun::runtime::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let plan = [HostPlan {
        name: "h3".into(),
        engine: Engine::Ssh {
            destination: "h3".into(),
            port: None,
            options: h.ssh_options(),
        },
        slots: Some(2),
        cwd: Some("/tmp".into()),
    }];
    let run_id = remote::random_token();
    let mut places = Places::new(&plan, &run_id, dir.path(), None);
    let Connect::Spawn(argv) = places.connect(0, |p| p.exists()) else {
        panic!("no master asked for")
    };
    let (spec, _errors) = launch::helper_spec(argv).unwrap();
    let master = spawn::spawn(spec, None).unwrap();
    places.master_spawned(0, Ok(master));
    wait_for("the master's socket", LONG, || {
        places.connect(0, |p| p.exists()) == Connect::Ready
    });
    let inst = RemoteInstance {
        host: 0,
        name: "x".into(),
        argv: vec![
            "sh".into(),
            "-c".into(),
            "pwd; echo \"$A\"; echo to-stderr >&2; exit 5".into(),
        ],
        env: vec![("A".into(), "b".into())],
        cwd: None,
        stop_signal: "TERM".into(),
        grace: Duration::from_secs(1),
        ctl_forward: None,
    };
    let (out_r, out_w) = spawn::pipe().unwrap();
    let (err_r, err_w) = spawn::pipe().unwrap();
    let l = launch::launch(
        &places,
        &run_id,
        &inst,
        ChildFd::Null,
        ChildFd::Fd(out_w),
        ChildFd::Fd(err_w),
    )
    .unwrap();
    assert_eq!(l.spec.pdeathsig, Some(libc::SIGKILL));
    let pid = spawn::spawn(l.spec, None).unwrap();
    let (tx, rx) = mpsc::channel();
    let pump = l
        .pump
        .start("pump".into(), move |m| tx.send(m).unwrap())
        .unwrap();
    let mut out = String::new();
    std::fs::File::from(out_r).read_to_string(&mut out).unwrap();
    let mut err = String::new();
    std::fs::File::from(err_r).read_to_string(&mut err).unwrap();
    let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
    pump.join().unwrap();
    let msgs: Vec<PumpMsg> = rx.try_iter().collect();
    assert!(matches!(&msgs[0], PumpMsg::Started(s) if s.pgid > 1));
    assert!(matches!(&msgs[1], PumpMsg::Ended(remote::Ended::Exit(5))));
    let PumpMsg::Done(seen) = &msgs[2] else {
        panic!("{msgs:?}")
    };
    let client = match status {
        nix::sys::wait::WaitStatus::Exited(_, c) => ClientExit {
            code: Some(c),
            signal: None,
        },
        other => panic!("{other:?}"),
    };
    assert_eq!(
        remote::classify(seen, client, "ssh to h3"),
        Outcome::Exited(5)
    );
    assert_eq!(out, "/tmp\nb\n");
    assert_eq!(err, "to-stderr\n");
    // close the shared connection
    let (exit_spec, _) = launch::helper_spec(places.masters()[0].1.clone()).unwrap();
    let e = spawn::spawn(exit_spec, None).unwrap();
    nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(e), None).unwrap();
    nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(master), None).unwrap();
}

#[test]
fn remote_prun_ctl_reaches_the_forwarded_local_socket() {
    use prun::plan::{Engine, HostPlan};
    use prun::remote::place::{Connect, Hosts as Places};
    use prun::runtime::place::remote::{self as launch, RemoteInstance};
    use prun::runtime::spawn::{self, ChildFd};
    use std::io::{BufRead, BufReader};
    use std::os::unix::net::UnixListener;
    let Some(h) = hosts() else { return };
    let _lock = prun::runtime::exclusive();
    let dir = tempfile::tempdir().unwrap();
    // a stand-in for prun's control socket: answers the protocol, records the lines
    let sock = dir.path().join("ctl-inst.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let (lines_tx, lines_rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { break };
            let mut reader = BufReader::new(s.try_clone().unwrap());
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let reply = if line.starts_with("EVENT ISSET") {
                    "FALSE\n"
                } else {
                    "OK\n"
                };
                s.write_all(reply.as_bytes()).unwrap();
                lines_tx.send(line.trim_end().to_string()).unwrap();
            }
        }
    });
    let plan = [HostPlan {
        name: "h2".into(),
        engine: Engine::Ssh {
            destination: "h2".into(),
            port: None,
            options: h.ssh_options(),
        },
        slots: None,
        cwd: None,
    }];
    let run_id = remote::random_token();
    let mut places = Places::new(&plan, &run_id, dir.path(), None);
    let Connect::Spawn(argv) = places.connect(0, |p| p.exists()) else {
        panic!()
    };
    let (spec, _e) = launch::helper_spec(argv).unwrap();
    let master = spawn::spawn(spec, None).unwrap();
    places.master_spawned(0, Ok(master));
    wait_for("the master's socket", LONG, || {
        places.connect(0, |p| p.exists()) == Connect::Ready
    });
    let inst = RemoteInstance {
        host: 0,
        name: "c".into(),
        argv: vec![
            "sh".into(),
            "-c".into(),
            "prun ctl event set go && prun ctl sem run lock -- true; prun ctl event is-set go; echo \"is-set $? $PRUN_CTL\"".into(),
        ],
        env: vec![("PRUN_CTL".into(), "/local/path/not/used".into())],
        cwd: None,
        stop_signal: "TERM".into(),
        grace: Duration::from_secs(1),
        ctl_forward: Some(sock.clone()),
    };
    let (out_r, out_w) = spawn::pipe().unwrap();
    let l = launch::launch(
        &places,
        &run_id,
        &inst,
        ChildFd::Null,
        ChildFd::Fd(out_w),
        ChildFd::Inherit,
    )
    .unwrap();
    let pid = spawn::spawn(l.spec, None).unwrap();
    let pump = l.pump.start("pump".into(), |_| {}).unwrap();
    let mut out = String::new();
    std::fs::File::from(out_r).read_to_string(&mut out).unwrap();
    nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
    pump.join().unwrap();
    let got: Vec<String> = lines_rx.try_iter().collect();
    assert_eq!(
        got,
        [
            "EVENT SET go",
            "SEM HOLD lock",
            "SEM RELEASE lock",
            "EVENT ISSET go"
        ]
    );
    let remote_sock = remote::remote_ctl_socket(&l.nonce);
    assert_eq!(out.trim(), format!("is-set 1 {remote_sock}"));
    assert!(
        !std::path::Path::new(&remote_sock).exists(),
        "the forwarded socket is left on the host"
    );
    let (exit_spec, _) = launch::helper_spec(places.masters()[0].1.clone()).unwrap();
    let e = spawn::spawn(exit_spec, None).unwrap();
    nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(e), None).unwrap();
    nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(master), None).unwrap();
}
