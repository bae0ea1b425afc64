//! `--junit FILE` (SPEC 7): the run as a JUnit XML report, as CI systems expect from
//! test runners: one test case per instance (classname `pipeline.stage`), a failure with
//! the instance's last log lines, `could not start` as an error, `skipped` as skipped;
//! a foreach stage's succeeded items (counted, not listed, in the report) as one
//! passing case.
//!
//! Written with quick-xml (the common Rust XML writer: it escapes text and attributes,
//! which JUnit consumers are strict about); log lines are cleaned of control characters,
//! which XML 1.0 cannot carry.

use std::io::{self, Write};
use std::path::Path;

use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};

use super::json::{EndState, InstanceReport, Report};
use super::sanitize::clean_line;

/// Log lines given with each failure.
pub const FAILURE_LINES: usize = 20;

/// Write the JUnit file; `tail(i)` gives the last log lines of `report.instances[i]`.
pub fn write(path: &Path, report: &Report, tail: impl Fn(usize) -> Vec<Vec<u8>>) -> io::Result<()> {
    let mut out = Vec::new();
    render(&mut out, report, tail)?;
    let mut f = std::fs::File::create(path)?;
    f.write_all(&out)
}

fn secs(ms: Option<u64>) -> String {
    format!("{:.3}", ms.unwrap_or(0) as f64 / 1000.0)
}

pub fn render(
    out: &mut Vec<u8>,
    report: &Report,
    tail: impl Fn(usize) -> Vec<Vec<u8>>,
) -> io::Result<()> {
    let count = |f: &dyn Fn(&InstanceReport) -> bool| {
        report.instances.iter().filter(|i| f(i)).count().to_string()
    };
    let failures = count(&|i| {
        matches!(
            i.state,
            EndState::Failed | EndState::Killed | EndState::TimedOut
        )
    });
    let errors = count(&|i| i.state == EndState::CouldNotStart);
    let skipped = count(&|i| i.state == EndState::Skipped);
    // A foreach stage's succeeded items are counted in the report, not listed: one
    // passing test case stands for them.
    let summed: Vec<(String, String)> = report
        .foreach
        .iter()
        .filter(|f| f.succeeded > 0)
        .map(|f| {
            let items = if f.succeeded == 1 { "item" } else { "items" };
            (
                format!("{}.* [{} {items} succeeded]", f.stage, f.succeeded),
                format!("{}.{}", report.pipeline, f.stage),
            )
        })
        .collect();
    let tests = (report.instances.len() + summed.len()).to_string();
    let time = secs(Some(report.duration_ms));
    let mut w = Writer::new_with_indent(out, b' ', 2);
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))
        .map_err(io::Error::other)?;
    let attrs = |name: &str| {
        BytesStart::new(name.to_string()).with_attributes([
            ("name", report.pipeline.as_str()),
            ("tests", tests.as_str()),
            ("failures", failures.as_str()),
            ("errors", errors.as_str()),
            ("skipped", skipped.as_str()),
            ("time", time.as_str()),
        ])
    };
    w.write_event(Event::Start(attrs("testsuites")))
        .map_err(io::Error::other)?;
    w.write_event(Event::Start(attrs("testsuite")))
        .map_err(io::Error::other)?;
    for (n, i) in report.instances.iter().enumerate() {
        let classname = format!("{}.{}", report.pipeline, i.stage);
        let mut name = i.name.clone();
        if let Some(item) = &i.item {
            name = format!("{name} [{item}]");
        }
        let case = BytesStart::new("testcase").with_attributes([
            ("name", name.as_str()),
            ("classname", classname.as_str()),
            ("time", secs(i.duration_ms).as_str()),
        ]);
        let (tag, kind) = match i.state {
            EndState::Failed | EndState::Killed | EndState::TimedOut => ("failure", true),
            EndState::CouldNotStart => ("error", false),
            EndState::Skipped => ("skipped", false),
            EndState::Succeeded | EndState::Stopped => {
                w.write_event(Event::Empty(case))
                    .map_err(io::Error::other)?;
                continue;
            }
        };
        w.write_event(Event::Start(case))
            .map_err(io::Error::other)?;
        let state = serde_json::to_value(i.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let el = BytesStart::new(tag)
            .with_attributes([("message", i.detail.as_str()), ("type", state.as_str())]);
        if kind {
            let lines: Vec<String> = tail(n)
                .iter()
                .map(|l| clean_line(l, false).into_owned())
                .collect();
            w.write_event(Event::Start(el)).map_err(io::Error::other)?;
            let text = if lines.is_empty() {
                i.detail.clone()
            } else {
                lines.join("\n")
            };
            w.write_event(Event::Text(BytesText::new(&text)))
                .map_err(io::Error::other)?;
            w.write_event(Event::End(BytesEnd::new(tag)))
                .map_err(io::Error::other)?;
        } else {
            w.write_event(Event::Empty(el)).map_err(io::Error::other)?;
        }
        w.write_event(Event::End(BytesEnd::new("testcase")))
            .map_err(io::Error::other)?;
    }
    for (name, classname) in &summed {
        let case = BytesStart::new("testcase")
            .with_attributes([("name", name.as_str()), ("classname", classname.as_str())]);
        w.write_event(Event::Empty(case))
            .map_err(io::Error::other)?;
    }
    w.write_event(Event::End(BytesEnd::new("testsuite")))
        .map_err(io::Error::other)?;
    w.write_event(Event::End(BytesEnd::new("testsuites")))
        .map_err(io::Error::other)?;
    w.into_inner().push(b'\n');
    Ok(())
}
