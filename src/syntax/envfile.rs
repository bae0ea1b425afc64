//! `env_file:` contents: dotenv `KEY=VALUE` lines (comments, quotes, `export `,
//! multi-line quoted values, `${VAR}` references to earlier lines and to prun's
//! environment), parsed by the dotenvy crate — the maintained successor of `dotenv`,
//! the format docker compose and most tools read — so prun reads `.env` files as
//! those tools do instead of by a hand-written approximation.

use super::{S, Span};
use crate::diag::Diagnostic;

/// Parse the text of an env file whose first byte has the global offset `base`.
/// Returns each variable with the span of its key, and at most one syntax error
/// (dotenvy stops at the first line it cannot read).
pub fn parse(text: &str, base: usize) -> (Vec<(S<String>, String)>, Option<Diagnostic>) {
    let mut vars = Vec::new();
    // Where to look for the next key, so repeated keys get their own spans.
    let mut cursor = 0usize;
    for item in dotenvy::from_read_iter(text.as_bytes()) {
        match item {
            Ok((key, value)) => {
                let span = find_key(text, &key, &mut cursor)
                    .map(|(o, l)| Span::new(base + o, l))
                    .unwrap_or(Span::new(base, 0));
                vars.push((S::new(key, span), value));
            }
            Err(dotenvy::Error::LineParse(line, index)) => {
                let first = line.lines().next().unwrap_or("");
                let at = text[cursor.min(text.len())..]
                    .find(first)
                    .map(|i| cursor + i)
                    .or_else(|| text.find(first))
                    .unwrap_or(0);
                let (start, len) = if first.is_empty() {
                    ((at + index.min(line.len())).min(text.len()), 0)
                } else {
                    (at, first.len())
                };
                let span = Span::new(base + start, len);
                let d = Diagnostic::error(
                    "env-file-syntax",
                    "this line of the env file is not `KEY=VALUE`",
                )
                .at(span, format!("cannot read this line (at character {})", index + 1))
                .help("write `KEY=VALUE` (quotes around values with spaces, `#` for comments, an optional `export ` prefix)");
                return (vars, Some(d));
            }
            Err(e) => {
                let d =
                    Diagnostic::error("env-file-syntax", format!("cannot read the env file: {e}"))
                        .at(Span::new(base, 0), "here")
                        .help("write `KEY=VALUE` lines in UTF-8");
                return (vars, Some(d));
            }
        }
    }
    (vars, None)
}

/// The byte range of `key` where it is defined at the start of a line (after an
/// optional `export `), searching from `cursor`.
fn find_key(text: &str, key: &str, cursor: &mut usize) -> Option<(usize, usize)> {
    let mut pos = *cursor;
    while pos <= text.len() {
        let line_end = text[pos..]
            .find('\n')
            .map(|i| pos + i)
            .unwrap_or(text.len());
        let line = &text[pos..line_end];
        let trimmed = line.trim_start();
        let lead = line.len() - trimmed.len();
        let rest = trimmed.strip_prefix("export ").map(str::trim_start);
        let (start, body) = match rest {
            Some(r) => (pos + line.len() - r.len(), r),
            None => (pos + lead, trimmed),
        };
        if body.starts_with(key) && body[key.len()..].trim_start().starts_with('=') {
            *cursor = line_end.min(text.len());
            return Some((start, key.len()));
        }
        if line_end >= text.len() {
            break;
        }
        pos = line_end + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotenv_lines() {
        let text = "# comment\nA=1\nexport B='two words'\nC=\"x\\ny\"\nD=${A}-d\n";
        let (vars, err) = parse(text, 100);
        assert!(err.is_none(), "{err:?}");
        let got: Vec<(&str, &str)> = vars
            .iter()
            .map(|(k, v)| (k.value.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            got,
            [("A", "1"), ("B", "two words"), ("C", "x\ny"), ("D", "1-d")]
        );
        assert_eq!(vars[1].0.span, Span::new(100 + text.find("B=").unwrap(), 1));
    }

    #[test]
    fn a_bad_line_points_into_the_file() {
        let text = "A=1\nnot a line\n";
        let (vars, err) = parse(text, 10);
        assert_eq!(vars.len(), 1);
        let err = err.unwrap();
        assert_eq!(err.code, "env-file-syntax");
        assert_eq!(err.span.unwrap(), Span::new(10 + 4, "not a line".len()));
    }
}
