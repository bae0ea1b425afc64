//! Decoding scalar values (strings, templates, numbers, durations, keywords, signals,
//! regexes) and short lists of them, each checked and spanned.

use super::*;

impl<'a> Decoder<'a> {
    pub fn string(&mut self, node: &Node, what: &str) -> Option<S<String>> {
        match &node.kind {
            Kind::Str(s) => Some(S::new(s.clone(), node.span)),
            _ => {
                self.type_error(node, what, "a string");
                None
            }
        }
    }

    /// A scalar as written: strings, and numbers or booleans in their source spelling.
    pub fn scalar_text(&mut self, node: &Node, what: &str) -> Option<S<String>> {
        match &node.kind {
            Kind::Str(s) => Some(S::new(s.clone(), node.span)),
            Kind::Int(_) | Kind::Float(_) | Kind::Bool(_) => {
                Some(S::new(self.raw(node.span).trim().to_string(), node.span))
            }
            _ => {
                self.type_error(node, what, "a string");
                None
            }
        }
    }

    pub fn tmpl(&mut self, node: &Node, what: &str) -> Option<Tmpl> {
        let s = self.scalar_text(node, what)?;
        let raw = self.raw(node.span);
        Some(interp::parse(&s.value, s.span, raw, &mut self.diags))
    }

    pub fn int(&mut self, node: &Node, what: &str) -> Option<S<i128>> {
        match &node.kind {
            Kind::Int(i) => Some(S::new(*i, node.span)),
            Kind::Float(_)
                if self
                    .raw(node.span)
                    .trim()
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b == b'-' || b == b'+') =>
            {
                self.push(
                    Diagnostic::error("out-of-range", format!("{what} is too large"))
                        .at(node.span, "too large")
                        .help("use a smaller whole number"),
                );
                None
            }
            Kind::Str(s) if s.trim().parse::<i128>().is_ok() => {
                self.type_error(node, what, "an integer (write it without quotes)");
                None
            }
            _ => {
                self.type_error(node, what, "an integer");
                None
            }
        }
    }

    /// An integer in `min..=max`.
    pub fn int_in(&mut self, node: &Node, what: &str, min: i128, max: i128) -> Option<S<i128>> {
        let v = self.int(node, what)?;
        if v.value < min || v.value > max {
            self.push(
                Diagnostic::error(
                    "out-of-range",
                    format!("{what} must be between {min} and {max}, found {}", v.value),
                )
                .at(node.span, "out of range")
                .help(format!("use a whole number from {min} to {max}")),
            );
            return None;
        }
        Some(v)
    }

    pub fn boolean(&mut self, node: &Node, what: &str) -> Option<S<bool>> {
        match &node.kind {
            Kind::Bool(b) => Some(S::new(*b, node.span)),
            _ => {
                self.type_error(node, what, "`true` or `false`");
                None
            }
        }
    }

    pub fn duration(&mut self, node: &Node, what: &str) -> Option<S<Duration>> {
        let parsed = match &node.kind {
            Kind::Int(i) if *i >= 0 => u64::try_from(*i).ok().map(Duration::from_secs),
            Kind::Float(f) => crate::vocab::seconds(*f),
            Kind::Str(s) => crate::vocab::parse_duration(s).ok(),
            Kind::Int(_) => None,
            _ => {
                self.type_error(node, what, "a duration such as `250ms`, `5s`, `2m` or `1h`");
                return None;
            }
        };
        match parsed {
            Some(d) => Some(S::new(d, node.span)),
            None => {
                self.push(
                    Diagnostic::error("invalid-duration", format!("{what} is not a valid duration"))
                        .at(node.span, "not a duration")
                        .help("write a duration such as `250ms`, `5s`, `2m` or `1h` (a bare number is seconds)"),
                );
                None
            }
        }
    }

    /// One of a fixed set of words.
    pub fn keyword<T: Clone>(
        &mut self,
        node: &Node,
        what: &str,
        words: &[(&str, T)],
    ) -> Option<S<T>> {
        let names: Vec<&str> = words.iter().map(|(n, _)| *n).collect();
        let text = match &node.kind {
            Kind::Str(s) => s.clone(),
            Kind::Bool(_) | Kind::Int(_) | Kind::Float(_) | Kind::Null => {
                self.raw(node.span).to_string()
            }
            _ => {
                self.type_error(node, what, &format!("one of {}", one_of(&names)));
                return None;
            }
        };
        if let Some((_, v)) = words.iter().find(|(n, _)| *n == text) {
            return Some(S::new(v.clone(), node.span));
        }
        let help = did_you_mean(&text, names.iter().copied())
            .unwrap_or_else(|| format!("use {}", one_of(&names)));
        self.push(
            Diagnostic::error("invalid-value", format!("`{text}` is not a valid {what}"))
                .at(node.span, format!("expected {}", one_of(&names)))
                .help(help),
        );
        None
    }

    /// A name declared by the user (stage, queue, ...): `[a-z][a-z0-9_-]*`.
    pub fn declared_name(&mut self, key: &S<String>, kind: &str) -> bool {
        if matches!(key.value.as_str(), "true" | "false" | "null") {
            // Valid as a key, but every unquoted reference (`stdout: true`) reads as a
            // boolean or null, so the name could never be used as written.
            self.push(
                Diagnostic::error(
                    "invalid-name",
                    format!("invalid {kind} name `{}`", key.value),
                )
                .at(key.span, "reads as a YAML boolean or null where it is used")
                .help(format!(
                    "`{}` is a YAML keyword: references to it would need quotes everywhere; pick another name",
                    key.value
                )),
            );
            return false;
        }
        if interp::valid_ident(&key.value) {
            return true;
        }
        let suggestion = key.value.to_lowercase().replace([' ', '.'], "_");
        let help = if interp::valid_ident(&suggestion) {
            format!(
                "names start with a lowercase letter and use only `a-z`, `0-9`, `_` and `-`: try `{suggestion}`"
            )
        } else {
            "names start with a lowercase letter and use only `a-z`, `0-9`, `_` and `-`".to_string()
        };
        self.push(
            Diagnostic::error(
                "invalid-name",
                format!("invalid {kind} name `{}`", key.value),
            )
            .at(key.span, "invalid name")
            .help(help),
        );
        false
    }

    pub fn regex(&mut self, node: &Node, what: &str) -> Option<regex::Regex> {
        let s = self.string(node, what)?;
        match regex::Regex::new(&s.value) {
            Ok(r) => Some(r),
            Err(e) => {
                let detail = e.to_string();
                let last = detail.lines().last().unwrap_or("").trim().to_string();
                self.push(
                    Diagnostic::error("invalid-regex", format!("{what} is not a valid regular expression"))
                        .at(node.span, last)
                        .help("the syntax is that of Rust's `regex` crate; escape special characters with `\\`"),
                );
                None
            }
        }
    }

    pub fn signal(&mut self, node: &Node, what: &str) -> Option<S<i32>> {
        let text = match &node.kind {
            Kind::Str(s) => s.trim().to_string(),
            Kind::Int(i) => i.to_string(),
            _ => {
                self.type_error(node, what, "a signal name such as `TERM`");
                return None;
            }
        };
        match parse_signal(&text) {
            Some(n) => Some(S::new(n, node.span)),
            None => {
                let names: Vec<&str> = SIGNALS.iter().map(|(n, _)| *n).collect();
                let upper = text.to_uppercase();
                let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
                self.push(
                    Diagnostic::error("invalid-signal", format!("`{text}` is not a signal name"))
                        .at(node.span, "unknown signal")
                        .help(did_you_mean(bare, names.iter().copied()).unwrap_or_else(|| {
                            "use a name such as TERM, INT, HUP, QUIT, KILL, USR1 or USR2 (with or without SIG)".into()
                        })),
                );
                None
            }
        }
    }

    /// A list, or a single value standing for a list of one.
    pub(super) fn list_or_one<'n>(&mut self, node: &'n Node) -> Vec<&'n Node> {
        match &node.kind {
            Kind::Seq(items) => items.iter().collect(),
            Kind::Null => Vec::new(),
            _ => vec![node],
        }
    }

    pub(super) fn names(&mut self, node: &Node, what: &str) -> Vec<S<String>> {
        let items = self.list_or_one(node);
        items
            .into_iter()
            .filter_map(|n| self.string(n, what))
            .collect()
    }

    // ----- the document -----

    /// A list of strings with interpolation (arguments for a client).
    pub(super) fn tmpl_list(&mut self, node: &Node, what: &str) -> Option<Vec<Tmpl>> {
        let Kind::Seq(items) = &node.kind else {
            self.type_error(node, what, "a list of strings");
            return None;
        };
        let out: Vec<Tmpl> = items
            .iter()
            .filter_map(|i| self.tmpl(i, &format!("an element of {what}")))
            .collect();
        (out.len() == items.len()).then_some(out)
    }

    /// `include: [a.yaml, ...]` (or one path).
    pub(super) fn paths(&mut self, node: &Node, what: &str) -> Vec<S<String>> {
        let items = self.list_or_one(node);
        items
            .into_iter()
            .filter_map(|n| self.string(n, &format!("a path in {what}")))
            .collect()
    }
}
