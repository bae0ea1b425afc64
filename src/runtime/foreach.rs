//! `--resume` (SPEC 3.4): skip the foreach items that already succeeded.
//!
//! [`succeeded_items`] reads a previous JSON report (SPEC 7) and returns the
//! `(stage, item)` pairs whose state was `succeeded`, or that were themselves skipped
//! as `resumed` (so resuming a resumed run's report keeps skipping them). The item
//! sources themselves are in [`super::items`] (lazy cursors) and [`super::glob`].

use std::collections::HashSet;
use std::path::Path;

/// `(stage, item)` pairs that succeeded in a previous JSON report (SPEC 7 shape).
pub fn succeeded_items(report_json: &str) -> Result<HashSet<(String, String)>, String> {
    let value: serde_json::Value =
        serde_json::from_str(report_json).map_err(|e| format!("not a prun JSON report: {e}"))?;
    let instances = value
        .get("instances")
        .and_then(|v| v.as_array())
        .ok_or("not a prun JSON report: no `instances` array")?;
    let mut done = HashSet::new();
    for (i, inst) in instances.iter().enumerate() {
        let stage = inst
            .get("stage")
            .and_then(|v| v.as_str())
            .ok_or_else(|| format!("instances[{i}] has no `stage` string"))?;
        let item = match inst.get("item") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            // Not a foreach instance: nothing to resume.
            _ => continue,
        };
        let state = inst.get("state").and_then(|v| v.as_str()).unwrap_or("");
        // An item skipped because it succeeded in the report before that one.
        let resumed = inst.get("resumed").and_then(|v| v.as_bool()) == Some(true);
        if state == "succeeded" || resumed {
            done.insert((stage.to_string(), item));
        }
    }
    Ok(done)
}

/// [`succeeded_items`] of the report file at `path` (`--resume REPORT.json`).
pub fn load_resume(path: &Path) -> Result<HashSet<(String, String)>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    succeeded_items(&text).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_reads_succeeded_items() {
        let report = r#"{ "pipeline": "p", "status": "failed", "exit_code": 1, "duration_ms": 5,
          "instances": [
            {"name": "job.0", "stage": "job", "index": 0, "item": "a.log", "state": "succeeded"},
            {"name": "job.1", "stage": "job", "index": 1, "item": "b.log", "state": "failed"},
            {"name": "job.2", "stage": "job", "index": 2, "item": 7, "state": "succeeded"},
            {"name": "job.3", "stage": "job", "index": 3, "item": "c.log", "state": "skipped"},
            {"name": "web", "stage": "web", "index": 0, "item": null, "state": "succeeded"}
          ], "queues": [] }"#;
        let done = succeeded_items(report).unwrap();
        let expected: HashSet<(String, String)> = [
            ("job".to_string(), "a.log".to_string()),
            ("job".to_string(), "7".to_string()),
        ]
        .into();
        assert_eq!(done, expected);
        assert!(succeeded_items("not json").is_err());
        assert!(succeeded_items("{}").unwrap_err().contains("instances"));
        assert!(succeeded_items(r#"{"instances": [{"item": "x"}]}"#).is_err());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("r.json"), report).unwrap();
        assert_eq!(load_resume(&dir.path().join("r.json")).unwrap().len(), 2);
        assert!(load_resume(&dir.path().join("none.json")).is_err());
    }
}
