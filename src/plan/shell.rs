//! `sh:` rendering (SPEC 1.2): a substituted value is always data, never code, in every
//! quoting context of the shell text.
//!
//! The value itself never enters the script's text. Each substituted value is bound
//! to a shell variable in a prefix (`__prun_1='…';`, single-quoted: the one quoting of
//! POSIX sh with no escapes but the quote itself) and every reference becomes an
//! expansion of that variable, written for the quoting context it stands in:
//!
//! | context | becomes | why |
//! |---|---|---|
//! | bare, glued to text, inside `$(…)` or backquotes | `"${__prun_1}"` | one word, no splitting, no globbing |
//! | inside `"…"`, `${…}` in double quotes, a here-document | `${__prun_1}` | expanded once, never re-scanned |
//! | inside `'…'` | `'"${__prun_1}"'` | close the quote, expand, reopen |
//! | a here-document with a quoted delimiter (`<<'EOF'`) | the heredoc is rewritten unquoted, its text escaped (`\`, `$`, `` ` ``), then `${__prun_1}` | the same text, and the value cannot end the heredoc |
//! | inside `$((…))` | `${__prun_1}` for an integer, else `"${__prun_1}"` (an arithmetic error) | arithmetic never evaluates a value's text as an expression |
//! | a comment | nothing | |
//!
//! The context is found by a small lexer of the literal text (quotes, escapes,
//! comments, `$(`, `${`, `$((`, backquotes, here-documents). Its exactness matters
//! only for the value arriving intact; safety does not depend on it, because whatever
//! context the lexer believes, only `${__prun_N}` is ever written into the script.
//! The one exception is a here-document with a quoted delimiter that is not a plain
//! word (`<<'END OF DATA'`): nothing inside it is ever expanded, so the value is
//! written as is — unless one of its lines would end the here-document, in which case
//! the script is replaced by one that fails with a message (exit 125).
//!
//! `$'…'` is read as POSIX sh (dash) reads it: `$` then a single-quoted string.

/// One piece of a shell template, as the renderer sees it.
pub enum Part<'a> {
    /// Text written in the file: shell syntax.
    Text(&'a str),
    /// A substituted value: data.
    Value(std::borrow::Cow<'a, str>),
}

/// The quoting context at a point of the script.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ctx {
    Bare,
    /// `$(…)`, with its open-parenthesis depth.
    CmdSub(u32),
    /// `$((…))`, with its open-parenthesis depth.
    Arith(u32),
    Backtick,
    Double,
    Single,
    /// `${…}`; `true` when it stands inside double quotes.
    Param(bool),
    Comment,
    /// A here-document body. `expand`: its delimiter was unquoted (or rewritten so);
    /// `escape`: a quoted heredoc rewritten unquoted, whose literal text must be
    /// escaped; `at_line_start`: the next character starts a line.
    Heredoc {
        delim: String,
        strip_tabs: bool,
        expand: bool,
        escape: bool,
        at_line_start: bool,
        line: String,
        line_has_value: bool,
    },
}

/// A here-document announced by `<<WORD`, whose body starts after the next newline.
#[derive(Debug, Clone)]
struct Pending {
    delim: String,
    strip_tabs: bool,
    expand: bool,
    escape: bool,
}

/// Render a shell script from its parts.
pub fn render(parts: &[Part<'_>]) -> String {
    let mut r = Renderer {
        out: String::new(),
        prefix: String::new(),
        stack: vec![Ctx::Bare],
        pending: Vec::new(),
        vars: 0,
        failure: None,
    };
    for part in parts {
        match part {
            Part::Text(t) => r.text(t),
            Part::Value(v) => r.value(v),
        }
    }
    if let Some(why) = r.failure {
        return format!(
            "printf '%s\\n' {} >&2; exit 125",
            single_quote(&format!("prun: {why}"))
        );
    }
    if r.prefix.is_empty() {
        r.out
    } else {
        r.prefix + &r.out
    }
}

/// `'…'` with `'` written as `'\''`: exactly the bytes, in any POSIX shell.
pub fn single_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

struct Renderer {
    out: String,
    /// `__prun_1='…';__prun_2='…';` (before the script, on its first line).
    prefix: String,
    stack: Vec<Ctx>,
    pending: Vec<Pending>,
    vars: usize,
    failure: Option<String>,
}

fn is_plain_word(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Characters that end a word in bare shell text.
fn ends_word(c: char) -> bool {
    c.is_whitespace() || matches!(c, ';' | '&' | '|' | '<' | '>' | '(' | ')')
}

impl Renderer {
    fn top(&self) -> &Ctx {
        self.stack.last().unwrap_or(&Ctx::Bare)
    }

    fn bind(&mut self, value: &str) -> String {
        self.vars += 1;
        let name = format!("__prun_{}", self.vars);
        self.prefix.push_str(&name);
        self.prefix.push('=');
        self.prefix.push_str(&single_quote(value));
        self.prefix.push(';');
        name
    }

    fn value(&mut self, v: &str) {
        match self.top().clone() {
            Ctx::Comment => {}
            Ctx::Heredoc {
                expand: false,
                delim,
                strip_tabs,
                ..
            } => {
                // A quoted heredoc we could not rewrite: nothing in it is expanded, so
                // the value is data as written, unless a line of it would end the
                // here-document.
                let ends = v.split('\n').any(|l| {
                    let l = if strip_tabs {
                        l.trim_start_matches('\t')
                    } else {
                        l
                    };
                    l == delim
                });
                if ends {
                    self.failure = Some(format!(
                        "a substituted value contains a line `{delim}`, which would end the here-document"
                    ));
                }
                self.mark_value_in_line();
                self.out.push_str(v);
            }
            Ctx::Heredoc { .. } | Ctx::Double | Ctx::Param(true) => {
                let name = self.bind(v);
                self.mark_value_in_line();
                self.out.push_str(&format!("${{{name}}}"));
            }
            Ctx::Single => {
                let name = self.bind(v);
                self.out.push_str(&format!("'\"${{{name}}}\"'"));
            }
            Ctx::Arith(_) => {
                let name = self.bind(v);
                let integer = v
                    .trim()
                    .trim_start_matches(['-', '+'])
                    .bytes()
                    .all(|b| b.is_ascii_digit())
                    && v.trim().bytes().any(|b| b.is_ascii_digit());
                if integer {
                    self.out.push_str(&format!("${{{name}}}"));
                } else {
                    self.out.push_str(&format!("\"${{{name}}}\""));
                }
            }
            Ctx::Bare | Ctx::CmdSub(_) | Ctx::Backtick | Ctx::Param(false) => {
                let name = self.bind(v);
                self.out.push_str(&format!("\"${{{name}}}\""));
            }
        }
    }

    fn mark_value_in_line(&mut self) {
        if let Some(Ctx::Heredoc {
            line_has_value,
            at_line_start,
            ..
        }) = self.stack.last_mut()
        {
            *line_has_value = true;
            *at_line_start = false;
        }
    }

    fn text(&mut self, t: &str) {
        let chars: Vec<char> = t.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            i = self.step(&chars, i);
        }
    }

    /// Handle the character at `i` (and maybe the following ones); returns the index of
    /// the next unhandled character.
    fn step(&mut self, s: &[char], i: usize) -> usize {
        let c = s[i];
        let next = s.get(i + 1).copied();
        let top = self.top().clone();
        match top {
            Ctx::Heredoc { .. } => return self.heredoc_char(s, i),
            Ctx::Single => {
                self.out.push(c);
                if c == '\'' {
                    self.stack.pop();
                }
                return i + 1;
            }
            Ctx::Comment => {
                if c == '\n' {
                    self.stack.pop();
                    return self.step(s, i);
                }
                self.out.push(c);
                return i + 1;
            }
            _ => {}
        }
        // Escapes: `\x` is literal in every remaining context.
        if c == '\\' {
            self.out.push(c);
            if let Some(n) = next {
                self.out.push(n);
                return i + 2;
            }
            return i + 1;
        }
        if let Some(j) = self.expansion_start(s, i) {
            return j;
        }
        match top {
            Ctx::Double => {
                self.out.push(c);
                if c == '"' {
                    self.stack.pop();
                } else if c == '`' {
                    self.stack.push(Ctx::Backtick);
                }
                i + 1
            }
            Ctx::Param(in_double) => {
                self.out.push(c);
                match c {
                    '}' => {
                        self.stack.pop();
                    }
                    '"' if !in_double => self.stack.push(Ctx::Double),
                    '\'' if !in_double => self.stack.push(Ctx::Single),
                    '`' => self.stack.push(Ctx::Backtick),
                    _ => {}
                }
                i + 1
            }
            Ctx::Arith(depth) => {
                self.out.push(c);
                match c {
                    '(' => self.set_top(Ctx::Arith(depth + 1)),
                    ')' if depth > 0 => self.set_top(Ctx::Arith(depth - 1)),
                    ')' if next == Some(')') => {
                        self.out.push(')');
                        self.stack.pop();
                        return i + 2;
                    }
                    _ => {}
                }
                i + 1
            }
            _ => self.bare_char(s, i),
        }
    }

    fn set_top(&mut self, ctx: Ctx) {
        if let Some(t) = self.stack.last_mut() {
            *t = ctx;
        }
    }

    /// `$((`, `$(`, `${` and backquotes open nested contexts wherever expansions happen.
    fn expansion_start(&mut self, s: &[char], i: usize) -> Option<usize> {
        let c = s[i];
        let next = s.get(i + 1).copied();
        let in_double = matches!(
            self.top(),
            Ctx::Double | Ctx::Param(true) | Ctx::Heredoc { .. }
        );
        if c == '$' && next == Some('(') && s.get(i + 2) == Some(&'(') {
            self.out.push_str("$((");
            self.stack.push(Ctx::Arith(0));
            return Some(i + 3);
        }
        if c == '$' && next == Some('(') {
            self.out.push_str("$(");
            self.stack.push(Ctx::CmdSub(0));
            return Some(i + 2);
        }
        if c == '$' && next == Some('{') {
            self.out.push_str("${");
            self.stack.push(Ctx::Param(in_double));
            return Some(i + 2);
        }
        None
    }

    fn bare_char(&mut self, s: &[char], i: usize) -> usize {
        let c = s[i];
        let next = s.get(i + 1).copied();
        match c {
            '\'' => {
                self.out.push(c);
                self.stack.push(Ctx::Single);
            }
            '"' => {
                self.out.push(c);
                self.stack.push(Ctx::Double);
            }
            '`' => {
                self.out.push(c);
                if *self.top() == Ctx::Backtick {
                    self.stack.pop();
                } else {
                    self.stack.push(Ctx::Backtick);
                }
            }
            '(' => {
                self.out.push(c);
                if let Ctx::CmdSub(d) = *self.top() {
                    self.set_top(Ctx::CmdSub(d + 1));
                }
            }
            ')' => {
                self.out.push(c);
                match *self.top() {
                    Ctx::CmdSub(0) => {
                        self.stack.pop();
                    }
                    Ctx::CmdSub(d) => self.set_top(Ctx::CmdSub(d - 1)),
                    _ => {}
                }
            }
            '}' => {
                self.out.push(c);
                if matches!(self.top(), Ctx::Param(false)) {
                    self.stack.pop();
                }
            }
            '#' if i == 0 && self.out.chars().last().is_none_or(ends_word)
                || i > 0 && ends_word(s[i - 1]) =>
            {
                self.out.push(c);
                self.stack.push(Ctx::Comment);
            }
            '<' if next == Some('<') && s.get(i + 2) != Some(&'<') => {
                return self.heredoc_operator(s, i);
            }
            '\n' => {
                self.out.push(c);
                self.start_pending_heredoc();
            }
            _ => self.out.push(c),
        }
        i + 1
    }

    fn start_pending_heredoc(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let p = self.pending.remove(0);
        self.stack.push(Ctx::Heredoc {
            delim: p.delim,
            strip_tabs: p.strip_tabs,
            expand: p.expand,
            escape: p.escape,
            at_line_start: true,
            line: String::new(),
            line_has_value: false,
        });
    }

    /// `<<WORD` or `<<-WORD`: remember the here-document; a quoted plain-word
    /// delimiter is written unquoted (and its body escaped) so values can be expanded.
    fn heredoc_operator(&mut self, s: &[char], i: usize) -> usize {
        let mut j = i + 2;
        let mut op = String::from("<<");
        let strip_tabs = s.get(j) == Some(&'-');
        if strip_tabs {
            op.push('-');
            j += 1;
        }
        let mut blanks = String::new();
        while let Some(&b) = s.get(j).filter(|b| **b == ' ' || **b == '\t') {
            blanks.push(b);
            j += 1;
        }
        // The word, with its quotes.
        let mut raw = String::new();
        let mut delim = String::new();
        let mut quoted = false;
        let mut quote: Option<char> = None;
        while let Some(&c) = s.get(j) {
            match quote {
                Some(q) if c == q => {
                    quote = None;
                    raw.push(c);
                }
                Some(_) => {
                    raw.push(c);
                    delim.push(c);
                }
                None if c == '\'' || c == '"' => {
                    quoted = true;
                    quote = Some(c);
                    raw.push(c);
                }
                None if c == '\\' => {
                    quoted = true;
                    raw.push(c);
                    if let Some(&n) = s.get(j + 1) {
                        raw.push(n);
                        delim.push(n);
                        j += 1;
                    }
                }
                None if ends_word(c) => break,
                None => {
                    raw.push(c);
                    delim.push(c);
                }
            }
            j += 1;
        }
        if delim.is_empty() && !quoted {
            // Not a here-document we understand (`<<` alone): leave it to the shell.
            self.out.push_str(&op);
            self.out.push_str(&blanks);
            return i + op.len();
        }
        let rewrite = quoted && is_plain_word(&delim);
        self.out.push_str(&op);
        self.out.push_str(&blanks);
        self.out.push_str(if rewrite { &delim } else { &raw });
        self.pending.push(Pending {
            delim,
            strip_tabs,
            expand: !quoted || rewrite,
            escape: rewrite,
        });
        j
    }

    fn heredoc_char(&mut self, s: &[char], i: usize) -> usize {
        let c = s[i];
        let Some(Ctx::Heredoc {
            delim,
            strip_tabs,
            expand,
            escape,
            at_line_start,
            line,
            line_has_value,
        }) = self.stack.last_mut()
        else {
            return i + 1;
        };
        if c == '\n' {
            let text = if *strip_tabs {
                line.trim_start_matches('\t')
            } else {
                line.as_str()
            };
            let is_end = !*line_has_value && text == delim.as_str();
            line.clear();
            *line_has_value = false;
            *at_line_start = true;
            self.out.push('\n');
            if is_end {
                self.stack.pop();
                self.start_pending_heredoc();
            }
            return i + 1;
        }
        *at_line_start = false;
        line.push(c);
        if *escape && matches!(c, '\\' | '$' | '`') {
            self.out.push('\\');
            self.out.push(c);
            return i + 1;
        }
        if !*expand {
            self.out.push(c);
            return i + 1;
        }
        // An unquoted here-document: `\`, `$(`, `${`, `$((` and backquotes work as
        // inside double quotes.
        if c == '\\' {
            self.out.push(c);
            if let Some(&n) = s.get(i + 1) {
                if n != '\n' {
                    line.push(n);
                }
                self.out.push(n);
                return i + 2;
            }
            return i + 1;
        }
        if c == '`' {
            self.out.push(c);
            self.stack.push(Ctx::Backtick);
            return i + 1;
        }
        if let Some(j) = self.expansion_start(s, i) {
            return j;
        }
        self.out.push(c);
        i + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(parts: &[Part<'_>]) -> String {
        render(parts)
    }

    fn t(s: &str) -> Part<'_> {
        Part::Text(s)
    }

    fn v(s: &str) -> Part<'_> {
        Part::Value(s.into())
    }

    #[test]
    fn no_values_leaves_the_script_alone() {
        assert_eq!(r(&[t("echo 'hi' \"$HOME\"")]), "echo 'hi' \"$HOME\"");
    }

    #[test]
    fn each_context_gets_its_expansion() {
        assert_eq!(
            r(&[t("wc -l "), v("a b")]),
            "__prun_1='a b';wc -l \"${__prun_1}\""
        );
        assert_eq!(
            r(&[t("echo \""), v("x"), t("\"")]),
            "__prun_1='x';echo \"${__prun_1}\""
        );
        assert_eq!(
            r(&[t("echo '"), v("it's"), t("'")]),
            "__prun_1='it'\\''s';echo ''\"${__prun_1}\"''"
        );
        assert_eq!(r(&[t("# "), v("x"), t("\necho")]), "# \necho");
        assert_eq!(
            r(&[t("cat <<'EOF'\n$HOME "), v("v"), t("\nEOF\necho "), v("w")]),
            "__prun_1='v';__prun_2='w';cat <<EOF\n\\$HOME ${__prun_1}\nEOF\necho \"${__prun_2}\""
        );
        assert_eq!(
            r(&[t("echo $(("), v("3"), t(" + 1))")]),
            "__prun_1='3';echo $((${__prun_1} + 1))"
        );
    }

    #[test]
    fn an_exotic_quoted_heredoc_refuses_a_terminating_value() {
        let out = r(&[
            t("cat <<'END X'\n"),
            v("a\nEND X\ntouch PWNED"),
            t("\nEND X\n"),
        ]);
        assert!(out.starts_with("printf"), "{out}");
        assert!(out.ends_with("exit 125"));
    }
}
