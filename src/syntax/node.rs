//! A YAML document as a tree of spanned nodes.
//!
//! serde-saphyr parses the text and gives every value its [`Spanned`] location; we keep
//! the whole document in this small tree instead of deserializing straight into typed
//! structs, because serde stops at the first error while prun must report every problem
//! of a file at once, each with the exact span of the offending key or value.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

pub use crate::diag::Span;

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub kind: Kind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Entries in document order; duplicates are kept so they can be reported.
    Map(Vec<(Node, Node)>),
}

impl Kind {
    /// How a user would name this type in a message.
    pub fn type_name(&self) -> &'static str {
        match self {
            Kind::Null => "null",
            Kind::Bool(_) => "a boolean",
            Kind::Int(_) => "an integer",
            Kind::Float(_) => "a number",
            Kind::Str(_) => "a string",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a map",
        }
    }
}

impl Node {
    /// Move every span of the tree by `base` bytes (a file's own offsets to the global
    /// offsets of a load that reads several files).
    pub fn shift(&mut self, base: usize) {
        if base == 0 {
            return;
        }
        self.span = self.span.shifted(base);
        match &mut self.kind {
            Kind::Seq(items) => items.iter_mut().for_each(|n| n.shift(base)),
            Kind::Map(entries) => entries.iter_mut().for_each(|(k, v)| {
                k.shift(base);
                v.shift(base);
            }),
            _ => {}
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// Parse a whole document. An empty document is `Kind::Null`.
///
/// Booleans are YAML 1.2's (`true`/`false` only): with YAML 1.1's `y`/`n`/`yes`/`no`/
/// `on`/`off`, a queue named `n` could be declared but not referenced unquoted
/// (`stdout: n` would read as `false`).
pub fn parse(source: &str) -> Result<Node, serde_saphyr::Error> {
    let options = serde_saphyr::options! {
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::PassThrough,
        strict_booleans: true,
    };
    let root: Option<SpannedNode> = serde_saphyr::from_str_with_options(source, options)?;
    Ok(match root {
        Some(n) => n.0,
        None => Node {
            kind: Kind::Null,
            span: Span::new(0, source.len().min(1)),
        },
    })
}

/// Internal wrapper: deserializes a value through `Spanned` to capture its location.
struct SpannedNode(Node);

fn span_of<T>(s: &Spanned<T>) -> Span {
    let sp = s.referenced.span();
    let offset = sp.byte_offset().unwrap_or(sp.offset()) as usize;
    let len = sp.byte_len().unwrap_or(sp.len()) as usize;
    Span::new(offset, len)
}

impl<'de> Deserialize<'de> for SpannedNode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s: Spanned<RawKind> = Spanned::deserialize(d)?;
        let span = span_of(&s);
        Ok(SpannedNode(Node {
            kind: s.value.0,
            span,
        }))
    }
}

struct RawKind(Kind);

impl<'de> Deserialize<'de> for RawKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(KindVisitor).map(RawKind)
    }
}

struct KindVisitor;

impl<'de> Visitor<'de> for KindVisitor {
    type Value = Kind;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Kind, E> {
        Ok(Kind::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Kind, E> {
        Ok(Kind::Int(v.into()))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Kind, E> {
        Ok(Kind::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Kind, E> {
        Ok(Kind::Int(v.into()))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Kind, E> {
        Ok(i128::try_from(v)
            .map(Kind::Int)
            .unwrap_or(Kind::Float(v as f64)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Kind, E> {
        Ok(Kind::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Kind, E> {
        Ok(Kind::Str(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Kind, E> {
        Ok(Kind::Str(v))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Kind, E> {
        Ok(Kind::Str(String::from_utf8_lossy(v).into_owned()))
    }
    fn visit_none<E: de::Error>(self) -> Result<Kind, E> {
        Ok(Kind::Null)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Kind, E> {
        Ok(Kind::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Kind, D::Error> {
        d.deserialize_any(KindVisitor)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Kind, A::Error> {
        let mut items = Vec::new();
        while let Some(SpannedNode(n)) = seq.next_element()? {
            items.push(n);
        }
        Ok(Kind::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Kind, A::Error> {
        let mut entries = Vec::new();
        while let Some(SpannedNode(k)) = map.next_key()? {
            let SpannedNode(v) = map.next_value()?;
            entries.push((k, v));
        }
        Ok(Kind::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_point_at_values() {
        let src = "a: 1\nb: [x, \"y\"]\nc: {d: true}\n";
        let n = parse(src).unwrap();
        let Kind::Map(entries) = &n.kind else {
            panic!("{n:?}")
        };
        assert_eq!(entries.len(), 3);
        let (k, v) = &entries[1];
        assert_eq!(&src[k.span.offset..k.span.offset + k.span.len], "b");
        let Kind::Seq(items) = &v.kind else { panic!() };
        assert_eq!(&src[items[0].span.offset..][..items[0].span.len], "x");
        assert_eq!(items[1].as_str(), Some("y"));
        eprintln!("{:?}", items[1].span);
    }

    #[test]
    fn duplicates_are_kept() {
        let n = parse("a: 1\na: 2\n").unwrap();
        let Kind::Map(entries) = &n.kind else {
            panic!()
        };
        assert_eq!(entries.len(), 2);
    }

    #[test]
    fn empty_is_null() {
        assert_eq!(parse("").unwrap().kind, Kind::Null);
        assert_eq!(parse("# only a comment\n").unwrap().kind, Kind::Null);
    }

    #[test]
    fn anchors_and_merge() {
        let n = parse("x-base: &b {a: 1}\ns:\n  <<: *b\n  c: 2\n").unwrap();
        let Kind::Map(entries) = &n.kind else {
            panic!()
        };
        let Kind::Map(s) = &entries[1].1.kind else {
            panic!()
        };
        assert_eq!(s.len(), 2, "{s:?}");
    }
}
