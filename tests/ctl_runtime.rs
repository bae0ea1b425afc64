//! `prun ctl` in a real run (SPEC 6): the commands prun runs for an instance (its
//! `ready: {cmd}` probe, its `stop: {cmd}`) are processes of the pipeline; a permit
//! taken by `prun ctl sem run` belongs to that process and is released the moment it
//! dies; the control socket serves a bounded number of connections at once.

mod run_util;
mod testkit;

use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use run_util::{Test, wait_until};
use testkit::{processes_with_arg, unique_sleep_arg};

#[test]
fn a_readiness_command_can_ask_prun_about_an_event() {
    let out = Test::new(
        r#"
version: 1
events: [go]
stages:
  svc:
    sh: 'exec sleep 30'
    daemon: true
    ready: {cmd: [prun, ctl, event, is-set, go], interval: 50ms, timeout: 10s}
  setter: {sh: 'prun ctl event set go'}
  client: {sh: 'echo served', after: {svc: ready}}
"#,
    )
    .run();
    out.assert_code(0);
    assert_eq!(
        out.instance("client")["state"],
        "succeeded",
        "{}",
        out.context()
    );
    assert!(out.elapsed < Duration::from_secs(8), "{}", out.context());
}

#[test]
fn a_stop_command_can_set_the_event_its_stage_waits_for() {
    let out = Test::new(
        r#"
version: 1
events: [quit]
stages:
  svc:
    sh: 'prun ctl event wait quit && echo bye'
    daemon: true
    stop: {cmd: [prun, ctl, event, set, quit], timeout: 10s}
  job: {sh: 'echo work'}
"#,
    )
    .run();
    out.assert_code(0);
    assert!(
        out.log_of("svc").contains(&"bye".to_string()),
        "{}",
        out.context()
    );
    // Stopped cooperatively, not SIGKILLed after its 10 s grace.
    assert_eq!(
        out.instance("svc")["signal"],
        serde_json::Value::Null,
        "{}",
        out.context()
    );
    assert!(out.elapsed < Duration::from_secs(8), "{}", out.context());
}

#[test]
fn a_killed_sem_run_frees_its_permit_at_once() {
    let marker = unique_sleep_arg();
    // `holder` keeps running after its `sem run` is killed; `taker` must get the
    // permit then, not when `holder` ends.
    let t = Test::new(&format!(
        r#"
version: 1
semaphores: {{lock: 1}}
stages:
  holder:
    sh: 'prun ctl sem run lock -- sh -c "touch held; exec sleep {marker}"; touch lost; exec sleep 30'
    daemon: true
  taker:
    sh: 'while [ ! -e held ]; do sleep 0.02; done; prun ctl sem acquire lock --timeout 10s && echo got; while [ ! -e lost ]; do sleep 0.02; done'
"#
    ));
    let child = t
        .command("report.json", &[])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the permit to be held", Duration::from_secs(20), || {
        t.path("held").exists() && !processes_with_arg(&marker).is_empty()
    });
    // The `prun ctl sem run` process is the parent of the sleep.
    let sleep = processes_with_arg(&marker)[0];
    let sem_run = prun::procfs::stat(sleep).unwrap().ppid;
    kill(Pid::from_raw(sem_run), Signal::SIGKILL).unwrap();
    let out = t.finish(child, "report.json");
    out.assert_code(0);
    assert!(
        out.log_of("taker").contains(&"got".to_string()),
        "{}",
        out.context()
    );
    // The holder (a daemon, stopped only once the taker ends) was still running when
    // the taker got the permit: without the release at the death of `sem run`, the
    // taker's acquire would time out.
    assert!(out.elapsed < Duration::from_secs(8), "{}", out.context());
}

#[test]
fn the_control_socket_serves_a_bounded_number_of_connections() {
    // A stage opens far more connections than the cap and keeps them open; prun
    // refuses the extra ones with a clear error, and stays responsive.
    let out = Test::new(
        r#"
version: 1
stages:
  flood:
    cmd:
      - python3
      - -c
      - |
        import os, socket
        path = os.environ["PRUN_CTL"]
        socks, refused = [], 0
        for i in range(400):
            s = socket.socket(socket.AF_UNIX)
            s.connect(path)
            socks.append(s)
        for s in socks[256:]:
            s.settimeout(5)
            if b"too many" in s.recv(200):
                refused += 1
        print("refused", refused)
  after: {sh: 'prun ctl event is-set e; echo $?', after: {flood: succeeded}}
events: [e]
"#,
    )
    .run();
    out.assert_code(0);
    assert!(
        out.log_of("flood")
            .iter()
            .any(|l| l.starts_with("refused ") && l != "refused 0"),
        "{}",
        out.context()
    );
    assert!(
        out.log_of("after").contains(&"1".to_string()),
        "{}",
        out.context()
    );
}
