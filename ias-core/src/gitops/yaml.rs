//! YAML with positions: a small tree of nodes that know their line and column.
//!
//! Loaders that deserialize through serde stop at the first error and drop
//! positions, so the GitOps file is read at the event level with
//! `saphyr-parser`: a YAML 1.2 parser, checked against the YAML test suite,
//! whose every event carries its span, with two small dependencies and no
//! unsafe code; it is the maintained successor of `yaml-rust2`, by the same
//! authors. Its events become [`Node`]s here; what the schema means is
//! checked by [`super::manifest`].
//!
//! Scalars are resolved with the YAML 1.2 core schema ([`Scalar::resolve`]),
//! so the YAML 1.1 words `yes`, `no`, `on` and `off` are strings.

use saphyr_parser::{Event, Marker, Parser, ScalarStyle, Tag};

/// The deepest nesting of lists and mappings that is read; the file needs four.
pub(crate) const MAX_DEPTH: usize = 32;

/// A position in the text: line and column from 1, the column in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mark {
    pub line: usize,
    pub column: usize,
}

impl Mark {
    /// The first character of the text.
    pub const START: Mark = Mark { line: 1, column: 1 };

    fn from_marker(marker: &Marker) -> Mark {
        Mark {
            line: marker.line(),
            column: marker.col() + 1,
        }
    }
}

/// One node of the document, where it starts (at its tag or anchor, if any).
#[derive(Debug)]
pub(crate) struct Node {
    pub mark: Mark,
    pub value: Value,
    /// The tag as written, such as `!!str`.
    pub tag: Option<String>,
    /// Whether the node carries an anchor (`&name`).
    pub anchored: bool,
}

/// What a node holds.
#[derive(Debug)]
pub(crate) enum Value {
    Scalar(Scalar),
    List(Vec<Node>),
    /// Keys and values in the file's order; repeated keys are kept.
    Map(Vec<(Node, Node)>),
    /// An alias (`*name`), which the GitOps file does not accept.
    Alias,
    /// A list or mapping nested deeper than [`MAX_DEPTH`], left out and reported.
    TooDeep,
}

/// A scalar's text, and whether it was written plain (not quoted, not a block).
#[derive(Debug)]
pub(crate) struct Scalar {
    pub text: String,
    pub plain: bool,
}

/// The type the YAML 1.2 core schema gives a scalar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resolved {
    Null,
    Bool,
    Int,
    Float,
    Str,
}

impl Scalar {
    /// Resolves the scalar as the YAML 1.2 core schema does; only plain scalars
    /// can be anything but strings.
    pub fn resolve(&self) -> Resolved {
        if !self.plain {
            return Resolved::Str;
        }
        let text = self.text.as_str();
        if matches!(text, "" | "~" | "null" | "Null" | "NULL") {
            Resolved::Null
        } else if matches!(text, "true" | "True" | "TRUE" | "false" | "False" | "FALSE") {
            Resolved::Bool
        } else if is_int(text) {
            Resolved::Int
        } else if is_float(text) {
            Resolved::Float
        } else {
            Resolved::Str
        }
    }
}

fn is_int(text: &str) -> bool {
    let all =
        |digits: &str, ok: fn(&u8) -> bool| !digits.is_empty() && digits.bytes().all(|b| ok(&b));
    if let Some(octal) = text.strip_prefix("0o") {
        return all(octal, |b| (b'0'..=b'7').contains(b));
    }
    if let Some(hex) = text.strip_prefix("0x") {
        return all(hex, u8::is_ascii_hexdigit);
    }
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    all(unsigned, u8::is_ascii_digit)
}

fn is_float(text: &str) -> bool {
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    if matches!(unsigned, ".inf" | ".Inf" | ".INF") || matches!(text, ".nan" | ".NaN" | ".NAN") {
        return true;
    }
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((mantissa, exponent)) => (mantissa, Some(exponent)),
        None => (unsigned, None),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some((whole, fraction)) => {
            digits(whole) && digits(fraction) && !(whole.is_empty() && fraction.is_empty())
        }
        None => !mantissa.is_empty() && digits(mantissa),
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    mantissa_ok && exponent_ok
}

/// A problem found while reading the YAML itself, before its meaning is checked.
#[derive(Debug)]
pub(crate) struct Problem {
    pub mark: Mark,
    pub message: String,
}

/// The result of [`load`]: the document's root, unless the YAML could not be read.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub root: Option<Node>,
    pub problems: Vec<Problem>,
}

/// Reads the one document of `text` into a tree.
///
/// A syntax error ends the reading (what follows it cannot be trusted) and
/// leaves no root. A second document, a file with no content and nesting
/// deeper than [`MAX_DEPTH`] are problems; tags, anchors and aliases are
/// kept on the nodes for the schema walk to report with their field paths.
pub(crate) fn load(text: &str) -> Loaded {
    let mut builder = Builder::default();
    for event in Parser::new_from_str(text) {
        match event {
            Ok((event, span)) => builder.event(event, Mark::from_marker(&span.start)),
            Err(err) => {
                let message = format!("invalid YAML: {}", err.info());
                builder.problem(Mark::from_marker(err.marker()), message);
                return Loaded {
                    root: None,
                    problems: builder.problems,
                };
            }
        }
    }
    builder.finish()
}

/// Where the text ends: the position just after its last character.
pub(crate) fn end_mark(text: &str) -> Mark {
    let line = text.matches('\n').count() + 1;
    let last_line = text.rsplit('\n').next().unwrap_or_default();
    Mark {
        line,
        column: last_line.chars().count() + 1,
    }
}

/// A list or mapping still open.
#[derive(Debug)]
struct Open {
    node: Node,
    /// A mapping's key, waiting for its value.
    key: Option<Node>,
}

#[derive(Debug, Default)]
struct Builder {
    open: Vec<Open>,
    root: Option<Node>,
    problems: Vec<Problem>,
    documents: usize,
    /// Events ignored: those of a second document, or nested too deep
    /// (then the count of lists and mappings still open in the skipped part).
    skipping: Option<usize>,
    deep_reported: bool,
}

impl Builder {
    fn problem(&mut self, mark: Mark, message: impl Into<String>) {
        self.problems.push(Problem {
            mark,
            message: message.into(),
        });
    }

    fn event(&mut self, event: Event<'_>, mark: Mark) {
        if let Event::DocumentStart(_) = event {
            self.documents += 1;
            if self.documents == 2 {
                self.problem(
                    mark,
                    "a second YAML document; the file must hold exactly one",
                );
            }
            return;
        }
        if self.documents > 1 || self.skip(&event) {
            return;
        }
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                let value = Value::Scalar(Scalar {
                    text: text.into_owned(),
                    plain: style == ScalarStyle::Plain,
                });
                self.complete(node(mark, value, anchor, tag.as_deref()));
            }
            Event::Alias(_) => self.complete(node(mark, Value::Alias, 0, None)),
            Event::SequenceStart(anchor, tag) => {
                self.start(node(mark, Value::List(Vec::new()), anchor, tag.as_deref()));
            }
            Event::MappingStart(anchor, tag) => {
                self.start(node(mark, Value::Map(Vec::new()), anchor, tag.as_deref()));
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(open) = self.open.pop() {
                    self.complete(open.node);
                }
            }
            _ => {}
        }
    }

    /// Whether `event` belongs to a part nested too deep, counting its lists and mappings.
    fn skip(&mut self, event: &Event<'_>) -> bool {
        let Some(depth) = self.skipping else {
            return false;
        };
        self.skipping = match event {
            Event::SequenceStart(..) | Event::MappingStart(..) => Some(depth + 1),
            Event::SequenceEnd | Event::MappingEnd if depth == 1 => None,
            Event::SequenceEnd | Event::MappingEnd => Some(depth - 1),
            _ => Some(depth),
        };
        true
    }

    fn start(&mut self, node: Node) {
        if self.open.len() < MAX_DEPTH {
            self.open.push(Open { node, key: None });
            return;
        }
        if !self.deep_reported {
            self.deep_reported = true;
            let message = format!("nested more than {MAX_DEPTH} levels deep");
            self.problem(node.mark, message);
        }
        self.skipping = Some(1);
        // Stands for the skipped part, so that its parent stays well formed.
        self.complete(Node {
            value: Value::TooDeep,
            tag: None,
            anchored: false,
            ..node
        });
    }

    fn complete(&mut self, node: Node) {
        let Some(parent) = self.open.last_mut() else {
            self.root = Some(node);
            return;
        };
        match &mut parent.node.value {
            Value::List(items) => items.push(node),
            Value::Map(entries) => match parent.key.take() {
                Some(key) => entries.push((key, node)),
                None => parent.key = Some(node),
            },
            // INVARIANT: only lists and mappings are opened.
            Value::Scalar(_) | Value::Alias | Value::TooDeep => {}
        }
    }

    fn finish(mut self) -> Loaded {
        let empty = match &self.root {
            None => true,
            Some(root) => match &root.value {
                Value::Scalar(scalar) => scalar.plain && scalar.text.is_empty(),
                _ => false,
            },
        };
        if empty {
            let message = "the file is empty; it must declare `version`, `org`, `budget`, \
                           `allowed_models` and `users`";
            self.problem(Mark::START, message);
            self.root = None;
        }
        Loaded {
            root: self.root,
            problems: self.problems,
        }
    }
}

fn node(mark: Mark, value: Value, anchor: usize, tag: Option<&Tag>) -> Node {
    Node {
        mark,
        value,
        tag: tag.map(written_tag),
        anchored: anchor != 0,
    }
}

/// A tag as it is usually written: `!!str` rather than its resolved handle.
fn written_tag(tag: &Tag) -> String {
    match tag.handle.as_str() {
        "tag:yaml.org,2002:" => format!("!!{}", tag.suffix),
        "!" => format!("!{}", tag.suffix),
        "" => format!("!<{}>", tag.suffix),
        handle => format!("{handle}{}", tag.suffix),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(text: &str) -> Resolved {
        Scalar {
            text: text.to_owned(),
            plain: true,
        }
        .resolve()
    }

    #[test]
    fn plain_scalars_resolve_as_yaml_1_2_core() {
        for text in ["", "~", "null", "NULL"] {
            assert_eq!(scalar(text), Resolved::Null, "{text:?}");
        }
        for text in ["true", "False"] {
            assert_eq!(scalar(text), Resolved::Bool, "{text}");
        }
        for text in ["0", "-5", "+7", "0x1F", "0o17", "007"] {
            assert_eq!(scalar(text), Resolved::Int, "{text}");
        }
        for text in ["1.5", "1e6", "-2E+3", ".5", "5.", ".inf", "-.Inf", ".nan"] {
            assert_eq!(scalar(text), Resolved::Float, "{text}");
        }
        for text in [
            "yes", "no", "on", "off", "y", "5_000", "0x", "1e", ".", "-", "1.2.3",
        ] {
            assert_eq!(scalar(text), Resolved::Str, "{text}");
        }
        let quoted = Scalar {
            text: "5".to_owned(),
            plain: false,
        };
        assert_eq!(quoted.resolve(), Resolved::Str);
    }

    #[test]
    fn nodes_start_where_their_text_starts() {
        let loaded = load("a:\n  - x\n  - {b: 'c'}\n");
        assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
        let root = loaded.root.unwrap();
        assert_eq!(root.mark, Mark::START);
        let Value::Map(entries) = &root.value else {
            panic!("{root:?}")
        };
        let Value::List(items) = &entries[0].1.value else {
            panic!("{entries:?}")
        };
        assert_eq!(items[0].mark, Mark { line: 2, column: 5 });
        assert_eq!(items[1].mark, Mark { line: 3, column: 5 });
        let Value::Map(inner) = &items[1].value else {
            panic!("{items:?}")
        };
        let Value::Scalar(quoted) = &inner[0].1.value else {
            panic!("{inner:?}")
        };
        assert!(!quoted.plain);
        assert_eq!(inner[0].1.mark, Mark { line: 3, column: 9 });
    }

    #[test]
    fn deep_nesting_is_cut_and_reported_once() {
        // Flow nesting: the parser itself stops at 255 levels.
        let text = format!("a: {}{}", "[".repeat(100), "]".repeat(100));
        let loaded = load(&text);
        let problems: Vec<_> = loaded
            .problems
            .iter()
            .map(|p| (p.mark, &p.message))
            .collect();
        let message = "nested more than 32 levels deep".to_owned();
        assert_eq!(
            problems,
            [(
                Mark {
                    line: 1,
                    column: 35
                },
                &message
            )]
        );
        assert!(loaded.root.is_some());

        // Block nesting, which the parser does not limit.
        let mut block = String::new();
        for level in 0..40 {
            block.push_str(&format!("{}k{level}:\n", " ".repeat(level)));
        }
        let loaded = load(&block);
        let problems: Vec<_> = loaded
            .problems
            .iter()
            .map(|p| (p.mark, &p.message))
            .collect();
        assert_eq!(
            problems,
            [(
                Mark {
                    line: 33,
                    column: 33
                },
                &message
            )]
        );
    }

    #[test]
    fn end_mark_counts_characters() {
        assert_eq!(end_mark(""), Mark::START);
        assert_eq!(end_mark("ab\ncé"), Mark { line: 2, column: 3 });
    }
}
