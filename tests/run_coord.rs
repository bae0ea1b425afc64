//! Coordination through `prun run`, with real processes: semaphores (`semaphore:`
//! and `prun ctl sem`), events (`sets:`/`waits:` and `prun ctl event`), the control
//! socket's peer check, and deadlock reports.

mod run_util;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use run_util::{Test, max_overlap, prun_exe, timed, wait_until};

#[test]
fn a_semaphore_bounds_how_many_instances_run_at_once() {
    let yaml = format!(
        r#"
version: 1
name: sem
semaphores: {{slots: 2}}
stages:
  work:
    replicas: 6
    semaphore: slots
    sh: '{}'
"#,
        timed(Path::new("log.txt"), "0.2")
    );
    let t = Test::new(&yaml);
    let out = t.run();
    out.assert_code(0);
    let log = t.read("log.txt");
    assert_eq!(log.lines().count(), 12, "{log}");
    // Never more than the count, and the count is really used.
    assert_eq!(max_overlap(&log), 2, "{log}\n{}", out.context());
}

#[test]
fn semaphores_are_taken_all_at_once_and_shared_across_stages() {
    // `a` needs xs and ys, `b` needs ys only, `c` xs only: never two holders of one
    // permit, whatever the order.
    let a = format!(
        "{}; {}",
        timed(Path::new("x.txt"), "0"),
        timed(Path::new("y.txt"), "0.1")
    );
    let yaml = format!(
        r#"
version: 1
name: sems
semaphores: {{xs: 1, ys: 1}}
stages:
  a:
    replicas: 2
    semaphore: [xs, ys]
    sh: '{a}'
  b:
    replicas: 2
    semaphore: [ys]
    sh: '{b}'
  c:
    replicas: 2
    semaphore: xs
    sh: '{c}'
"#,
        b = timed(Path::new("y.txt"), "0.1"),
        c = timed(Path::new("x.txt"), "0.1"),
    );
    let t = Test::new(&yaml);
    t.run().assert_code(0);
    assert_eq!(max_overlap(&t.read("x.txt")), 1, "{}", t.read("x.txt"));
    assert_eq!(max_overlap(&t.read("y.txt")), 1, "{}", t.read("y.txt"));
}

/// The lock example: each buyer reads the seats left, thinks, writes the rest back.
/// Without the lock two buyers take the same seat; with it each seat is sold once.
#[test]
fn ten_buyers_with_a_ctl_lock_sell_each_ticket_once() {
    let yaml = r#"
version: 1
name: tickets
semaphores: {lock: 1}
stages:
  setup:
    sh: 'seq 1 4 | sed s/^/seat-/ > seats.txt; : > sales.txt'
  buyer:
    after: [setup]
    replicas: 10
    sh: prun ctl sem run lock -- sh buy.sh ${instance}
"#;
    let buy = r#"
seats=$(cat seats.txt)
seat=$(printf '%s\n' "$seats" | sed -n 1p)
sleep 0.05
[ -n "$seat" ] || exit 0
printf '%s\n' "$seats" | sed 1d | grep . > seats.tmp.$$ || true
mv seats.tmp.$$ seats.txt
echo "$seat $1" >> sales.txt
"#;
    let t = Test::new(yaml).file("buy.sh", buy);
    let out = t.run();
    out.assert_code(0);
    let sales = t.read("sales.txt");
    let mut seats: Vec<&str> = sales
        .lines()
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    seats.sort();
    assert_eq!(
        seats,
        ["seat-1", "seat-2", "seat-3", "seat-4"],
        "{sales}\n{}",
        out.context()
    );
    assert_eq!(out.of_stage("buyer").len(), 10);
}

#[test]
fn a_holder_that_dies_releases_its_permit() {
    // `holder` takes the only permit through ctl, says so, and is SIGKILLed while
    // holding it; `taker` can only get the permit because prun released it.
    let yaml = r#"
version: 1
name: dies
semaphores: {lock: 1}
events: [taken]
stages:
  holder:
    sh: 'prun ctl sem acquire lock && prun ctl event set taken && sleep 0.3 && kill -KILL $$'
    on_failure: ignore
  taker:
    waits: [taken]
    sh: 'prun ctl sem acquire lock --timeout 0 2>/dev/null && exit 1; prun ctl sem acquire lock --timeout 10s && echo acquired'
"#;
    let t = Test::new(yaml);
    let out = t.run();
    out.assert_code(0);
    assert_eq!(
        out.instance("holder")["state"],
        "killed",
        "{}",
        out.context()
    );
    assert_eq!(out.instance("holder")["signal"], "SIGKILL");
    assert_eq!(out.log_of("taker"), ["acquired"], "{}", out.context());
}

#[test]
fn a_process_outside_the_pipeline_is_refused() {
    let yaml = r#"
version: 1
name: outsider
events: [poked]
stages:
  inside:
    sh: |
      echo "$PRUN_CTL" > ctl.path
      i=0
      while [ ! -e release ] && [ $i -lt 1000 ]; do sleep 0.01; i=$((i+1)); done
      if prun ctl event is-set poked; then echo "poked by an outsider"; else echo "not poked"; fi
"#;
    let t = Test::new(yaml);
    let child = t
        .command("report.json", &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("prun starts");
    let path_file = t.path("ctl.path");
    wait_until(
        "the stage to publish PRUN_CTL",
        Duration::from_secs(10),
        || std::fs::read_to_string(&path_file).is_ok_and(|s| s.ends_with('\n')),
    );
    let socket = std::fs::read_to_string(&path_file).unwrap();
    let socket = socket.trim();
    // This test process is not part of the pipeline.
    let poke = std::process::Command::new(prun_exe())
        .args(["ctl", "event", "set", "poked"])
        .env("PRUN_CTL", socket)
        .output()
        .expect("prun ctl runs");
    std::fs::write(t.path("release"), "").unwrap();
    let out = t.finish(child, "report.json");
    out.assert_code(0);
    assert_eq!(
        poke.status.code(),
        Some(4),
        "REFUSED: {}",
        String::from_utf8_lossy(&poke.stderr)
    );
    assert!(
        String::from_utf8_lossy(&poke.stderr).contains("not part of this pipeline"),
        "{}",
        String::from_utf8_lossy(&poke.stderr)
    );
    assert_eq!(out.log_of("inside"), ["not poked"], "{}", out.context());
    // The socket lived in a private directory that is gone after the run.
    assert!(!Path::new(socket).exists());
}

#[test]
fn sets_triggers_release_waiting_stages() {
    // `server` sets `up` when it logs "listening" (long before it ends) and `done`
    // when it succeeds; `client` starts on `up`, `after_done` on `done`.
    let yaml = r#"
version: 1
name: events
events: [up, done]
stages:
  server:
    sh: 'sleep 0.1; echo listening; while [ ! -e client.ran ]; do sleep 0.01; done; echo bye'
    sets:
      up: {line: '^listening$'}
      done: succeeded
  client:
    waits: [up]
    sh: 'touch client.ran; echo hello'
  after_done:
    waits: [done]
    sh: 'test -e client.ran && echo last'
"#;
    let t = Test::new(yaml);
    let out = t.run();
    out.assert_code(0);
    assert_eq!(out.log_of("server"), ["listening", "bye"]);
    assert_eq!(out.log_of("client"), ["hello"]);
    assert_eq!(out.log_of("after_done"), ["last"]);
    let started = |n: &str| out.instance(n)["started_ms"].as_u64().unwrap();
    let ended = |n: &str| started(n) + out.instance(n)["duration_ms"].as_u64().unwrap();
    assert!(started("client") <= ended("server"), "{}", out.context());
    assert!(
        started("after_done") >= ended("server"),
        "{}",
        out.context()
    );
}

#[test]
fn initially_set_events_and_ctl_events_reach_waits() {
    let yaml = r#"
version: 1
name: ctl-events
events:
  open: {initially: set}
  go: {initially: clear}
stages:
  first:
    waits: [open]
    sh: 'prun ctl event clear open; prun ctl event set go; echo first'
  second:
    waits: [go]
    sh: 'if prun ctl event is-set open; then echo open; else echo closed; fi'
"#;
    let out = Test::new(yaml).run();
    out.assert_code(0);
    assert_eq!(out.log_of("second"), ["closed"], "{}", out.context());
}

#[test]
fn two_instances_each_waiting_for_the_others_permit_is_a_deadlock() {
    let yaml = r#"
version: 1
name: deadlock
semaphores: {fork: 1, knife: 1}
events: [a_has, b_has]
stages:
  alice:
    sh: 'prun ctl sem acquire fork; prun ctl event set a_has; prun ctl event wait b_has; prun ctl sem acquire knife; echo ate'
  bob:
    sh: 'prun ctl sem acquire knife; prun ctl event set b_has; prun ctl event wait a_has; prun ctl sem acquire fork; echo ate'
"#;
    let out = Test::new(yaml).run();
    out.assert_code(prun::exit::DEADLOCK);
    assert!(out.elapsed < Duration::from_secs(8), "{}", out.context());
    let msg = out.report["deadlock"].as_str().unwrap_or_else(|| {
        panic!("no deadlock in the report\n{}", out.context());
    });
    for needle in ["alice", "bob", "fork", "knife"] {
        assert!(msg.contains(needle), "{needle} missing: {msg}");
    }
    assert!(out.stderr.contains("deadlock"), "{}", out.context());
    assert!(
        out.log_of("alice").is_empty() && out.log_of("bob").is_empty(),
        "{}",
        out.context()
    );
    assert_eq!(out.report["status"], "failed");
}

#[test]
fn waiting_on_an_event_nobody_can_set_is_a_deadlock() {
    let yaml = r#"
version: 1
name: never
events: [never, gate]
stages:
  waiter:
    sh: 'prun ctl event wait never; echo woke'
  starter:
    waits: [gate]
    sh: 'echo started'
"#;
    let out = Test::new(yaml).run();
    out.assert_code(prun::exit::DEADLOCK);
    assert!(out.elapsed < Duration::from_secs(8), "{}", out.context());
    let msg = out.report["deadlock"].as_str().unwrap_or_default();
    assert!(
        msg.contains("waiter") && msg.contains("`never`"),
        "{}",
        out.context()
    );
    assert!(
        msg.contains("starter") && msg.contains("`gate`"),
        "{}",
        out.context()
    );
    assert_eq!(out.instance("starter")["state"], "skipped");
    assert_eq!(out.instance("waiter")["state"], "stopped");
}

#[test]
fn a_ctl_wait_with_a_timeout_is_not_a_deadlock() {
    let yaml = r#"
version: 1
name: patient
events: [never]
stages:
  waiter:
    sh: 'prun ctl event wait never --timeout 1500ms 2>/dev/null; echo "gave up with $?"'
"#;
    let out = Test::new(yaml).run();
    out.assert_code(0);
    assert_eq!(
        out.log_of("waiter"),
        ["gave up with 124"],
        "{}",
        out.context()
    );
}

#[test]
fn stages_get_prun_on_path_and_prun_exe() {
    let yaml = r#"
version: 1
name: path
stages:
  show:
    sh: 'command -v prun; echo "$PRUN_EXE"'
"#;
    let out = Test::new(yaml).run();
    out.assert_code(0);
    let exe = prun_exe().canonicalize().unwrap();
    let log = out.log_of("show");
    assert_eq!(log.len(), 2, "{}", out.context());
    for line in log {
        assert_eq!(
            Path::new(&line).canonicalize().unwrap(),
            exe,
            "{}",
            out.context()
        );
    }
}
