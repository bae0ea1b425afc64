//! The hosts of one run: where each remote instance goes (free slots) and the state of
//! each host's shared connection. Pure bookkeeping and command lines: the runtime spawns
//! and reaps every process (engine clients are its children like stage instances) and
//! tells this module what happened.
//!
//! Placement (SPEC 3.5): an instance of a stage `on: [a, b, ...]` goes to the listed host
//! with the most free slots, the first listed on a tie; a host without `slots` (Slurm by
//! default) always has room. When every listed host is full the instance waits.
//!
//! Connections: an SSH host gets its master connection when its first instance needs
//! it. The master's control socket appearing is the sign that it is connected and
//! authenticated; its exit before that is the engine's failure, with its message
//! (unreachable, refused key, unknown host key), and every instance waiting for it ends
//! `could not start` with that message. A later instance tries again (a new master), so
//! restart policies can outlast a network blip. Slurm needs no connection.

use std::path::{Path, PathBuf};

use super::slurm::SlurmTarget;
use super::ssh::SshTarget;
use crate::plan::{Engine, HostId, HostPlan};

/// How an engine is reached, ready to build command lines.
#[derive(Debug, Clone)]
pub enum Target {
    Ssh(SshTarget),
    Slurm(SlurmTarget),
}

/// A host's shared connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conn {
    /// Nothing asked for it yet (or the last one ended).
    Idle,
    /// The master runs (pid) and has not connected yet.
    Connecting { pid: i32 },
    /// Connected: sessions go over it.
    Up { pid: i32 },
    /// The last attempt failed with this message.
    Failed(String),
    /// No connection needed (Slurm).
    None,
}

/// What an instance that wants to start on a host should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connect {
    /// Start it.
    Ready,
    /// Spawn this master (then call [`Hosts::master_spawned`]) and wait.
    Spawn(Vec<String>),
    /// Wait: the connection is on its way.
    Wait,
    /// The engine failed: `could not start` with this message.
    Failed(String),
}

#[derive(Debug)]
struct Host {
    plan: HostPlan,
    target: Target,
    running: usize,
    conn: Conn,
    /// The run directory there may hold files at the end (see [`Hosts::left_files`]).
    dirty: bool,
}

/// Every host of a run.
#[derive(Debug)]
pub struct Hosts {
    run_id: String,
    allocation: Option<String>,
    hosts: Vec<Host>,
}

impl Hosts {
    /// `control_dir`: prun's private run directory (the masters' sockets go there, one
    /// short name per host); `allocation`: `SLURM_JOB_ID` when prun runs in one.
    pub fn new(
        plan: &[HostPlan],
        run_id: &str,
        control_dir: &Path,
        allocation: Option<String>,
    ) -> Hosts {
        let hosts = plan
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let (target, conn) = match &h.engine {
                    Engine::Ssh {
                        destination,
                        port,
                        options,
                    } => (
                        Target::Ssh(SshTarget {
                            destination: destination.clone(),
                            port: *port,
                            options: options.clone(),
                            control_path: control_dir.join(format!("ssh{i}")),
                        }),
                        Conn::Idle,
                    ),
                    Engine::Slurm { partition, args } => (
                        Target::Slurm(SlurmTarget {
                            partition: partition.clone(),
                            args: args.clone(),
                            allocation: allocation.clone(),
                        }),
                        Conn::None,
                    ),
                };
                Host {
                    plan: h.clone(),
                    target,
                    running: 0,
                    conn,
                    dirty: false,
                }
            })
            .collect();
        Hosts {
            run_id: run_id.to_string(),
            allocation,
            hosts,
        }
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The Slurm allocation prun runs in (`SLURM_JOB_ID`), if any.
    pub fn allocation(&self) -> Option<String> {
        self.allocation.clone()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    pub fn name(&self, h: HostId) -> &str {
        &self.hosts[h].plan.name
    }

    pub fn plan(&self, h: HostId) -> &HostPlan {
        &self.hosts[h].plan
    }

    pub fn target(&self, h: HostId) -> &Target {
        &self.hosts[h].target
    }

    pub fn conn(&self, h: HostId) -> &Conn {
        &self.hosts[h].conn
    }

    fn free(&self, h: HostId) -> usize {
        let host = &self.hosts[h];
        match host.plan.slots {
            Some(n) => n.saturating_sub(host.running),
            None => usize::MAX,
        }
    }

    /// The host for the next instance of a stage `on` these hosts: the most free
    /// slots, the first listed on a tie; `None` when all are full.
    pub fn choose(&self, on: &[HostId]) -> Option<HostId> {
        crate::plan::most_free_slots(on, |h| self.free(h))
    }

    /// An instance took a slot on `h` (it is starting or runs there).
    pub fn take(&mut self, h: HostId) {
        self.hosts[h].running += 1;
    }

    /// An instance on `h` ended: its slot is free again.
    pub fn release(&mut self, h: HostId) {
        let host = &mut self.hosts[h];
        host.running = host.running.saturating_sub(1);
    }

    pub fn running(&self, h: HostId) -> usize {
        self.hosts[h].running
    }

    /// May an instance start on `h` now? Asks for a master connection when needed.
    /// `socket_exists` tells whether a control socket is in place (the caller looks at
    /// the file system; tests pass their own).
    pub fn connect(&mut self, h: HostId, socket_exists: impl Fn(&Path) -> bool) -> Connect {
        let host = &mut self.hosts[h];
        let Target::Ssh(t) = &host.target else {
            return Connect::Ready;
        };
        match host.conn.clone() {
            Conn::None | Conn::Up { .. } => Connect::Ready,
            Conn::Connecting { pid } => {
                if socket_exists(&t.control_path) {
                    host.conn = Conn::Up { pid };
                    Connect::Ready
                } else {
                    Connect::Wait
                }
            }
            Conn::Failed(m) => Connect::Failed(m),
            Conn::Idle => Connect::Spawn(t.master_argv()),
        }
    }

    /// The master for `h` was spawned as `pid` (or could not be: `Err(message)`).
    pub fn master_spawned(&mut self, h: HostId, pid: Result<i32, String>) {
        self.hosts[h].conn = match pid {
            Ok(pid) => Conn::Connecting { pid },
            Err(m) => Conn::Failed(m),
        };
    }

    /// A failed connection is tried again by the next instance that wants the host
    /// (after the ones waiting for it were told).
    pub fn retry(&mut self, h: HostId) {
        if matches!(self.hosts[h].conn, Conn::Failed(_)) {
            self.hosts[h].conn = Conn::Idle;
        }
    }

    /// A process ended: if it was a master, its host's connection is down. `message`
    /// is what the master wrote on stderr. Returns the host and whether it had been up.
    pub fn master_exited(&mut self, pid: i32, message: &str) -> Option<(HostId, bool)> {
        let h = self.hosts.iter().position(|host| {
            matches!(host.conn, Conn::Connecting { pid: p } | Conn::Up { pid: p } if p == pid)
        })?;
        let host = &mut self.hosts[h];
        let was_up = matches!(host.conn, Conn::Up { .. });
        let text = message
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        host.conn = Conn::Failed(if text.is_empty() {
            format!("ssh to {}: the connection ended", host.plan.name)
        } else {
            text
        });
        Some((h, was_up))
    }

    /// Masters still running (pid, the command that closes each cleanly).
    pub fn masters(&self) -> Vec<(i32, Vec<String>)> {
        self.hosts
            .iter()
            .filter_map(|host| match (&host.conn, &host.target) {
                (Conn::Connecting { pid } | Conn::Up { pid }, Target::Ssh(t)) => {
                    Some((*pid, t.exit_argv()))
                }
                _ => None,
            })
            .collect()
    }

    /// A run on `h` may have left files in the host's run directory: the last user
    /// said it kept them, or the run ended without saying (lost, a helper command).
    /// A host where every run's wrapper removed the directory, or left it to others
    /// that did, needs no cleanup at the end.
    pub fn left_files(&mut self, h: HostId) {
        self.hosts[h].dirty = true;
    }

    /// At the end of the run: remove the run directory on every SSH host that may
    /// still have one (over its shared connection when that is up, else on a
    /// connection of its own).
    pub fn cleanup_commands(&self) -> Vec<Vec<String>> {
        self.hosts
            .iter()
            .filter(|host| host.dirty)
            .filter_map(|host| match (&host.conn, &host.target) {
                (Conn::Up { .. } | Conn::Idle, Target::Ssh(t)) => {
                    Some(t.session_argv(super::shell_line(&super::cleanup_words(&self.run_id))))
                }
                _ => None,
            })
            .collect()
    }

    /// Does any host use Slurm (then the run needs a sweeper)?
    pub fn uses_slurm(&self) -> bool {
        self.hosts
            .iter()
            .any(|h| matches!(h.target, Target::Slurm(_)))
    }

    /// The control socket path of `h` (SSH only).
    pub fn control_path(&self, h: HostId) -> Option<PathBuf> {
        match &self.hosts[h].target {
            Target::Ssh(t) => Some(t.control_path.clone()),
            Target::Slurm(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ssh(name: &str, slots: Option<usize>) -> HostPlan {
        HostPlan {
            name: name.into(),
            engine: Engine::Ssh {
                destination: name.into(),
                port: None,
                options: vec![],
            },
            slots,
            cwd: None,
        }
    }

    fn slurm(name: &str) -> HostPlan {
        HostPlan {
            name: name.into(),
            engine: Engine::Slurm {
                partition: None,
                args: vec![],
            },
            slots: None,
            cwd: None,
        }
    }

    #[test]
    fn most_free_slots_first_listed_on_a_tie() {
        let mut hs = Hosts::new(
            &[ssh("a", Some(2)), ssh("b", Some(3)), slurm("c")],
            "r",
            Path::new("/tmp/x"),
            None,
        );
        assert_eq!(hs.choose(&[0, 1]), Some(1));
        hs.take(1);
        assert_eq!(hs.choose(&[0, 1]), Some(0)); // 2 free each: a is listed first
        hs.take(0);
        hs.take(1);
        hs.take(0);
        hs.take(1);
        assert_eq!(hs.choose(&[0, 1]), None);
        hs.release(0);
        assert_eq!(hs.choose(&[0, 1]), Some(0));
        assert_eq!(hs.choose(&[2]), Some(2));
    }

    #[test]
    fn a_connection_is_spawned_once_then_ready_when_its_socket_appears() {
        let mut hs = Hosts::new(&[ssh("a", Some(1))], "r", Path::new("/tmp/x"), None);
        let Connect::Spawn(argv) = hs.connect(0, |_| false) else {
            panic!()
        };
        assert!(argv.contains(&"-M".to_string()));
        hs.master_spawned(0, Ok(42));
        assert_eq!(hs.connect(0, |_| false), Connect::Wait);
        assert_eq!(hs.connect(0, |_| true), Connect::Ready);
        assert!(hs.cleanup_commands().is_empty(), "nothing left there");
        hs.left_files(0);
        assert_eq!(hs.cleanup_commands().len(), 1);
        assert_eq!(
            hs.master_exited(42, "ssh: connect to host a port 22: Connection refused\n"),
            Some((0, true))
        );
        assert_eq!(
            hs.connect(0, |_| true),
            Connect::Failed("ssh: connect to host a port 22: Connection refused".into())
        );
        hs.retry(0);
        assert!(matches!(hs.connect(0, |_| false), Connect::Spawn(_)));
        assert_eq!(hs.master_exited(7, ""), None);
    }

    proptest! {
        /// Whatever the order of starts and ends, no host ever runs more than its
        /// slots, and an instance waits only when every listed host is full.
        #[test]
        fn slots_are_respected(slots in proptest::collection::vec(1usize..4, 1..4),
                               ops in proptest::collection::vec(any::<(bool, u8)>(), 0..60)) {
            let plans: Vec<HostPlan> = slots.iter().enumerate()
                .map(|(i, s)| ssh(&format!("h{i}"), Some(*s))).collect();
            let mut hs = Hosts::new(&plans, "r", Path::new("/tmp/x"), None);
            let on: Vec<HostId> = (0..slots.len()).collect();
            let mut placed: Vec<HostId> = Vec::new();
            for (start, pick) in ops {
                if start || placed.is_empty() {
                    match hs.choose(&on) {
                        Some(h) => { hs.take(h); placed.push(h); }
                        None => prop_assert!(on.iter().all(|&h| hs.running(h) == slots[h])),
                    }
                } else {
                    let h = placed.remove(pick as usize % placed.len());
                    hs.release(h);
                }
                for &h in &on {
                    prop_assert!(hs.running(h) <= slots[h]);
                }
            }
        }
    }
}
