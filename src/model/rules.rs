//! Rules that look at more than one value: queue ends, framing, deadlock-prone
//! `after` edges, events nothing sets, programs not on PATH; and the features the
//! runtime does not run yet ([`not_yet_supported`]). Cycles are checked by the graph
//! module; [`crate::load`] runs both so a load reports everything at once.

use crate::diag::Diagnostic;
use crate::plan::{Condition, Delivery, Endpoint, Framing, Instances, Port};
use crate::syntax::PipelineSpec;

use super::Model;

pub fn check(spec: &PipelineSpec, m: &Model, diags: &mut Vec<Diagnostic>) {
    let (writers, readers) = m.endpoints();
    for (qi, q) in m.queues.iter().enumerate() {
        let span = m.queue_spans[qi];
        // A keyword name was already refused (`invalid-name`): nothing could refer to it,
        // so "no writer" and "no reader" would only repeat that.
        // A reserved stream word (`log`, `inherit`) was refused as well (`reserved-name`):
        // `stdout: log` means the log, so "send output to it" would be wrong advice.
        let keyword = matches!(
            q.name.as_str(),
            "true" | "false" | "null" | "log" | "inherit"
        );
        if writers[qi].is_empty() && !keyword {
            diags.push(
                Diagnostic::error(
                    "queue-without-writer",
                    format!("queue `{}` has no writer", q.name),
                )
                .at(span, "nothing writes to this queue")
                .help(format!(
                    "send a stage's output to it: `stdout: {}`, or remove the queue",
                    q.name
                )),
            );
        }
        if readers[qi].is_empty() && !keyword {
            diags.push(
                Diagnostic::error(
                    "queue-without-reader",
                    format!("queue `{}` has no reader", q.name),
                )
                .at(span, "nothing reads this queue")
                .help(format!(
                    "read it from a stage: `stdin: {}`, or remove the queue",
                    q.name
                )),
            );
        }
        if q.framing == Framing::Bytes {
            let writer_instances: usize =
                writers[qi].iter().map(|e| m.instance_count(e.stage)).sum();
            let reader_instances: usize =
                readers[qi].iter().map(|e| m.instance_count(e.stage)).sum();
            let foreach_reader = readers[qi].iter().any(|e| e.port == Port::Foreach);
            let problem = if writer_instances > 1 {
                Some(
                    "it has more than one writer instance, and a byte stream cannot be merged safely",
                )
            } else if q.delivery == Delivery::Shared && reader_instances > 1 {
                Some(
                    "it has more than one reader instance with `delivery: shared`, and a byte stream cannot be split fairly",
                )
            } else if foreach_reader {
                Some("a foreach stage needs records, and a byte stream has none")
            } else {
                None
            };
            if let Some(why) = problem {
                diags.push(
                    Diagnostic::error("bytes-framing", format!("queue `{}` cannot use `framing: bytes`: {why}", q.name))
                        .at(span, "byte-stream queue")
                        .help("use `framing: lines` or `nul` so prun can route whole records, or keep one writer and one reader"),
                );
            }
        }
    }

    for (si, s) in m.stages.iter().enumerate() {
        let spans = &m.stage_spans[si];
        for (k, (dep, cond)) in s.after.iter().enumerate() {
            let span = spans.after.get(k).copied().unwrap_or(spans.name);
            let dep_stage = &m.stages[*dep];
            let waits_for_end = matches!(cond, Condition::Succeeded | Condition::Completed);
            if waits_for_end && dep_stage.daemon {
                diags.push(
                    Diagnostic::error(
                        "after-daemon",
                        format!("stage `{}` waits for daemon `{}` to end, but a daemon only ends when the pipeline does", s.name, dep_stage.name),
                    )
                    .at(span, "waits for a daemon to finish")
                    .help(format!("wait for it to be up instead: `after: {{{}: ready}}` (or `started`)", dep_stage.name)),
                );
            }
            if waits_for_end {
                let shared = writers.iter().enumerate().find(|(qi, ws)| {
                    ws.iter().any(|w| w.stage == *dep) && readers[*qi].iter().any(|r| r.stage == si)
                });
                if let Some((qi, _)) = shared {
                    diags.push(
                        Diagnostic::error(
                            "after-reader-deadlock",
                            format!(
                                "stage `{}` reads queue `{}` but waits for its writer `{}` to end: once the queue is full, neither can go on",
                                s.name, m.queues[qi].name, dep_stage.name
                            ),
                        )
                        .at(span, "waits for the writer of its own input")
                        .related(m.queue_spans[qi], "the queue between them")
                        .help("stages joined by a queue start together; remove this `after`, or use `after: {X: started}`"),
                    );
                }
            }
            if *dep == si {
                diags.push(
                    Diagnostic::error(
                        "dependency-cycle",
                        format!("stage `{}` is `after` itself", s.name),
                    )
                    .at(span, "depends on itself")
                    .help("remove this entry from `after`"),
                );
            }
        }
        if s.stdin_queue().is_some()
            && let Instances::Foreach {
                source: crate::plan::ForeachSource::Queue(_),
                ..
            } = s.instances
        {
            diags.push(
                Diagnostic::error(
                    "stdin-and-foreach-queue",
                    format!("stage `{}` reads a queue both as `stdin` and as `foreach: {{queue}}`", s.name),
                )
                .at(spans.name, "two readers of queue records in one stage")
                .help("with `foreach: {queue: Q}` each record becomes an item (`${item}`); remove `stdin`"),
            );
        }
    }

    // Events waited on that nothing can set (ctl may still set them: a warning).
    for (ei, e) in m.events.iter().enumerate() {
        let waited = m.stages.iter().any(|s| s.waits.contains(&ei));
        let set_by_stage = m
            .stages
            .iter()
            .any(|s| s.sets.iter().any(|(id, _)| *id == ei));
        if waited && !e.initially_set && !set_by_stage {
            let uses_ctl = m.stages.iter().any(|s| s.mentions("ctl"));
            if !uses_ctl {
                diags.push(
                    Diagnostic::warning("event-never-set", format!("event `{}` is waited on but nothing sets it", e.name))
                        .at(m.event_spans[ei], "never set")
                        .help(format!(
                            "add `sets: {{{}: ready}}` to a stage, run `prun ctl event set {}` from one, or declare it `initially: set`",
                            e.name, e.name
                        )),
                );
            }
        }
    }

    check_hosts(spec, diags);
    check_programs(spec, m, diags);
    check_broadcast_foreach(spec, m, diags);
}

/// A foreach stage reading a broadcast queue must run all its items at once (SPEC 4.2):
/// an item started after records were handed out to every reader then running would
/// miss them. Without `parallel` it does (the resolver's default); a `parallel` below
/// a count known before the run is an error; with a count known only at run time
/// (`glob`, `lines`, `queue`) a `parallel` is a warning: late items miss records,
/// which are counted in the queue's `discarded`.
fn check_broadcast_foreach(spec: &PipelineSpec, m: &Model, diags: &mut Vec<Diagnostic>) {
    for s in &m.stages {
        let Instances::Foreach { source, parallel } = &s.instances else {
            continue;
        };
        let mut read = s.stdin_queue().into_iter().chain(
            s.fds
                .iter()
                .filter(|f| f.direction == crate::plan::FdDirection::Read)
                .map(|f| f.queue),
        );
        let Some(q) = read.find(|&q| {
            m.queues
                .get(q)
                .is_some_and(|q| q.delivery == Delivery::Broadcast)
        }) else {
            continue;
        };
        // Where `parallel` is written: on the stage, or in `defaults`.
        let Some(span) = spec
            .stages
            .iter()
            .find(|st| st.name.value == s.name)
            .and_then(|st| st.parallel.as_ref())
            .or_else(|| spec.defaults.as_ref().and_then(|d| d.parallel.as_ref()))
            .map(|p| p.span)
        else {
            continue;
        };
        let queue = &m.queues[q].name;
        match source.known_count() {
            Some(count) if (*parallel as u64) < count => diags.push(
                Diagnostic::error(
                    "broadcast-foreach-parallel",
                    format!(
                        "stage `{}` reads broadcast queue `{queue}` but runs only {parallel} of its {count} items at once",
                        s.name
                    ),
                )
                .at(span, format!("{parallel} at once, {count} items"))
                .related(m.queue_spans[q], "every reader instance gets every record")
                .help(format!(
                    "an item started later would miss the records handed out before it: remove `parallel` (the stage then runs all {count} items at once) or raise it to {count}"
                )),
            ),
            Some(_) => {}
            None => diags.push(
                Diagnostic::warning(
                    "broadcast-foreach-late-items",
                    format!(
                        "stage `{}` reads broadcast queue `{queue}` with `parallel: {parallel}`, and how many items it has is known only at run time",
                        s.name
                    ),
                )
                .at(span, "later items may start late")
                .related(m.queue_spans[q], "every reader instance gets every record")
                .help(
                    "an item that starts after records were handed out to every reader then running gets only the records still held; the ones it missed are counted in the queue's `discarded`. Remove `parallel` to start every item at once",
                ),
            ),
        }
    }
}

/// What cannot cross to another host: an engine carries stdin, stdout and stderr, not
/// extra descriptors.
fn check_hosts(spec: &PipelineSpec, diags: &mut Vec<Diagnostic>) {
    let default_on = spec.defaults.as_ref().and_then(|d| d.on.as_ref());
    for s in &spec.stages {
        let Some(on) = s.on.as_ref().or(default_on).filter(|on| !on.is_empty()) else {
            continue;
        };
        for f in s.fds.iter().flatten() {
            let d = Diagnostic::error(
                "fds-on-host",
                format!(
                    "stage `{}` runs on another host (`on: {}`), where descriptor {} cannot reach",
                    s.name.value, on[0].value, f.fd.value
                ),
            )
            .at(f.fd.span, "not carried to other hosts")
            .related(on[0].span, "runs there")
            .help("ssh and srun carry stdin, stdout and stderr only: use those for the queues of a remote stage");
            diags.push(d);
        }
    }
}

/// Parts of the format that `validate` and `plan` accept (they are parsed, checked
/// and carried into the plan) but that the runtime does not run yet: `prun run`
/// refuses a file that uses one, with one `not-yet-supported` error per use, before
/// anything starts. Delete a line here when the runtime implements it.
pub fn not_yet_supported(_spec: &PipelineSpec) -> Vec<Diagnostic> {
    // Nothing at the moment (`order: writers` runs since the router's `order` room).
    let found: Vec<(crate::syntax::Span, &str)> = Vec::new();
    // One diagnostic per feature: its first use, the others as related places.
    let mut grouped: Vec<(&str, Vec<crate::syntax::Span>)> = Vec::new();
    for (span, what) in found {
        match grouped.iter_mut().find(|(w, _)| *w == what) {
            Some((_, spans)) => spans.push(span),
            None => grouped.push((what, vec![span])),
        }
    }
    grouped
        .into_iter()
        .map(|(what, spans)| {
            let mut d = Diagnostic::error(
                "not-yet-supported",
                format!("`prun run` does not run {what} yet"),
            )
            .at(spans[0], "not run yet")
            .help("`prun validate` and `prun plan` accept it; running it comes with a later version of prun");
            for s in &spans[1..] {
                d = d.related(*s, "also used here");
            }
            d
        })
        .collect()
}

/// Warn when `cmd[0]` is not an executable that can be found.
fn check_programs(_spec: &PipelineSpec, m: &Model, diags: &mut Vec<Diagnostic>) {
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    let mut known: std::collections::HashMap<&str, bool> = std::collections::HashMap::new();
    for (si, s) in m.stages.iter().enumerate() {
        let crate::plan::CommandTemplate::Argv(argv) = &s.command else {
            continue;
        };
        let Some(first) = argv.first() else { continue };
        let [crate::plan::Piece::Literal(program)] = first.pieces.as_slice() else {
            continue;
        };
        if s.cwd.is_some() && !program.starts_with('/') && program.contains('/') {
            continue;
        }
        let found = *known.entry(program.as_str()).or_insert_with(|| {
            if program.contains('/') {
                is_executable(&m.start_dir.join(program))
            } else {
                std::env::split_paths(&path_var).any(|d| is_executable(&d.join(program)))
            }
        });
        if !found {
            let span = m.stage_spans[si].program.unwrap_or(m.stage_spans[si].name);
            diags.push(
                Diagnostic::warning("command-not-found", format!("`{program}` is not an executable on PATH"))
                    .at(span, "not found")
                    .help("install it, fix the spelling, or give a path; the stage would end as `could not start`"),
            );
        }
    }
}

fn is_executable(p: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|md| md.is_file() && md.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

impl Model {
    /// Writers and readers of each queue.
    pub fn endpoints(&self) -> (Vec<Vec<Endpoint>>, Vec<Vec<Endpoint>>) {
        let mut writers = vec![Vec::new(); self.queues.len()];
        let mut readers = vec![Vec::new(); self.queues.len()];
        for (si, s) in self.stages.iter().enumerate() {
            for (q, port) in s.queue_ports() {
                let e = Endpoint { stage: si, port };
                if q >= self.queues.len() {
                    continue;
                }
                if s.port_reads(port) {
                    readers[q].push(e);
                } else {
                    writers[q].push(e);
                }
            }
        }
        (writers, readers)
    }

    /// Instances a stage has (a foreach stage counts as many).
    pub fn instance_count(&self, stage: usize) -> usize {
        match &self.stages[stage].instances {
            Instances::Replicas { count, .. } => *count,
            Instances::Foreach { .. } => usize::MAX / 4,
        }
    }
}
