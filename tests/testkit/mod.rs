//! Building plans in Rust, for tests.
//!
//! The YAML loader is the normal way to get a [`Plan`]; tests of the runtime build
//! them directly so they depend on nothing but the plan types. The stop order is
//! derived the way SPEC 5.2 describes it (writers before readers, dependents before
//! their dependencies), simply enough for test pipelines.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use prun::plan::RestartSpec;
use prun::plan::{
    CommandTemplate, Condition, Delivery, Endpoint, Framing, Input, Instances, OnFailure, Output,
    Plan, Port, QueuePlan, Role, StagePlan, StopSpec, Template, Wiring,
};

/// A stage with the SPEC defaults and the given command.
pub fn stage(name: &str, command: CommandTemplate) -> StagePlan {
    StagePlan {
        name: name.to_string(),
        role: Role::Job,
        command,
        cwd: None,
        env: Vec::new(),
        instances: Instances::Replicas {
            count: 1,
            named_by_index: false,
        },
        stdin: Input::Null,
        stdout: Output::Log,
        stderr: Output::Log,
        fds: Vec::new(),
        after: Vec::new(),
        waits: Vec::new(),
        sets: Vec::new(),
        semaphores: Vec::new(),
        ready: None,
        daemon: false,
        timeout: None,
        stop: StopSpec {
            signal: libc::SIGTERM,
            timeout: Duration::from_secs(10),
            cmd: None,
        },
        restart: RestartSpec::never(),
        on_failure: OnFailure::Stop,
        success_codes: vec![0],
        on: Vec::new(),
        batch: None,
        halt: None,
    }
}

pub struct PlanBuilder {
    plan: Plan,
}

impl PlanBuilder {
    pub fn new(name: &str) -> PlanBuilder {
        let dir = std::env::current_dir().unwrap_or_default();
        PlanBuilder {
            plan: Plan {
                name: name.to_string(),
                pipeline_dir: dir.clone(),
                start_dir: dir,
                stages: Vec::new(),
                queues: Vec::new(),
                semaphores: Vec::new(),
                events: Vec::new(),
                hosts: Vec::new(),
                start_waves: Vec::new(),
                stop_order: Vec::new(),
                shutdown_timeout: Duration::from_secs(10),
            },
        }
    }

    /// A stage run with `/bin/sh -c script`.
    pub fn sh(&mut self, name: &str, script: &str) -> &mut StagePlan {
        self.push(stage(
            name,
            CommandTemplate::Shell(Template::literal(script)),
        ))
    }

    /// A stage run from an argv.
    pub fn cmd(&mut self, name: &str, argv: &[&str]) -> &mut StagePlan {
        let argv = argv.iter().map(|a| Template::literal(*a)).collect();
        self.push(stage(name, CommandTemplate::Argv(argv)))
    }

    pub fn push(&mut self, stage: StagePlan) -> &mut StagePlan {
        self.plan.stages.push(stage);
        self.plan.stages.last_mut().expect("just pushed")
    }

    pub fn stage_id(&self, name: &str) -> usize {
        self.plan
            .stages
            .iter()
            .position(|s| s.name == name)
            .expect("unknown stage")
    }

    /// `dependent` starts after `dependency` meets `cond`.
    pub fn after(&mut self, dependent: &str, dependency: &str, cond: Condition) -> &mut Self {
        let d = self.stage_id(dependency);
        let i = self.stage_id(dependent);
        self.plan.stages[i].after.push((d, cond));
        self
    }

    /// A direct pipe from `writer`'s stdout to `reader`'s stdin.
    pub fn pipe(&mut self, queue: &str, writer: &str, reader: &str) -> &mut Self {
        let q = self.plan.queues.len();
        let (w, r) = (self.stage_id(writer), self.stage_id(reader));
        self.plan.queues.push(QueuePlan {
            name: queue.to_string(),
            capacity: 1024,
            delivery: Delivery::Shared,
            framing: Framing::Lines,
            sentinel: None,
            order: prun::plan::Order::Arrival,
            writers: vec![Endpoint {
                stage: w,
                port: Port::Stdout,
            }],
            readers: vec![Endpoint {
                stage: r,
                port: Port::Stdin,
            }],
            wiring: Wiring::Direct,
        });
        self.plan.stages[w].stdout = Output::Queue(q);
        self.plan.stages[r].stdin = Input::Queue(q);
        self
    }

    pub fn build(mut self) -> Plan {
        self.plan.stop_order = stop_order(&self.plan);
        self.plan
    }
}

/// Levels of a topological order of "stops before": writer → reader,
/// dependent → dependency. A cycle (should not validate) lands in one last level.
pub fn stop_order(plan: &Plan) -> Vec<Vec<usize>> {
    let n = plan.stages.len();
    let mut before: Vec<Vec<usize>> = vec![Vec::new(); n]; // before[b] = stages stopping before b
    for q in &plan.queues {
        for w in &q.writers {
            for r in &q.readers {
                if w.stage != r.stage {
                    before[r.stage].push(w.stage);
                }
            }
        }
    }
    for (i, s) in plan.stages.iter().enumerate() {
        for &(dep, _) in &s.after {
            before[dep].push(i);
        }
    }
    let mut done = vec![false; n];
    let mut levels = Vec::new();
    while done.iter().any(|d| !d) {
        let level: Vec<usize> = (0..n)
            .filter(|&i| !done[i] && before[i].iter().all(|&b| done[b]))
            .collect();
        if level.is_empty() {
            levels.push((0..n).filter(|&i| !done[i]).collect());
            break;
        }
        for &i in &level {
            done[i] = true;
        }
        levels.push(level);
    }
    levels
}

/// A unique marker for argv-based leftover checks: `sleep <marker>` never ends by
/// itself in a test and is findable in /proc.
pub fn unique_sleep_arg() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{}{:03}.{:09}",
        900 + (std::process::id() % 99),
        n % 1000,
        nanos
    )
}

/// Pids of live (non-zombie) processes whose argv contains `marker`.
pub fn processes_with_arg(marker: &str) -> Vec<i32> {
    prun::procfs::pids()
        .into_iter()
        .filter(|pid| {
            let path: PathBuf = ["/proc", &pid.to_string(), "cmdline"].iter().collect();
            std::fs::read(&path).is_ok_and(|c| c.split(|&b| b == 0).any(|a| a == marker.as_bytes()))
        })
        .filter(|&pid| prun::procfs::stat(pid).is_some_and(|s| s.state != 'Z'))
        .collect()
}
