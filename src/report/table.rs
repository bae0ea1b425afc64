//! The final table on stderr: instance, pid, end state, exit code or signal, duration,
//! records in/out, restarts; a big foreach stage's succeeded items summed up in one row.

use std::collections::HashMap;
use std::fmt::Write as _;

use super::json::{EndState, InstanceReport, Report};

/// foreach stages with more items than this show their succeeded items as one row.
const COLLAPSE_ABOVE: usize = 20;

/// The final table: instance, pid, end state, exit code or signal, duration,
/// records in/out, restarts.
pub fn format_table(report: &Report, color: bool) -> String {
    let header = [
        "instance", "pid", "state", "exit", "duration", "in", "out", "restarts",
    ];
    let dash = || "-".to_string();
    // A big foreach stage would bury the interesting rows: its succeeded (and
    // resumed) items are summed up in one row; every other item keeps its own.
    let mut batch_size: HashMap<&str, usize> = HashMap::new();
    for i in &report.instances {
        if i.item.is_some() {
            *batch_size.entry(i.stage.as_str()).or_default() += 1;
        }
    }
    let collapsed = |i: &InstanceReport| {
        i.item.is_some()
            && batch_size.get(i.stage.as_str()).copied().unwrap_or(0) > COLLAPSE_ABOVE
            && (i.state == EndState::Succeeded || i.resumed)
    };
    let mut summary_rows: Vec<(usize, [String; 8])> = Vec::new();
    let mut summarized: Vec<&str> = Vec::new();
    for (pos, i) in report.instances.iter().enumerate() {
        if !collapsed(i) || summarized.contains(&i.stage.as_str()) {
            continue;
        }
        summarized.push(i.stage.as_str());
        let same = || {
            report
                .instances
                .iter()
                .filter(|j| j.stage == i.stage && collapsed(j))
        };
        let ok = same().filter(|j| !j.resumed).count();
        let resumed = same().filter(|j| j.resumed).count();
        let mut state = format!("{ok} items succeeded");
        if resumed > 0 {
            let _ = write!(state, ", {resumed} resumed");
        }
        let total_ms: u64 = same().filter_map(|j| j.duration_ms).sum();
        let records_in: Option<u64> = same().map(|j| j.records_in).sum();
        let records_out: Option<u64> = same().map(|j| j.records_out).sum();
        let restarts: u32 = same().map(|j| j.restarts).sum();
        summary_rows.push((
            pos,
            [
                format!("{}.*", i.stage),
                dash(),
                state,
                dash(),
                format!("Σ {}", format_ms(total_ms)),
                records_in.map_or_else(dash, |n| n.to_string()),
                records_out.map_or_else(dash, |n| n.to_string()),
                restarts.to_string(),
            ],
        ));
    }
    let rows: Vec<[String; 8]> = report
        .instances
        .iter()
        .enumerate()
        .filter_map(|(pos, i)| {
            if collapsed(i) {
                return summary_rows
                    .iter()
                    .find(|(p, _)| *p == pos)
                    .map(|(_, r)| r.clone());
            }
            Some([
                i.name.clone(),
                i.pid.map_or_else(dash, |p| p.to_string()),
                i.detail.clone(),
                match (&i.exit_code, &i.signal) {
                    (Some(c), _) => c.to_string(),
                    (None, Some(s)) => s.clone(),
                    _ => dash(),
                },
                i.duration_ms.map_or_else(dash, format_ms),
                i.records_in.map_or_else(dash, |n| n.to_string()),
                i.records_out.map_or_else(dash, |n| n.to_string()),
                i.restarts.to_string(),
            ])
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[String]| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths.iter()).enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            let _ = write!(l, "{cell:<w$}");
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    let head: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    if color {
        out.push_str("\x1b[1m");
        line(&mut out, &head);
        out.insert_str(out.len() - 1, "\x1b[0m");
    } else {
        line(&mut out, &head);
    }
    for r in &rows {
        line(&mut out, r);
    }
    let status = match report.status {
        super::ReportStatus::Succeeded => "succeeded",
        super::ReportStatus::Failed => "failed",
        super::ReportStatus::Interrupted => "interrupted",
    };
    let _ = writeln!(
        out,
        "{}: {status} in {} (exit {})",
        report.pipeline,
        format_ms(report.duration_ms),
        report.exit_code
    );
    out
}

fn format_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::super::ReportStatus;
    use super::*;

    #[test]
    fn table_lists_every_instance() {
        let report = Report {
            pipeline: "baozi".into(),
            status: ReportStatus::Failed,
            exit_code: 3,
            duration_ms: 1500,
            instances: vec![InstanceReport {
                name: "eater.1".into(),
                stage: "eater".into(),
                index: 1,
                item: None,
                pid: Some(42),
                state: EndState::Failed,
                exit_code: Some(3),
                signal: None,
                restarts: 0,
                started_ms: Some(1),
                duration_ms: Some(900),
                records_in: None,
                records_out: Some(0),
                detail: "failed (exit 3)".into(),
                downstream_closed: false,
                resumed: false,
                host: None,
                node: None,
            }],
            queues: vec![],
            deadlock: None,
        };
        let t = format_table(&report, false);
        assert!(t.starts_with("instance  pid  state"), "{t}");
        assert!(
            t.contains("eater.1   42   failed (exit 3)  3     900ms"),
            "{t}"
        );
        assert!(t.ends_with("baozi: failed in 1.5s (exit 3)\n"), "{t}");
    }
}
