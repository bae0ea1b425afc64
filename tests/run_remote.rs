//! Stages on other hosts (SPEC 3.5) through the `prun` binary, on the real test hosts of
//! scripts/testhosts.sh: two sshd hosts (`h2`, `h3`, each in its own PID namespace) and
//! a one-node Slurm cluster. A missing test host fails these tests with a hint (see
//! tests/remote_util); `PRUN_REMOTE_TESTS=off` turns them off explicitly.
//!
//! The test hosts share this machine's filesystem, so a stage may write into the test's
//! directory; what runs where is checked in each host's own PID namespace.

mod remote_util;
mod run_util;

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use remote_util::{Hosts, hosts, mark};
use run_util::{Outcome, Test, wait_until};

const LONG: Duration = Duration::from_secs(30);

/// The `hosts:` block for the test hosts: `h2` and `h3` over ssh with `slots`, `hpc` on
/// Slurm.
fn hosts_block(h: &Hosts, h2_slots: usize, h3_slots: usize) -> String {
    let cfg = h.ssh_config().display().to_string();
    format!(
        "hosts:\n  h2: {{ssh: h2, options: [-F, \"{cfg}\"], slots: {h2_slots}}}\n  h3: {{ssh: h3, options: [-F, \"{cfg}\"], slots: {h3_slots}}}\n  hpc: {{slurm: {{partition: debug}}, slots: 4}}\n"
    )
}

/// Run the pipeline with Slurm's configuration in prun's environment.
fn run(t: &Test, h: &Hosts) -> Outcome {
    let child = t
        .command("report.json", &[])
        .env("SLURM_CONF", h.slurm_conf())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("prun starts");
    t.finish(child, "report.json")
}

/// SIGKILLs the prun started in the background if the test fails before it ends (its
/// guardian and the wrappers on the hosts then clean up), so a failed test leaves
/// nothing running.
struct KillOnPanic(i32);

impl Drop for KillOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // SAFETY: signalling the prun this test started.
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }
}

/// Start prun in the background (its output to files in the test directory).
fn spawn(t: &Test, h: &Hosts) -> std::process::Child {
    t.command("report.json", &[])
        .env("SLURM_CONF", h.slurm_conf())
        .stdout(std::fs::File::create(t.path("stdout")).unwrap())
        .stderr(std::fs::File::create(t.path("stderr")).unwrap())
        .spawn()
        .expect("prun starts")
}

#[test]
fn fifty_megabytes_through_a_remote_filter_arrive_intact_and_counted() {
    let Some(h) = hosts() else { return };
    // 50 MB of lines of every length 0..200, bytes 0x01..0xff except newline
    let mut data = Vec::with_capacity(51 << 20);
    let mut lines = 0u64;
    let mut x: u32 = 12345;
    while data.len() < 50 << 20 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        let len = (x >> 8) % 200;
        for i in 0..len {
            let b = ((x >> (i % 24)) as u8).max(1);
            data.push(if b == b'\n' { b'.' } else { b });
        }
        data.push(b'\n');
        lines += 1;
    }
    let yaml = format!(
        "version: 1\n{}queues:\n  raw: {{}}\n  done: {{}}\nstages:\n  src:\n    cmd: [cat, big.txt]\n    stdout: raw\n  filter:\n    cmd: [cat]\n    on: [h2, h3]\n    replicas: 2\n    stdin: raw\n    stdout: done\n  sink:\n    sh: 'cat > out.txt'\n    stdin: done\n",
        hosts_block(&h, 1, 1)
    );
    let t = Test::new(&yaml);
    std::fs::write(t.path("big.txt"), &data).unwrap();
    let out = run(&t, &h);
    out.assert_code(0);
    let got = std::fs::read(t.path("out.txt")).unwrap();
    assert_eq!(got.len(), data.len(), "{}", out.context());
    let mut a: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    let mut b: Vec<&[u8]> = got.split(|&b| b == b'\n').collect();
    a.sort_unstable();
    b.sort_unstable();
    assert!(a == b, "the records differ");
    assert_eq!(out.queue("raw")["records"], lines);
    assert_eq!(out.queue("done")["records"], lines);
    assert_eq!(out.queue("done")["bytes"], data.len() as u64);
    let filters = out.of_stage("filter");
    let hosts: Vec<&str> = filters
        .iter()
        .map(|i| i["host"].as_str().unwrap())
        .collect();
    assert!(hosts.contains(&"h2") && hosts.contains(&"h3"), "{hosts:?}");
    let total_in: u64 = filters
        .iter()
        .map(|i| i["records_in"].as_u64().unwrap())
        .sum();
    let total_out: u64 = filters
        .iter()
        .map(|i| i["records_out"].as_u64().unwrap())
        .sum();
    assert_eq!((total_in, total_out), (lines, lines), "{}", out.context());
    assert!(out.instance("src")["host"].is_null());
}

#[test]
fn a_shared_queue_spread_over_two_hosts_keeps_each_hosts_slots() {
    let Some(h) = hosts() else { return };
    let t = Test::new("");
    let log = t.path("overlap.log");
    let log = log.display();
    let yaml = format!(
        "version: 1\n{}queues:\n  work: {{capacity: 4}}\nstages:\n  producer:\n    cmd: [seq, 120]\n    stdout: work\n  worker:\n    sh: 'echo \"S $(date +%s%N) $PRUN_INSTANCE_NAME\" >> {log}; while read -r n; do echo \"$n\"; sleep 0.01; done; echo \"E $(date +%s%N) $PRUN_INSTANCE_NAME\" >> {log}'\n    on: [h2, h3]\n    replicas: 6\n    stdin: work\n    stdout: out.txt\n",
        hosts_block(&h, 2, 1)
    );
    let yaml = yaml.replace("stdout: out.txt", "stdout: {file: out.txt, append: true}");
    std::fs::write(t.path("pipeline.yaml"), &yaml).unwrap();
    let out = run(&t, &h);
    out.assert_code(0);
    let got = std::fs::read_to_string(t.path("out.txt")).unwrap();
    let want: Vec<String> = (1..=120).map(|n| n.to_string()).collect();
    let mut got: Vec<String> = got.lines().map(str::to_string).collect();
    got.sort_by_key(|s| s.parse::<u32>().unwrap());
    assert_eq!(got, want, "{}", out.context());
    // where each instance ran, from the report
    let host_of: HashMap<String, String> = out
        .of_stage("worker")
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap().to_string(),
                i["host"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(host_of.len(), 6);
    let records: u64 = out
        .of_stage("worker")
        .iter()
        .map(|i| i["records_in"].as_u64().unwrap())
        .sum();
    assert_eq!(records, 120);
    // most instances at once on each host, from the instances' own start/end lines
    let text = std::fs::read_to_string(t.path("overlap.log")).unwrap();
    let mut max: HashMap<String, i32> = HashMap::new();
    for host in ["h2", "h3"] {
        let mut events: Vec<(u128, i32)> = text
            .lines()
            .filter_map(|l| {
                let mut f = l.split(' ');
                let (kind, t, name) = (f.next()?, f.next()?, f.next()?);
                if host_of.get(name)? != host {
                    return None;
                }
                Some((t.parse().ok()?, if kind == "S" { 1 } else { -1 }))
            })
            .collect();
        events.sort();
        let (mut now, mut m) = (0, 0);
        for (_, d) in events {
            now += d;
            m = m.max(now);
        }
        max.insert(host.to_string(), m);
    }
    assert!(max["h2"] <= 2 && max["h3"] <= 1, "slots exceeded: {max:?}");
    assert!(
        max["h2"] >= 1 && max["h3"] >= 1,
        "a host was not used: {max:?}"
    );
}

#[test]
fn remote_exit_codes_and_signals_are_reported_exactly() {
    let Some(h) = hosts() else { return };
    let yaml = format!(
        "version: 1\n{}defaults:\n  on: h2\n  on_failure: ignore\nstages:\n  three:\n    sh: 'exit 3'\n    on_failure: continue\n  ff:\n    sh: 'exit 255'\n  term:\n    sh: 'kill -TERM $$'\n  kill:\n    sh: 'kill -KILL $$'\n  ok:\n    sh: 'echo \"dir $PRUN_RUN_DIR\"'\n",
        hosts_block(&h, 5, 1)
    );
    let t = Test::new(&yaml);
    let out = run(&t, &h);
    out.assert_code(3);
    let i = out.instance("three");
    assert_eq!(
        (i["state"].as_str(), i["exit_code"].as_i64()),
        (Some("failed"), Some(3))
    );
    let i = out.instance("ff");
    assert_eq!(
        (i["state"].as_str(), i["exit_code"].as_i64()),
        (Some("failed"), Some(255)),
        "a remote exit 255 is not ssh's own failure: {}",
        out.context()
    );
    let i = out.instance("term");
    assert_eq!(
        (i["state"].as_str(), i["signal"].as_str()),
        (Some("killed"), Some("SIGTERM"))
    );
    let i = out.instance("kill");
    assert_eq!(
        (i["state"].as_str(), i["signal"].as_str()),
        (Some("killed"), Some("SIGKILL"))
    );
    assert_eq!(out.instance("ok")["state"], "succeeded");
    assert_eq!(out.instance("ok")["host"], "h2");
    // a run directory nothing was written to is gone with its last user
    let dir = out.log_of("ok")[0]
        .strip_prefix("dir ")
        .unwrap()
        .to_string();
    assert!(dir.contains("/prun-"), "{dir}");
    assert!(!std::path::Path::new(&dir).exists(), "{dir} is left");
}

#[test]
fn an_unreachable_host_or_a_refused_key_is_could_not_start_quickly() {
    let Some(h) = hosts() else { return };
    let cfg = h.ssh_config().display().to_string();
    // nothing listens on 127.0.0.2:9; h3 without the test config: no key, unknown host
    let yaml = format!(
        "version: 1\nhosts:\n  closed: {{ssh: 127.0.0.2, port: 9, options: [-F, \"{cfg}\"]}}\n  nokey: {{ssh: 127.0.0.3, options: [-F, /dev/null, -o, UserKnownHostsFile=/dev/null, -o, StrictHostKeyChecking=no, -i, /nonexistent]}}\ndefaults:\n  on_failure: continue\nstages:\n  a:\n    cmd: ['true']\n    on: closed\n  b:\n    cmd: ['true']\n    on: nokey\n"
    );
    let t = Test::new(&yaml);
    let out = run(&t, &h);
    assert!(out.elapsed < Duration::from_secs(8), "{}", out.context());
    let a = out.instance("a");
    assert_eq!(a["state"], "could_not_start", "{}", out.context());
    assert!(
        a["detail"].as_str().unwrap().contains("Connection refused"),
        "{}",
        out.context()
    );
    let b = out.instance("b");
    assert_eq!(b["state"], "could_not_start", "{}", out.context());
    assert!(
        b["detail"].as_str().unwrap().contains("Permission denied"),
        "{}",
        out.context()
    );
    assert_eq!(
        out.code,
        Some(255),
        "ssh's own failure code: {}",
        out.context()
    );
}

#[test]
fn sigint_runs_the_remote_stages_term_handler() {
    let Some(h) = hosts() else { return };
    let yaml = format!(
        "version: 1\n{}stages:\n  svc:\n    sh: 'trap \"echo handler ran on the host; exit 0\" TERM; echo up; while :; do sleep 0.05; done'\n    on: h2\n    ready: {{line: up}}\n",
        hosts_block(&h, 1, 1)
    );
    let t = Test::new(&yaml);
    let child = spawn(&t, &h);
    let _guard = KillOnPanic(child.id() as i32);
    let pid = child.id() as i32;
    wait_until("the remote stage is up", LONG, || {
        std::fs::read_to_string(t.path("stderr")).is_ok_and(|s| s.contains("│ up"))
    });
    // SAFETY: signalling the prun we started.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let out = t.finish(child, "report.json");
    let stderr = std::fs::read_to_string(t.path("stderr")).unwrap();
    assert_eq!(out.code, Some(130), "{stderr}");
    assert!(stderr.contains("│ handler ran on the host"), "{stderr}");
    let svc = out.instance("svc");
    assert_eq!(svc["state"], "stopped", "{stderr}");
    assert_eq!(svc["exit_code"], 0, "{stderr}");
}

/// Processes of this machine (not of a test host's PID namespace) whose command line
/// holds `needle`.
fn local_with(needle: &str) -> Vec<(i32, String)> {
    let ours = std::fs::read_link("/proc/self/ns/pid").unwrap();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if std::fs::read_link(e.path().join("ns/pid")).ok().as_ref() != Some(&ours) {
            continue;
        }
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(needle) {
            out.push((pid, cmd.chars().take(200).collect()));
        }
    }
    out
}

#[test]
fn sigkill_of_prun_leaves_no_process_on_either_host_and_no_local_client() {
    let Some(h) = hosts() else { return };
    let m = mark();
    let (key, value) = m.split_once('=').unwrap();
    let yaml = format!(
        "version: 1\n{}stages:\n  svc:\n    sh: 'trap \"\" TERM; sleep 1000 & sleep 1000'\n    on: [h2, h3]\n    replicas: 4\n    env: {{{key}: {value}}}\n    stop: {{timeout: 2s}}\n",
        hosts_block(&h, 2, 2)
    );
    let t = Test::new(&yaml);
    let mut child = spawn(&t, &h);
    let _guard = KillOnPanic(child.id() as i32);
    let pid = child.id() as i32;
    wait_until("two instances on each host", LONG, || {
        h.marked("h2", &m).len() >= 4 && h.marked("h3", &m).len() >= 4
    });
    // The engine clients carry the instance's environment (hex-encoded) on their
    // command lines; the shared connections name prun's run directory.
    let hex_mark: String = remote_hex(&m);
    let run_dir = format!("prun-{pid}-");
    assert!(!local_with(&hex_mark).is_empty(), "no local engine client");
    assert!(!local_with(&run_dir).is_empty(), "no shared connection");
    let killed = Instant::now();
    child.kill().unwrap();
    child.wait().unwrap();
    h.wait_none_marked("h2", &m, Duration::from_secs(10));
    h.wait_none_marked("h3", &m, Duration::from_secs(10));
    let remote_gone = killed.elapsed();
    wait_until("no local engine client", Duration::from_secs(5), || {
        local_with(&hex_mark).is_empty() && local_with(&run_dir).is_empty()
    });
    // The instances ignore TERM: the wrapper's grace (stop.timeout, 2 s) then SIGKILL.
    assert!(
        remote_gone < Duration::from_secs(5),
        "remote processes lived {remote_gone:?} after prun's SIGKILL"
    );
}

/// How a field appears on the engine client's command line (the wrapper's hex words).
fn remote_hex(field: &str) -> String {
    field.bytes().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_remote_stage_restarts_and_keeps_its_run_directory() {
    let Some(h) = hosts() else { return };
    // fails twice, then succeeds: the count lives in the host's ${run.dir}
    let yaml = format!(
        "version: 1\n{}stages:\n  flaky:\n    sh: 'n=$(cat ${{run.dir}}/n 2>/dev/null || echo 0); echo $((n+1)) > ${{run.dir}}/n; echo \"attempt $n in $PRUN_RUN_DIR\"; test $n -ge 2'\n    on: h3\n    restart: {{policy: on-failure, max: 3, backoff: 50ms}}\n",
        hosts_block(&h, 1, 1)
    );
    let t = Test::new(&yaml);
    let out = run(&t, &h);
    out.assert_code(0);
    let i = out.instance("flaky");
    assert_eq!(i["state"], "succeeded");
    assert_eq!(i["restarts"], 2, "{}", out.context());
    assert_eq!(i["host"], "h3");
    let log = out.log_of("flaky");
    assert_eq!(log.len(), 3, "{}", out.context());
    let dir = log[0].split(" in ").nth(1).unwrap().to_string();
    assert!(dir.contains("/prun-"), "{dir}");
    assert!(log.iter().all(|l| l.ends_with(&dir)), "{log:?}");
    assert!(
        !std::path::Path::new(&dir).exists(),
        "the host's run directory is left after the run: {dir}"
    );
}

#[test]
fn foreach_items_run_as_srun_steps_and_a_failing_one_is_reported() {
    let Some(h) = hosts() else { return };
    let yaml = format!(
        "version: 1\n{}stages:\n  sweep:\n    foreach: {{items: [a, b, c, d, e]}}\n    sh: 'echo \"item ${{item}} job $SLURM_JOB_ID\"; test \"${{item}}\" != c || exit 4'\n    on: hpc\n    on_failure: continue\n",
        hosts_block(&h, 1, 1)
    );
    let t = Test::new(&yaml);
    let out = run(&t, &h);
    out.assert_code(4);
    // Succeeded items are counted in the report; the journal lists every item.
    let items = out.items_of("sweep");
    assert_eq!(items.len(), 5, "{}", out.context());
    let mut jobs = Vec::new();
    for i in &items {
        assert_eq!(i["host"], "hpc");
        assert_eq!(i["node"], "node1", "{}", out.context());
        let name = i["name"].as_str().unwrap();
        let line = out.log_of(name).join("\n");
        let job = line.split("job ").nth(1).unwrap_or("").trim().to_string();
        assert!(!job.is_empty(), "{line}");
        jobs.push(job);
        if i["item"] == "c" {
            assert_eq!(i["state"], "failed");
            assert_eq!(i["exit_code"], 4);
        } else {
            assert_eq!(i["state"], "succeeded", "{}", out.context());
        }
    }
    jobs.sort();
    jobs.dedup();
    assert_eq!(jobs.len(), 5, "one job per item: {jobs:?}");
    assert!(
        !out.stderr.contains("srun: error"),
        "srun's own lines reach the log: {}",
        out.stderr
    );
}

#[test]
fn sigkill_of_prun_with_a_running_slurm_stage_leaves_no_job() {
    let Some(h) = hosts() else { return };
    let stage = format!("sk{}", &prun::remote::random_token()[..8]);
    let yaml = format!(
        "version: 1\n{}stages:\n  {stage}:\n    sh: 'echo started; sleep 1000'\n    on: hpc\n    replicas: 2\n    ready: {{line: started}}\n",
        hosts_block(&h, 1, 1)
    );
    let t = Test::new(&yaml);
    let mut child = spawn(&t, &h);
    let _guard = KillOnPanic(child.id() as i32);
    let ours = |jobs: Vec<String>| -> Vec<String> {
        jobs.into_iter()
            .filter(|l| l.contains(&format!("-{stage}.")))
            .collect()
    };
    wait_until("both steps running", LONG, || {
        ours(h.slurm_jobs("prun-"))
            .iter()
            .filter(|l| l.ends_with("RUNNING"))
            .count()
            == 2
            && std::fs::read_to_string(t.path("stderr"))
                .is_ok_and(|s| s.matches("│ started").count() == 2)
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = ours(h.slurm_jobs("prun-"));
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "jobs left in squeue: {left:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn prun_ctl_from_a_remote_stage_releases_a_local_waiter() {
    let Some(h) = hosts() else { return };
    let yaml = format!(
        "version: 1\n{}events: [go]\nsemaphores: {{lock: 1}}\nstages:\n  remote:\n    sh: 'prun ctl sem run lock -- echo in lock; prun ctl event set go; echo \"client $(command -v prun)\"; prun ctl event is-set go; echo \"is-set $?\"'\n    on: h2\n  waiter:\n    sh: 'echo released'\n    waits: [go]\n",
        hosts_block(&h, 1, 1)
    );
    let t = Test::new(&yaml);
    let out = run(&t, &h);
    out.assert_code(0);
    assert_eq!(out.instance("waiter")["state"], "succeeded");
    assert_eq!(out.log_of("waiter"), ["released"], "{}", out.context());
    let remote = out.log_of("remote");
    assert_eq!(remote[0], "in lock", "{}", out.context());
    assert!(
        remote[1].starts_with("client /") && remote[1].contains("/prun-"),
        "the client is the one prun put in the host's run directory: {remote:?}"
    );
    assert_eq!(remote[2], "is-set 0", "{}", out.context());
}

/// The parent of `pid` (any namespace: outer pids).
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[test]
fn a_connection_lost_mid_run_fails_the_instance_naming_the_host_and_restarts_apply() {
    let Some(h) = hosts() else { return };
    let m = mark();
    let (key, value) = m.split_once('=').unwrap();
    let t = Test::new("");
    let again = t.path("again");
    let yaml = format!(
        "version: 1\n{}stages:\n  svc:\n    sh: 'if [ -e {again} ]; then echo second run; exit 0; fi; touch {again}; echo first run; sleep 1000'\n    on: h2\n    env: {{{key}: {value}}}\n    restart: {{policy: on-failure, max: 1, backoff: 100ms}}\n",
        hosts_block(&h, 1, 1),
        again = again.display()
    );
    std::fs::write(t.path("pipeline.yaml"), yaml).unwrap();
    let child = spawn(&t, &h);
    let _guard = KillOnPanic(child.id() as i32);
    wait_until("the first run on h2", LONG, || {
        h.marked("h2", &m)
            .iter()
            .any(|(_, c)| c.starts_with("sleep"))
    });
    // The sshd process that serves this run's connection: the parent of the wrapper
    // that runs the stage. Killing it drops the connection, as a network failure would.
    let (sleep, _) = h
        .marked("h2", &m)
        .into_iter()
        .find(|(_, c)| c.starts_with("sleep"))
        .unwrap();
    let mut p = sleep;
    let sshd = loop {
        let parent = parent_of(p).expect("an sshd above the stage");
        let cmd = std::fs::read(format!("/proc/{parent}/cmdline")).unwrap_or_default();
        if cmd.starts_with(b"sshd") {
            break parent;
        }
        p = parent;
    };
    // SAFETY: killing a process of the test host's namespace found above.
    unsafe { libc::kill(sshd, libc::SIGKILL) };
    let out = t.finish(child, "report.json");
    let stderr = std::fs::read_to_string(t.path("stderr")).unwrap();
    assert_eq!(out.code, Some(0), "{stderr}");
    let svc = out.instance("svc");
    assert_eq!(svc["state"], "succeeded", "{stderr}");
    assert_eq!(svc["restarts"], 1, "{stderr}");
    assert!(
        stderr.contains("svc failed (connection lost: ssh to h2"),
        "the failure names the host: {stderr}"
    );
    assert!(stderr.contains("│ second run"), "{stderr}");
    h.wait_none_marked("h2", &m, Duration::from_secs(10));
}

#[test]
fn the_walk_through_of_docs_hosts_runs_as_shown() {
    let Some(h) = hosts() else { return };
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let out = std::process::Command::new(run_util::prun_exe())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "examples/hosts/hosts.yaml",
            "--progress",
            "never",
            "--report",
        ])
        .arg(&report)
        .env("PRUN_TESTHOSTS", &h.dir)
        .env("SLURM_CONF", h.slurm_conf())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(lines.contains(&"longest   │ 7 machine"), "{stderr}");
    for item in 1..=3 {
        assert!(
            stderr.contains(&format!("│ step {item} on node1 in job ")),
            "{stderr}"
        );
    }
    for i in report["instances"].as_array().unwrap() {
        let (stage, host) = (i["stage"].as_str().unwrap(), &i["host"]);
        match stage {
            "measure" => assert!(host == "h2" || host == "h3", "{i}"),
            "sweep" => assert_eq!((host, &i["node"]), (&"hpc".into(), &"node1".into())),
            _ => assert!(host.is_null(), "{i}"),
        }
    }
}

#[test]
fn prun_signal_and_status_from_another_terminal_reach_a_remote_stage() {
    let Some(h) = hosts() else { return };
    let xdg = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        xdg.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let yaml = format!(
        "version: 1\nname: steered\n{}stages:\n  svc:\n    sh: 'trap \"echo got USR1 on the host\" USR1; echo up; while :; do sleep 0.05; done'\n    on: h3\n",
        hosts_block(&h, 1, 1)
    );
    let t = Test::new(&yaml);
    let child = t
        .command("report.json", &[])
        .env("SLURM_CONF", h.slurm_conf())
        .env("XDG_RUNTIME_DIR", xdg.path())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(t.path("stderr")).unwrap())
        .spawn()
        .unwrap();
    let _guard = KillOnPanic(child.id() as i32);
    let ops = |args: &[&str]| {
        std::process::Command::new(run_util::prun_exe())
            .args(args)
            .env("XDG_RUNTIME_DIR", xdg.path())
            .output()
            .unwrap()
    };
    wait_until("the remote stage is up", LONG, || {
        std::fs::read_to_string(t.path("stderr")).is_ok_and(|s| s.contains("│ up"))
    });
    let status = ops(&["status", "steered", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["instances"][0]["host"], "h3", "{status}");
    let out = ops(&["signal", "steered", "USR1", "svc"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    wait_until("the handler on the host", LONG, || {
        std::fs::read_to_string(t.path("stderr"))
            .is_ok_and(|s| s.contains("│ got USR1 on the host"))
    });
    let out = ops(&["stop", "steered"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = t.finish(child, "report.json");
    assert_eq!(out.instance("svc")["state"], "stopped", "{}", out.context());
}

#[test]
fn inside_an_allocation_instances_are_steps_of_it_side_by_side() {
    let Some(h) = hosts() else { return };
    let t = Test::new("");
    let log = t.path("overlap.log");
    let yaml = format!(
        "version: 1\n{}stages:\n  step:\n    sh: 'echo \"S $(date +%s%N)\" >> {log}; echo \"job $SLURM_JOB_ID step $SLURM_STEP_ID\"; sleep 1; echo \"E $(date +%s%N)\" >> {log}'\n    on: hpc\n    replicas: 2\n",
        hosts_block(&h, 1, 1),
        log = log.display()
    );
    std::fs::write(t.path("pipeline.yaml"), yaml).unwrap();
    let mut cmd = std::process::Command::new("salloc");
    cmd.args(["--quiet", "-p", "debug", "-N1", "-n2"])
        .arg(run_util::prun_exe())
        .args(["run", "pipeline.yaml", "--progress", "never", "--report"])
        .arg(t.path("report.json"))
        .current_dir(t.dir.path())
        .env("SLURM_CONF", h.slurm_conf())
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = t.finish(cmd.spawn().expect("salloc"), "report.json");
    out.assert_code(0);
    let mut jobs = Vec::new();
    for name in ["step.0", "step.1"] {
        let line = out.log_of(name).join(" ");
        let mut f = line.split_whitespace();
        assert_eq!(f.next(), Some("job"), "{}", out.context());
        jobs.push((f.next().unwrap().to_string(), f.nth(1).unwrap().to_string()));
        assert_eq!(out.instance(name)["node"], "node1");
    }
    assert_eq!(
        jobs[0].0, jobs[1].0,
        "both steps of the allocation: {jobs:?}"
    );
    assert_ne!(jobs[0].1, jobs[1].1, "two steps: {jobs:?}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        run_util::max_overlap(&text),
        2,
        "the steps ran one after the other: {text}"
    );
}

#[test]
fn a_remote_ctl_wait_is_never_taken_for_a_deadlock() {
    let Some(h) = hosts() else { return };
    // prun cannot see the host's processes: a wait there that another process of the
    // same instance will answer must not be judged a deadlock
    let yaml = format!(
        "version: 1\n{}events: [go]\nstages:\n  remote:\n    sh: '(sleep 3; prun ctl event set go) & prun ctl event wait go && echo got it; wait'\n    on: h2\n",
        hosts_block(&h, 1, 1)
    );
    let t = Test::new(&yaml);
    let out = run(&t, &h);
    out.assert_code(0);
    assert_eq!(out.log_of("remote"), ["got it"], "{}", out.context());
}

#[test]
fn each_remote_instance_has_its_control_socket_only_while_it_runs() {
    let Some(h) = hosts() else { return };
    let xdg = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        xdg.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let yaml = format!(
        "version: 1\n{}events: [go]\nstages:\n  items:\n    foreach: {{range: {{from: 0, to: 12}}}}\n    sh: 'prun ctl event set go; sleep 0.2'\n    on: [h2, h3]\n",
        hosts_block(&h, 2, 1)
    );
    let t = Test::new(&yaml);
    let mut child = t
        .command("report.json", &[])
        .env("XDG_RUNTIME_DIR", xdg.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _guard = KillOnPanic(child.id() as i32);
    // prun's run directory is the one directory it makes under XDG_RUNTIME_DIR
    let sockets = || -> usize {
        std::fs::read_dir(xdg.path())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|d| std::fs::read_dir(d.path()).ok())
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("ctl-"))
            .count()
    };
    let (mut most, mut seen_any) = (0, false);
    while child.try_wait().unwrap().is_none() {
        let n = sockets();
        seen_any |= n > 0;
        most = most.max(n);
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(child.wait().unwrap().success());
    assert!(seen_any, "no instance socket was ever seen");
    assert!(most <= 3, "{most} instance sockets at once for 3 slots");
}
