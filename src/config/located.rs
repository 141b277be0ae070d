//! Type errors in the operator's words: `file:line:column: key.path: expected …, found …`.
//!
//! Two places find a value of the wrong type: the typed parse of one file (the YAML parser knows
//! the line) and the typed parse of the merged directory (a JSON tree without lines). Both track
//! the key path with `serde_path_to_error`; the line of a merged value is looked up in the file
//! that set it, through a tree of the file with every node's location. The deserializer's words
//! (`invalid type: string "yes", expected a boolean`, `invalid i64`, Rust type names) are
//! rewritten into what an operator would check in the file.

use std::path::Path;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use super::ConfigError;

/// A YAML document with the location of every node.
#[derive(Debug)]
enum Node {
    Map(Vec<(String, Spanned<Node>)>),
    Seq(Vec<Spanned<Node>>),
    /// A scalar as the operator wrote it, quoted when it is a string.
    Scalar(String),
    Null,
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Scalar(v.to_string()))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Scalar(v.to_string()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Scalar(v.to_string()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Scalar(v.to_string()))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Scalar(format!("{v:?}")))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Node>>()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Node>()? {
            let key = match key {
                Node::Scalar(s) => s.trim_matches('"').to_string(),
                _ => String::new(),
            };
            entries.push((key, map.next_value::<Spanned<Node>>()?));
        }
        Ok(Node::Map(entries))
    }
}

/// A key path as the config's messages write it: `tun.unsafe_routes[0].via`.
pub fn dotted(path: &serde_path_to_error::Path) -> String {
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            serde_path_to_error::Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            // The firewall section keeps positions with `Spanned`, whose field is `value`.
            serde_path_to_error::Segment::Map { key } if key == "value" => {}
            serde_path_to_error::Segment::Map { key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            serde_path_to_error::Segment::Enum { .. } | serde_path_to_error::Segment::Unknown => {}
        }
    }
    out
}

/// The line, column and written form of the value at `path` in `text`.
fn locate(text: &str, path: &str) -> Option<(usize, usize, String)> {
    let root: Spanned<Node> = serde_saphyr::from_str(text).ok()?;
    let mut node = &root;
    let mut rest = path;
    // Keys may hold dots themselves (`remote_allow_list."10.0.0.0/8"`): match whole keys.
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('[') {
            let (index, tail) = after.split_once(']')?;
            let Node::Seq(items) = &node.value else { return None };
            node = items.get(index.parse::<usize>().ok()?)?;
            rest = tail.strip_prefix('.').unwrap_or(tail);
            continue;
        }
        let Node::Map(entries) = &node.value else { return None };
        let (key, value) = entries
            .iter()
            .filter(|(k, _)| rest == k || rest.starts_with(&format!("{k}.")) || rest.starts_with(&format!("{k}[")))
            .max_by_key(|(k, _)| k.len())?;
        node = value;
        rest = &rest[key.len()..];
        rest = rest.strip_prefix('.').unwrap_or(rest);
    }
    let found = match &node.value {
        Node::Scalar(s) => s.clone(),
        Node::Null => "nothing".to_string(),
        Node::Seq(_) => "a list".to_string(),
        Node::Map(_) => "a map".to_string(),
    };
    let at = node.referenced;
    Some((at.line() as usize, at.column() as usize, found))
}

/// The error for a value at `path` of `file` (whose text is `text`) that the typed parse
/// refused with `raw`; `fallback` is the parser's own location, if it had one.
pub fn type_error(file: &Path, text: &str, path: &str, raw: &str, fallback: Option<(usize, usize)>) -> ConfigError {
    let located = locate(text, path);
    let (line, column) = located.as_ref().map(|(l, c, _)| (*l, *c)).or(fallback).unwrap_or((0, 0));
    let found = located.map(|(_, _, f)| f);
    let reason = operator_words(raw, found.as_deref());
    let message = if path.is_empty() || reason.contains(path) { reason } else { format!("{path}: {reason}") };
    ConfigError::Parse { file: file.to_path_buf(), line, column, message }
}

/// The deserializer's message in the operator's words.
pub fn operator_words(raw: &str, found: Option<&str>) -> String {
    let raw = raw.trim();
    if let Some(rest) = raw.strip_prefix("invalid type: ").or_else(|| raw.strip_prefix("invalid value: "))
        && let Some((unexpected, expected)) = rest.split_once(", expected ")
    {
        let found = found.map(str::to_string).unwrap_or_else(|| serde_found(unexpected));
        return format!("expected {}, found {found}", expectation(expected));
    }
    if let Some(ty) = raw.strip_prefix("invalid ")
        && ["boolean", "i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64", "usize", "f32", "f64"].contains(&ty)
    {
        return format!("expected {}, found {}", expectation(ty), found.unwrap_or("another value"));
    }
    if let Some(rest) = raw.strip_prefix("unknown variant `")
        && let Some((variant, allowed)) = rest.split_once("`, expected ")
    {
        return format!("expected {}, found {variant:?}", allowed.replace('`', ""));
    }
    if let Some(field) = raw.strip_prefix("missing field `").and_then(|f| f.strip_suffix('`')) {
        return format!("the key {field} is required here");
    }
    if let Some(kind) = raw.strip_prefix("invalid ").and_then(|r| r.strip_suffix(" syntax")) {
        // std's address parsers: "invalid IPv4 address syntax", "invalid IP address syntax".
        let kind = kind.replace("IP address/prefix", "CIDR (address/prefix)");
        return format!("expected an {kind}, found {}", found.unwrap_or("another value"));
    }
    if raw.contains("null into") || raw.contains("use Option<") {
        return "a value is required here, found nothing (an empty value)".to_string();
    }
    if let Some(expected) = raw.strip_prefix("expected ")
        && !expected.contains(',')
    {
        return format!("expected {}, found {}", expectation(expected), found.unwrap_or("another kind of value"));
    }
    raw.to_string()
}

/// What serde or the YAML parser expected, as an operator would say it.
fn expectation(expected: &str) -> String {
    let e = expected.trim().trim_start_matches("a ").trim_start_matches("an ");
    match e {
        "boolean" => "true or false".into(),
        "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" | "usize" | "integer" => "a whole number".into(),
        "f32" | "f64" | "float" => "a number".into(),
        "string scalar" => "a single value (not a list or map)".into(),
        "string" | "str" | "char" => "text".into(),
        "sequence" | "sequence start" => "a list".into(),
        "map" | "mapping" | "mapping start" => "a map of keys".into(),
        s if s.starts_with("struct ") => "a map of keys".into(),
        s if s.starts_with("tuple") => "a list".into(),
        s => s.trim_matches('`').to_string(),
    }
}

/// serde's `string "yes"` / `integer `5`` / `sequence` as the value itself.
fn serde_found(unexpected: &str) -> String {
    let u = unexpected.trim();
    for prefix in ["string ", "integer ", "floating point ", "boolean ", "unsigned integer "] {
        if let Some(v) = u.strip_prefix(prefix) {
            return v.trim_matches('`').to_string();
        }
    }
    match u {
        "sequence" => "a list".into(),
        "map" => "a map".into(),
        "unit value" | "null" => "nothing".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_located_by_key_path() {
        let text = "tun:\n  dev: n1\n  unsafe_routes:\n    - route: 10.0.0.0/8\n      via: \"x\"\nlighthouse:\n  am_lighthouse: \"yes\"\n";
        assert_eq!(locate(text, "lighthouse.am_lighthouse"), Some((7, 18, "\"yes\"".into())));
        assert_eq!(locate(text, "tun.unsafe_routes[0].via").map(|l| (l.0, l.2)), Some((5, "\"x\"".into())));
        assert_eq!(locate(text, "tun.nope"), None);
        let text = "lighthouse:\n  remote_allow_list:\n    \"10.0.0.0/8\": maybe\n";
        assert_eq!(
            locate(text, "lighthouse.remote_allow_list.10.0.0.0/8").map(|l| (l.0, l.2)),
            Some((3, "\"maybe\"".into()))
        );
    }

    #[test]
    fn deserializer_words_become_operator_words() {
        assert_eq!(
            operator_words("invalid type: string \"yes\", expected a boolean", None),
            "expected true or false, found \"yes\""
        );
        assert_eq!(operator_words("invalid i64", Some("\"fourtwo\"")), "expected a whole number, found \"fourtwo\"");
        assert_eq!(
            operator_words("cannot deserialize null into string; use Option<String>", None),
            "a value is required here, found nothing (an empty value)"
        );
        assert_eq!(
            operator_words("invalid type: sequence, expected u32", None),
            "expected a whole number, found a list"
        );
    }
}
