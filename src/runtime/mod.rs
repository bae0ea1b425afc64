//! The runtime: one supervisor that owns every child process.
//!
//! It takes a [`Plan`](crate::plan::Plan), spawns instances, routes queues,
//! supervises and stops them, and emits events. It never prints: the `report`
//! module renders the events.

pub mod coord;
pub mod foreach;
pub mod router;

use std::path::PathBuf;

use crate::plan::Plan;

/// How `prun run` was asked to behave (CLI options that reach the runtime).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub report: Option<PathBuf>,
    pub log_dir: Option<PathBuf>,
    pub quiet: bool,
    /// `never`, `auto`, `always`
    pub progress: Option<String>,
    /// `auto`, `always`, `never`
    pub color: Option<String>,
    pub resume: Option<PathBuf>,
}

/// Run the plan to the end and return prun's exit code (SPEC 7).
pub fn run(plan: Plan, opts: &RunOptions) -> i32 {
    let _ = (plan, opts);
    unimplemented!("supervisor")
}
