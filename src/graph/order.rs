//! The `order: writers` wait rule: a writer of an ordered queue that waits (`after`,
//! succeeded or completed) for a *later* writer of the same queue to end. Its records
//! come first, so the later writer's records wait for it, and the later writer blocks
//! once its share of the queue and its pipe are full: neither can go on (like
//! `cat <(a) <(b)` with `a` waiting for `b`). The ordered twin of
//! `after-reader-deadlock`, and an error for the same reason.

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
        for (si, s) in m.stages.iter().enumerate().filter(|(si, _)| writes(*si)) {
            for (k, (dep, cond)) in s.after.iter().enumerate() {
                let waits_for_end = matches!(cond, Condition::Succeeded | Condition::Completed);
                if !waits_for_end || *dep <= si || !writes(*dep) {
                    continue;
                }
                let spans = &m.stage_spans[si];
                let span = spans.after.get(k).copied().unwrap_or(spans.name);
                let later = &m.stages[*dep].name;
                diags.push(
                    Diagnostic::error(
                        "order-writers-deadlock",
                        format!(
                            "stage `{}` waits for `{later}` to end, but its records come first in queue `{}` (`order: writers`): once `{later}` has filled its share of the queue, neither can go on",
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
