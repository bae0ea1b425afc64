//! From a validated model to a plan: roles, wiring, start waves and drain order (the
//! last two are layers of the dependency graph).

use petgraph::algo::{condensation, toposort};
use petgraph::graph::DiGraph;

use crate::model::Model;
use crate::plan::*;

pub fn build(m: Model) -> Plan {
    let (writers, readers) = m.endpoints();
    let mut stages = m.stages;

    for s in stages.iter_mut() {
        s.role = role_of(s);
    }

    let instances = |s: &StagePlan| match &s.instances {
        Instances::Replicas { count, .. } => *count,
        Instances::Foreach { .. } => usize::MAX,
    };
    let queues: Vec<QueuePlan> = m
        .queues
        .into_iter()
        .enumerate()
        .map(|(qi, q)| {
            let w = &writers[qi];
            let r = &readers[qi];
            let direct = w.len() == 1
                && r.len() == 1
                && w[0].port != Port::Foreach
                && r[0].port != Port::Foreach
                && instances(&stages[w[0].stage]) == 1
                && instances(&stages[r[0].stage]) == 1
                && w[0].stage != r[0].stage
                && q.sentinel.is_none()
                && stages[w[0].stage].restart.policy == RestartPolicy::Never
                && stages[r[0].stage].restart.policy == RestartPolicy::Never;
            QueuePlan {
                name: q.name,
                capacity: q.capacity,
                delivery: q.delivery,
                framing: q.framing,
                sentinel: q.sentinel,
                order: q.order,
                writers: w.clone(),
                readers: r.clone(),
                wiring: if direct {
                    Wiring::Direct
                } else {
                    Wiring::Routed
                },
            }
        })
        .collect();

    let start_waves = start_waves(&stages);
    let stop_order = stop_order(&stages, &queues);
    Plan {
        name: m.name,
        pipeline_dir: m.pipeline_dir,
        start_dir: m.start_dir,
        stages,
        queues,
        semaphores: m.semaphores,
        events: m.events,
        hosts: m.hosts,
        start_waves,
        stop_order,
        shutdown_timeout: m.shutdown_timeout,
    }
}

fn role_of(s: &StagePlan) -> Role {
    if s.daemon {
        return Role::Daemon;
    }
    if s.is_foreach() {
        return Role::Batch;
    }
    let reads = !s.reads().is_empty();
    let writes = !s.writes().is_empty();
    match (reads, writes) {
        (true, true) => Role::Filter,
        (false, true) => Role::Producer,
        (true, false) => {
            if matches!(s.stdout, Output::Inherit | Output::File { .. }) {
                Role::Sink
            } else {
                Role::Consumer
            }
        }
        (false, false) => Role::Job,
    }
}

/// Layers of a DAG given as "a must come before b" edges; members of a cycle share a
/// layer (cycles are reported as errors or warnings elsewhere).
fn layers(n: usize, edges: &[(usize, usize)]) -> Vec<Vec<usize>> {
    let mut g: DiGraph<usize, ()> = DiGraph::new();
    let nodes: Vec<_> = (0..n).map(|i| g.add_node(i)).collect();
    for &(a, b) in edges {
        if a != b {
            g.add_edge(nodes[a], nodes[b], ());
        }
    }
    let cond = condensation(g, true);
    let order = toposort(&cond, None).unwrap_or_default();
    let mut level = vec![0usize; cond.node_count()];
    for idx in &order {
        for next in cond.neighbors(*idx) {
            level[next.index()] = level[next.index()].max(level[idx.index()] + 1);
        }
    }
    let depth = level.iter().copied().max().map(|d| d + 1).unwrap_or(0);
    let mut out = vec![Vec::new(); depth];
    for idx in cond.node_indices() {
        for &stage in &cond[idx] {
            out[level[idx.index()]].push(stage);
        }
    }
    for layer in out.iter_mut() {
        layer.sort();
    }
    out.retain(|l| !l.is_empty());
    out
}

/// When each stage may first start: after its `after` dependencies and after the
/// stages that set the events it waits for. Stages joined only by queues share a wave.
fn start_waves(stages: &[StagePlan]) -> Vec<Vec<StageId>> {
    let mut edges = Vec::new();
    for (si, s) in stages.iter().enumerate() {
        for (dep, _) in &s.after {
            edges.push((*dep, si));
        }
        for ev in &s.waits {
            for (setter, other) in stages.iter().enumerate() {
                if other.sets.iter().any(|(e, _)| e == ev) {
                    edges.push((setter, si));
                }
            }
        }
    }
    layers(stages.len(), &edges)
}

/// Drain order (SPEC 5.2): writers stop before the readers of their queues, dependents
/// before their dependencies, so a daemon others rely on stops last.
fn stop_order(stages: &[StagePlan], queues: &[QueuePlan]) -> Vec<Vec<StageId>> {
    let mut edges = Vec::new();
    for q in queues {
        for w in &q.writers {
            for r in &q.readers {
                edges.push((w.stage, r.stage));
            }
        }
    }
    for (si, s) in stages.iter().enumerate() {
        for (dep, _) in &s.after {
            edges.push((si, *dep));
        }
    }
    layers(stages.len(), &edges)
}
