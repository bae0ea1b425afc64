//! The `order: writers` wait rule: a writer of an ordered queue that waits (`after`,
//! succeeded or completed, directly or through other stages) for a *later* writer of the
//! same queue to end. Its records come first, so the later writer's records wait for
//! it, and the later writer blocks once its share of the queue and its pipe are full:
//! neither can go on (like `cat <(a) <(b)` with `a` waiting for `b`). The ordered twin
//! of `after-reader-deadlock`, and an error for the same reason. Likewise a daemon
//! writer with writers after it (`order-writers-daemon`, the twin of `after-daemon`).

use crate::diag::Diagnostic;
use crate::model::Model;
use crate::plan::{Condition, Order};

pub fn check(m: &Model, diags: &mut Vec<Diagnostic>) {
    let (writers, _) = m.endpoints();
    for (qi, q) in m.queues.iter().enumerate() {
        if q.order != Order::Writers {
            continue;
        }
        let writes = |s: usize| writers[qi].iter().any(|e| e.stage == s);
        for si in (0..m.stages.len()).filter(|&si| writes(si)) {
            let s = &m.stages[si];
            daemon_first(m, qi, si, &writes, diags);
            for (k, (dep, cond)) in s.after.iter().enumerate() {
                if !ends(cond) {
                    continue;
                }
                // The later writer this `after` entry waits for, directly or not.
                let Some(later) = waits_for(m, *dep, &|d| d > si && writes(d)) else {
                    continue;
                };
                let spans = &m.stage_spans[si];
                let span = spans.after.get(k).copied().unwrap_or(spans.name);
                let later = &m.stages[later].name;
                let through = if m.stages[*dep].name == *later {
                    String::new()
                } else {
                    format!(" (through `{}`)", m.stages[*dep].name)
                };
                diags.push(
                    Diagnostic::error(
                        "order-writers-deadlock",
                        format!(
                            "stage `{}` waits for `{later}` to end{through}, but its records come first in queue `{}` (`order: writers`): once `{later}` has filled its share of the queue, neither can go on",
                            s.name, q.name
                        ),
                    )
                    .at(span, "waits for a later writer of the same queue")
                    .related(m.queue_spans[qi], "the ordered queue")
                    .help(format!(
                        "write `{later}` before `{}` in the file, use `after: {{{later}: started}}`, or give them separate queues",
                        s.name
                    )),
                );
            }
        }
    }
}

/// A daemon writer of an ordered queue before other writers (later stages, or its own
/// other instances): their records wait for it to end, and a daemon only ends when the
/// pipeline does, which in turn waits for them.
fn daemon_first(
    m: &Model,
    qi: usize,
    si: usize,
    writes: &dyn Fn(usize) -> bool,
    diags: &mut Vec<Diagnostic>,
) {
    let s = &m.stages[si];
    if !s.daemon {
        return;
    }
    let later = (si + 1..m.stages.len()).find(|&d| writes(d));
    let who = match later {
        Some(d) => format!("the records of `{}`", m.stages[d].name),
        None if m.instance_count(si) > 1 => "the records of its other instances".to_string(),
        None => return,
    };
    let q = &m.queues[qi].name;
    diags.push(
        Diagnostic::error(
            "order-writers-daemon",
            format!(
                "daemon `{}` writes queue `{q}` (`order: writers`) before other writers: {who} wait for it to end, but a daemon only ends when the pipeline does",
                s.name
            ),
        )
        .at(m.stage_spans[si].name, "a daemon writer with writers after it")
        .related(m.queue_spans[qi], "the ordered queue")
        .help("write it after the other writers of the queue in the file (one instance), or give it a queue of its own"),
    );
}

/// The condition waits for its stage to end.
fn ends(c: &Condition) -> bool {
    matches!(c, Condition::Succeeded | Condition::Completed)
}

/// The first stage matching `target` among `from` and the stages `from` waits for to
/// end, following `after` (succeeded or completed) edges.
fn waits_for(m: &Model, from: usize, target: &dyn Fn(usize) -> bool) -> Option<usize> {
    let mut seen = vec![false; m.stages.len()];
    let mut todo = vec![from];
    while let Some(s) = todo.pop() {
        if std::mem::replace(&mut seen[s], true) {
            continue;
        }
        if target(s) {
            return Some(s);
        }
        todo.extend(
            m.stages[s]
                .after
                .iter()
                .filter(|(_, c)| ends(c))
                .map(|(d, _)| *d),
        );
    }
    None
}
