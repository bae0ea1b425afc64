//! Control from another terminal (SPEC 6.1), through the binary: `prun ps`, `status`,
//! `logs` (and `-f`), `signal`, `restart`, `stop`; targets by name and pid; and another
//! uid sees nothing and is refused.

mod run_util;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use run_util::{DEADLINE, Test, prun_exe, wait_until};
use serde_json::Value;

const YAML: &str = r#"version: 1
name: svc
queues:
  q: {}
stages:
  web:
    replicas: 2
    sh: 'trap "echo got HUP" HUP; i=0; while true; do i=$((i+1)); echo "tick $i"; sleep 0.1 & wait $!; done'
  prod:
    sh: 'while true; do echo rec; sleep 0.01; done'
    stdout: q
  cons:
    replicas: 2
    sh: 'cat > /dev/null'
    stdin: q
"#;

/// A private registry for this test (other runs on the machine stay out of it).
fn registry_base() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    d
}

fn ops(xdg: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(prun_exe())
        .args(args)
        .env("XDG_RUNTIME_DIR", xdg)
        .stdin(Stdio::null())
        .output()
        .expect("prun runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ops_json(xdg: &Path, args: &[&str]) -> Value {
    let (code, out, err) = ops(xdg, args);
    assert_eq!(code, Some(0), "{args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

fn start(t: &Test, xdg: &Path) -> Child {
    t.command("r.json", &[])
        .env("XDG_RUNTIME_DIR", xdg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("prun starts")
}

fn wait_running(xdg: &Path, n: usize) {
    wait_until("the runs to register", DEADLINE, || {
        let (code, out, _) = ops(xdg, &["ps", "--json"]);
        code == Some(0)
            && serde_json::from_str::<Value>(&out)
                .is_ok_and(|v| v.as_array().is_some_and(|a| a.len() == n))
    });
}

#[test]
fn watch_and_steer_a_running_pipeline() {
    let base = registry_base();
    let xdg = base.path();
    let t = Test::new(YAML);
    let child = start(&t, xdg);
    wait_running(xdg, 1);
    let ps = ops_json(xdg, &["ps", "--json"]);
    assert_eq!(ps[0]["name"], "svc");
    assert_eq!(ps[0]["pid"], child.id());
    let (_, human, _) = ops(xdg, &["ps"]);
    assert!(
        human.starts_with("NAME") && human.contains("svc"),
        "{human}"
    );

    wait_until("the queue's first count", DEADLINE, || {
        ops_json(xdg, &["status", "--json"])["queues"][0]["name"] == "q"
    });
    let status = ops_json(xdg, &["status", "--json"]);
    let names: Vec<&str> = status["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web.0", "web.1", "prod", "cons.0", "cons.1"]);
    assert!(status["instances"][0]["pid"].as_u64().is_some());
    assert_eq!(status["queues"][0]["name"], "q");
    assert_eq!(status["queues"][0]["capacity"], 1024);
    assert!(
        status["queues"][0]["depth"]
            .as_u64()
            .is_some_and(|d| d <= 1024),
        "{status}"
    );
    let (_, human, _) = ops(xdg, &["status", "svc"]);
    assert!(
        human.contains("INSTANCE") && human.contains("web.1"),
        "{human}"
    );

    // logs: the last lines, then -f follows new ones.
    wait_until("a few ticks", DEADLINE, || {
        ops(xdg, &["logs", "web.0", "-n", "3"]).1.lines().count() == 3
    });
    let (_, tail, _) = ops(xdg, &["logs", "svc", "web.0", "-n", "3"]);
    assert!(
        tail.lines().all(|l| l.starts_with("web.0 │ tick ")),
        "{tail}"
    );
    let mut follow = Command::new(prun_exe())
        .args(["logs", "-f", "-n", "0", "web.1", "--json"])
        .env("XDG_RUNTIME_DIR", xdg)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    for _ in 0..3 {
        let v: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        assert_eq!(v["instance"], "web.1");
    }
    follow.kill().unwrap();
    follow.wait().unwrap();

    // signal, restart
    let (code, out, err) = ops(xdg, &["signal", "HUP", "web"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("sent SIGHUP to 2 instances"), "{out}");
    wait_until("the trap's line", DEADLINE, || {
        ops(xdg, &["logs", "web", "-n", "50"]).1.contains("got HUP")
    });
    let before = ops_json(xdg, &["status", "--json"])["instances"][1]["pid"].clone();
    let (code, _, err) = ops(xdg, &["restart", "web.1"]);
    assert_eq!(code, Some(0), "{err}");
    wait_until("web.1 restarted", DEADLINE, || {
        let s = ops_json(xdg, &["status", "--json"]);
        let w = &s["instances"][1];
        w["restarts"] == 1 && w["pid"] != before && w["state"] != "waiting"
    });
    let (code, _, err) = ops(xdg, &["logs", "nosuch"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no stage or instance named `nosuch`"), "{err}");
    let (code, _, err) = ops(xdg, &["restart", "nosuch"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no stage or instance named `nosuch`"), "{err}");

    // stop: as SIGINT.
    let (code, _, err) = ops(xdg, &["stop"]);
    assert_eq!(code, Some(0), "{err}");
    let out = t.finish(child, "r.json");
    out.assert_code(130);
    assert_eq!(out.report["status"], "interrupted");
    assert_eq!(out.instance("web.1")["restarts"], 1);
    let (code, _, err) = ops(xdg, &["status"]);
    assert_eq!(code, Some(3), "{err}");
}

#[test]
fn targets_by_name_or_pid_when_several_run() {
    let base = registry_base();
    let xdg = base.path();
    let a = Test::new(YAML);
    let b = Test::new(&YAML.replace("name: svc", "name: other"));
    let ca = start(&a, xdg);
    let cb = start(&b, xdg);
    wait_running(xdg, 2);
    let (code, _, err) = ops(xdg, &["status"]);
    assert_eq!(code, Some(3));
    assert!(err.contains("several pipelines are running"), "{err}");
    assert_eq!(
        ops_json(xdg, &["status", "other", "--json"])["name"],
        "other"
    );
    let pid = ca.id().to_string();
    assert_eq!(ops_json(xdg, &["status", &pid, "--json"])["name"], "svc");
    let (code, _, _) = ops(xdg, &["stop", "other", "prod"]);
    assert_eq!(code, Some(0));
    wait_until("prod stopped", DEADLINE, || {
        ops_json(xdg, &["status", "other", "--json"])["instances"][2]["state"] == "stopped"
    });
    for (child, t) in [(ca, &a), (cb, &b)] {
        let (code, _, err) = ops(xdg, &["stop", &child.id().to_string()]);
        assert_eq!(code, Some(0), "{err}");
        t.finish(child, "r.json").assert_code(130);
    }
}

/// Another user finds nothing, cannot reach the socket, and is not served even when
/// the directory lets them in.
#[test]
fn another_uid_sees_nothing_and_is_refused() {
    let base = registry_base();
    let xdg = base.path();
    let t = Test::new(YAML);
    let child = start(&t, xdg);
    wait_running(xdg, 1);
    let nobody = |args: &[&str]| {
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .args(args)
            .env("XDG_RUNTIME_DIR", xdg)
            .env("TMPDIR", "/tmp")
            .stdin(Stdio::null())
            .output()
            .expect("setpriv runs (tests run as root)");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let exe = prun_exe();
    let exe = exe.to_str().unwrap();
    let (code, out, err) = nobody(&[exe, "ps", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.trim(), "[]", "another uid lists nothing");
    let pid = child.id().to_string();
    let (code, _, _) = nobody(&[exe, "status", &pid]);
    assert_eq!(code, Some(3));
    let (code, _, _) = nobody(&[exe, "stop", &pid]);
    assert_eq!(code, Some(3));
    // Straight at the socket: the directory keeps them out...
    let sock = xdg.join("prun").join(format!("{pid}.sock"));
    let connect = format!(
        "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ntry:\n s.connect({:?})\nexcept OSError as e:\n print('refused', e.errno); sys.exit(0)\ntry:\n s.sendall(b'{{\"cmd\":\"stop\"}}\\n')\n print('answer', repr(s.recv(1000)))\nexcept OSError as e:\n print('closed', e.errno)\n",
        sock.to_str().unwrap()
    );
    let (_, out, err) = nobody(&["/usr/bin/python3", "-c", &connect]);
    assert!(out.starts_with("refused"), "{out}{err}");
    // ...and if it let them in, the peer's uid does.
    for p in [xdg, &xdg.join("prun")] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o711)).unwrap();
    }
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (_, out, err) = nobody(&["/usr/bin/python3", "-c", &connect]);
    assert!(
        out.trim() == "answer b''" || out.starts_with("closed"),
        "served another uid: {out}{err}"
    );
    std::thread::sleep(Duration::from_millis(200));
    for p in [xdg, &xdg.join("prun")] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    assert!(
        ops_json(xdg, &["status", "--json"])["instances"][0]["state"] != "stopped",
        "nobody's stop was not obeyed"
    );
    // SAFETY: interrupting the prun we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    t.finish(child, "r.json").assert_code(130);
}
