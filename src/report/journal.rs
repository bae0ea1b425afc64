//! The report as a journal (SPEC 7): every ended instance is on disk when it ends, so
//! `--resume` works after prun was killed (SIGKILL, the OOM killer, a power cut of the
//! terminal).
//!
//! While the run goes on, the `--report` file holds JSON lines: a header, then one
//! line per ended instance (`{"instance": {...}}`, the shape of an entry of the final
//! report's `instances`), appended with one `write` each. When the run ends, the final
//! report is written beside it and renamed over it, so the file is always either the
//! journal or the whole report, never half of one. Appending keeps nothing in memory
//! per instance: a run of a million items streams its journal.
//!
//! A `--report` path that is not a regular file (a FIFO, `/dev/stdout`) gets no journal:
//! the report is written there once, at the end.
//!
//! The final report summarizes the foreach items that succeeded rather than listing
//! them (`foreach`, SPEC 3.4). When it left any out, the journal is kept beside it,
//! as `REPORT.journal` (a hard link made before the report is renamed over the
//! journal's name, so some file always lists every ended instance), and the report's
//! `journal` field names it; `--resume REPORT` reads it too.
//!
//! [`read_resume`] reads either form, streaming, and refuses what cannot be a report (a
//! device such as `/dev/zero`, more than [`RESUME_CAP`] bytes) with a clear error.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::json::{InstanceReport, Report};
use crate::resume::Resume;

/// The largest report or journal `--resume` reads (a million instances take ~300 MB).
pub const RESUME_CAP: u64 = 1 << 30;

pub struct Journal {
    path: PathBuf,
    /// The open journal (None: not a regular file, or a write failed).
    file: Option<File>,
}

impl Journal {
    /// Start the journal at `path` (truncating what was there), before the run starts.
    pub fn create(path: &Path, pipeline: &str) -> io::Result<Journal> {
        let regular = match std::fs::metadata(path) {
            Ok(m) => m.is_file(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => true,
            Err(e) => return Err(e),
        };
        if !regular {
            return Ok(Journal {
                path: path.to_path_buf(),
                file: None,
            });
        }
        let mut file = File::create(path)?;
        // A journal an earlier run kept beside its report would be read as this run's.
        let kept = kept_path(path);
        if std::fs::symlink_metadata(&kept).is_ok_and(|m| m.is_file()) {
            std::fs::remove_file(&kept)?;
        }
        let header = serde_json::json!({
            "prun_journal": 1,
            "pipeline": pipeline,
            "note": "the run has not ended: one line per ended instance; prun replaces \
                     this file with the final report when the run ends",
        });
        file.write_all(format!("{header}\n").as_bytes())?;
        Ok(Journal {
            path: path.to_path_buf(),
            file: Some(file),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keep the journal beside the final report, as `REPORT.journal`; its file name,
    /// or None when there is no journal (not a regular file, or a write failed).
    pub fn keep(&self) -> io::Result<Option<String>> {
        if self.file.is_none() {
            return Ok(None);
        }
        let kept = kept_path(&self.path);
        match std::fs::remove_file(&kept) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        if std::fs::hard_link(&self.path, &kept).is_err() {
            // A filesystem without hard links: a copy says the same.
            std::fs::copy(&self.path, &kept)?;
        }
        Ok(kept.file_name().map(|n| n.to_string_lossy().into_owned()))
    }

    /// Append one ended instance (one `write`, so a kill never leaves half a line
    /// unless the disk fills). On an error the journal stops; the caller reports it.
    pub fn append(&mut self, instance: &InstanceReport) -> io::Result<()> {
        let Some(file) = &mut self.file else {
            return Ok(());
        };
        let mut line = serde_json::to_vec(&serde_json::json!({ "instance": instance }))
            .map_err(io::Error::other)?;
        line.push(b'\n');
        let result = file.write_all(&line);
        if result.is_err() {
            self.file = None;
        }
        result
    }

    /// Replace the journal with the final report (atomically for a regular file).
    pub fn finish(self, report: &Report) -> io::Result<()> {
        let mut text = serde_json::to_string_pretty(report).map_err(io::Error::other)?;
        text.push('\n');
        let regular = std::fs::metadata(&self.path).map_or(true, |m| m.is_file());
        if !regular {
            return std::fs::write(&self.path, text);
        }
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "report".into());
        let tmp = self
            .path
            .with_file_name(format!(".{name}.{}.tmp", std::process::id()));
        let written = File::create(&tmp).and_then(|mut f| {
            f.write_all(text.as_bytes())?;
            f.sync_data()
        });
        match written.and_then(|()| std::fs::rename(&tmp, &self.path)) {
            Ok(()) => Ok(()),
            Err(e) => {
                // The journal stays: it still says which instances succeeded.
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }
}

/// Where the journal of the report at `path` is kept (`REPORT.journal`).
fn kept_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".journal");
    path.with_file_name(name)
}

/// One JSON value of a report file: the final report (`instances`), a journal line
/// (`instance`), or the journal's header.
#[derive(Deserialize)]
struct Piece {
    #[serde(default)]
    instances: Option<Vec<Entry>>,
    /// The final report's journal kept beside it (a file name).
    #[serde(default)]
    journal: Option<String>,
    #[serde(default)]
    instance: Option<Entry>,
    #[serde(default)]
    prun_journal: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Entry {
    stage: String,
    /// The item's position in its source (SPEC 3.4: part of its identity).
    #[serde(default)]
    index: Option<u64>,
    #[serde(default)]
    item: Option<serde_json::Value>,
    #[serde(default)]
    state: String,
    #[serde(default)]
    resumed: bool,
}

impl Entry {
    /// Add this entry to `done` when it is a foreach item that succeeded (or was
    /// itself resumed); an item without its position cannot be identified.
    fn record(self, done: &mut Resume) -> Result<(), String> {
        let item = match self.item {
            Some(serde_json::Value::String(s)) => s,
            Some(serde_json::Value::Number(n)) => n.to_string(),
            // Not a foreach instance: nothing to resume.
            _ => return Ok(()),
        };
        if !(self.state == "succeeded" || self.resumed) {
            return Ok(());
        }
        let Some(index) = self.index else {
            return Err(format!(
                "the item `{item}` of stage `{}` has no `index` (its position), which `--resume` needs to tell repeated values apart",
                self.stage
            ));
        };
        done.insert(&self.stage, index, &item);
        Ok(())
    }
}

/// Counts the bytes read, to tell "too large" from "not JSON".
struct Counted<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// The foreach items (stage, position, value) that succeeded in a report or journal
/// (`--resume FILE`); a final report's kept journal (its `journal` field) is read too.
pub fn read_resume(path: &Path) -> Result<Resume, String> {
    let (mut done, journal) = read_one(path)?;
    if let Some(name) = journal {
        // Only a file beside the report: the name is not a path.
        if name.contains('/') || name == ".." || name == "." {
            return Err(format!(
                "{}: its `journal` must be a file name beside it, not {name}",
                path.display()
            ));
        }
        let (more, _) = read_one(&path.with_file_name(&name))
            .map_err(|e| format!("{e} (the journal of {})", path.display()))?;
        done.extend(more);
    }
    done.seal();
    Ok(done)
}

/// What one file says: the items that succeeded, and a kept journal's name.
type OneFile = (Resume, Option<String>);

fn read_one(path: &Path) -> Result<OneFile, String> {
    let shown = path.display();
    let file = File::open(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    use std::os::unix::fs::FileTypeExt;
    let kind = meta.file_type();
    if kind.is_char_device() || kind.is_block_device() || kind.is_dir() || kind.is_socket() {
        return Err(format!(
            "{shown} is not a file: a prun report or journal is a JSON file"
        ));
    }
    if meta.len() > RESUME_CAP {
        return Err(format!(
            "{shown} is {} bytes: larger than any prun report (at most {} MiB are read)",
            meta.len(),
            RESUME_CAP >> 20
        ));
    }
    let mut counted = Counted {
        inner: BufReader::new(file).take(RESUME_CAP + 1),
        count: 0,
    };
    let too_large = |count: u64| {
        (count > RESUME_CAP).then(|| {
            format!(
                "{shown} is larger than any prun report (at most {} MiB are read)",
                RESUME_CAP >> 20
            )
        })
    };
    let mut done = Resume::new();
    let mut recognized = false;
    let mut journal = None;
    let stream = serde_json::Deserializer::from_reader(&mut counted).into_iter::<Piece>();
    for piece in stream {
        let piece = match piece {
            Ok(p) => p,
            // A journal cut by a kill in the middle of its last line: the lines
            // before it stand.
            Err(e) if e.is_eof() && recognized => break,
            Err(e) => return Err(format!("{shown}: not a prun report or journal: {e}")),
        };
        recognized |=
            piece.instances.is_some() || piece.instance.is_some() || piece.prun_journal.is_some();
        if piece.instances.is_some() {
            journal = piece.journal;
        }
        for entry in piece.instances.into_iter().flatten().chain(piece.instance) {
            entry
                .record(&mut done)
                .map_err(|e| format!("{shown}: {e}"))?;
        }
    }
    if let Some(e) = too_large(counted.count) {
        return Err(e);
    }
    if !recognized {
        return Err(format!(
            "{shown}: not a prun report or journal: no `instances`"
        ));
    }
    Ok((done, journal))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_reports_journals_and_cut_journals() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.json");
        std::fs::write(
            &p,
            r#"{"pipeline": "x", "instances": [
                {"stage": "job", "index": 0, "item": "a", "state": "succeeded"},
                {"stage": "job", "index": 1, "item": 2, "state": "skipped", "resumed": true},
                {"stage": "job", "index": 2, "item": "c", "state": "failed"},
                {"stage": "job", "index": 3, "item": "a", "state": "succeeded"},
                {"stage": "other", "index": 0, "item": null, "state": "succeeded"}]}"#,
        )
        .unwrap();
        let done = read_resume(&p).unwrap();
        assert_eq!(done.len(), 3);
        assert!(done.contains("job", 1, "2"));
        assert!(done.contains("job", 0, "a") && done.contains("job", 3, "a"));
        assert!(!done.contains("job", 4, "a"));
        std::fs::write(
            &p,
            "{\"prun_journal\":1}\n{\"instance\":{\"stage\":\"job\",\"index\":0,\"item\":\"a\",\"state\":\"succeeded\"}}\n{\"instance\":{\"stage\":\"job\",\"it",
        )
        .unwrap();
        assert_eq!(read_resume(&p).unwrap().len(), 1);
        std::fs::write(&p, "{\"prun_journal\":1}\n").unwrap();
        assert!(read_resume(&p).unwrap().is_empty());
    }

    #[test]
    fn a_report_with_a_kept_journal_reads_both() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.json");
        std::fs::write(
            &p,
            r#"{"pipeline": "x", "journal": "r.json.journal", "instances": [
                {"stage": "job", "item": "c", "state": "failed"}]}"#,
        )
        .unwrap();
        assert!(read_resume(&p).unwrap_err().contains("the journal of"));
        std::fs::write(
            dir.path().join("r.json.journal"),
            "{\"prun_journal\":1}\n{\"instance\":{\"stage\":\"job\",\"index\":0,\"item\":\"a\",\"state\":\"succeeded\"}}\n",
        )
        .unwrap();
        let done = read_resume(&p).unwrap();
        assert_eq!(done.len(), 1);
        assert!(done.contains("job", 0, "a"));
        std::fs::write(&p, r#"{"instances": [], "journal": "../x"}"#).unwrap();
        assert!(read_resume(&p).unwrap_err().contains("file name"));
    }

    #[test]
    fn an_item_without_its_position_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.json");
        std::fs::write(
            &p,
            r#"{"instances": [{"stage": "job", "item": "a", "state": "succeeded"}]}"#,
        )
        .unwrap();
        assert!(read_resume(&p).unwrap_err().contains("no `index`"));
    }

    #[test]
    fn refuses_what_is_not_a_report() {
        let err = read_resume(Path::new("/dev/zero")).unwrap_err();
        assert!(err.contains("not a file"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.json");
        std::fs::write(&p, "{not json").unwrap();
        assert!(read_resume(&p).unwrap_err().contains("not a prun report"));
        std::fs::write(&p, "{}").unwrap();
        assert!(read_resume(&p).unwrap_err().contains("no `instances`"));
        assert!(read_resume(&dir.path().join("none")).is_err());
    }
}
