//! The run as it stands, shared between the reporter (which keeps it up to date) and
//! the ops server (`prun status`, `prun logs`, SPEC 6.1): every instance's state, the
//! queues' counters, the last lines of every instance, and the followers of `logs -f`.
//!
//! One mutex, held briefly by each side: the reporter per event, a request for one
//! snapshot. A follower that does not keep up is dropped (its client is told), so a
//! stalled `prun logs -f` never holds back the run.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use serde_json::{Value, json};

use super::json::ReportBuilder;
use super::lines::LineStore;
use super::sanitize::clean_line;
use crate::event::InstanceId;

/// Lines queued for one follower before it is dropped.
const FOLLOW_QUEUE: usize = 4096;

/// One log line for a follower: (instance name, text).
pub type FollowLine = (String, String);

#[derive(Clone, Default)]
pub struct Live {
    inner: Arc<Mutex<LiveState>>,
}

#[derive(Default)]
pub struct LiveState {
    pub builder: ReportBuilder,
    pub lines: LineStore,
    /// Queue name → (records, records/s, depth, capacity).
    pub queues: BTreeMap<String, (u64, f64, u64, Option<u64>)>,
    followers: Vec<(Vec<String>, Sender<FollowLine>)>,
    pub started: Option<Instant>,
    pub finished: bool,
}

impl Live {
    pub fn lock(&self) -> MutexGuard<'_, LiveState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An instance matches a selection: empty (all), its name, or its stage's name.
fn selected(select: &[String], name: &str, stage: &str) -> bool {
    select.is_empty() || select.iter().any(|s| s == name || s == stage)
}

impl LiveState {
    /// A new line of `id`: kept, and handed to the followers that want it.
    pub fn line(&mut self, id: InstanceId, line: &[u8]) {
        self.lines.push(id, line);
        if self.followers.is_empty() {
            return;
        }
        let Some((name, stage)) = self.builder.name_and_stage(id) else {
            return;
        };
        let (name, stage) = (name.to_string(), stage.to_string());
        let text = clean_line(line, false).into_owned();
        self.followers.retain(|(select, tx)| {
            if !selected(select, &name, &stage) {
                return true;
            }
            match tx.try_send((name.clone(), text.clone())) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
            }
        });
    }

    /// Follow new lines of the selected instances (or stages); the receiver ends when
    /// the run ends or the follower falls behind.
    pub fn follow(&mut self, select: Vec<String>) -> Receiver<FollowLine> {
        let (tx, rx) = crossbeam_channel::bounded(FOLLOW_QUEUE);
        if !self.finished {
            self.followers.push((select, tx));
        }
        rx
    }

    /// The run ended: followers are told (their channels close).
    pub fn finish(&mut self) {
        self.finished = true;
        self.followers.clear();
    }

    /// A stage or instance of this run has this name.
    pub fn knows(&self, name: &str) -> bool {
        self.builder
            .instance_names()
            .any(|(i, _)| i.name == name || i.stage_name == name)
    }

    /// The last `n` lines of each selected instance, oldest instance first.
    pub fn tail(&self, select: &[String], n: usize) -> Vec<FollowLine> {
        let mut out = Vec::new();
        for (info, _) in self.builder.instance_names() {
            if !selected(select, &info.name, &info.stage_name) {
                continue;
            }
            for l in self.lines.tail(info.id, n) {
                out.push((info.name.clone(), clean_line(l, false).into_owned()));
            }
        }
        out
    }

    /// Every instance and queue, as `prun status --json` prints it.
    pub fn status(&self) -> Value {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        let instances: Vec<Value> = self
            .builder
            .live_entries()
            .into_iter()
            .map(|e| {
                *counts.entry(e.state).or_default() += 1;
                json!({
                    "name": e.name, "stage": e.stage, "item": e.item, "state": e.state,
                    "detail": e.detail, "pid": e.pid, "host": e.host, "restarts": e.restarts,
                    "records_in": e.records_in, "records_out": e.records_out,
                })
            })
            .collect();
        let queues: Vec<Value> = self
            .queues
            .iter()
            .map(|(name, (records, rate, depth, capacity))| {
                json!({"name": name, "records": records, "rate": (rate * 10.0).round() / 10.0,
                       "depth": depth, "capacity": capacity})
            })
            .collect();
        json!({
            "pipeline": self.builder.pipeline(),
            "age_ms": self.started.map(|s| s.elapsed().as_millis() as u64),
            "finished": self.finished,
            "counts": counts,
            "instances": instances,
            "queues": queues,
        })
    }
}
