//! The model: a pipeline whose names are resolved and whose rules are checked.
//!
//! It takes the [`PipelineSpec`](crate::syntax::PipelineSpec) as written and produces
//! stages with ids instead of names, defaults applied, params and environment
//! substituted and durations in place. Every rule of SPEC section 2 that needs more
//! than one value at a time lives here (`rules`), except those about the shape of the
//! graph (cycles), which live in `graph`. Spans are kept beside the resolved values so
//! that later phases can still point at the file. [`crate::load`] runs the phases.

pub mod resolve;
pub mod rules;

use std::path::PathBuf;
use std::time::Duration;

use crate::plan::{EventPlan, HostPlan, Order, SemaphorePlan, StagePlan};
use crate::syntax::Span;

/// A validated, resolved pipeline.
#[derive(Debug, Clone)]
pub struct Model {
    pub name: String,
    pub description: Option<String>,
    pub pipeline_dir: PathBuf,
    pub start_dir: PathBuf,
    pub params: Vec<(String, String)>,
    pub queues: Vec<QueueModel>,
    pub semaphores: Vec<SemaphorePlan>,
    pub events: Vec<EventPlan>,
    pub hosts: Vec<HostPlan>,
    pub stages: Vec<StagePlan>,
    /// Where each stage (same index) was written, for later diagnostics.
    pub stage_spans: Vec<StageSpans>,
    pub event_spans: Vec<Span>,
    pub queue_spans: Vec<Span>,
    pub host_spans: Vec<Span>,
    pub param_spans: Vec<Span>,
    pub semaphore_spans: Vec<Span>,
    /// Environment variables of the whole pipeline (`env_file` then `env`), each with
    /// the span where its value was defined.
    pub env_spans: Vec<(String, Span)>,
    pub shutdown_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct QueueModel {
    pub name: String,
    pub capacity: usize,
    pub delivery: crate::plan::Delivery,
    pub framing: crate::plan::Framing,
    pub sentinel: Option<Vec<u8>>,
    pub order: Order,
}

#[derive(Debug, Clone, Default)]
pub struct StageSpans {
    pub name: Span,
    /// Span of each `after` entry (same order as `StagePlan::after`).
    pub after: Vec<Span>,
    /// Span of each `waits` entry.
    pub waits: Vec<Span>,
    /// Span of each `sets` entry.
    pub sets: Vec<Span>,
    /// Span of `cmd[0]`, when the command is an argv.
    pub program: Option<Span>,
}

impl Model {
    pub fn stage_id(&self, name: &str) -> Option<usize> {
        self.stages.iter().position(|s| s.name == name)
    }
}
