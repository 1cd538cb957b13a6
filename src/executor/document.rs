//! JSON documents: their canonical form, RFC 6902 patches and RFC 7396 merge patches, the
//! delta from one version to the next, and RFC 6901 pointers. Pure functions of bytes, so
//! every replica that applies the same patch to the same base reaches the same bytes.
//!
//! The canonical form is what `serde_json` writes for the parsed value, with members kept
//! in input order (`preserve_order`) and numbers kept to every digit as written
//! (`arbitrary_precision`; only an exponent gains its sign, `1e3` -> `1e+3`): no
//! insignificant whitespace, escapes resolved to the shortest form, nothing rounded.
//! A member that appears twice keeps its last value. Nesting is limited to 128 levels
//! (serde_json's recursion limit), so no document can exhaust a stack.
//!
//! Refusals carry messages written here, never a library's, so that replicas running
//! different builds still record the same outcome byte for byte.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Why a document write, patch or read was not carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DocumentReason {
    /// The expected version is not the key's mod_version.
    VersionMismatch,
    /// A patch of a key that holds nothing.
    NoDocument,
    /// The key's value is not JSON.
    NotADocument,
    /// An RFC 6902 `test` operation did not hold.
    TestFailed,
    /// An operation could not be applied (a path that does not exist, a bad index, ...).
    PatchFailed,
    /// The patched document is larger than `value_bytes_max`.
    TooLarge,
    /// A pointer names nothing in the document.
    NoSuchPath,
}

impl DocumentReason {
    /// The name clients see (DocumentError.reason).
    pub fn name(self) -> &'static str {
        match self {
            DocumentReason::VersionMismatch => "VERSION_MISMATCH",
            DocumentReason::NoDocument => "NO_DOCUMENT",
            DocumentReason::NotADocument => "NOT_A_DOCUMENT",
            DocumentReason::TestFailed => "TEST_FAILED",
            DocumentReason::PatchFailed => "PATCH_FAILED",
            DocumentReason::TooLarge => "TOO_LARGE",
            DocumentReason::NoSuchPath => "NO_SUCH_PATH",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentRefusal {
    pub reason: DocumentReason,
    pub message: String,
    /// The index of the patch operation that failed.
    pub operation: Option<u32>,
    /// The key's mod_version (0: absent), for `VersionMismatch`.
    pub current_version: Option<u64>,
}

impl DocumentRefusal {
    pub fn new(reason: DocumentReason, message: impl Into<String>) -> DocumentRefusal {
        DocumentRefusal {
            reason,
            message: message.into(),
            operation: None,
            current_version: None,
        }
    }

    pub fn version_mismatch(key: &[u8], expected: u64, current: u64) -> DocumentRefusal {
        let message = format!(
            "key \"{}\" is at version {current}, not the expected {expected}",
            key.escape_ascii()
        );
        DocumentRefusal {
            current_version: Some(current),
            ..DocumentRefusal::new(DocumentReason::VersionMismatch, message)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PatchFormat {
    /// RFC 6902 JSON Patch.
    JsonPatch,
    /// RFC 7396 JSON Merge Patch.
    MergePatch,
}

/// Input that is not JSON, and where parsing stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidJson {
    /// The byte offset at which parsing failed.
    pub offset: u64,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl std::fmt::Display for InvalidJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "invalid JSON at byte {} (line {}, column {}): {}",
            self.offset, self.line, self.column, self.message
        )
    }
}

/// Parses `bytes` as one JSON value (surrounding whitespace allowed).
pub fn parse(bytes: &[u8]) -> Result<Value, InvalidJson> {
    serde_json::from_slice(bytes).map_err(|error| {
        let (line, column) = (error.line(), error.column());
        let offset = match error.classify() {
            // Input that ends too soon fails where it ends.
            serde_json::error::Category::Eof => bytes.len() as u64,
            _ => byte_offset(bytes, line, column),
        };
        InvalidJson {
            offset,
            line,
            column,
            message: error.to_string(),
        }
    })
}

/// serde_json reports a 1-based line and a 1-based byte column (0 before the first byte of
/// a line): the offset is that line's start plus the column, less one.
fn byte_offset(bytes: &[u8], line: usize, column: usize) -> u64 {
    let line_start = match line {
        0 | 1 => 0,
        _ => bytes
            .iter()
            .enumerate()
            .filter(|(_, &byte)| byte == b'\n')
            .nth(line - 2)
            .map_or(bytes.len(), |(at, _)| at + 1),
    };
    (line_start + column.saturating_sub(1)).min(bytes.len()) as u64
}

/// The canonical bytes of `value`.
pub fn canonical(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("a serde_json value always serializes")
}

/// `base` (a stored document) with `patch` applied, in canonical form.
pub fn apply(base: &[u8], format: PatchFormat, patch: &[u8]) -> Result<Vec<u8>, DocumentRefusal> {
    let Ok(mut document) = serde_json::from_slice::<Value>(base) else {
        return Err(DocumentRefusal::new(
            DocumentReason::NotADocument,
            "the key's value is not a JSON document",
        ));
    };
    // The proposer checked the patch; a replica that still cannot read it refuses alike.
    let Ok(patch) = serde_json::from_slice::<Value>(patch) else {
        return Err(DocumentRefusal::new(
            DocumentReason::PatchFailed,
            "the patch is not JSON",
        ));
    };
    match format {
        PatchFormat::MergePatch => json_patch::merge(&mut document, &patch),
        PatchFormat::JsonPatch => {
            let operations = json_patch_operations(patch)
                .map_err(|message| DocumentRefusal::new(DocumentReason::PatchFailed, message))?;
            json_patch::patch(&mut document, &operations).map_err(refusal)?;
        }
    }
    Ok(canonical(&document))
}

/// `apply` of an RFC 6902 patch of `replace` operations only, on a document known to be in
/// canonical form (written by a document call), without parsing it: each path is found by
/// scanning the bytes, and the canonical new value spliced in. A replace keeps a member's
/// place, and a sub-value of a canonical document is canonical, so the result is the bytes
/// `apply` produces; None whenever that is not certain (another operation, a path this
/// scan does not resolve), and the caller applies the patch the slow way.
pub fn apply_replaces(canonical_base: &[u8], patch: &[u8]) -> Option<Vec<u8>> {
    let patch: Value = serde_json::from_slice(patch).ok()?;
    let operations = patch.as_array()?;
    let mut document = canonical_base.to_vec();
    for operation in operations {
        let operation = operation.as_object()?;
        if operation.len() != 3 || operation.get("op")?.as_str()? != "replace" {
            return None;
        }
        let pointer = operation.get("path")?.as_str()?;
        let value = canonical(operation.get("value")?);
        let span = locate(&document, pointer)?;
        document.splice(span, value);
    }
    Some(document)
}

/// The bytes a `SetPatched` mutation writes: the RFC 6902 `patch` applied to `base`,
/// spliced into the bytes when it is made of `replace` operations that `apply_replaces`
/// resolves (for a canonical base, exactly what `apply` gives), else through `apply`. The
/// proposer and every replica call this one function, so the proposer can check the bytes
/// each replica will write.
pub fn apply_json_patch(base: &[u8], patch: &[u8]) -> Result<Vec<u8>, DocumentRefusal> {
    match apply_replaces(base, patch) {
        Some(value) => Ok(value),
        None => apply(base, PatchFormat::JsonPatch, patch),
    }
}

/// The byte range of the value RFC 6901 `pointer` names in canonical JSON `document`;
/// None if it names nothing or the scan cannot tell (then parse instead). Only the
/// siblings before each step and the named value itself are scanned.
pub fn locate(document: &[u8], pointer: &str) -> Option<std::ops::Range<usize>> {
    if pointer.is_empty() {
        return Some(0..document.len());
    }
    let mut at = 0;
    for token in pointer.strip_prefix('/')?.split('/') {
        let token = token.replace("~1", "/").replace("~0", "~");
        at = match document.get(at)? {
            b'{' => member(document, at, &token)?,
            b'[' => element(document, at, &token)?,
            _ => return None,
        };
    }
    Some(at..skip_value(document, at)?)
}

/// Where the value of member `name` of the object at `at` starts.
fn member(document: &[u8], at: usize, name: &str) -> Option<usize> {
    let quoted = serde_json::to_vec(name).ok()?;
    let mut pos = at + 1;
    if document.get(pos) == Some(&b'}') {
        return None;
    }
    loop {
        let key_end = skip_string(document, pos)?;
        if document.get(key_end) != Some(&b':') {
            return None;
        }
        // Canonical objects hold each name once, escaped as serde_json escapes it.
        if document[pos..key_end] == quoted[..] {
            return Some(key_end + 1);
        }
        let value_end = skip_value(document, key_end + 1)?;
        match document.get(value_end)? {
            b',' => pos = value_end + 1,
            _ => return None,
        }
    }
}

/// Where element `index` (decimal, no leading zero) of the array at `at` starts.
fn element(document: &[u8], at: usize, index: &str) -> Option<usize> {
    if index.is_empty() || (index.len() > 1 && index.starts_with('0')) {
        return None;
    }
    let index: usize = index.parse().ok()?;
    let mut pos = at + 1;
    if document.get(pos) == Some(&b']') {
        return None;
    }
    for _ in 0..index {
        let end = skip_value(document, pos)?;
        match document.get(end)? {
            b',' => pos = end + 1,
            _ => return None,
        }
    }
    Some(pos)
}

/// The end of the canonical JSON value that starts at `pos`.
fn skip_value(document: &[u8], pos: usize) -> Option<usize> {
    match *document.get(pos)? {
        b'"' => skip_string(document, pos),
        b'{' | b'[' => {
            // Brackets nest; strings may hold brackets, so they are skipped whole.
            let mut depth = 0usize;
            let mut i = pos;
            while i < document.len() {
                match document[i] {
                    b'"' => {
                        i = skip_string(document, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            None
        }
        _ => {
            // A number or a literal: up to the next delimiter.
            let rest = &document[pos..];
            let len = rest
                .iter()
                .position(|b| matches!(b, b',' | b']' | b'}'))
                .unwrap_or(rest.len());
            (len > 0).then_some(pos + len)
        }
    }
}

/// The end (past the closing quote) of the string that starts at `pos`.
fn skip_string(document: &[u8], pos: usize) -> Option<usize> {
    if document.get(pos) != Some(&b'"') {
        return None;
    }
    let mut i = pos + 1;
    loop {
        i += memchr::memchr2(b'"', b'\\', document.get(i..)?)?;
        match document[i] {
            b'"' => return Some(i + 1),
            _ => i += 2, // An escape: its next byte is never the closing quote.
        }
    }
}

/// Reads an RFC 6902 patch: an array of operations.
pub fn json_patch_operations(patch: Value) -> Result<json_patch::Patch, String> {
    if !patch.is_array() {
        return Err("an RFC 6902 patch is an array of operations".into());
    }
    serde_json::from_value(patch).map_err(|_| {
        "an operation is not an RFC 6902 operation (op, path, and value or from)".to_string()
    })
}

/// The refusal for a failed operation, in this module's words.
fn refusal(error: json_patch::PatchError) -> DocumentRefusal {
    let path = error.path.to_string();
    let (reason, what) = match error.kind {
        json_patch::PatchErrorKind::TestFailed => {
            (DocumentReason::TestFailed, "test did not hold at")
        }
        json_patch::PatchErrorKind::InvalidFromPointer => {
            (DocumentReason::PatchFailed, "\"from\" names nothing, for")
        }
        json_patch::PatchErrorKind::CannotMoveInsideItself => (
            DocumentReason::PatchFailed,
            "cannot move a value inside itself, at",
        ),
        _ => (DocumentReason::PatchFailed, "no such path"),
    };
    DocumentRefusal {
        operation: Some(u32::try_from(error.operation).unwrap_or(u32::MAX)),
        ..DocumentRefusal::new(
            reason,
            format!("operation {}: {what} \"{path}\"", error.operation),
        )
    }
}

/// The RFC 6902 patch (canonical bytes) that turns `base` into `new`, when it is smaller
/// than half of `new_bytes` (the canonical form of `new`) and applying it reproduces those
/// bytes exactly (member order included); else None, and the whole document is written.
pub fn delta(base: &Value, new: &Value, new_bytes: &[u8]) -> Option<Vec<u8>> {
    let patch = json_patch::diff(base, new);
    let bytes = serde_json::to_vec(&patch).expect("a patch always serializes");
    if bytes.len() >= new_bytes.len() / 2 {
        return None;
    }
    // Equal values may still differ in member order, which the diff does not see.
    let mut patched = base.clone();
    json_patch::patch(&mut patched, &patch).ok()?;
    (canonical(&patched) == new_bytes).then_some(bytes)
}

/// The part of `document` that RFC 6901 `pointer` names, in canonical form.
pub fn select(document: &[u8], pointer: &str) -> Result<Vec<u8>, DocumentRefusal> {
    let Ok(value) = serde_json::from_slice::<Value>(document) else {
        return Err(DocumentRefusal::new(
            DocumentReason::NotADocument,
            "the key's value is not a JSON document",
        ));
    };
    if pointer.is_empty() {
        return Ok(canonical(&value));
    }
    if !pointer.starts_with('/') {
        return Err(DocumentRefusal::new(
            DocumentReason::NoSuchPath,
            format!("\"{pointer}\" is not a JSON pointer: it must be empty or start with /"),
        ));
    }
    match value.pointer(pointer) {
        Some(part) => Ok(canonical(part)),
        None => Err(DocumentRefusal::new(
            DocumentReason::NoSuchPath,
            format!("\"{pointer}\" names nothing in the document"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| serde_json::json!(n)),
            "[a-z\"\\/ ,{}\\[\\]é~]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 40, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::vec(("[a-c/~\"]{0,3}", inner), 0..5)
                    .prop_map(|members| { Value::Object(members.into_iter().collect()) }),
            ]
        })
    }

    /// Every pointer that names something in `value`, and some that do not.
    fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
        out.push(at.clone());
        match value {
            Value::Object(members) => {
                out.push(format!("{at}/missing"));
                for (name, member) in members {
                    let token = name.replace('~', "~0").replace('/', "~1");
                    pointers(member, format!("{at}/{token}"), out);
                }
            }
            Value::Array(elements) => {
                out.push(format!("{at}/{}", elements.len()));
                out.push(format!("{at}/01"));
                for (i, element) in elements.iter().enumerate() {
                    pointers(element, format!("{at}/{i}"), out);
                }
            }
            _ => out.push(format!("{at}/0")),
        }
    }

    proptest! {
        /// Editing a canonical document in place gives the bytes parsing, patching and
        /// serializing it gives, or defers to that; a pointer it locates is the part
        /// `select` returns.
        #[test]
        fn replaces_in_place_equal_the_parsed_patch(
            document in json_value(),
            picks in prop::collection::vec((any::<prop::sample::Index>(), json_value()), 1..4),
        ) {
            let base = canonical(&document);
            let mut all = Vec::new();
            pointers(&document, String::new(), &mut all);
            for pointer in &all {
                if let Some(span) = locate(&base, pointer) {
                    let selected = select(&base, pointer).unwrap();
                    prop_assert_eq!(&base[span], selected.as_slice());
                }
            }
            let operations: Vec<Value> = picks
                .iter()
                .map(|(index, value)| serde_json::json!({
                    "op": "replace", "path": index.get(&all), "value": value
                }))
                .collect();
            let patch = serde_json::to_vec(&operations).unwrap();
            if let Some(fast) = apply_replaces(&base, &patch) {
                let slow = apply(&base, PatchFormat::JsonPatch, &patch);
                prop_assert_eq!(Ok(fast), slow);
            }
        }
    }

    #[test]
    fn canonical_form_keeps_order_and_numbers_and_drops_whitespace() {
        let input = br#" { "zeta": 1.50, "alpha" : [1e3, 12345678901234567890123, -0],
            "s": "caf\u00e9 \"q\"", "alpha2": {"b": true, "a": null} } "#;
        let value = parse(input).unwrap();
        assert_eq!(
            String::from_utf8(canonical(&value)).unwrap(),
            r#"{"zeta":1.50,"alpha":[1e+3,12345678901234567890123,-0],"s":"café \"q\"","alpha2":{"b":true,"a":null}}"#
        );
        // Canonical bytes are a fixed point.
        let again = canonical(&parse(&canonical(&value)).unwrap());
        assert_eq!(again, canonical(&value));
    }

    #[test]
    fn invalid_json_names_the_byte_where_parsing_stopped() {
        let input = b"{\"a\": 1,\n \"b\": tru }";
        let error = parse(input).unwrap_err();
        assert_eq!(error.line, 2);
        // At the byte after "tru", where a literal was due to end as "true".
        assert_eq!(&input[..error.offset as usize], b"{\"a\": 1,\n \"b\": tru");
        let error = parse(b"[1, 2").unwrap_err();
        assert_eq!(error.offset, 5);
        assert!(error.to_string().contains("at byte 5"), "{error}");
        assert_eq!(parse(b"").unwrap_err().offset, 0);
    }

    #[test]
    fn json_patch_applies_and_its_failures_are_typed() {
        let base = br#"{"name":"billing","replicas":3,"tags":["a","b"]}"#;
        let patch = br#"[{"op":"test","path":"/replicas","value":3},
            {"op":"replace","path":"/replicas","value":5},
            {"op":"add","path":"/tags/-","value":"c"}]"#;
        let out = apply(base, PatchFormat::JsonPatch, patch).unwrap();
        assert_eq!(
            out,
            br#"{"name":"billing","replicas":5,"tags":["a","b","c"]}"#
        );

        let failed = br#"[{"op":"replace","path":"/name","value":"x"},
            {"op":"test","path":"/replicas","value":4}]"#;
        let refusal = apply(base, PatchFormat::JsonPatch, failed).unwrap_err();
        assert_eq!(refusal.reason, DocumentReason::TestFailed);
        assert_eq!(refusal.operation, Some(1));
        let missing = br#"[{"op":"remove","path":"/nope"}]"#;
        let refusal = apply(base, PatchFormat::JsonPatch, missing).unwrap_err();
        assert_eq!(refusal.reason, DocumentReason::PatchFailed);
        assert_eq!(refusal.operation, Some(0));
        let not_a_patch = br#"{"op":"remove","path":"/name"}"#;
        let refusal = apply(base, PatchFormat::JsonPatch, not_a_patch).unwrap_err();
        assert_eq!(refusal.reason, DocumentReason::PatchFailed);
        let refusal = apply(b"not json", PatchFormat::JsonPatch, b"[]").unwrap_err();
        assert_eq!(refusal.reason, DocumentReason::NotADocument);
    }

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let base = br#"{"a":"b","c":{"d":"e","f":"g"}}"#;
        let out = apply(
            base,
            PatchFormat::MergePatch,
            br#"{"a":"z","c":{"f":null}}"#,
        )
        .unwrap();
        assert_eq!(out, br#"{"a":"z","c":{"d":"e"}}"#);
    }

    #[test]
    fn a_delta_reproduces_the_new_document_exactly_or_is_not_used() {
        let services: Vec<Value> = (0..200)
            .map(|i| serde_json::json!({"name": format!("svc-{i}"), "port": 8000 + i}))
            .collect();
        let base = serde_json::json!({"region": "us-east-1", "services": services});
        let mut new = base.clone();
        new["services"][17]["port"] = serde_json::json!(9999);
        new["region"] = serde_json::json!("eu-west-1");
        let new_bytes = canonical(&new);
        let patch = delta(&base, &new, &new_bytes).expect("a small edit is a delta");
        assert!(patch.len() < 200, "{}", String::from_utf8_lossy(&patch));
        let base_bytes = canonical(&base);
        assert_eq!(
            apply(&base_bytes, PatchFormat::JsonPatch, &patch).unwrap(),
            new_bytes
        );

        // The same members in another order: equal as values, different bytes.
        let reordered = parse(br#"{"services":[],"region":"us-east-1"}"#).unwrap();
        let original = parse(br#"{"region":"us-east-1","services":[]}"#).unwrap();
        assert_eq!(delta(&original, &reordered, &canonical(&reordered)), None);
        // A rewrite of everything: the whole document is smaller.
        let other = serde_json::json!({"x": 1});
        assert_eq!(delta(&base, &other, &canonical(&other)), None);
    }

    #[test]
    fn pointers_select_a_subtree() {
        let doc = br#"{"services":[{"name":"a","env":{"LOG":"debug"}}],"a/b":1}"#;
        assert_eq!(
            select(doc, "/services/0/env").unwrap(),
            br#"{"LOG":"debug"}"#
        );
        assert_eq!(select(doc, "/a~1b").unwrap(), b"1");
        assert_eq!(select(doc, "").unwrap(), doc.to_vec());
        assert_eq!(
            select(doc, "/services/1").unwrap_err().reason,
            DocumentReason::NoSuchPath
        );
        assert_eq!(
            select(doc, "services").unwrap_err().reason,
            DocumentReason::NoSuchPath
        );
    }
}
