//! The machine-readable report (`--report FILE.json`, SPEC 7) and how it is built
//! from runtime events.
//!
//! These types are the single source of `schemas/report.schema.json` (via schemars),
//! so the JSON shape, the schema and the code cannot drift apart. [`ReportBuilder`]
//! folds the event stream into a [`Report`]; the terminal table is rendered from the
//! same value, so what the user reads and what a script parses always agree.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Serialize;

use super::batches::{Batches, ForeachReport};
pub use super::end_state::EndState;
use crate::event::{Event, InstanceId, InstanceInfo, RunStatus, State, Success, signal_name};

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Report {
    pub pipeline: String,
    pub status: ReportStatus,
    /// prun's exit code.
    pub exit_code: i32,
    pub duration_ms: u64,
    /// Every instance, except foreach items that succeeded (or were resumed): those
    /// are counted in `foreach`.
    pub instances: Vec<InstanceReport>,
    pub queues: Vec<QueueReport>,
    /// Each foreach stage's items, counted: how many succeeded (not listed in
    /// `instances`), failed, were skipped, resumed or never started.
    pub foreach: Vec<ForeachReport>,
    /// The journal kept beside this report (a file name in the same directory): one
    /// JSON line per ended instance, succeeded foreach items included. Null when
    /// `instances` lists every instance.
    pub journal: Option<String>,
    /// When the run failed on a deadlock: who waited for what, who held what.
    pub deadlock: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReportStatus {
    Succeeded,
    Failed,
    Interrupted,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct InstanceReport {
    /// `eater.1`
    pub name: String,
    pub stage: String,
    /// The replica number; for a foreach item, its position in the source (0-based),
    /// which with `stage` and `item` identifies the item for `--resume`.
    pub index: u64,
    /// The foreach item, when the stage has `foreach`.
    pub item: Option<String>,
    /// Pid of the last process of this instance (null if it never started).
    pub pid: Option<u32>,
    pub state: EndState,
    pub exit_code: Option<i32>,
    /// Signal name, such as `"SIGTERM"`.
    pub signal: Option<String>,
    pub restarts: u32,
    /// First start, relative to the pipeline start.
    pub started_ms: Option<u64>,
    /// From the first start to the end of the last run.
    pub duration_ms: Option<u64>,
    /// Records read from routed queues (null when its input is a direct pipe: prun
    /// copies nothing there, so it counts nothing).
    pub records_in: Option<u64>,
    pub records_out: Option<u64>,
    /// Human description of the end state (`failed (exit 3)`, the OS error, the skip
    /// reason).
    pub detail: String,
    /// Killed by SIGPIPE after every reader had ended (counted as success).
    pub downstream_closed: bool,
    /// A foreach item not run because it succeeded in the `--resume` report (its
    /// state is `skipped`; a later `--resume` of this report skips it again).
    pub resumed: bool,
    /// The host (its name under `hosts:`) its last run went to; null for this machine.
    pub host: Option<String>,
    /// The Slurm node its last run ran on (null elsewhere, or if it never started there).
    pub node: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct QueueReport {
    pub name: String,
    pub records: u64,
    pub bytes: u64,
    pub max_depth: u64,
    pub blocked_ms: u64,
    pub sentinels_sent: u64,
    pub dropped_after_sentinel: u64,
    pub in_flight_at_failure: u64,
    /// Records prun had read from writers but could never deliver: every reader had
    /// ended (none restarting), or the run was stopped before they were delivered.
    pub discarded: u64,
    /// Last records without their delimiter, cut short by a writer that failed or was
    /// killed: dropped, never delivered as if whole.
    pub partial_records: u64,
    /// `direct` (a plain pipe, not counted) or `routed`.
    pub wiring: String,
}

/// The JSON Schema of [`Report`] (`prun schema report`).
pub fn report_schema() -> schemars::Schema {
    schemars::schema_for!(Report)
}

#[derive(Debug, Clone)]
struct InstanceRecord {
    info: InstanceInfo,
    state: State,
    pid: Option<u32>,
    started: Option<Duration>,
    ended: Option<Duration>,
    restarts: u32,
    records_in: Option<u64>,
    records_out: Option<u64>,
    host: Option<String>,
    node: Option<String>,
    /// A foreach item that succeeded (or was resumed): counted in `foreach`, not
    /// listed; the record itself is dropped once nothing needs its name (`forget`).
    counted: bool,
}

/// One instance as it is now (`prun status`).
pub struct LiveEntry<'a> {
    pub name: &'a str,
    pub stage: &'a str,
    pub item: Option<&'a str>,
    pub state: &'static str,
    pub detail: String,
    pub pid: Option<u32>,
    pub restarts: u32,
    pub records_in: Option<u64>,
    pub records_out: Option<u64>,
    /// The host under `hosts:` it runs on (None: this machine).
    pub host: Option<&'a str>,
}

/// Folds events into a [`Report`].
#[derive(Debug, Clone, Default)]
pub struct ReportBuilder {
    pipeline: String,
    /// The instances held, by id: every one not folded yet.
    instances: BTreeMap<InstanceId, InstanceRecord>,
    batches: Batches,
    /// Some foreach item was counted and not listed.
    folded_any: bool,
    queues: Vec<QueueReport>,
    status: Option<(RunStatus, i32, Duration)>,
    deadlock: Option<String>,
}

impl ReportBuilder {
    pub fn new() -> ReportBuilder {
        ReportBuilder::default()
    }

    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::PipelineStarted {
                pipeline,
                instances,
                ..
            } => {
                self.pipeline = pipeline.clone();
                for info in instances {
                    self.add(info.clone());
                }
            }
            Event::InstanceAdded(info) => self.add(info.clone()),
            Event::BatchStarted {
                stage,
                stage_name,
                total,
                ..
            } => self
                .batches
                .started(*stage, stage_name, total.map(|t| t as u64)),
            Event::BatchTotal { stage, total } => self.batches.total(*stage, *total),
            Event::BatchClosed {
                stage,
                not_started,
                why,
            } => self.batches.closed(*stage, *not_started, why),
            Event::InstanceFinal { id } => {
                if let Some(r) = self.instances.get_mut(id)
                    && r.info.item.is_some()
                {
                    let entry = instance_report(r);
                    r.counted = self.batches.count(
                        r.info.stage,
                        &r.info.stage_name,
                        entry.state,
                        r.info.resumed,
                        entry.duration_ms,
                        r.restarts,
                    );
                    self.folded_any |= r.counted;
                }
            }
            Event::StateChanged {
                id,
                state,
                pid,
                at,
                restarts,
            } => {
                if let Some(r) = self.instances.get_mut(id) {
                    r.state = state.clone();
                    r.restarts = *restarts;
                    if pid.is_some() {
                        r.pid = *pid;
                    }
                    if *state == State::Running && r.started.is_none() {
                        r.started = Some(*at);
                    }
                    if state.is_end() {
                        r.ended = Some(*at);
                    }
                }
            }
            Event::Records {
                id,
                records_in,
                records_out,
            } => {
                if let Some(r) = self.instances.get_mut(id) {
                    r.records_in = *records_in;
                    r.records_out = *records_out;
                }
            }
            Event::QueueFinished {
                name,
                direct,
                stats,
                ..
            } => self.queues.push(QueueReport {
                name: name.clone(),
                records: stats.records,
                bytes: stats.bytes,
                max_depth: stats.max_depth,
                blocked_ms: stats.blocked_ms,
                sentinels_sent: stats.sentinels_sent,
                dropped_after_sentinel: stats.dropped_after_sentinel,
                in_flight_at_failure: stats.in_flight_at_failure,
                discarded: stats.discarded,
                partial_records: stats.partial_records,
                wiring: if *direct { "direct" } else { "routed" }.to_string(),
            }),
            Event::Finished {
                status,
                exit_code,
                duration,
            } => {
                self.status = Some((*status, *exit_code, *duration));
            }
            Event::Deadlock { message } => self.deadlock = Some(message.clone()),
            Event::Placed { id, host, node } => {
                if let Some(r) = self.instances.get_mut(id) {
                    if r.host.as_ref() != Some(host) || node.is_some() {
                        r.node = node.clone();
                    }
                    r.host = Some(host.clone());
                }
            }
            _ => {}
        }
    }

    fn add(&mut self, info: InstanceInfo) {
        self.instances.insert(
            info.id,
            InstanceRecord {
                info,
                state: State::Waiting,
                pid: None,
                started: None,
                ended: None,
                restarts: 0,
                records_in: None,
                records_out: None,
                host: None,
                node: None,
                counted: false,
            },
        );
    }

    /// Drop a foreach item that was counted (not listed), once nothing needs its
    /// name any more (its log closed). True if it was dropped.
    pub fn forget(&mut self, id: InstanceId) -> bool {
        if self.instances.get(&id).is_some_and(|r| r.counted) {
            self.instances.remove(&id);
            return true;
        }
        false
    }

    /// Whether an instance is a foreach item (and its stage), by id.
    pub fn item_stage(&self, id: InstanceId) -> Option<usize> {
        self.instances
            .get(&id)
            .filter(|r| r.info.item.is_some())
            .map(|r| r.info.stage)
    }

    pub fn pipeline(&self) -> &str {
        &self.pipeline
    }

    /// An instance's name and its stage's name.
    pub fn name_and_stage(&self, id: usize) -> Option<(&str, &str)> {
        self.instances
            .get(&id)
            .map(|r| (r.info.name.as_str(), r.info.stage_name.as_str()))
    }

    /// Every instance held now (live states, not only end states), in report order;
    /// foreach items that succeeded are counted, not held.
    pub fn live_entries(&self) -> Vec<LiveEntry<'_>> {
        let mut records: Vec<&InstanceRecord> =
            self.instances.values().filter(|r| !r.counted).collect();
        records.sort_by_key(|r| (r.info.stage, r.info.index, r.info.id));
        records
            .into_iter()
            .map(|r| LiveEntry {
                name: &r.info.name,
                stage: &r.info.stage_name,
                item: r.info.item.as_deref(),
                state: r.state.name(),
                detail: r.state.describe(),
                pid: r.pid,
                restarts: r.restarts,
                records_in: r.records_in,
                records_out: r.records_out,
                host: r.host.as_deref(),
            })
            .collect()
    }

    /// The name of an instance by id.
    pub fn name_of(&self, id: usize) -> Option<&str> {
        self.instances.get(&id).map(|r| r.info.name.as_str())
    }

    /// A log or report file could not be written: a run that succeeded fails with
    /// [`crate::exit::WRITE_FAILED`] (an earlier failure keeps its code).
    pub fn fail_with_write_error(&mut self) {
        if let Some((status, code, _)) = &mut self.status {
            *code = crate::exit::with_write_failure(*code);
            if *status == RunStatus::Succeeded {
                *status = RunStatus::Failed;
            }
        }
    }

    /// Current state of an instance by name (for the status board and tests).
    pub fn state_of(&self, name: &str) -> Option<&State> {
        self.instances
            .values()
            .find(|r| r.info.name == name)
            .map(|r| &r.state)
    }

    pub fn instance_names(&self) -> impl Iterator<Item = (&InstanceInfo, &State)> {
        self.instances.values().map(|r| (&r.info, &r.state))
    }

    /// One instance's entry of the report, as it stands now.
    pub fn instance_report(&self, id: usize) -> Option<InstanceReport> {
        self.instances.get(&id).map(instance_report)
    }

    /// The records listed in the report, in its order: stages in file order,
    /// instances by index (foreach items are created while the run goes on, but
    /// read best in their source order).
    fn listed(&self) -> Vec<&InstanceRecord> {
        let mut records: Vec<&InstanceRecord> =
            self.instances.values().filter(|r| !r.counted).collect();
        records.sort_by_key(|r| (r.info.stage, r.info.index, r.info.id));
        records
    }

    /// Instance ids in the order of the report's `instances`.
    pub fn ordered_ids(&self) -> Vec<usize> {
        self.listed().into_iter().map(|r| r.info.id).collect()
    }

    pub fn report(&self) -> Report {
        let (status, exit_code, duration) =
            self.status
                .unwrap_or((RunStatus::Failed, 1, Duration::ZERO));
        let instances = self.listed().into_iter().map(instance_report).collect();
        Report {
            pipeline: self.pipeline.clone(),
            status: match status {
                RunStatus::Succeeded => ReportStatus::Succeeded,
                RunStatus::Failed => ReportStatus::Failed,
                RunStatus::Interrupted => ReportStatus::Interrupted,
            },
            exit_code,
            duration_ms: duration.as_millis() as u64,
            instances,
            queues: self.queues.clone(),
            foreach: self.batches.report(),
            journal: None,
            deadlock: self.deadlock.clone(),
        }
    }

    /// Some foreach item was counted and not listed: the journal is what lists it.
    pub fn folded_any(&self) -> bool {
        self.folded_any
    }
}

fn instance_report(r: &InstanceRecord) -> InstanceReport {
    InstanceReport {
        name: r.info.name.clone(),
        stage: r.info.stage_name.clone(),
        index: r.info.index as u64,
        item: r.info.item.clone(),
        pid: r.pid,
        state: end_state(&r.state),
        exit_code: r.state.exit_code(),
        signal: r.state.signal().map(signal_name),
        restarts: r.restarts,
        started_ms: r.started.map(|d| d.as_millis() as u64),
        duration_ms: match (r.started, r.ended) {
            (Some(s), Some(e)) => Some(e.saturating_sub(s).as_millis() as u64),
            _ => None,
        },
        records_in: r.records_in,
        records_out: r.records_out,
        detail: r.state.describe(),
        downstream_closed: r.state == State::Succeeded(Success::DownstreamClosed),
        resumed: r.info.resumed,
        host: r.host.clone(),
        node: r.node.clone(),
    }
}

/// The report only knows end states; a run always ends every instance, but if an
/// event was lost the closest end state is used.
fn end_state(s: &State) -> EndState {
    match s {
        State::Succeeded { .. } => EndState::Succeeded,
        State::Failed { .. } => EndState::Failed,
        State::Killed { .. } => EndState::Killed,
        State::TimedOut { .. } => EndState::TimedOut,
        State::Stopped { .. } | State::Running | State::Ready => EndState::Stopped,
        State::Skipped { .. } | State::Waiting => EndState::Skipped,
        State::CouldNotStart { .. } => EndState::CouldNotStart,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: usize, name: &str) -> InstanceInfo {
        InstanceInfo {
            id,
            name: name.into(),
            stage: 0,
            stage_name: "eater".into(),
            index: id,
            item: None,
            daemon: false,
            resumed: false,
        }
    }

    #[test]
    fn builds_the_spec_shape() {
        let mut b = ReportBuilder::new();
        b.apply(&Event::PipelineStarted {
            pipeline: "baozi".into(),
            instances: vec![info(0, "eater.0"), info(1, "eater.1")],
            queues: vec![],
        });
        let ms = Duration::from_millis;
        let changed = |id, state, at| Event::StateChanged {
            id,
            state,
            pid: Some(4242),
            at: ms(at),
            restarts: 0,
        };
        b.apply(&changed(0, State::Running, 12));
        b.apply(&changed(0, State::Succeeded(Success::Exited(0)), 912));
        b.apply(&changed(1, State::Running, 10));
        b.apply(&changed(
            1,
            State::Killed {
                signal: libc::SIGKILL,
            },
            20,
        ));
        b.apply(&Event::Finished {
            status: RunStatus::Failed,
            exit_code: 137,
            duration: ms(1234),
        });
        let r = b.report();
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["status"], "failed");
        assert_eq!(v["exit_code"], 137);
        assert_eq!(v["duration_ms"], 1234);
        let e0 = &v["instances"][0];
        assert_eq!(e0["name"], "eater.0");
        assert_eq!(e0["state"], "succeeded");
        assert_eq!(e0["exit_code"], 0);
        assert_eq!(e0["started_ms"], 12);
        assert_eq!(e0["duration_ms"], 900);
        assert_eq!(e0["item"], serde_json::Value::Null);
        let e1 = &v["instances"][1];
        assert_eq!(e1["state"], "killed");
        assert_eq!(e1["signal"], "SIGKILL");
        assert_eq!(e1["exit_code"], serde_json::Value::Null);
    }

    #[test]
    fn schema_names_the_states() {
        let schema = serde_json::to_string(&report_schema()).unwrap();
        for s in [
            "could_not_start",
            "timed_out",
            "interrupted",
            "in_flight_at_failure",
            "discarded",
            "partial_records",
        ] {
            assert!(schema.contains(s), "{s} missing from the schema");
        }
    }
}
