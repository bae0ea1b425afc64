//! Rendering an instance's command as data: `${...}` templates with the instance's
//! variables, its working directory and its environment (the stage's `env`, then the
//! `PRUN_*` variables, then prun's own directory first on PATH).
//!
//! An instance on another host (`on:`) is rendered for that host: `${run.dir}` is the
//! marker the remote wrapper replaces with the host's run directory, its `cwd` stays
//! as written (relative to the host's `cwd`), and its environment is only the stage's
//! `env` and the `PRUN_*` variables that mean something there (not prun's own
//! environment, PATH or `PRUN_EXE`; the wrapper sets `PRUN_RUN_DIR`, the launch
//! `PRUN_CTL` when the control socket is forwarded).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::Supervisor;
use crate::event::InstanceId;
use crate::plan::{CommandTemplate, InstanceVars};

impl Supervisor {
    pub(super) fn vars(&self, id: InstanceId) -> InstanceVars<'_> {
        let info = &self.insts[id].info;
        let stage = &self.plan.stages[info.stage];
        let (replicas, parts) = match &stage.instances {
            // A foreach stage's "replicas" are its items, once their number is known.
            crate::plan::Instances::Foreach { source, .. } => {
                let total = self.batch_total(info.stage).unwrap_or(0) as usize;
                let parts = match (source, info.item.is_some()) {
                    (crate::plan::ForeachSource::Matrix(dims), true) => {
                        crate::runtime::items::matrix_parts(dims, info.index as u64)
                    }
                    _ => Vec::new(),
                };
                (total, parts)
            }
            crate::plan::Instances::Replicas { .. } => {
                (self.by_stage[info.stage].len(), Vec::new())
            }
        };
        InstanceVars {
            stage: &info.stage_name,
            index: info.index,
            replicas,
            item: info.item.as_deref(),
            run_dir: if self.is_remote(id) {
                crate::remote::RUN_DIR_MARK
            } else {
                self.run_dir.to_str().unwrap_or("")
            },
            parts,
        }
    }

    /// The instance runs on another host (its stage has `on:`).
    pub(super) fn is_remote(&self, id: InstanceId) -> bool {
        !self.plan.stages[self.insts[id].info.stage].on.is_empty()
    }

    /// A path from the file, relative to the directory prun was started in.
    pub(super) fn resolve_path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_relative() && !self.plan.start_dir.as_os_str().is_empty() {
            self.plan.start_dir.join(p)
        } else {
            p.to_path_buf()
        }
    }

    pub(super) fn instance_cwd(&self, id: InstanceId) -> Option<PathBuf> {
        let stage = &self.plan.stages[self.insts[id].info.stage];
        let cwd = stage.cwd.as_ref().map(|t| t.render(&self.vars(id)));
        if self.is_remote(id) {
            return cwd.map(PathBuf::from);
        }
        cwd.map(|c| self.resolve_path(&c))
    }

    pub(super) fn instance_env(&self, id: InstanceId) -> Vec<(OsString, OsString)> {
        let info = &self.insts[id].info;
        let stage = &self.plan.stages[info.stage];
        let vars = self.vars(id);
        let mut env: Vec<(OsString, OsString)> = stage
            .env
            .iter()
            .map(|(k, t)| (k.into(), t.render(&vars).into()))
            .collect();
        let mut set = |k: &str, v: String| env.push((k.into(), v.into()));
        set("PRUN_PIPELINE", self.plan.name.clone());
        set("PRUN_STAGE", info.stage_name.clone());
        set("PRUN_INSTANCE", info.index.to_string());
        set("PRUN_INSTANCE_NAME", info.name.clone());
        set("PRUN_REPLICAS", vars.replicas.to_string());
        if let Some(item) = &info.item {
            set("PRUN_ITEM", item.clone());
        }
        if self.is_remote(id) {
            return env;
        }
        set("PRUN_RUN_DIR", self.run_dir.display().to_string());
        set(
            "PRUN_CTL",
            self.run_dir.join("ctl.sock").display().to_string(),
        );
        // `prun ctl` must work in stages even when prun is not installed: the
        // directory of the running prun goes first on PATH (after the stage's own
        // `env`, which may set PATH), and PRUN_EXE names the binary itself.
        if let Some(exe) = &self.exe {
            env.push(("PRUN_EXE".into(), exe.clone().into_os_string()));
            if let Some(dir) = exe.parent() {
                let base = env
                    .iter()
                    .rev()
                    .find(|(k, _)| k == "PATH")
                    .map(|(_, v)| v.clone())
                    .or_else(|| std::env::var_os("PATH"))
                    .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
                let mut paths = vec![dir.to_path_buf()];
                paths.extend(std::env::split_paths(&base).filter(|p| p != dir));
                if let Ok(joined) = std::env::join_paths(paths) {
                    env.push(("PATH".into(), joined));
                }
            }
        }
        env
    }

    pub(super) fn render_argv(&self, id: InstanceId, cmd: &CommandTemplate) -> Vec<OsString> {
        let vars = self.vars(id);
        match cmd {
            CommandTemplate::Argv(ts) => ts.iter().map(|t| t.render(&vars).into()).collect(),
            CommandTemplate::Shell(t) => {
                vec!["/bin/sh".into(), "-c".into(), t.render_shell(&vars).into()]
            }
        }
    }
}
