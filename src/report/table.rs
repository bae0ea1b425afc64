//! The final table on stderr: instance, pid, end state, exit code or signal, duration,
//! records in/out, restarts; a foreach stage's succeeded items summed up in one row
//! (the report counts them rather than listing them, see `batches`).

use std::fmt::Write as _;

use super::batches::ForeachReport;
use super::json::{InstanceReport, Report};

/// The final table: instance, pid, end state, exit code or signal, duration,
/// records in/out, restarts.
pub fn format_table(report: &Report, color: bool) -> String {
    let header = [
        "instance", "pid", "state", "exit", "duration", "in", "out", "restarts",
    ];
    let dash = || "-".to_string();
    let row = |i: &InstanceReport| -> [String; 8] {
        let exit = match (&i.exit_code, &i.signal) {
            (Some(c), _) => c.to_string(),
            (None, Some(s)) => s.clone(),
            _ => dash(),
        };
        [
            i.name.clone(),
            i.pid.map_or_else(dash, |p| p.to_string()),
            i.detail.clone(),
            exit,
            i.duration_ms.map_or_else(dash, format_ms),
            i.records_in.map_or_else(dash, |n| n.to_string()),
            i.records_out.map_or_else(dash, |n| n.to_string()),
            i.restarts.to_string(),
        ]
    };
    // A foreach stage's row: its succeeded items (not listed), and what never ran.
    let summary = |f: &ForeachReport| -> [String; 8] {
        let mut parts = Vec::new();
        if f.succeeded > 0 || (f.resumed == 0 && f.not_started.unwrap_or(0) == 0) {
            let items = if f.succeeded == 1 { "item" } else { "items" };
            parts.push(format!("{} {items} succeeded", f.succeeded));
        }
        if f.resumed > 0 {
            parts.push(format!("{} resumed", f.resumed));
        }
        match f.not_started {
            Some(0) => {}
            Some(n) => parts.push(format!("{n} not started")),
            None if f.stopped_early.is_some() => parts.push("the rest not started".into()),
            None => {}
        }
        if let Some(why) = &f.stopped_early {
            parts.push(format!("({why})"));
        }
        [
            format!("{}.*", f.stage),
            dash(),
            parts.join(", ").replace(", (", " ("),
            dash(),
            if f.succeeded > 0 {
                format!("Σ {}", format_ms(f.succeeded_ms))
            } else {
                dash()
            },
            dash(),
            dash(),
            f.succeeded_restarts.to_string(),
        ]
    };
    // Each foreach stage's summary row comes before its listed (failed, skipped…)
    // items; a stage with none listed has its row where its first item would be.
    let mut rows: Vec<[String; 8]> = Vec::new();
    let mut summarized: Vec<&str> = Vec::new();
    for i in &report.instances {
        if i.item.is_some() && !summarized.contains(&i.stage.as_str()) {
            summarized.push(i.stage.as_str());
            if let Some(f) = report.foreach.iter().find(|f| f.stage == i.stage) {
                rows.push(summary(f));
            }
        }
        rows.push(row(i));
    }
    for f in &report.foreach {
        if !summarized.contains(&f.stage.as_str()) {
            rows.push(summary(f));
        }
    }
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
    use super::super::json::EndState;
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
            foreach: vec![],
            journal: None,
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
