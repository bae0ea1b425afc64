//! prun: a declarative pipeline runner.
//!
//! The modules follow the data flow of one invocation:
//! `syntax` (YAML as written, with spans) → `model` (validated, resolved) →
//! `graph` (petgraph view) → `plan` (pure data: instances, wiring, orders) →
//! `runtime` (the supervisor, emits events) → `report` (renders events).
//! `load` runs the static phases in order; `vocab` is the leaf of shared words;
//! `diag` the diagnostics every phase reports.
//! `ctl` is the control socket that stages use for locks and events.
//! See ARCHITECTURE.md for the five-minute tour.

pub mod cli;
pub mod coord;
pub mod ctl;
pub mod diag;
pub mod event;
pub mod exit;
pub mod graph;
pub mod load;
pub mod model;
pub mod ops;
pub mod plan;
pub mod procfs;
pub mod remote;
pub mod report;
pub mod resume;
pub mod run;
pub mod rundir;
pub mod runtime;
pub mod syntax;
pub mod vocab;
