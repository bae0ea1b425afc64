//! Decoding `foreach`: item sources, `matrix`, `batch` and `halt` thresholds.

use super::*;

impl<'a> Decoder<'a> {
    pub(super) fn foreach(&mut self, node: &Node, what: &str) -> Option<S<ForeachSpec>> {
        let w = format!("`foreach` of {what}");
        let f = self.fields(node, &w, &keys::FOREACH)?;
        let present: Vec<&str> = f.present().filter(|k| *k != "batch").collect();
        let batch = match f.get("batch") {
            Some(b) => {
                let n = self.int_in(b, "`foreach.batch`", 1, 100_000_000)?;
                if !f.has("queue") {
                    self.push(
                        Diagnostic::error(
                            "invalid-foreach",
                            "`batch` only applies to `foreach: {queue}`",
                        )
                        .at(
                            f.key_span("batch").unwrap_or(b.span),
                            "no queue to cut into blocks",
                        )
                        .help("write `foreach: {queue: Q, batch: 1000}`, or remove `batch`"),
                    );
                    return None;
                }
                Some(n.value as usize)
            }
            None => None,
        };
        if present.len() != 1 {
            self.push(
                Diagnostic::error("invalid-foreach", format!("{w} needs exactly one source"))
                    .at(
                        node.span,
                        if present.is_empty() {
                            "no source".to_string()
                        } else {
                            format!("found {}", one_of(&present))
                        },
                    )
                    .help("use one of `items`, `range`, `glob`, `lines`, `queue` or `matrix`"),
            );
            return None;
        }
        let key = present[0];
        let v = f.get(key)?;
        let spec = match key {
            "items" => {
                let Kind::Seq(items) = &v.kind else {
                    self.type_error(v, "`foreach.items`", "a list");
                    return None;
                };
                ForeachSpec::Items(
                    items
                        .iter()
                        .filter_map(|i| self.tmpl(i, "an item"))
                        .collect(),
                )
            }
            "range" => {
                let rf = self.fields(v, "`foreach.range`", &keys::RANGE)?;
                let get = |d: &mut Self, k: &str| -> Option<S<i128>> {
                    rf.get(k).and_then(|n| {
                        d.int_in(
                            n,
                            &format!("`range.{k}`"),
                            i64::MIN as i128,
                            i64::MAX as i128,
                        )
                    })
                };
                let from = get(self, "from").map(|s| s.value as i64).unwrap_or(0);
                let Some(to) = rf.get("to") else {
                    self.push(
                        Diagnostic::error("missing-key", "`foreach.range` needs `to`")
                            .at(v.span, "no `to` here")
                            .help("write `range: {from: 0, to: 10}` (`to` is exclusive, like Python's range)"),
                    );
                    return None;
                };
                let to = self
                    .int_in(to, "`range.to`", i64::MIN as i128, i64::MAX as i128)?
                    .value as i64;
                let step = match rf.get("step") {
                    Some(sn) => {
                        let s =
                            self.int_in(sn, "`range.step`", i64::MIN as i128, i64::MAX as i128)?;
                        if s.value == 0 {
                            self.push(
                                Diagnostic::error("invalid-value", "`range.step` cannot be 0")
                                    .at(sn.span, "zero step")
                                    .help("use a positive step to count up or a negative one to count down"),
                            );
                            return None;
                        }
                        S::new(s.value as i64, sn.span)
                    }
                    None => S::new(1, v.span),
                };
                let count = if step.value > 0 {
                    ((to as i128 - from as i128).max(0) + step.value as i128 - 1)
                        / step.value as i128
                } else {
                    ((from as i128 - to as i128).max(0) + (-step.value as i128) - 1)
                        / (-step.value as i128)
                };
                if count > 10_000_000 {
                    self.push(
                        Diagnostic::error(
                            "out-of-range",
                            format!("`foreach.range` has {count} items"),
                        )
                        .at(v.span, "too many items")
                        .help(
                            "a foreach runs one process per item; keep it under 10,000,000 items",
                        ),
                    );
                    return None;
                }
                ForeachSpec::Range { from, to, step }
            }
            "glob" => ForeachSpec::Glob(self.tmpl(v, "`foreach.glob`")?),
            "lines" => ForeachSpec::Lines(self.tmpl(v, "`foreach.lines`")?),
            "matrix" => ForeachSpec::Matrix(self.matrix(v)?),
            _ => ForeachSpec::Queue {
                queue: self.string(v, "`foreach.queue`")?,
                batch,
            },
        };
        Some(S::new(spec, node.span))
    }

    /// `matrix: {NAME: [values...]}`: named dimensions, each a non-empty list.
    pub(super) fn matrix(&mut self, node: &Node) -> Option<Vec<(S<String>, Vec<Tmpl>)>> {
        let entries = self.map(node, "`foreach.matrix`")?;
        if entries.is_empty() {
            self.push(
                Diagnostic::error("invalid-foreach", "`foreach.matrix` has no dimension")
                    .at(node.span, "empty matrix")
                    .help("write `matrix: {size: [s, m], region: [eu, us]}`"),
            );
            return None;
        }
        let mut dims = Vec::new();
        let mut total: u128 = 1;
        for (k, _, v) in entries {
            self.declared_name(&k, "matrix dimension");
            let Kind::Seq(items) = &v.kind else {
                self.type_error(v, &format!("matrix dimension `{}`", k.value), "a list");
                continue;
            };
            if items.is_empty() {
                self.push(
                    Diagnostic::error(
                        "invalid-foreach",
                        format!("matrix dimension `{}` is empty", k.value),
                    )
                    .at(v.span, "no values")
                    .help(
                        "a cross product with an empty list has no items; list at least one value",
                    ),
                );
                continue;
            }
            total = total.saturating_mul(items.len() as u128);
            let values: Vec<Tmpl> = items
                .iter()
                .filter_map(|i| self.tmpl(i, "a matrix value"))
                .collect();
            dims.push((k, values));
        }
        if total > 10_000_000 {
            self.push(
                Diagnostic::error(
                    "out-of-range",
                    format!("`foreach.matrix` has {total} items"),
                )
                .at(node.span, "too many items")
                .help("a foreach runs one process per item; keep it under 10,000,000 items"),
            );
            return None;
        }
        Some(dims)
    }

    /// `halt: {when: soon|now, fail: N|"N%", success: N|"N%"}`.
    pub(super) fn halt(&mut self, node: &Node, what: &str) -> Option<S<HaltSpec>> {
        let w = format!("`halt` of {what}");
        let f = self.fields(node, &w, &keys::HALT)?;
        let when = match f.get("when") {
            Some(v) => {
                self.keyword(
                    v,
                    "`halt.when`",
                    &[("soon", HaltWhen::Soon), ("now", HaltWhen::Now)],
                )?
                .value
            }
            None => HaltWhen::Soon,
        };
        let fail = match f.get("fail") {
            Some(v) => Some(self.threshold(v, "`halt.fail`")?),
            None => None,
        };
        let success = match f.get("success") {
            Some(v) => Some(self.threshold(v, "`halt.success`")?),
            None => None,
        };
        if fail.is_none() && success.is_none() {
            self.push(
                Diagnostic::error("invalid-halt", format!("{w} needs `fail` or `success`"))
                    .at(node.span, "no threshold")
                    .help("write `halt: {when: soon, fail: 1}` (stop after the first failure) or a share such as `fail: \"10%\"`"),
            );
            return None;
        }
        Some(S::new(
            HaltSpec {
                when,
                fail,
                success,
            },
            node.span,
        ))
    }

    /// A halt threshold: a whole number ≥ 1, or `"N%"` with 0 < N ≤ 100.
    pub(super) fn threshold(&mut self, node: &Node, what: &str) -> Option<Threshold> {
        let bad = |d: &mut Self| {
            d.push(
                Diagnostic::error("invalid-halt", format!("{what} must be a count or a percentage"))
                    .at(node.span, "expected N or \"N%\"")
                    .help("write a number of items (`3`) or a share of all the items in quotes (`\"10%\"`, above 0 and at most 100)"),
            );
            None
        };
        match &node.kind {
            Kind::Int(n) if *n >= 1 && *n <= u64::MAX as i128 => Some(Threshold::Count(*n as u64)),
            Kind::Str(s) => match s.trim().strip_suffix('%').map(|p| p.trim().parse::<f64>()) {
                Some(Ok(p)) if p > 0.0 && p <= 100.0 => Some(Threshold::Percent(p)),
                _ => bad(self),
            },
            _ => bad(self),
        }
    }
}
