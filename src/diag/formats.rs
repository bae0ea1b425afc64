//! Diagnostics for CI: the order in which GitHub sees them (root causes first, what
//! does not fit in its ten annotations summarized) and SARIF 2.1.0 for code-scanning
//! tools. JSON and the human rendering live in the parent module.

use serde_json::{Value, json};

use super::{Diagnostic, FileDiagnostics, Severity};

/// How early a problem sits in a chain of causes: 0 the file could not be read or
/// parsed, 1 a value of the wrong shape, 2 a name that refers to nothing, 3 a rule
/// about the whole pipeline that often follows from the others (a queue with no
/// writer because `stdout: bun` was mistyped).
pub fn tier(code: &str) -> u8 {
    match code {
        "io" | "not-utf8" | "yaml-syntax" | "empty-file" | "include-error" | "include-cycle"
        | "env-file-error" | "env-file-syntax" => 0,
        "unknown-queue"
        | "unknown-stage"
        | "unknown-event"
        | "unknown-semaphore"
        | "unknown-host"
        | "unknown-param"
        | "unknown-variable"
        | "unset-env"
        | "variable-not-available"
        | "unknown-fd" => 2,
        "queue-without-writer"
        | "queue-without-reader"
        | "dependency-cycle"
        | "data-cycle"
        | "after-reader-deadlock"
        | "order-writers-deadlock"
        | "order-writers-daemon"
        | "after-daemon"
        | "bytes-framing"
        | "event-never-set"
        | "command-not-found"
        | "stdin-and-foreach-queue"
        | "parallel-without-foreach" => 3,
        _ => 1,
    }
}

/// GitHub shows at most this many annotations of each kind per step.
pub const GITHUB_LIMIT: usize = 10;

/// Workflow commands for every file, root causes first; when a severity has more
/// than GitHub shows, the last visible annotation of it summarizes the rest. The
/// second value lists what was not annotated, one line each, for the step's log.
pub fn github(files: &[FileDiagnostics]) -> (String, String) {
    let mut all: Vec<(&FileDiagnostics, &Diagnostic)> = files
        .iter()
        .flat_map(|f| f.diagnostics.iter().map(move |d| (f, d)))
        .collect();
    // Stable: within a tier, files and positions keep their order.
    all.sort_by_key(|(_, d)| (std::cmp::Reverse(d.severity), tier(d.code)));
    let mut out = String::new();
    let mut rest = String::new();
    for severity in [Severity::Error, Severity::Warning] {
        let of: Vec<&(&FileDiagnostics, &Diagnostic)> =
            all.iter().filter(|(_, d)| d.severity == severity).collect();
        let shown = if of.len() > GITHUB_LIMIT {
            GITHUB_LIMIT - 1
        } else {
            of.len()
        };
        for (f, d) in &of[..shown] {
            out.push_str(&f.github_line(d));
        }
        if of.len() > shown {
            let hidden = &of[shown..];
            let mut codes: Vec<&str> = hidden.iter().map(|(_, d)| d.code).collect();
            codes.sort();
            codes.dedup();
            let kind = severity.as_str();
            let msg = format!(
                "{} more {kind}s not annotated (GitHub shows {GITHUB_LIMIT} per step): {}. They are listed in this step's log; run `prun validate` on the files to see them all.",
                hidden.len(),
                codes
                    .iter()
                    .map(|c| format!("prun::{c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            out.push_str(&format!(
                "::{kind} title=prun%3A%3Amore-{kind}s::{}\n",
                super::gh_escape_data(&msg)
            ));
            for (f, d) in hidden {
                let p = f.position(d.span);
                rest.push_str(&format!(
                    "{}:{}:{}: {kind}: {} [{}]\n",
                    p.file,
                    p.line,
                    p.column,
                    d.message,
                    d.full_code()
                ));
            }
        }
    }
    (out, rest)
}

/// A SARIF 2.1.0 log of every file's diagnostics (one run, one rule per code).
pub fn sarif(files: &[FileDiagnostics]) -> Value {
    let mut rules: Vec<&'static str> = files
        .iter()
        .flat_map(|f| f.diagnostics.iter().map(|d| d.code))
        .collect();
    rules.sort();
    rules.dedup();
    let rule_index = |code: &str| rules.iter().position(|r| *r == code).unwrap_or(0);
    let region = |f: &FileDiagnostics, span| {
        let p = f.position(span);
        (
            p.file.clone(),
            json!({
                "startLine": p.line,
                "startColumn": p.column,
                "endLine": p.end_line,
                "endColumn": p.end_column,
            }),
        )
    };
    let location = |f: &FileDiagnostics, span, message: Option<&str>| {
        let (file, region) = region(f, span);
        let mut loc = json!({
            "physicalLocation": {
                "artifactLocation": { "uri": uri(&file) },
                "region": region,
            }
        });
        if let Some(m) = message {
            loc["message"] = json!({ "text": m });
        }
        loc
    };
    let mut results = Vec::new();
    for f in files {
        for d in &f.diagnostics {
            let mut text = d.message.clone();
            if let Some(h) = &d.help {
                text.push_str(&format!("\nhelp: {h}"));
            }
            let mut result = json!({
                "ruleId": d.full_code(),
                "ruleIndex": rule_index(d.code),
                "level": match d.severity {
                    Severity::Error => "error",
                    Severity::Warning => "warning",
                },
                "message": { "text": text },
                "locations": [location(f, d.span, (!d.label.is_empty()).then_some(d.label.as_str()))],
            });
            if !d.related.is_empty() {
                result["relatedLocations"] = Value::Array(
                    d.related
                        .iter()
                        .enumerate()
                        .map(|(i, (s, l))| {
                            let mut loc = location(f, Some(*s), Some(l));
                            loc["id"] = json!(i);
                            loc
                        })
                        .collect(),
                );
            }
            results.push(result);
        }
    }
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {
                "driver": {
                    "name": "prun",
                    "version": env!("CARGO_PKG_VERSION"),
                    "rules": rules.iter().map(|c| json!({
                        "id": format!("prun::{c}"),
                        "name": c,
                        "shortDescription": { "text": format!("prun::{c} (see docs/diagnostics.md)") },
                    })).collect::<Vec<_>>(),
                }
            },
            "columnKind": "unicodeCodePoints",
            "results": results,
        }]
    })
}

/// A relative path as a URI reference: `/` kept, everything outside the unreserved
/// set percent-encoded.
fn uri(path: &str) -> String {
    // An absolute path is a `file://` URI; a relative one a relative reference.
    let mut out = String::from(if path.starts_with('/') { "file://" } else { "" });
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_are_encoded() {
        assert_eq!(uri("pipelines/a b.yaml"), "pipelines/a%20b.yaml");
        assert_eq!(uri("<stdin>"), "%3Cstdin%3E");
        assert_eq!(uri("/tmp/a b.yaml"), "file:///tmp/a%20b.yaml");
    }
}
