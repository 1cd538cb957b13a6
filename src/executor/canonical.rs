//! The canonical form of a JSON document (`document::canonical`) computed from its bytes in
//! one pass, without a parsed tree: a tree of a large document takes about 40 times its
//! size (every member, element and number its own allocation), this takes the output and
//! a few bytes per open object. It accepts exactly what `document::parse` accepts and
//! writes exactly the bytes `canonical(parse(..))` writes; a property test holds it to that.
//!
//! Two cases it does not decide: an object that names a member twice (the tree keeps such a
//! member at its first place with its last value, which a single pass cannot write), and an
//! object whose first member is serde_json's private number token. `canonicalize` then
//! answers `Ok(None)` and the caller parses the document after all.

use super::document::InvalidJson;

/// The member name, quoted, that serde_json's `arbitrary_precision` numbers travel as.
const SERDE_NUMBER_TOKEN: &[u8] = b"\"$serde_json::private::Number\"";

/// serde_json refuses to open the 128th nested array or object.
const DEPTH_MAX: usize = 127;

/// Member names of one open object, as 64-bit FNV-1a hashes of their canonical bytes. Two
/// names with one hash count as a repeat, which only sends the document the slow way.
#[derive(Default)]
struct Names {
    few: Vec<u64>,
    many: std::collections::BTreeSet<u64>,
}

impl Names {
    fn is_empty(&self) -> bool {
        self.few.is_empty() && self.many.is_empty()
    }

    /// False if `hash` was seen before in this object.
    fn insert(&mut self, hash: u64) -> bool {
        const FEW: usize = 16;
        if self.many.is_empty() {
            if self.few.contains(&hash) {
                return false;
            }
            if self.few.len() < FEW {
                self.few.push(hash);
                return true;
            }
            self.many.extend(self.few.drain(..));
        }
        self.many.insert(hash)
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

enum Open {
    Object(Names),
    Array,
}

struct Pass<'a> {
    input: &'a [u8],
    pos: usize,
    out: Vec<u8>,
}

/// Why the pass stopped early.
enum Stop {
    Invalid(InvalidJson),
    Undecided,
}

type Step<T> = Result<T, Stop>;

/// The canonical bytes of the JSON document `input`; `Ok(None)` if an object in it names
/// a member twice (parse it instead), `Err` if it is not JSON.
pub fn canonicalize(input: &[u8]) -> Result<Option<Vec<u8>>, InvalidJson> {
    let mut pass = Pass {
        input,
        pos: 0,
        out: Vec::with_capacity(input.len()),
    };
    match pass.document() {
        Ok(()) => Ok(Some(pass.out)),
        Err(Stop::Undecided) => Ok(None),
        Err(Stop::Invalid(invalid)) => Err(invalid),
    }
}

impl Pass<'_> {
    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn invalid<T>(&self, message: &str) -> Step<T> {
        let at = self.pos.min(self.input.len());
        let before = &self.input[..at];
        let line_start = memchr::memrchr(b'\n', before).map_or(0, |newline| newline + 1);
        Err(Stop::Invalid(InvalidJson {
            offset: at as u64,
            line: memchr::memchr_iter(b'\n', before).count() + 1,
            column: at - line_start + 1,
            message: message.to_string(),
        }))
    }

    fn expect(&mut self, byte: u8, message: &str) -> Step<()> {
        self.skip_whitespace();
        if self.peek() != Some(byte) {
            return self.invalid(message);
        }
        self.pos += 1;
        self.out.push(byte);
        Ok(())
    }

    /// One value, then nothing but whitespace.
    fn document(&mut self) -> Step<()> {
        self.value()?;
        self.skip_whitespace();
        match self.peek() {
            None => Ok(()),
            Some(_) => self.invalid("trailing characters after the document"),
        }
    }

    /// A member name and its colon, in an object `names` holds the names of.
    fn name(&mut self, names: &mut Names) -> Step<()> {
        self.skip_whitespace();
        if self.peek() != Some(b'"') {
            return self.invalid("expected a member name (a string)");
        }
        let start = self.out.len();
        self.string()?;
        let name = &self.out[start..];
        // serde_json (arbitrary_precision) reads an object that starts with this member as
        // a number: only the tree can say what it makes of one.
        if names.is_empty() && name == SERDE_NUMBER_TOKEN {
            return Err(Stop::Undecided);
        }
        if !names.insert(fnv1a(name)) {
            return Err(Stop::Undecided);
        }
        self.expect(b':', "expected ':' after a member name")
    }

    /// A value, nested containers included, with an explicit stack so that depth costs
    /// no native stack.
    fn value(&mut self) -> Step<()> {
        let mut open: Vec<Open> = Vec::new();
        loop {
            // A value starts here.
            self.skip_whitespace();
            let Some(first) = self.peek() else {
                return self.invalid("the document ends where a value should be");
            };
            match first {
                b'{' | b'[' => {
                    if open.len() >= DEPTH_MAX {
                        return self.invalid("nested more than 127 levels deep");
                    }
                    self.pos += 1;
                    self.out.push(first);
                    self.skip_whitespace();
                    let close = if first == b'{' { b'}' } else { b']' };
                    if self.peek() == Some(close) {
                        self.pos += 1;
                        self.out.push(close);
                    } else if first == b'{' {
                        let mut names = Names::default();
                        self.name(&mut names)?;
                        open.push(Open::Object(names));
                        continue;
                    } else {
                        open.push(Open::Array);
                        continue;
                    }
                }
                b'"' => self.string()?,
                b'-' | b'0'..=b'9' => self.number()?,
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                _ => return self.invalid("expected a value"),
            }
            // A value ended: close containers until one takes another member or element.
            loop {
                let Some(top) = open.last_mut() else {
                    return Ok(());
                };
                self.skip_whitespace();
                let byte = self.peek();
                match (top, byte) {
                    (Open::Object(names), Some(b',')) => {
                        self.pos += 1;
                        self.out.push(b',');
                        self.name(names)?;
                        break;
                    }
                    (Open::Array, Some(b',')) => {
                        self.pos += 1;
                        self.out.push(b',');
                        break;
                    }
                    (Open::Object(_), Some(b'}')) | (Open::Array, Some(b']')) => {
                        self.pos += 1;
                        self.out.push(byte.expect("matched"));
                        open.pop();
                    }
                    (Open::Object(_), _) => {
                        return self.invalid("expected ',' or '}' after an object member")
                    }
                    (Open::Array, _) => {
                        return self.invalid("expected ',' or ']' after an array element")
                    }
                }
            }
        }
    }

    fn literal(&mut self, word: &[u8]) -> Step<()> {
        if !self.input[self.pos..].starts_with(word) {
            return self.invalid("expected true, false or null");
        }
        self.pos += word.len();
        self.out.extend_from_slice(word);
        Ok(())
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.out.extend_from_slice(&self.input[start..self.pos]);
        self.pos - start
    }

    /// A number, written as it came but for the exponent, which is written `e` and always
    /// signed (what serde_json keeps of a number with `arbitrary_precision`).
    fn number(&mut self) -> Step<()> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
            self.out.push(b'-');
        }
        match self.peek() {
            Some(b'0') => {
                self.pos += 1;
                self.out.push(b'0');
                if let Some(b'0'..=b'9') = self.peek() {
                    return self.invalid("a number has a leading zero");
                }
            }
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return self.invalid("expected a digit"),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            self.out.push(b'.');
            if self.digits() == 0 {
                return self.invalid("expected a digit after the decimal point");
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            self.out.push(b'e');
            match self.peek() {
                Some(sign @ (b'+' | b'-')) => {
                    self.pos += 1;
                    self.out.push(sign);
                }
                _ => self.out.push(b'+'),
            }
            if self.digits() == 0 {
                return self.invalid("expected a digit in the exponent");
            }
        }
        Ok(())
    }

    /// A string, its escapes resolved and written again the way serde_json writes them.
    fn string(&mut self) -> Step<()> {
        self.pos += 1; // The opening quote.
        self.out.push(b'"');
        loop {
            let rest = &self.input[self.pos..];
            let Some(stop) = memchr::memchr2(b'"', b'\\', rest) else {
                self.pos = self.input.len();
                return self.invalid("the document ends inside a string");
            };
            let run = &rest[..stop];
            if let Some(control) = run.iter().position(|&byte| byte < 0x20) {
                self.pos += control;
                return self.invalid("a control character inside a string");
            }
            if let Err(error) = std::str::from_utf8(run) {
                self.pos += error.valid_up_to();
                return self.invalid("a string is not UTF-8");
            }
            self.out.extend_from_slice(run);
            self.pos += stop;
            if rest[stop] == b'"' {
                self.pos += 1;
                self.out.push(b'"');
                return Ok(());
            }
            self.escape()?;
        }
    }

    /// The escape at `pos` (a backslash).
    fn escape(&mut self) -> Step<()> {
        let Some(&kind) = self.input.get(self.pos + 1) else {
            self.pos = self.input.len();
            return self.invalid("the document ends inside a string");
        };
        self.pos += 2;
        let unit = match kind {
            b'"' => return self.push_escaped(b"\\\""),
            b'\\' => return self.push_escaped(b"\\\\"),
            b'/' => return self.push_escaped(b"/"),
            b'b' => return self.push_escaped(b"\\b"),
            b'f' => return self.push_escaped(b"\\f"),
            b'n' => return self.push_escaped(b"\\n"),
            b'r' => return self.push_escaped(b"\\r"),
            b't' => return self.push_escaped(b"\\t"),
            b'u' => self.hex4()?,
            _ => {
                self.pos -= 1;
                return self.invalid("an invalid escape in a string");
            }
        };
        let code = match unit {
            0xDC00..=0xDFFF => return self.invalid("a lone trailing surrogate in a \\u escape"),
            0xD800..=0xDBFF => {
                if self.input.get(self.pos..self.pos + 2) != Some(b"\\u") {
                    return self.invalid("a leading surrogate not followed by a \\u escape");
                }
                self.pos += 2;
                let low = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&low) {
                    return self.invalid("a leading surrogate not followed by a trailing one");
                }
                0x1_0000 + ((u32::from(unit) - 0xD800) << 10) + (u32::from(low) - 0xDC00)
            }
            unit => u32::from(unit),
        };
        let ch = char::from_u32(code).expect("surrogates were paired above");
        match ch {
            '"' => self.push_escaped(b"\\\""),
            '\\' => self.push_escaped(b"\\\\"),
            '\u{8}' => self.push_escaped(b"\\b"),
            '\u{c}' => self.push_escaped(b"\\f"),
            '\n' => self.push_escaped(b"\\n"),
            '\r' => self.push_escaped(b"\\r"),
            '\t' => self.push_escaped(b"\\t"),
            '\0'..='\u{1f}' => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let byte = code as u8;
                let escaped = [
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(byte >> 4)],
                    HEX[usize::from(byte & 0xf)],
                ];
                self.push_escaped(&escaped)
            }
            ch => {
                let mut utf8 = [0; 4];
                self.push_escaped(ch.encode_utf8(&mut utf8).as_bytes())
            }
        }
    }

    fn push_escaped(&mut self, bytes: &[u8]) -> Step<()> {
        self.out.extend_from_slice(bytes);
        Ok(())
    }

    /// The four hexadecimal digits of a `\u` escape, at `pos`.
    fn hex4(&mut self) -> Step<u16> {
        let Some(digits) = self.input.get(self.pos..self.pos + 4) else {
            self.pos = self.input.len();
            return self.invalid("the document ends inside a \\u escape");
        };
        let mut unit = 0u16;
        for (i, &digit) in digits.iter().enumerate() {
            let Some(value) = (digit as char).to_digit(16) else {
                self.pos += i;
                return self.invalid("a \\u escape needs four hexadecimal digits");
            };
            unit = unit * 16 + value as u16;
        }
        self.pos += 4;
        Ok(unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::document;
    use proptest::prelude::*;

    /// What the tree gives: the canonical bytes, or None where the input is not JSON.
    fn by_tree(input: &[u8]) -> Option<Vec<u8>> {
        document::parse(input)
            .ok()
            .map(|value| document::canonical(&value))
    }

    fn agrees(input: &[u8]) -> std::result::Result<(), TestCaseError> {
        let tree = by_tree(input);
        match canonicalize(input) {
            Ok(Some(bytes)) => prop_assert_eq!(
                Some(bytes),
                tree,
                "input {:?}",
                input.escape_ascii().to_string()
            ),
            // Undecided: the caller parses it, and the tree takes or refuses it.
            Ok(None) => {}
            Err(_) => prop_assert!(
                tree.is_none(),
                "refused JSON the tree takes: {:?}",
                input.escape_ascii().to_string()
            ),
        }
        Ok(())
    }

    #[test]
    fn writes_what_the_tree_writes() {
        let cases: &[&str] = &[
            r#" { "a" : [ 1 , -0 , 1.50 , 1E3 , 2e-7 , 3E+2 , 18446744073709551616 ] , "b" : { } , "c" : [ ] } "#,
            r#""\u0041\u00e9\ud83d\ude00\/\b\f\n\r\t\u001F\u007f\"\\""#,
            r#"{"é":"ü","\u0000":null,"x":true,"y":false}"#,
            "[\"\u{1F600}\",\"\u{7f}\"]",
            "0",
            "\t\r\n[]\n",
        ];
        for case in cases {
            let bytes = canonicalize(case.as_bytes()).unwrap().unwrap();
            assert_eq!(Some(bytes), by_tree(case.as_bytes()), "{case}");
        }
    }

    #[test]
    fn refuses_what_the_tree_refuses() {
        let cases: &[&[u8]] = &[
            b"",
            b" ",
            b"01",
            b"1.",
            b"1e",
            b"-",
            b"+1",
            b".5",
            b"[1,]",
            b"{\"a\":1,}",
            b"{\"a\"1}",
            b"{1:2}",
            b"[1 2]",
            b"1 2",
            b"tru",
            b"nul",
            b"\"\\ud800\"",
            b"\"\\udc00\"",
            b"\"\\ud800\\u0041\"",
            b"\"\\x\"",
            b"\"\\u12\"",
            b"\"a\nb\"",
            b"\"\xff\"",
            b"\"open",
            b"[",
            b"{\"a\":",
        ];
        for case in cases {
            assert!(canonicalize(case).is_err(), "{}", case.escape_ascii());
            assert!(by_tree(case).is_none(), "{}", case.escape_ascii());
        }
    }

    #[test]
    fn nesting_stops_where_the_tree_stops() {
        for depth in [126, 127, 128, 129] {
            let input = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let tree = by_tree(input.as_bytes());
            let streamed = canonicalize(input.as_bytes()).ok().flatten();
            assert_eq!(streamed, tree, "depth {depth}");
            assert_eq!(tree.is_some(), depth <= DEPTH_MAX, "depth {depth}");
        }
    }

    #[test]
    fn a_repeated_name_is_left_to_the_tree() {
        assert_eq!(canonicalize(br#"{"a":1,"b":2,"a":3}"#).unwrap(), None);
        // The same name in two objects is no repeat; nor are escapes of two names.
        let input = br#"{"a":{"a":1},"b":{"a":2},"\u0061b":0}"#;
        assert_eq!(canonicalize(input).unwrap(), by_tree(input));
        // An object serde_json would read as a number, escaped or not.
        for token in [
            r#"{"$serde_json::private::Number":"1.5"}"#,
            r#"[{"\u0024serde_json::private::Number":"2"}]"#,
        ] {
            assert_eq!(canonicalize(token.as_bytes()).unwrap(), None, "{token}");
        }
        // Past the few names kept in a list.
        let many: Vec<String> = (0..40).map(|i| format!("\"k{i}\":{i}")).collect();
        let input = format!("{{{},\"k7\":0}}", many.join(","));
        assert_eq!(canonicalize(input.as_bytes()).unwrap(), None);
    }

    #[test]
    fn an_error_names_its_byte_line_and_column() {
        let error = canonicalize(b"{\n  \"a\": 01\n}").unwrap_err();
        assert_eq!((error.offset, error.line, error.column), (10, 2, 9));
    }

    /// JSON text with whitespace, escapes, exponents and repeated names, built from parts.
    fn json_text() -> impl Strategy<Value = String> {
        let ws = prop::sample::select(vec!["", " ", "\n", "\t ", "\r\n"]);
        let leaf = prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            Just("false".to_string()),
            "-?(0|[1-9][0-9]{0,22})(\\.[0-9]{1,4})?([eE][+-]?[0-9]{1,3})?",
            "\"([a-z é/~]|\\\\[\"\\\\/bfnrt]|\\\\u00[0-9a-fA-F]{2}|\\\\u[0-9a-fA-F]{4}|\\\\ud83d\\\\ude00)*\"",
        ];
        leaf.prop_recursive(4, 48, 5, move |inner| {
            let ws = ws.clone();
            prop_oneof![
                (prop::collection::vec((inner.clone(), ws.clone()), 0..5)).prop_map(|elements| {
                    let parts: Vec<String> = elements
                        .into_iter()
                        .map(|(e, w)| format!("{w}{e}{w}"))
                        .collect();
                    format!("[{}]", parts.join(","))
                }),
                (prop::collection::vec(("[a-e]{0,3}", inner, ws), 0..5)).prop_map(|members| {
                    let parts: Vec<String> = members
                        .into_iter()
                        .map(|(name, value, w)| format!("{w}\"{name}\"{w}:{w}{value}{w}"))
                        .collect();
                    format!("{{{}}}", parts.join(","))
                }),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Valid text comes out as the tree writes it.
        #[test]
        fn agrees_with_the_tree(text in json_text()) {
            agrees(text.as_bytes())?;
        }

        /// So does text with one byte changed, dropped or cut off: accepted and refused alike.
        #[test]
        fn agrees_with_the_tree_on_damaged_text(
            text in json_text(),
            at in any::<prop::sample::Index>(),
            byte in prop::sample::select(b"\"\\{}[],:0e.-u \x01\xc3".to_vec()),
            how in 0..3u8,
        ) {
            let mut bytes = text.into_bytes();
            if !bytes.is_empty() {
                let i = at.index(bytes.len());
                match how {
                    0 => bytes[i] = byte,
                    1 => { bytes.remove(i); }
                    _ => bytes.truncate(i),
                }
            }
            agrees(&bytes)?;
        }
    }
}
