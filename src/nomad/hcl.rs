//! A small writer for the HCL1 that Nomad's agent config parser reads: attributes, labelled
//! blocks and `#` comments, with `=` aligned within a block as `nomad fmt` would.
//!
//! Only what the agent snippet needs; values are escaped here so a caller never builds HCL text
//! by hand (a quote in a template such as `GetInterfaceIP "nebula1"` must become `\"`).

use std::fmt::Write;

/// An attribute value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Str(String),
    Int(i64),
    Bool(bool),
    List(Vec<Value>),
}

impl Value {
    pub fn str(s: impl Into<String>) -> Value {
        Value::Str(s.into())
    }
}

#[derive(Debug, Clone)]
enum Item {
    Comment(String),
    Blank,
    Attr { key: String, value: Value, comment: Option<String> },
    Block { name: String, labels: Vec<String>, body: Body },
}

/// The inside of a file or of a block.
#[derive(Debug, Clone, Default)]
pub struct Body {
    items: Vec<Item>,
}

impl Body {
    pub fn new() -> Body {
        Body::default()
    }

    /// A `# comment` line; `text` may hold several lines.
    pub fn comment(&mut self, text: &str) -> &mut Body {
        for line in text.lines() {
            self.items.push(Item::Comment(line.to_string()));
        }
        self
    }

    pub fn blank(&mut self) -> &mut Body {
        self.items.push(Item::Blank);
        self
    }

    pub fn attr(&mut self, key: &str, value: Value) -> &mut Body {
        self.items.push(Item::Attr { key: key.into(), value, comment: None });
        self
    }

    /// An attribute followed by a `# comment` on the same line.
    pub fn attr_noted(&mut self, key: &str, value: Value, comment: &str) -> &mut Body {
        self.items.push(Item::Attr { key: key.into(), value, comment: Some(comment.into()) });
        self
    }

    pub fn block(&mut self, name: &str, labels: &[&str], body: Body) -> &mut Body {
        self.items.push(Item::Block {
            name: name.into(),
            labels: labels.iter().map(|l| l.to_string()).collect(),
            body,
        });
        self
    }

    /// The HCL text, ending with a newline.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.render_into(&mut out, 0);
        out
    }

    fn render_into(&self, out: &mut String, depth: usize) {
        let indent = "  ".repeat(depth);
        // `=` lines up over each run of attributes not broken by a block or blank line.
        let mut widths = vec![0usize; self.items.len()];
        let mut run_start = 0;
        for i in 0..=self.items.len() {
            let breaks = match self.items.get(i) {
                None | Some(Item::Blank) | Some(Item::Block { .. }) => true,
                Some(Item::Comment(_)) | Some(Item::Attr { .. }) => false,
            };
            if breaks {
                let width = self.items[run_start..i]
                    .iter()
                    .filter_map(|it| if let Item::Attr { key, .. } = it { Some(key.len()) } else { None })
                    .max()
                    .unwrap_or(0);
                widths[run_start..i].iter_mut().for_each(|w| *w = width);
                run_start = i + 1;
            }
        }
        for (item, width) in self.items.iter().zip(widths) {
            match item {
                Item::Comment(c) if c.is_empty() => {
                    let _ = writeln!(out, "{indent}#");
                }
                Item::Comment(c) => {
                    let _ = writeln!(out, "{indent}# {c}");
                }
                Item::Blank => out.push('\n'),
                Item::Attr { key, value, comment } => {
                    let _ = write!(out, "{indent}{key:<width$} = {}", render_value(value));
                    if let Some(c) = comment {
                        let _ = write!(out, " # {c}");
                    }
                    out.push('\n');
                }
                Item::Block { name, labels, body } => {
                    let _ = write!(out, "{indent}{name}");
                    for l in labels {
                        let _ = write!(out, " {}", quote(l));
                    }
                    out.push_str(" {\n");
                    body.render_into(out, depth + 1);
                    let _ = writeln!(out, "{indent}}}");
                }
            }
        }
    }
}

fn render_value(v: &Value) -> String {
    match v {
        Value::Str(s) => quote(s),
        Value::Int(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::List(items) => format!("[{}]", items.iter().map(render_value).collect::<Vec<_>>().join(", ")),
    }
}

/// A double-quoted HCL string. Backslash and quote are escaped, control characters spelled out.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_quotes_and_aligns() {
        let mut inner = Body::new();
        inner.attr("interface", Value::str("nebula1")).attr("cidr", Value::str("100.64.0.0/10"));
        let mut b = Body::new();
        b.comment("top\n")
            .attr("bind_addr", Value::str(r#"{{ GetInterfaceIP "nebula1" }}"#))
            .attr_noted("n", Value::Int(3), "three")
            .blank()
            .block("host_network", &["overlay"], inner)
            .attr("list", Value::List(vec![Value::str("a"), Value::Bool(true)]));
        assert_eq!(
            b.render(),
            concat!(
                "# top\n",
                "bind_addr = \"{{ GetInterfaceIP \\\"nebula1\\\" }}\"\n",
                "n         = 3 # three\n",
                "\n",
                "host_network \"overlay\" {\n",
                "  interface = \"nebula1\"\n",
                "  cidr      = \"100.64.0.0/10\"\n",
                "}\n",
                "list = [\"a\", true]\n",
            )
        );
    }

    #[test]
    fn quote_escapes_backslash_and_controls() {
        assert_eq!(quote("a\\b\"c\nd\u{1}"), r#""a\\b\"c\nd\u0001""#);
    }
}
