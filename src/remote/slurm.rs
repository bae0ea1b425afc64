//! Slurm as an engine: `srun`, `scancel` and the sweep, as data.
//!
//! Each instance is one `srun` step running the wrapper (one task, one node), named
//! `prun-<run id>-<instance>`. When prun itself runs inside an allocation
//! (`SLURM_JOB_ID` in its environment) the steps run inside it, each with `--exact`
//! (only the CPUs it asks for, so steps run side by side), and the host's `partition`
//! is not passed (the allocation decides); otherwise each is a job of its own. srun carries stdin, stdout and stderr.
//!
//! Stopping is `scancel -s SIGNAL` (the engine delivers it to the task's whole group, so
//! the wrapper keeps the instance in its own group: one copy each), then `stop.timeout`,
//! then `scancel -s KILL`. A killed `srun` does not end its job when its helper dies with
//! it, so prun keeps a sweeper beside it: a small `sh` that waits for the end of a pipe
//! only prun holds — prun's end, normal or SIGKILL — and then cancels every job (or
//! step, inside an allocation) of this user whose name starts with the run's prefix.

/// What the file says about one Slurm host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SlurmTarget {
    pub partition: Option<String>,
    /// Extra `srun` arguments (`[--mem=2G, --time=01:00:00]`).
    pub args: Vec<String>,
    /// The allocation prun runs in (`SLURM_JOB_ID`), if any.
    pub allocation: Option<String>,
}

/// The job (step) name prefix of a run; a sweep cancels what carries it.
pub fn name_prefix(run_id: &str) -> String {
    format!("prun-{run_id}-")
}

/// A job name for one instance: the prefix and the instance's name (`crunch.3`, `sweep[17]`).
pub fn job_name(run_id: &str, instance: &str) -> String {
    let clean: String = instance
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-[]".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    format!("{}{clean}", name_prefix(run_id))
}

impl SlurmTarget {
    /// `srun … perl -e BOOT WRAPPER ARGS…`; `command` is the wrapper's argv.
    pub fn srun_argv(&self, name: &str, command: Vec<String>) -> Vec<String> {
        let mut v: Vec<String> = vec![
            "srun".into(),
            format!("--job-name={name}"),
            "--ntasks=1".into(),
            "--nodes=1".into(),
            // no "srun: job N queued" chatter; errors still come
            "--quiet".into(),
        ];
        match (&self.allocation, &self.partition) {
            // Inside an allocation a step takes every CPU of its node unless told
            // otherwise, and the next step waits for it: `--exact` gives each step what
            // it asks for (one task), so the instances run side by side.
            (Some(_), _) => v.push("--exact".into()),
            (None, Some(p)) => v.push(format!("--partition={p}")),
            (None, None) => {}
        }
        v.extend(self.args.iter().cloned());
        v.extend(command);
        v
    }

    /// The job (or, inside an allocation, the step) to signal.
    pub fn target(&self, job: &str, step: Option<&str>) -> String {
        match (&self.allocation, step) {
            (Some(_), Some(s)) => format!("{job}.{s}"),
            _ => job.to_string(),
        }
    }

    /// `scancel -s SIGNAL TARGET` (`signal` without `SIG`).
    pub fn signal_argv(&self, job: &str, step: Option<&str>, signal: &str) -> Vec<String> {
        vec![
            "scancel".into(),
            "--quiet".into(),
            format!("--signal={signal}"),
            self.target(job, step),
        ]
    }
}

/// The sweeper's `sh -c` script. Its stdin is a pipe that only prun holds; when that
/// ends, it cancels what is left of the run. `allocation`: list steps of that job
/// instead of the user's jobs.
pub fn sweep_script(run_id: &str, allocation: Option<&str>) -> String {
    let prefix = name_prefix(run_id);
    let list = match allocation {
        Some(job) => format!(
            "timeout 30 squeue -h -s -j {} -o '%i %j'",
            crate::plan::shell_quote(job)
        ),
        None => "timeout 30 squeue -h -u \"$(id -un)\" -o '%i %j'".to_string(),
    };
    format!(
        "cat >/dev/null\n{list} 2>/dev/null | while read -r id name; do\n  case $name in {}*) timeout 30 scancel --quiet \"$id\" ;; esac\ndone\nexit 0\n",
        crate::plan::shell_quote(&prefix)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_arguments() {
        assert_eq!(job_name("ab12", "crunch.3"), "prun-ab12-crunch.3");
        assert_eq!(job_name("ab12", "x y/z"), "prun-ab12-x_y_z");
        let own = SlurmTarget {
            partition: Some("batch".into()),
            args: vec!["--mem=2G".into()],
            allocation: None,
        };
        let v = own.srun_argv("n", vec!["perl".into()]);
        assert!(v.contains(&"--partition=batch".to_string()));
        assert_eq!(v.last().unwrap(), "perl");
        assert_eq!(own.target("12", Some("0")), "12");
        let inside = SlurmTarget {
            allocation: Some("77".into()),
            ..own
        };
        let v = inside.srun_argv("n", vec![]);
        assert!(!v.iter().any(|a| a.starts_with("--partition")));
        assert!(v.contains(&"--exact".to_string()));
        assert_eq!(inside.target("77", Some("3")), "77.3");
        assert!(sweep_script("ab12", Some("77")).contains("-s -j 77"));
    }
}
