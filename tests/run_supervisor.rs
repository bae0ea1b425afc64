//! Supervisor integration tests: real processes, real pipes, real signals.
//!
//! Plans are built in Rust (`testkit`, beside this file). Runs happen in this process
//! through `supervise`, except where prun itself must receive a signal (SIGINT,
//! SIGTERM, SIGKILL): then the test binary re-executes itself as a child prun (see
//! `child_prun_entry`). Leftover processes are found by a unique argv marker in /proc.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use prun::plan::{
    Condition, OnFailure, ProbeKind, ReadyProbe, Regex, RestartPolicy, RestartSpec, Template,
};
use prun::report::ReportBuilder;
mod testkit;
use prun::event::{ProcessEnd, Success};
use prun::runtime::{Event, State, supervise};
use testkit::{PlanBuilder, processes_with_arg, unique_sleep_arg};

struct Outcome {
    code: i32,
    events: Vec<Event>,
    report: ReportBuilder,
}

impl Outcome {
    fn state(&self, name: &str) -> State {
        self.report
            .state_of(name)
            .cloned()
            .unwrap_or_else(|| panic!("no instance {name}"))
    }

    fn log(&self, name: &str) -> Vec<String> {
        let id = self
            .report
            .instance_names()
            .find(|(i, _)| i.name == name)
            .map(|(i, _)| i.id)
            .expect("instance");
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Log { id: i, line } if *i == id => {
                    Some(String::from_utf8_lossy(line).into_owned())
                }
                _ => None,
            })
            .collect()
    }

    /// Position of the first state change of `name` to a state named `state`.
    fn when(&self, name: &str, state: &str) -> usize {
        let id = self
            .report
            .instance_names()
            .find(|(i, _)| i.name == name)
            .map(|(i, _)| i.id)
            .expect("instance");
        self.events
            .iter()
            .position(|e| matches!(e, Event::StateChanged { id: i, state: s, .. } if *i == id && s.name() == state))
            .unwrap_or_else(|| panic!("{name} never became {state}"))
    }
}

fn run(b: PlanBuilder) -> Outcome {
    let (tx, rx) = crossbeam_channel::unbounded();
    let code = supervise(b.build(), tx);
    let events: Vec<Event> = rx.try_iter().collect();
    let mut report = ReportBuilder::new();
    for e in &events {
        report.apply(e);
    }
    assert!(
        matches!(events.last(), Some(Event::Finished { .. })),
        "last event is Finished"
    );
    Outcome {
        code,
        events,
        report,
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn line_probe(re: &str) -> ReadyProbe {
    ReadyProbe {
        kind: ProbeKind::Line(Regex(regex::Regex::new(re).unwrap())),
        timeout: None,
    }
}

fn assert_gone(marker: &str) {
    let left = processes_with_arg(marker);
    assert!(
        left.is_empty(),
        "processes left with marker {marker}: {left:?}"
    );
}

// ------------------------------------------------------------------ end states

#[test]
fn succeeded_failed_and_exit_code_of_first_failure() {
    let mut b = PlanBuilder::new("t");
    b.cmd("ok", &["true"]);
    b.sh("bad", "exit 3").on_failure = OnFailure::Continue;
    b.sh("worse", "sleep 0.3; exit 4").on_failure = OnFailure::Continue;
    let o = run(b);
    assert_eq!(o.state("ok"), State::Succeeded(Success::Exited(0)));
    assert_eq!(o.state("bad").exit_code(), Some(3));
    assert_eq!(o.state("worse").exit_code(), Some(4));
    assert_eq!(o.code, 3, "the first failure's code");
}

#[test]
fn killed_by_a_signal_gives_128_plus_n() {
    let mut b = PlanBuilder::new("t");
    b.sh("victim", "kill -9 $$");
    let o = run(b);
    assert_eq!(
        o.state("victim"),
        State::Killed {
            signal: libc::SIGKILL
        }
    );
    assert_eq!(o.code, 137);
}

#[test]
fn timeout_gives_timed_out_and_124() {
    let marker = unique_sleep_arg();
    let mut b = PlanBuilder::new("t");
    let s = b.cmd("slow", &["sleep", &marker]);
    s.timeout = Some(ms(200));
    s.stop.timeout = ms(500);
    let t0 = Instant::now();
    let o = run(b);
    assert!(
        matches!(o.state("slow"), State::TimedOut { .. }),
        "{:?}",
        o.state("slow")
    );
    assert_eq!(o.code, 124);
    assert!(t0.elapsed() < Duration::from_secs(3));
    assert_gone(&marker);
}

#[test]
fn could_not_start_reports_the_os_error() {
    let dir = tempfile::tempdir().unwrap();
    let noexec = dir.path().join("script.sh");
    std::fs::write(&noexec, "#!/bin/sh\necho hi\n").unwrap();
    let mut b = PlanBuilder::new("t");
    b.cmd("missing", &["/nonexistent/prun-no-such-command"])
        .on_failure = OnFailure::Continue;
    b.cmd("denied", &[noexec.to_str().unwrap()]).on_failure = OnFailure::Continue;
    let o = run(b);
    match o.state("missing") {
        State::CouldNotStart { error } => {
            assert!(error.contains("No such file or directory"), "{error}")
        }
        s => panic!("{s:?}"),
    }
    match o.state("denied") {
        State::CouldNotStart { error } => assert!(error.contains("ermission denied"), "{error}"),
        s => panic!("{s:?}"),
    }
    assert_eq!(o.code, 127);
}

#[test]
fn success_codes_are_respected() {
    let mut b = PlanBuilder::new("t");
    b.sh("three", "exit 3").success_codes = vec![0, 3];
    let o = run(b);
    // The real exit code is kept: succeeded, with exit code 3.
    assert_eq!(o.state("three"), State::Succeeded(Success::Exited(3)));
    assert_eq!(o.state("three").exit_code(), Some(3));
    assert_eq!(o.code, 0);
}

#[test]
fn on_failure_ignore_keeps_exit_zero_and_counts_as_success() {
    let mut b = PlanBuilder::new("t");
    b.sh("flaky", "exit 2").on_failure = OnFailure::Ignore;
    b.cmd("next", &["true"]);
    b.after("next", "flaky", Condition::Succeeded);
    let o = run(b);
    assert_eq!(o.state("flaky").exit_code(), Some(2));
    assert_eq!(o.state("next"), State::Succeeded(Success::Exited(0)));
    assert_eq!(o.code, 0);
}

#[test]
fn on_failure_stop_stops_the_others_and_skips_waiting_ones() {
    let marker = unique_sleep_arg();
    let mut b = PlanBuilder::new("t");
    b.cmd("long", &["sleep", &marker]);
    b.sh("bad", "sleep 0.1; exit 7");
    b.cmd("later", &["true"]);
    b.after("later", "long", Condition::Succeeded);
    let o = run(b);
    assert!(
        matches!(o.state("long"), State::Stopped { .. }),
        "{:?}",
        o.state("long")
    );
    assert!(matches!(o.state("later"), State::Skipped { .. }));
    assert_eq!(o.code, 7);
    assert_gone(&marker);
}

#[test]
fn skipped_carries_down() {
    let mut b = PlanBuilder::new("t");
    b.sh("a", "exit 1").on_failure = OnFailure::Continue;
    b.cmd("b", &["true"]);
    b.cmd("c", &["true"]);
    b.cmd("d", &["true"]);
    b.after("b", "a", Condition::Succeeded);
    b.after("c", "b", Condition::Completed);
    b.after("d", "c", Condition::Started);
    let o = run(b);
    for s in ["b", "c", "d"] {
        assert!(
            matches!(o.state(s), State::Skipped { .. }),
            "{s}: {:?}",
            o.state(s)
        );
    }
    match o.state("b") {
        State::Skipped { reason } => assert!(reason.contains('a'), "{reason}"),
        _ => unreachable!(),
    }
    assert_eq!(o.code, 1);
}

#[test]
fn after_started_completed_and_succeeded_order() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("flag");
    let mut b = PlanBuilder::new("t");
    b.sh("first", &format!("sleep 0.2; touch {}", f.display()));
    b.sh("on_start", &format!("test ! -e {}", f.display()));
    b.sh("on_done", &format!("test -e {}", f.display()));
    b.sh("on_complete", &format!("test -e {}", f.display()));
    b.after("on_start", "first", Condition::Started);
    b.after("on_done", "first", Condition::Succeeded);
    b.after("on_complete", "first", Condition::Completed);
    let o = run(b);
    assert_eq!(o.code, 0, "{:?}", o.report.report());
    assert!(o.when("on_start", "running") < o.when("first", "succeeded"));
    assert!(o.when("on_done", "running") > o.when("first", "succeeded"));
}

// ------------------------------------------------------------------ readiness

#[test]
fn ready_line_lets_dependents_start_while_it_runs() {
    let marker = unique_sleep_arg();
    let mut b = PlanBuilder::new("t");
    let db = b.sh(
        "db",
        &format!("echo booting; echo listening on 5432; exec sleep {marker}"),
    );
    db.daemon = true;
    db.ready = Some(line_probe("listening"));
    b.cmd("client", &["true"]);
    b.after("client", "db", Condition::Ready);
    let o = run(b);
    assert_eq!(o.code, 0);
    assert!(o.when("db", "ready") < o.when("client", "running"));
    assert!(
        matches!(o.state("db"), State::Stopped { .. }),
        "daemon is stopped at the end"
    );
    assert_eq!(o.log("db"), vec!["booting", "listening on 5432"]);
    assert_gone(&marker);
}

#[test]
fn ready_file_delay_cmd_and_tcp_probes() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("ready");
    let m: Vec<String> = (0..4).map(|_| unique_sleep_arg()).collect();
    let mut b = PlanBuilder::new("t");

    let s = b.sh(
        "file",
        &format!("sleep 0.1; touch {}; exec sleep {}", f.display(), m[0]),
    );
    s.daemon = true;
    s.ready = Some(ReadyProbe {
        kind: ProbeKind::File(Template::literal(f.to_str().unwrap())),
        timeout: Some(ms(5000)),
    });

    let s = b.cmd("delay", &["sleep", &m[1]]);
    s.daemon = true;
    s.ready = Some(ReadyProbe {
        kind: ProbeKind::Delay(ms(150)),
        timeout: None,
    });

    let s = b.cmd("cmdp", &["sleep", &m[2]]);
    s.daemon = true;
    s.ready = Some(ReadyProbe {
        kind: ProbeKind::Cmd {
            argv: vec![
                Template::literal("test"),
                Template::literal("-e"),
                Template::literal(f.to_str().unwrap()),
            ],
            interval: ms(50),
        },
        timeout: Some(ms(5000)),
    });

    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let server = format!(
        "import socket,time,sys\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ntime.sleep(0.2); s.bind(('127.0.0.1',{port})); s.listen(5)\nwhile True:\n  c,_=s.accept(); c.close()\n"
    );
    let s = b.cmd("tcp", &["python3", "-c", &server, &m[3]]);
    s.daemon = true;
    s.ready = Some(ReadyProbe {
        kind: ProbeKind::Tcp(format!("127.0.0.1:{port}")),
        timeout: Some(ms(5000)),
    });

    b.cmd("client", &["true"]);
    for d in ["file", "delay", "cmdp", "tcp"] {
        b.after("client", d, Condition::Ready);
    }
    let o = run(b);
    assert_eq!(o.code, 0, "{:#?}", o.report.report());
    for d in ["file", "delay", "cmdp", "tcp"] {
        assert!(o.when(d, "ready") < o.when("client", "running"), "{d}");
        assert!(
            matches!(o.state(d), State::Stopped { .. }),
            "{d}: {:?}",
            o.state(d)
        );
    }
    for marker in &m {
        assert_gone(marker);
    }
}

#[test]
fn ready_timeout_fails_the_instance() {
    let marker = unique_sleep_arg();
    let mut b = PlanBuilder::new("t");
    let s = b.cmd("never", &["sleep", &marker]);
    s.ready = Some(ReadyProbe {
        kind: ProbeKind::Line(Regex(regex::Regex::new("up").unwrap())),
        timeout: Some(ms(200)),
    });
    s.stop.timeout = ms(500);
    b.cmd("client", &["true"]);
    b.after("client", "never", Condition::Ready);
    let o = run(b);
    match o.state("never") {
        State::Failed {
            reason: Some(r), ..
        } => assert!(r.contains("not ready"), "{r}"),
        s => panic!("{s:?}"),
    }
    assert!(matches!(o.state("client"), State::Skipped { .. }));
    assert_eq!(o.code, prun::exit::READY_FAILED);
    assert_gone(&marker);
}

// ------------------------------------------------------------------ restart

#[test]
fn restart_on_failure_with_max_and_backoff() {
    let mut b = PlanBuilder::new("t");
    let s = b.sh("flaky", "echo try; exit 5");
    s.restart = RestartSpec {
        policy: RestartPolicy::OnFailure,
        max: Some(2),
        backoff: ms(50),
        max_backoff: ms(80),
    };
    let t0 = Instant::now();
    let o = run(b);
    assert_eq!(o.state("flaky").exit_code(), Some(5));
    assert_eq!(o.log("flaky").len(), 3, "1 run + 2 restarts");
    let restarts: Vec<Duration> = o
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Restarting { delay, .. } => Some(*delay),
            _ => None,
        })
        .collect();
    assert_eq!(restarts, vec![ms(50), ms(80)], "exponential, capped");
    assert!(t0.elapsed() >= ms(130));
    assert_eq!(o.report.report().instances[0].restarts, 2);
    assert_eq!(o.code, 5);
}

#[test]
fn restart_on_failure_until_success() {
    let dir = tempfile::tempdir().unwrap();
    let count = dir.path().join("count");
    let mut b = PlanBuilder::new("t");
    let s = b.sh(
        "eventually",
        &format!(
            "echo x >> {c}; [ $(wc -l < {c}) -ge 3 ]",
            c = count.display()
        ),
    );
    s.restart = RestartSpec {
        policy: RestartPolicy::OnFailure,
        max: None,
        backoff: ms(10),
        max_backoff: ms(20),
    };
    let o = run(b);
    assert_eq!(o.state("eventually"), State::Succeeded(Success::Exited(0)));
    assert_eq!(o.code, 0);
    assert_eq!(std::fs::read_to_string(&count).unwrap().lines().count(), 3);
}

#[test]
fn restart_always_restarts_successes_too() {
    let mut b = PlanBuilder::new("t");
    let s = b.sh("loop", "echo run");
    s.restart = RestartSpec {
        policy: RestartPolicy::Always,
        max: Some(3),
        backoff: ms(1),
        max_backoff: ms(1),
    };
    let o = run(b);
    assert_eq!(o.log("loop").len(), 4);
    assert_eq!(o.code, 0);
}

// ------------------------------------------------------------------ stop

#[test]
fn stop_signal_and_stop_cmd() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("stop-now");
    let mut b = PlanBuilder::new("t");
    let s = b.sh(
        "usr1",
        "trap 'echo got usr1; exit 0' USR1; echo up; while :; do sleep 0.05; done",
    );
    s.daemon = true;
    s.stop.signal = libc::SIGUSR1;
    s.ready = Some(line_probe("up"));
    let s = b.sh(
        "polite",
        &format!(
            "echo up; while [ ! -e {} ]; do sleep 0.05; done; echo bye",
            f.display()
        ),
    );
    s.daemon = true;
    s.ready = Some(line_probe("up"));
    s.stop.cmd = Some(vec![
        Template::literal("touch"),
        Template::literal(f.to_str().unwrap()),
    ]);
    b.cmd("job", &["true"]);
    b.after("job", "usr1", Condition::Ready);
    b.after("job", "polite", Condition::Ready);
    let o = run(b);
    assert_eq!(o.code, 0);
    assert_eq!(
        o.state("usr1"),
        State::Stopped {
            end: Some(ProcessEnd::Exited(0))
        }
    );
    assert_eq!(
        o.state("polite"),
        State::Stopped {
            end: Some(ProcessEnd::Exited(0))
        }
    );
    assert!(o.log("usr1").contains(&"got usr1".to_string()));
    assert!(o.log("polite").contains(&"bye".to_string()));
}

#[test]
fn a_stage_ignoring_sigterm_is_killed_after_its_grace() {
    let marker = unique_sleep_arg();
    let mut b = PlanBuilder::new("t");
    let s = b.sh(
        "stubborn",
        &format!("trap '' TERM; echo up; sleep {marker}"),
    );
    s.stop.timeout = ms(300);
    s.ready = Some(line_probe("up"));
    b.sh("bad", "exit 5");
    b.after("bad", "stubborn", Condition::Ready);
    let t0 = Instant::now();
    let o = run(b);
    assert_eq!(
        o.state("stubborn"),
        State::Stopped {
            end: Some(ProcessEnd::Signaled(libc::SIGKILL))
        }
    );
    assert_eq!(o.code, 5);
    assert!(
        t0.elapsed() >= ms(300) && t0.elapsed() < Duration::from_secs(3),
        "{:?}",
        t0.elapsed()
    );
    assert_gone(&marker);
}

// ------------------------------------------------------------------ pipes, leftovers

#[test]
fn yes_head_early_close_is_success() {
    let mut b = PlanBuilder::new("t");
    b.cmd("yes", &["yes"]);
    b.cmd("head", &["head", "-n", "1"]);
    b.pipe("ys", "yes", "head");
    let o = run(b);
    assert_eq!(o.state("yes"), State::Succeeded(Success::DownstreamClosed));
    assert_eq!(o.state("head"), State::Succeeded(Success::Exited(0)));
    assert_eq!(o.log("head"), vec!["y"]);
    assert_eq!(o.code, 0);
}

#[test]
fn direct_pipe_carries_all_data() {
    let mut b = PlanBuilder::new("t");
    b.cmd("seq", &["seq", "1", "100000"]);
    b.cmd(
        "sum",
        &[
            "python3",
            "-c",
            "import sys; print(sum(int(l) for l in sys.stdin))",
        ],
    );
    b.pipe("nums", "seq", "sum");
    let o = run(b);
    assert_eq!(o.code, 0);
    assert_eq!(o.log("sum"), vec!["5000050000"]);
}

#[test]
fn reader_skipped_means_writer_sees_a_closed_pipe() {
    let mut b = PlanBuilder::new("t");
    b.sh("gate", "exit 1").on_failure = OnFailure::Continue;
    b.cmd("yes", &["yes"]);
    b.cmd("cat", &["cat"]);
    b.pipe("q", "yes", "cat");
    b.after("cat", "gate", Condition::Succeeded);
    let o = run(b);
    assert!(matches!(o.state("cat"), State::Skipped { .. }));
    assert_eq!(o.state("yes"), State::Succeeded(Success::DownstreamClosed));
    assert_eq!(o.code, 1);
}

#[test]
fn no_process_left_after_normal_end_with_background_children() {
    let marker = unique_sleep_arg();
    let mut b = PlanBuilder::new("t");
    b.sh("bg", &format!("sleep {marker} & echo spawned"));
    let o = run(b);
    assert_eq!(o.code, 0);
    assert_gone(&marker);
}

#[test]
fn setsid_escapee_is_killed_at_the_end() {
    let marker = unique_sleep_arg();
    let marker2 = unique_sleep_arg();
    let mut b = PlanBuilder::new("t");
    b.sh("escape", &format!("setsid sleep {marker} & echo spawned"));
    // An escapee whose parent is still alive when the pipeline ends.
    let s = b.sh(
        "parent",
        &format!("setsid sleep {marker2} & echo up; sleep {marker2}"),
    );
    s.daemon = true;
    s.ready = Some(line_probe("up"));
    b.cmd("job", &["true"]);
    b.after("job", "parent", Condition::Ready);
    let o = run(b);
    assert_eq!(o.code, 0);
    assert_gone(&marker);
    assert_gone(&marker2);
}

#[test]
fn env_vars_cwd_and_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = PlanBuilder::new("envtest");
    let s = b.sh(
        "w",
        "echo $PRUN_PIPELINE $PRUN_STAGE $PRUN_INSTANCE $PRUN_REPLICAS $(pwd) $GREETING; \
         test -d \"$PRUN_RUN_DIR\" && test \"$PRUN_CTL\" = \"$PRUN_RUN_DIR/ctl.sock\" && \
         test $(stat -c %a \"$PRUN_RUN_DIR\") = 700 && echo rundir-ok",
    );
    s.instances = prun::plan::Instances::Replicas {
        count: 2,
        named_by_index: true,
    };
    s.cwd = Some(Template::literal(dir.path().to_str().unwrap()));
    s.env.push(("GREETING".into(), Template::literal("hi")));
    let o = run(b);
    assert_eq!(o.code, 0);
    let cwd = dir.path().canonicalize().unwrap();
    for i in 0..2 {
        let log = o.log(&format!("w.{i}"));
        assert_eq!(log[0], format!("envtest w {i} 2 {} hi", cwd.display()));
        assert_eq!(log[1], "rundir-ok");
    }
}

#[test]
fn long_lines_and_chatty_children_pass_whole() {
    let mut b = PlanBuilder::new("t");
    b.cmd(
        "chatty",
        &["python3", "-c", "import sys\nsys.stdout.write('x'*200000+'\\n')\nfor i in range(20000): sys.stderr.write('line %d\\n' % i)\nsys.stdout.write('tail-without-newline')"],
    );
    let o = run(b);
    assert_eq!(o.code, 0);
    let log = o.log("chatty");
    assert_eq!(log.len(), 20002);
    assert!(
        log.iter()
            .any(|l| l.len() == 200000 && l.bytes().all(|c| c == b'x'))
    );
    assert_eq!(log.last().unwrap(), "tail-without-newline");
}

#[test]
fn stdout_file_and_stdin_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    let output = dir.path().join("out.txt");
    std::fs::write(&input, "b\na\n").unwrap();
    let mut b = PlanBuilder::new("t");
    let s = b.cmd("sort", &["sort"]);
    s.stdin = prun::plan::Input::File(Template::literal(input.to_str().unwrap()));
    s.stdout = prun::plan::Output::File {
        path: Template::literal(output.to_str().unwrap()),
        append: false,
    };
    let o = run(b);
    assert_eq!(o.code, 0);
    assert_eq!(std::fs::read_to_string(&output).unwrap(), "a\nb\n");
}

// ------------------------------------------------------------------ prun receives signals

/// Scenarios run by a child copy of this test binary (see `child_prun_entry`).
fn scenario_plan(name: &str, marker: &str) -> PlanBuilder {
    let mut b = PlanBuilder::new(name);
    match name {
        "cooperative" => {
            // A producer, a filter-like reader on a direct pipe, and a plain job.
            b.sh("producer", &format!("echo started; exec sleep {marker}"));
            b.cmd("reader", &["cat"]);
            b.pipe("q", "producer", "reader");
            b.sh("job", &format!("sleep {marker} & sleep {marker}; wait"));
        }
        "stubborn" => {
            let s = b.sh("stubborn", &format!("trap '' TERM; sleep {marker}"));
            s.stop.timeout = Duration::from_secs(30);
            b.cmd("plain", &["sleep", marker]);
        }
        "escapee" => {
            // One escapee whose parent lives on, one re-parented to prun.
            b.sh(
                "parent",
                &format!("setsid sleep {marker} & echo started; sleep {marker}"),
            );
            b.sh("orphaner", &format!("setsid sleep {marker} & echo up"));
        }
        "demo" => {
            b.sh("chef", "for i in 1 2 3; do echo bun $i; sleep 0.2; done");
            b.sh("eater", "sleep 0.3; echo ate; exit 2").on_failure = OnFailure::Continue;
        }
        other => panic!("unknown scenario {other}"),
    }
    b
}

/// Entry point of the child prun (a no-op in a normal test run).
#[test]
fn child_prun_entry() {
    let Ok(name) = std::env::var("PRUN_TEST_SCENARIO") else {
        return;
    };
    let marker = std::env::var("PRUN_TEST_MARKER").unwrap();
    let opts = prun::run::RunOptions {
        report: std::env::var_os("PRUN_TEST_REPORT").map(Into::into),
        // PRUN_TEST_TTY: let the terminal decide (manual check of the board and colors).
        progress: std::env::var_os("PRUN_TEST_TTY")
            .is_none()
            .then(|| "never".into()),
        color: std::env::var_os("PRUN_TEST_TTY")
            .is_none()
            .then(|| "never".into()),
        ..Default::default()
    };
    let code = prun::run::run(scenario_plan(&name, &marker).build(), &opts);
    std::process::exit(code);
}

struct ChildPrun {
    child: std::process::Child,
    marker: String,
    report: tempfile::NamedTempFile,
    stderr: crossbeam_channel::Receiver<String>,
    _lock: std::sync::MutexGuard<'static, ()>,
}

impl ChildPrun {
    fn start(scenario: &str, expected_markers: usize) -> ChildPrun {
        // The child prun is our child: no in-process run may reap or sweep it.
        let lock = prun::runtime::exclusive();
        let marker = unique_sleep_arg();
        let report = tempfile::NamedTempFile::new().unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_prun_entry",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("PRUN_TEST_SCENARIO", scenario)
            .env("PRUN_TEST_MARKER", &marker)
            .env("PRUN_TEST_REPORT", report.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = crossbeam_channel::unbounded();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let c = ChildPrun {
            child,
            marker,
            report,
            stderr: rx,
            _lock: lock,
        };
        c.wait_for(Duration::from_secs(10), || {
            processes_with_arg(&c.marker).len() >= expected_markers
        });
        c
    }

    fn wait_for(&self, limit: Duration, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + limit;
        while !cond() {
            assert!(
                Instant::now() < deadline,
                "condition not met within {limit:?}"
            );
            std::thread::sleep(ms(5));
        }
    }

    fn wait_for_stderr(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return,
                Ok(_) => {}
                Err(_) => panic!("prun never printed {needle:?}"),
            }
        }
    }

    fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Wait for prun's exit; returns (code or 128+signal, elapsed).
    fn wait_exit(&mut self, limit: Duration) -> (i32, Duration) {
        let t0 = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                use std::os::unix::process::ExitStatusExt;
                let code = status
                    .code()
                    .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
                return (code, t0.elapsed());
            }
            assert!(t0.elapsed() < limit, "prun did not exit within {limit:?}");
            std::thread::sleep(ms(2));
        }
    }

    fn report(&self) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(self.report.path()).unwrap()).unwrap()
    }
}

fn state_in(report: &serde_json::Value, name: &str) -> String {
    report["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name)
        .map(|i| i["state"].as_str().unwrap().to_string())
        .unwrap()
}

#[test]
fn sigint_stops_in_drain_order_fast_and_leaves_nothing() {
    let mut p = ChildPrun::start("cooperative", 3);
    p.signal(libc::SIGINT);
    let (code, took) = p.wait_exit(Duration::from_secs(10));
    assert_eq!(code, 130);
    assert!(took < ms(1000), "SIGINT to exit took {took:?}");
    eprintln!("SIGINT to exit: {took:?}");
    let r = p.report();
    assert_eq!(r["status"], "interrupted");
    assert_eq!(r["exit_code"], 130);
    assert_eq!(state_in(&r, "producer"), "stopped");
    // The reader got EOF once the producer was gone and finished on its own.
    assert_eq!(state_in(&r, "reader"), "succeeded");
    assert_gone(&p.marker);
}

#[test]
fn sigterm_gives_143() {
    let mut p = ChildPrun::start("cooperative", 3);
    p.signal(libc::SIGTERM);
    let (code, _) = p.wait_exit(Duration::from_secs(10));
    assert_eq!(code, 143);
    assert_eq!(p.report()["status"], "interrupted");
    assert_gone(&p.marker);
}

#[test]
fn double_sigint_kills_every_group_at_once() {
    let mut p = ChildPrun::start("stubborn", 2);
    p.signal(libc::SIGINT);
    p.wait_for_stderr("SIGINT received");
    // `plain` obeys SIGTERM; once it is gone only the stubborn one is left.
    p.wait_for(Duration::from_secs(10), || {
        processes_with_arg(&p.marker).len() == 1
    });
    // A slow shutdown is never a mystery.
    p.wait_for_stderr("still waiting for: stubborn");
    p.signal(libc::SIGINT);
    let (code, took) = p.wait_exit(Duration::from_secs(10));
    assert_eq!(code, 130);
    assert!(took < Duration::from_secs(2), "{took:?}");
    let r = p.report();
    assert_eq!(state_in(&r, "stubborn"), "stopped");
    assert_gone(&p.marker);
}

#[test]
fn sigkill_of_prun_kills_every_group_within_a_second() {
    let mut p = ChildPrun::start("cooperative", 3);
    p.signal(libc::SIGKILL);
    p.wait_exit(Duration::from_secs(5));
    let t0 = Instant::now();
    p.wait_for(Duration::from_secs(1), || {
        processes_with_arg(&p.marker).is_empty()
    });
    eprintln!("stages gone {:?} after prun's death", t0.elapsed());
}

#[test]
fn sigkill_of_prun_also_kills_setsid_escapees() {
    let mut p = ChildPrun::start("escapee", 3);
    // prun notices each escaped group and hands it to the guardian.
    p.wait_for_stderr("left its process group");
    p.wait_for_stderr("left its process group");
    p.signal(libc::SIGKILL);
    p.wait_exit(Duration::from_secs(5));
    p.wait_for(Duration::from_secs(1), || {
        processes_with_arg(&p.marker).is_empty()
    });
}

#[test]
fn run_writes_the_json_report() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.json");
    let logs = dir.path().join("logs");
    let mut b = PlanBuilder::new("rep");
    b.sh("hello", "echo hello; echo oops >&2");
    b.sh("bad", "exit 9").on_failure = OnFailure::Continue;
    let opts = prun::run::RunOptions {
        report: Some(path.clone()),
        log_dir: Some(logs.clone()),
        quiet: true,
        ..Default::default()
    };
    let code = prun::run::run(b.build(), &opts);
    assert_eq!(code, 9);
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(r["pipeline"], "rep");
    assert_eq!(r["status"], "failed");
    assert_eq!(r["exit_code"], 9);
    let hello = &r["instances"][0];
    assert_eq!(hello["name"], "hello");
    assert_eq!(hello["state"], "succeeded");
    assert!(hello["pid"].as_u64().unwrap() > 0);
    assert!(hello["started_ms"].is_u64() && hello["duration_ms"].is_u64());
    assert_eq!(r["instances"][1]["exit_code"], 9);
    let log = std::fs::read_to_string(logs.join("hello.log")).unwrap();
    assert_eq!(log, "hello\noops\n");
}
