//! JSON Schemas known at compile time.
//!
//! A driver's metadata (its functions' parameter and result schemas, its settings schema)
//! is embedded in the component as a custom section, so it must be a constant. Schemas are
//! therefore built as constant trees of [`Node`]s, composed through the [`Schema`] trait
//! (including for generic types such as `Option<T>`), and serialised to JSON bytes by
//! `const fn`s when the driver is compiled.
//!
//! Indexing is allowed here: these functions run in the compiler, where an index out of
//! bounds is a compile error rather than a panic at run time.
#![allow(clippy::indexing_slicing)]

/// A piece of JSON text known at compile time.
#[derive(Debug, Clone, Copy)]
pub enum Node {
    /// JSON text copied as it is.
    Raw(&'static str),
    /// A string, written as a quoted and escaped JSON string.
    Str(&'static str),
    /// An unsigned integer, written in decimal.
    Uint(u64),
    /// The pieces one after another.
    Seq(&'static [Node]),
    /// `null` when absent, otherwise the inner node.
    Opt(Option<&'static Node>),
    /// The pieces that are not empty, separated by commas.
    Items(&'static [Node]),
    /// The inner node when the flag is true, otherwise nothing.
    When(bool, &'static Node),
    /// A schema (which is always a JSON object) with a `description` key added.
    Described(&'static str, &'static Node),
    /// A schema (which is always a JSON object) with members added at its start, written
    /// as they are: `Annotated(r#""writeOnly":true"#, &inner)`.
    Annotated(&'static str, &'static Node),
}

/// A Rust type whose JSON form has a schema known at compile time.
///
/// Derive it with `#[derive(Schema)]` for structs with named fields, newtypes and
/// field-less enums; it is implemented here for the usual standard types.
pub trait Schema {
    /// The JSON Schema of the type's serialised form.
    const SCHEMA: Node;
    /// Whether a missing value is acceptable (true for `Option`).
    const OPTIONAL: bool = false;
}

macro_rules! leaf_schema {
    ($($ty:ty => $json:literal),* $(,)?) => {
        $(impl Schema for $ty { const SCHEMA: Node = Node::Raw($json); })*
    };
}

leaf_schema! {
    bool => r#"{"type":"boolean"}"#,
    u8 => r#"{"type":"integer","minimum":0,"maximum":255}"#,
    u16 => r#"{"type":"integer","minimum":0,"maximum":65535}"#,
    u32 => r#"{"type":"integer","minimum":0,"maximum":4294967295}"#,
    u64 => r#"{"type":"integer","minimum":0}"#,
    usize => r#"{"type":"integer","minimum":0}"#,
    i8 => r#"{"type":"integer","minimum":-128,"maximum":127}"#,
    i16 => r#"{"type":"integer","minimum":-32768,"maximum":32767}"#,
    i32 => r#"{"type":"integer","minimum":-2147483648,"maximum":2147483647}"#,
    i64 => r#"{"type":"integer"}"#,
    isize => r#"{"type":"integer"}"#,
    f32 => r#"{"type":"number"}"#,
    f64 => r#"{"type":"number"}"#,
    char => r#"{"type":"string","minLength":1,"maxLength":1}"#,
    String => r#"{"type":"string"}"#,
    str => r#"{"type":"string"}"#,
    () => r#"{"type":"null"}"#,
    serde_json::Value => r#"{}"#,
    serde_json::Map<String, serde_json::Value> => r#"{"type":"object"}"#,
}

impl<T: Schema + ?Sized> Schema for &T {
    const SCHEMA: Node = T::SCHEMA;
    const OPTIONAL: bool = T::OPTIONAL;
}

impl<T: Schema> Schema for Option<T> {
    const SCHEMA: Node = Node::Seq(&[
        Node::Raw(r#"{"anyOf":["#),
        T::SCHEMA,
        Node::Raw(r#",{"type":"null"}]}"#),
    ]);
    const OPTIONAL: bool = true;
}

impl<T: Schema> Schema for Vec<T> {
    const SCHEMA: Node = Node::Seq(&[
        Node::Raw(r#"{"type":"array","items":"#),
        T::SCHEMA,
        Node::Raw("}"),
    ]);
}

impl<T: Schema> Schema for [T] {
    const SCHEMA: Node = <Vec<T> as Schema>::SCHEMA;
}

impl<T: Schema, const N: usize> Schema for [T; N] {
    const SCHEMA: Node = Node::Seq(&[
        Node::Raw(r#"{"type":"array","items":"#),
        T::SCHEMA,
        Node::Raw(r#","minItems":"#),
        Node::Uint(N as u64),
        Node::Raw(r#","maxItems":"#),
        Node::Uint(N as u64),
        Node::Raw("}"),
    ]);
}

impl<T: Schema> Schema for std::collections::BTreeMap<String, T> {
    const SCHEMA: Node = Node::Seq(&[
        Node::Raw(r#"{"type":"object","additionalProperties":"#),
        T::SCHEMA,
        Node::Raw("}"),
    ]);
}

impl<T: Schema, S> Schema for std::collections::HashMap<String, T, S> {
    const SCHEMA: Node = <std::collections::BTreeMap<String, T> as Schema>::SCHEMA;
}

/// The number of bytes `node` serialises to.
pub const fn json_len(node: &Node) -> usize {
    match node {
        Node::Raw(text) => text.len(),
        Node::Str(text) => {
            let bytes = text.as_bytes();
            let mut total = 2;
            let mut i = 0;
            while i < bytes.len() {
                total += escaped_len(bytes[i]);
                i += 1;
            }
            total
        }
        Node::Uint(value) => decimal_len(*value),
        Node::Seq(parts) => {
            let mut total = 0;
            let mut i = 0;
            while i < parts.len() {
                total += json_len(&parts[i]);
                i += 1;
            }
            total
        }
        Node::Opt(None) => 4,
        Node::Opt(Some(inner)) => json_len(inner),
        Node::Items(parts) => {
            let mut total = 0;
            let mut written = 0;
            let mut i = 0;
            while i < parts.len() {
                let len = json_len(&parts[i]);
                if len > 0 {
                    if written > 0 {
                        total += 1;
                    }
                    total += len;
                    written += 1;
                }
                i += 1;
            }
            total
        }
        Node::When(true, inner) => json_len(inner),
        Node::When(false, _) => 0,
        Node::Described(text, inner) => {
            DESCRIPTION_KEY.len() + json_len(&Node::Str(text)) + merged_tail_len(inner)
        }
        Node::Annotated(members, inner) => 1 + members.len() + merged_tail_len(inner),
    }
}

/// The length of what follows added members: `,` and the inner object without its `{`,
/// or just `}` when the inner object is `{}`.
const fn merged_tail_len(inner: &Node) -> usize {
    let inner_len = json_len(inner);
    if inner_len <= 2 { 1 } else { inner_len }
}

const DESCRIPTION_KEY: &str = "{\"description\":";

/// `node` serialised to exactly `N` bytes; `N` must be [`json_len`] of it.
pub const fn to_json<const N: usize>(node: &Node) -> [u8; N] {
    let mut out = [0u8; N];
    let end = write(node, &mut out, 0);
    assert!(end == N, "metadata length mismatch");
    out
}

/// Largest document [`render`] produces (the host refuses larger metadata anyway).
pub const MAX_RENDERED: usize = 1 << 20;

/// `node` as JSON text, at run time — for tests of a driver's metadata and schemas. The
/// same `const fn`s as the compile-time path write it, so both agree byte for byte.
/// `None` when the document is larger than [`MAX_RENDERED`].
pub fn render(node: &Node) -> Option<String> {
    let len = json_len(node);
    if len > MAX_RENDERED {
        return None;
    }
    let mut buffer: Box<[u8; MAX_RENDERED]> =
        vec![0u8; MAX_RENDERED].into_boxed_slice().try_into().ok()?;
    let end = write(node, &mut buffer, 0);
    String::from_utf8(buffer.get(..end)?.to_vec()).ok()
}

const fn escaped_len(byte: u8) -> usize {
    match byte {
        b'"' | b'\\' | b'\n' | b'\r' | b'\t' => 2,
        0..=0x1f => 6,
        _ => 1,
    }
}

const fn decimal_len(mut value: u64) -> usize {
    let mut digits = 1;
    while value >= 10 {
        value /= 10;
        digits += 1;
    }
    digits
}

const HEX: &[u8; 16] = b"0123456789abcdef";

const fn write<const N: usize>(node: &Node, out: &mut [u8; N], mut at: usize) -> usize {
    match node {
        Node::Raw(text) => copy(text.as_bytes(), out, at),
        Node::Str(text) => {
            out[at] = b'"';
            at += 1;
            let bytes = text.as_bytes();
            let mut i = 0;
            while i < bytes.len() {
                let byte = bytes[i];
                match byte {
                    b'"' | b'\\' => at = copy(&[b'\\', byte], out, at),
                    b'\n' => at = copy(b"\\n", out, at),
                    b'\r' => at = copy(b"\\r", out, at),
                    b'\t' => at = copy(b"\\t", out, at),
                    0..=0x1f => {
                        at = copy(b"\\u00", out, at);
                        out[at] = HEX[(byte >> 4) as usize];
                        out[at + 1] = HEX[(byte & 0xf) as usize];
                        at += 2;
                    }
                    _ => {
                        out[at] = byte;
                        at += 1;
                    }
                }
                i += 1;
            }
            out[at] = b'"';
            at + 1
        }
        Node::Uint(value) => {
            let digits = decimal_len(*value);
            let mut rest = *value;
            let mut i = digits;
            while i > 0 {
                i -= 1;
                out[at + i] = b'0' + (rest % 10) as u8;
                rest /= 10;
            }
            at + digits
        }
        Node::Seq(parts) => {
            let mut i = 0;
            while i < parts.len() {
                at = write(&parts[i], out, at);
                i += 1;
            }
            at
        }
        Node::Opt(None) => copy(b"null", out, at),
        Node::Opt(Some(inner)) => write(inner, out, at),
        Node::Items(parts) => {
            let mut written = 0;
            let mut i = 0;
            while i < parts.len() {
                if json_len(&parts[i]) > 0 {
                    if written > 0 {
                        out[at] = b',';
                        at += 1;
                    }
                    at = write(&parts[i], out, at);
                    written += 1;
                }
                i += 1;
            }
            at
        }
        Node::When(true, inner) => write(inner, out, at),
        Node::When(false, _) => at,
        Node::Described(text, inner) => {
            at = copy(DESCRIPTION_KEY.as_bytes(), out, at);
            at = write(&Node::Str(text), out, at);
            write_merged_tail(inner, out, at)
        }
        Node::Annotated(members, inner) => {
            out[at] = b'{';
            at = copy(members.as_bytes(), out, at + 1);
            write_merged_tail(inner, out, at)
        }
    }
}

/// Write the inner object after added members (see [`merged_tail_len`]).
const fn write_merged_tail<const N: usize>(inner: &Node, out: &mut [u8; N], at: usize) -> usize {
    if json_len(inner) <= 2 {
        out[at] = b'}';
        return at + 1;
    }
    // The inner object's opening brace lands where the separating comma belongs.
    let end = write(inner, out, at);
    out[at] = b',';
    end
}

const fn copy<const N: usize>(bytes: &[u8], out: &mut [u8; N], mut at: usize) -> usize {
    let mut i = 0;
    while i < bytes.len() {
        out[at] = bytes[i];
        at += 1;
        i += 1;
    }
    at
}

/// Serialise a [`Node`] at compile time: `json_bytes!(NODE)` is a `[u8; N]` constant
/// expression holding its JSON text.
#[macro_export]
macro_rules! json_bytes {
    ($node:expr) => {{
        const NODE: $crate::schema::Node = $node;
        const LEN: usize = $crate::schema::json_len(&NODE);
        const BYTES: [u8; LEN] = $crate::schema::to_json::<LEN>(&NODE);
        BYTES
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(node: Node) -> String {
        super::render(&node).unwrap()
    }

    #[test]
    fn strings_are_escaped() {
        let text = render(Node::Str("a\"b\\c\nd\u{1}é"));
        assert_eq!(text, r#""a\"b\\c\nd\u0001é""#);
        let parsed: String = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed, "a\"b\\c\nd\u{1}é");
    }

    #[test]
    fn composite_schemas_are_valid_json() {
        let schema: serde_json::Value =
            serde_json::from_str(&render(<Option<Vec<[u16; 3]>> as Schema>::SCHEMA)).unwrap();
        assert_eq!(schema["anyOf"][0]["items"]["maxItems"], 3);
        assert_eq!(schema["anyOf"][1]["type"], "null");
    }

    #[test]
    fn items_skip_empty_parts_and_descriptions_merge() {
        const ITEMS: Node = Node::Items(&[
            Node::When(false, &Node::Str("a")),
            Node::When(true, &Node::Str("b")),
            Node::Raw(""),
            Node::Str("c"),
        ]);
        assert_eq!(
            render(Node::Seq(&[Node::Raw("["), ITEMS, Node::Raw("]")])),
            r#"["b","c"]"#
        );
        assert_eq!(
            render(Node::Described("x", &Node::Raw(r#"{"type":"null"}"#))),
            r#"{"description":"x","type":"null"}"#
        );
        assert_eq!(
            render(Node::Described("y", &Node::Raw("{}"))),
            r#"{"description":"y"}"#
        );
        const SECRET: Node =
            Node::Annotated(r#""writeOnly":true"#, &Node::Raw(r#"{"type":"string"}"#));
        assert_eq!(render(SECRET), r#"{"writeOnly":true,"type":"string"}"#);
        assert_eq!(
            render(Node::Described("z", &SECRET)),
            r#"{"description":"z","writeOnly":true,"type":"string"}"#
        );
        assert_eq!(
            render(Node::Annotated(r#""writeOnly":true"#, &Node::Raw("{}"))),
            r#"{"writeOnly":true}"#
        );
    }

    #[test]
    fn numbers_and_null() {
        assert_eq!(render(Node::Uint(0)), "0");
        assert_eq!(render(Node::Uint(4352)), "4352");
        assert_eq!(render(Node::Opt(None)), "null");
        assert_eq!(render(Node::Opt(Some(&Node::Uint(7)))), "7");
    }

    #[test]
    fn const_serialisation_matches() {
        const BYTES: &[u8] = &crate::json_bytes!(<Vec<bool> as Schema>::SCHEMA);
        assert_eq!(
            std::str::from_utf8(BYTES).unwrap(),
            r#"{"type":"array","items":{"type":"boolean"}}"#
        );
    }
}
