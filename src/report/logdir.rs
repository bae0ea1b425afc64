//! `--log-dir DIR`: every instance's raw output in `DIR/<instance>.log` (SPEC 7).
//!
//! The directory is checked before anything starts ([`check_dir`], a usage error). A
//! write that fails during the run (disk full) is reported once per file and fails the
//! run: lines are never lost silently.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::event::InstanceId;

/// Create `dir` if needed and prove a file can be created in it.
pub fn check_dir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("--log-dir {}: {e}", dir.display()))?;
    let probe = dir.join(format!(".prun-check-{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(format!("--log-dir {}: {e}", dir.display())),
    }
}

enum Slot {
    Open(File),
    /// A write or open failed: its later lines are not written (reported once).
    Failed,
}

pub struct LogDir {
    dir: PathBuf,
    files: HashMap<InstanceId, Slot>,
}

impl LogDir {
    pub fn new(dir: PathBuf) -> LogDir {
        LogDir {
            dir,
            files: HashMap::new(),
        }
    }

    /// Append one line; on the first failure for this instance, the error to report.
    pub fn write(&mut self, id: InstanceId, name: &str, line: &[u8]) -> Option<String> {
        let dir = &self.dir;
        let mut error = None;
        let slot = self.files.entry(id).or_insert_with(|| {
            let path = dir.join(format!("{name}.log"));
            match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
            {
                Ok(f) => Slot::Open(f),
                Err(e) => {
                    error = Some(format!("cannot write {}: {e}", path.display()));
                    Slot::Failed
                }
            }
        });
        if let Slot::Open(f) = slot {
            let mut buf = Vec::with_capacity(line.len() + 1);
            buf.extend_from_slice(line);
            buf.push(b'\n');
            if let Err(e) = f.write_all(&buf) {
                let path = dir.join(format!("{name}.log"));
                error = Some(format!(
                    "cannot write {}: {e} (its later lines are not in the file)",
                    path.display()
                ));
                *slot = Slot::Failed;
            }
        }
        error
    }

    /// The instance's log ended: close its file (a restart reopens it for append).
    pub fn close(&mut self, id: InstanceId) {
        if matches!(self.files.get(&id), Some(Slot::Open(_))) {
            self.files.remove(&id);
        }
    }
}
