//! `${...}` interpolation (SPEC 1.2): parsing a string into literal text and references.
//!
//! Parsing happens once, at load time, so an unknown name is reported with the span of
//! the exact `${...}` and never surprises a run. Resolving the references is the model's
//! job (params, env) and the runtime's (per-instance values).

use super::{RefName, S, Span, TPiece, Tmpl};
use crate::diag::{Diagnostic, did_you_mean};

const SIMPLE: &[(&str, RefName)] = &[
    ("stage", RefName::Stage),
    ("instance", RefName::Instance),
    ("replicas", RefName::Replicas),
    ("item", RefName::Item),
    ("index", RefName::Index),
    ("pipeline.dir", RefName::PipelineDir),
    ("run.dir", RefName::RunDir),
];

/// Parse `value`, written in the source at `span` (`raw` is the source text of the span,
/// used to find where each reference sits).
pub fn parse(value: &str, span: Span, raw: &str, diags: &mut Vec<Diagnostic>) -> Tmpl {
    let mut pieces = Vec::new();
    let mut lit = String::new();
    let mut rest = value;
    let mut search_from = 0usize;
    while let Some(pos) = rest.find('$') {
        lit.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(tail) = after.strip_prefix("$${") {
            lit.push_str("${");
            rest = tail;
            continue;
        }
        if !after.starts_with("${") {
            lit.push('$');
            rest = &after[1..];
            continue;
        }
        let Some(end) = after.find('}') else {
            let rspan = locate(raw, span, after, &mut search_from);
            diags.push(
                Diagnostic::error("interpolation-syntax", "unterminated `${` in interpolation")
                    .at(rspan, "this `${` has no closing `}`")
                    .help("close it with `}`, or write `$${` for a literal `${`"),
            );
            lit.push_str(after);
            rest = "";
            break;
        };
        let text = &after[..=end];
        let inner = &after[2..end];
        let rspan = locate(raw, span, text, &mut search_from);
        match parse_name(inner) {
            Ok(name) => {
                if !lit.is_empty() {
                    pieces.push(TPiece::Lit(std::mem::take(&mut lit)));
                }
                pieces.push(TPiece::Ref(S::new(name, rspan)));
            }
            Err(help) => {
                diags.push(
                    Diagnostic::error(
                        "unknown-variable",
                        format!("unknown interpolation `{text}`"),
                    )
                    .at(rspan, "not a known name")
                    .help(help),
                );
            }
        }
        rest = &after[end + 1..];
    }
    lit.push_str(rest);
    if !lit.is_empty() {
        pieces.push(TPiece::Lit(lit));
    }
    Tmpl { pieces, span }
}

fn parse_name(inner: &str) -> Result<RefName, String> {
    let inner_trim = inner.trim();
    if let Some((_, r)) = SIMPLE.iter().find(|(n, _)| *n == inner_trim) {
        return Ok(r.clone());
    }
    if let Some(name) = inner_trim.strip_prefix("params.") {
        if valid_ident(name) {
            return Ok(RefName::Param(name.to_string()));
        }
        return Err(format!(
            "`{name}` is not a valid param name: use `[a-z][a-z0-9_-]*`"
        ));
    }
    if let Some(spec) = inner.strip_prefix("env.") {
        let (name, default) = match spec.split_once(":-") {
            Some((n, d)) => (n, Some(d.to_string())),
            None => (spec, None),
        };
        if !name.is_empty()
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !name.as_bytes()[0].is_ascii_digit()
        {
            return Ok(RefName::Env {
                name: name.to_string(),
                default,
            });
        }
        return Err(format!("`{name}` is not a valid environment variable name"));
    }
    if let Some(part) = inner_trim.strip_prefix("item.") {
        if valid_ident(part) {
            return Ok(RefName::ItemPart(part.to_string()));
        }
        return Err(format!(
            "`{part}` is not a valid matrix dimension name: use `[a-z][a-z0-9_-]*`"
        ));
    }
    if let Some(n) = inner_trim.strip_prefix("fd.") {
        return match n.parse::<i32>() {
            Ok(n) if n >= 3 => Ok(RefName::Fd(n)),
            _ => Err("`${fd.N}` takes a descriptor number of 3 or more, bound in `fds`".into()),
        };
    }
    // Which names exist depends on where the reference stands (`${item}` only in a
    // foreach stage): the model reports it, with a suggestion among those.
    Ok(RefName::Unknown(inner_trim.to_string()))
}

/// The names a reference may use, for suggestions: `item`-like names only where
/// `foreach` items exist.
pub fn known_names(foreach: bool) -> Vec<&'static str> {
    let mut known: Vec<&str> = SIMPLE
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| foreach || !matches!(*n, "item" | "index"))
        .collect();
    known.extend(["params.NAME", "env.NAME", "fd.N"]);
    if foreach {
        known.push("item.NAME");
    }
    known
}

/// The help line of an unknown `${name}`.
pub fn unknown_help(name: &str, foreach: bool) -> String {
    did_you_mean(name, known_names(foreach)).unwrap_or_else(|| {
        let item = if foreach {
            " ${item}, ${item.NAME} (matrix), ${index},"
        } else {
            ""
        };
        format!(
            "known names: ${{params.NAME}}, ${{env.NAME}}, ${{env.NAME:-default}}, ${{stage}}, \
             ${{instance}}, ${{replicas}},{item} ${{fd.N}}, ${{pipeline.dir}}, ${{run.dir}}; \
             write `$${{` for a literal `${{`"
        )
    })
}

pub fn valid_ident(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

/// Find `needle` in the raw source of the value to give a reference its own span;
/// falls back to the whole value (e.g. when escapes changed the text).
fn locate(raw: &str, span: Span, needle: &str, from: &mut usize) -> Span {
    if *from <= raw.len()
        && let Some(i) = raw[*from..].find(needle)
    {
        let start = *from + i;
        *from = start + needle.len();
        return Span::new(span.offset + start, needle.len());
    }
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> (Tmpl, Vec<Diagnostic>) {
        let mut d = Vec::new();
        let t = parse(s, Span::new(10, s.len()), s, &mut d);
        (t, d)
    }

    #[test]
    fn literal_and_refs() {
        let (t, d) = p("a-${params.n}-${item}$${x}");
        assert!(d.is_empty());
        assert_eq!(t.pieces.len(), 5);
        assert_eq!(t.pieces[0], TPiece::Lit("a-".into()));
        let TPiece::Ref(r) = &t.pieces[1] else {
            panic!()
        };
        assert_eq!(r.value, RefName::Param("n".into()));
        assert_eq!(r.span, Span::new(12, 11));
        assert_eq!(t.pieces[4], TPiece::Lit("${x}".into()));
    }

    #[test]
    fn env_default() {
        let (t, d) = p("${env.HOME:-/tmp}");
        assert!(d.is_empty());
        let TPiece::Ref(r) = &t.pieces[0] else {
            panic!()
        };
        assert_eq!(
            r.value,
            RefName::Env {
                name: "HOME".into(),
                default: Some("/tmp".into())
            }
        );
    }

    #[test]
    fn unknown_names_are_left_to_the_model() {
        let (t, d) = p("x ${itme} y");
        assert!(d.is_empty());
        let TPiece::Ref(r) = &t.pieces[1] else {
            panic!()
        };
        assert_eq!(r.value, RefName::Unknown("itme".into()));
        assert_eq!(r.span, Span::new(12, 7));
        assert_eq!(unknown_help("itme", true), "did you mean `item`?");
        assert!(
            !unknown_help("itme", false).contains("`item`"),
            "{}",
            unknown_help("itme", false)
        );
    }

    #[test]
    fn unterminated() {
        let (_, d) = p("x ${item");
        assert_eq!(d[0].code, "interpolation-syntax");
    }

    #[test]
    fn lone_dollar_is_literal() {
        let (t, d) = p("cost $5 and $HOME");
        assert!(d.is_empty());
        assert_eq!(t.pieces, vec![TPiece::Lit("cost $5 and $HOME".into())]);
    }
}
