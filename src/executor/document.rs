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
///
/// When every path names a value of the base and no two of those values overlap, each
/// operation finds the same place after the others as before them, so the document is
/// written once with every value spliced in, however many operations there are.
pub fn apply_replaces(canonical_base: &[u8], patch: &[u8]) -> Option<Vec<u8>> {
    let patch: Value = serde_json::from_slice(patch).ok()?;
    let operations = patch.as_array()?;
    let mut replaces = Vec::with_capacity(operations.len());
    for operation in operations {
        let operation = operation.as_object()?;
        if operation.len() != 3 || operation.get("op")?.as_str()? != "replace" {
            return None;
        }
        let pointer = operation.get("path")?.as_str()?;
        replaces.push((pointer, canonical(operation.get("value")?)));
    }
    let spans: Option<Vec<std::ops::Range<usize>>> = (replaces.iter())
        .map(|(pointer, _)| locate(canonical_base, pointer))
        .collect();
    if let Some(spans) = spans {
        let mut order: Vec<usize> = (0..spans.len()).collect();
        order.sort_by_key(|&i| spans[i].start);
        let disjoint = order
            .windows(2)
            .all(|pair| spans[pair[0]].end <= spans[pair[1]].start);
        if disjoint {
            let mut document = Vec::with_capacity(canonical_base.len());
            let mut copied = 0;
            for i in order {
                document.extend_from_slice(&canonical_base[copied..spans[i].start]);
                document.extend_from_slice(&replaces[i].1);
                copied = spans[i].end;
            }
            document.extend_from_slice(&canonical_base[copied..]);
            return Some(document);
        }
    }
    let mut document = canonical_base.to_vec();
    for (pointer, value) in replaces {
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

/// The bytes every replica writes for `patch` of `base`: an RFC 6902 patch of a canonical
/// base through `apply_json_patch` (spliced in place when it can be), anything else
/// through `apply`.
pub fn apply_patch(
    base: &[u8],
    base_canonical: bool,
    format: PatchFormat,
    patch: &[u8],
) -> Result<Vec<u8>, DocumentRefusal> {
    match (base_canonical, format) {
        (true, PatchFormat::JsonPatch) => apply_json_patch(base, patch),
        _ => apply(base, format, patch),
    }
}

/// The RFC 6902 patch (canonical bytes) that turns `base` (parsed: `base_tree`) into `new`,
/// when it is smaller than half of `new_bytes` (the canonical form of `new`) and
/// `apply_patch`, what every replica runs, turns `base` into exactly those bytes (member
/// order included, which the diff does not see); else None, and the whole document is
/// written.
pub fn delta(
    base: &[u8],
    base_canonical: bool,
    base_tree: &Value,
    new: &Value,
    new_bytes: &[u8],
) -> Option<Vec<u8>> {
    let patch = json_patch::diff(base_tree, new);
    let bytes = serde_json::to_vec(&patch).expect("a patch always serializes");
    if bytes.len() >= new_bytes.len() / 2 {
        return None;
    }
    let patched = apply_patch(base, base_canonical, PatchFormat::JsonPatch, &bytes).ok()?;
    (patched == new_bytes).then_some(bytes)
}

/// Documents larger than this are canonicalized by `canonical::canonicalize` and diffed by
/// `diff_canonical`, never parsed into a tree by the replica that takes the write (unless an
/// object names a member twice). The default of `limits.document_tree_bytes_max`.
pub const TREE_BYTES_MAX_DEFAULT: usize = 4 << 20;

/// A document about to be written: its canonical bytes and, when it was parsed, its tree.
pub struct NewDocument {
    pub canonical: Vec<u8>,
    tree: Option<Value>,
    tree_bytes_max: usize,
}

impl NewDocument {
    /// Validates `json` and puts it in canonical form: through a tree when it is at most
    /// `tree_bytes_max` bytes (a tree finds the smallest patches), else in one pass.
    pub fn parse(json: &[u8], tree_bytes_max: usize) -> Result<NewDocument, InvalidJson> {
        if json.len() > tree_bytes_max {
            if let Some(canonical) = super::canonical::canonicalize(json)? {
                return Ok(NewDocument {
                    canonical,
                    tree: None,
                    tree_bytes_max,
                });
            }
        }
        let tree = parse(json)?;
        Ok(NewDocument {
            canonical: canonical(&tree),
            tree: Some(tree),
            tree_bytes_max,
        })
    }

    /// The parsed tree, if this document was parsed.
    pub fn tree(&self) -> Option<&Value> {
        self.tree.as_ref()
    }

    /// Gives up the tree (to be dropped where it costs the caller nothing).
    pub fn take_tree(&mut self) -> Option<Value> {
        self.tree.take()
    }

    /// The RFC 6902 patch that turns `base` into this document, when it is under half of
    /// it: by the trees (`delta`) when this document was parsed and `base` is within the
    /// same bound, else by scanning the bytes (`diff_canonical`) when `base` is canonical. `apply_json_patch`
    /// of `base` and the patch gives exactly `canonical`.
    pub fn delta_from(&self, base: &[u8], base_canonical: bool) -> Option<Vec<u8>> {
        match &self.tree {
            Some(tree) if base.len() <= self.tree_bytes_max => {
                let base_tree = parse(base).ok()?;
                delta(base, base_canonical, &base_tree, tree, &self.canonical)
            }
            _ if base_canonical => diff_canonical(base, &self.canonical),
            _ => None,
        }
    }
}

/// Operations a scanned diff may hold; past this the document is written whole.
const DIFF_OPERATIONS_MAX: usize = 4096;

/// An RFC 6902 patch of `replace` operations that turns canonical `base` into canonical
/// `new`, found by scanning both: values that are byte for byte the same are passed over;
/// objects with the same member names in the same order, and arrays of one length, are
/// compared member by member; any other difference replaces the value whole. Returned
/// only when it is under half of `new` and `apply_replaces` turns `base` into `new`.
pub fn diff_canonical(base: &[u8], new: &[u8]) -> Option<Vec<u8>> {
    let budget = new.len() / 2;
    let mut replaces = Vec::new();
    let mut path = String::new();
    diff_spans(
        (base, 0..base.len()),
        (new, 0..new.len()),
        &mut path,
        &mut replaces,
    )?;
    let mut patch = Vec::from(&b"["[..]);
    for (i, (pointer, span)) in replaces.iter().enumerate() {
        if i > 0 {
            patch.push(b',');
        }
        patch.extend_from_slice(br#"{"op":"replace","path":"#);
        patch.extend_from_slice(&serde_json::to_vec(pointer).ok()?);
        patch.extend_from_slice(br#","value":"#);
        patch.extend_from_slice(&new[span.clone()]);
        patch.push(b'}');
        if patch.len() >= budget {
            return None;
        }
    }
    patch.push(b']');
    if patch.len() >= budget {
        return None;
    }
    (apply_replaces(base, &patch)? == new).then_some(patch)
}

type Span<'a> = (&'a [u8], std::ops::Range<usize>);

fn diff_spans(
    base: Span<'_>,
    new: Span<'_>,
    path: &mut String,
    replaces: &mut Vec<(String, std::ops::Range<usize>)>,
) -> Option<()> {
    let (base_doc, base_span) = base;
    let (new_doc, new_span) = new;
    if base_doc[base_span.clone()] == new_doc[new_span.clone()] {
        return Some(());
    }
    let children = match (base_doc.get(base_span.start)?, new_doc.get(new_span.start)?) {
        (b'{', b'{') => {
            let ours = members(base_doc, base_span.start)?;
            let theirs = members(new_doc, new_span.start)?;
            let same_names = ours.len() == theirs.len()
                && (ours.iter().zip(&theirs))
                    .all(|(a, b)| base_doc[a.0.clone()] == new_doc[b.0.clone()]);
            same_names.then(|| {
                (ours.into_iter().zip(theirs))
                    .map(|(a, b)| {
                        let name: String = serde_json::from_slice(&base_doc[a.0]).ok()?;
                        Some((name.replace('~', "~0").replace('/', "~1"), a.1, b.1))
                    })
                    .collect::<Option<Vec<_>>>()
            })
        }
        (b'[', b'[') => {
            let ours = elements(base_doc, base_span.start)?;
            let theirs = elements(new_doc, new_span.start)?;
            (ours.len() == theirs.len()).then(|| {
                let pairs = (ours.into_iter().zip(theirs)).enumerate();
                Some(pairs.map(|(i, (a, b))| (i.to_string(), a, b)).collect())
            })
        }
        _ => None,
    };
    match children {
        Some(children) => {
            for (token, ours, theirs) in children? {
                let len = path.len();
                path.push('/');
                path.push_str(&token);
                diff_spans((base_doc, ours), (new_doc, theirs), path, replaces)?;
                path.truncate(len);
            }
        }
        None => {
            if replaces.len() >= DIFF_OPERATIONS_MAX {
                return None;
            }
            replaces.push((path.clone(), new_span));
        }
    }
    Some(())
}

/// The name and value spans of each member of the canonical object at `at`.
fn members(
    document: &[u8],
    at: usize,
) -> Option<Vec<(std::ops::Range<usize>, std::ops::Range<usize>)>> {
    let mut out = Vec::new();
    let mut pos = at + 1;
    if document.get(pos) == Some(&b'}') {
        return Some(out);
    }
    loop {
        let name_end = skip_string(document, pos)?;
        if document.get(name_end) != Some(&b':') {
            return None;
        }
        let value_end = skip_value(document, name_end + 1)?;
        out.push((pos..name_end, name_end + 1..value_end));
        match document.get(value_end)? {
            b',' => pos = value_end + 1,
            b'}' => return Some(out),
            _ => return None,
        }
    }
}

/// The span of each element of the canonical array at `at`.
fn elements(document: &[u8], at: usize) -> Option<Vec<std::ops::Range<usize>>> {
    let mut out = Vec::new();
    let mut pos = at + 1;
    if document.get(pos) == Some(&b']') {
        return Some(out);
    }
    loop {
        let end = skip_value(document, pos)?;
        out.push(pos..end);
        match document.get(end)? {
            b',' => pos = end + 1,
            b']' => return Some(out),
            _ => return None,
        }
    }
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

        /// A scanned diff between two canonical documents, when there is one, turns the
        /// first into the second as parsing and patching does; one edited in a few places
        /// always has one.
        #[test]
        fn a_scanned_diff_turns_one_document_into_the_other(
            document in json_value(),
            other in json_value(),
            picks in prop::collection::vec((any::<prop::sample::Index>(), json_value()), 1..4),
        ) {
            let base = canonical(&document);
            for new in [canonical(&other), base.clone()] {
                if let Some(patch) = diff_canonical(&base, &new) {
                    prop_assert_eq!(apply(&base, PatchFormat::JsonPatch, &patch).unwrap(), new);
                }
            }
            let mut all = Vec::new();
            pointers(&document, String::new(), &mut all);
            let mut edited = document.clone();
            for (index, value) in &picks {
                let pointer: &String = index.get(&all);
                if let Some(slot) = edited.pointer_mut(pointer) {
                    *slot = value.clone();
                }
            }
            let new = canonical(&edited);
            if let Some(patch) = diff_canonical(&base, &new) {
                prop_assert_eq!(apply(&base, PatchFormat::JsonPatch, &patch).unwrap(), new);
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
        let base_bytes = canonical(&base);
        let patch = delta(&base_bytes, true, &base, &new, &new_bytes).expect("a small edit");
        assert!(patch.len() < 200, "{}", String::from_utf8_lossy(&patch));
        assert_eq!(
            apply(&base_bytes, PatchFormat::JsonPatch, &patch).unwrap(),
            new_bytes
        );
        // A base that is not canonical is patched through the tree, which gives the same.
        let spaced = serde_json::to_vec_pretty(&base).unwrap();
        let patch = delta(&spaced, false, &base, &new, &new_bytes).expect("a small edit");
        assert_eq!(
            apply_patch(&spaced, false, PatchFormat::JsonPatch, &patch).unwrap(),
            new_bytes
        );

        // The same members in another order: equal as values, different bytes.
        let (original_bytes, reordered_bytes) = (
            br#"{"region":"us-east-1","services":[]}"#,
            br#"{"services":[],"region":"us-east-1"}"#,
        );
        let (original, reordered) = (
            parse(original_bytes).unwrap(),
            parse(reordered_bytes).unwrap(),
        );
        assert_eq!(
            delta(original_bytes, true, &original, &reordered, reordered_bytes),
            None
        );
        // A rewrite of everything: the whole document is smaller.
        let other = serde_json::json!({"x": 1});
        assert_eq!(
            delta(&base_bytes, true, &base, &other, &canonical(&other)),
            None
        );
    }

    #[test]
    fn a_scanned_diff_replaces_only_what_changed() {
        let services: Vec<Value> = (0..1000)
            .map(|i| serde_json::json!({"name": format!("svc-{i}"), "port": 8000 + i, "tags": ["a", "b"]}))
            .collect();
        let base = serde_json::json!({"region": "us-east-1", "services": services});
        let mut new = base.clone();
        new["services"][17]["port"] = serde_json::json!(9999);
        new["services"][900]["tags"][1] = serde_json::json!("c/~d");
        new["region"] = serde_json::json!("eu-west-1");
        let (base, new) = (canonical(&base), canonical(&new));
        let patch = diff_canonical(&base, &new).expect("three leaves changed");
        assert_eq!(
            String::from_utf8(patch.clone()).unwrap(),
            r#"[{"op":"replace","path":"/region","value":"eu-west-1"},{"op":"replace","path":"/services/17/port","value":9999},{"op":"replace","path":"/services/900/tags/1","value":"c/~d"}]"#
        );
        assert_eq!(apply_json_patch(&base, &patch).unwrap(), new);
        assert_eq!(apply(&base, PatchFormat::JsonPatch, &patch).unwrap(), new);

        // A member added replaces the object that holds it; names in another order too.
        let filler = "long enough to be worth a patch ".repeat(8);
        let doc = |a: &str| format!(r#"{{"a":{a},"b":[1,2,3],"c":"{filler}"}}"#).into_bytes();
        let base = doc(r#"{"x":1,"y":2}"#);
        let patch = diff_canonical(&base, &doc(r#"{"x":1,"y":2,"z":3}"#)).unwrap();
        assert_eq!(
            patch,
            br#"[{"op":"replace","path":"/a","value":{"x":1,"y":2,"z":3}}]"#
        );
        let reordered = doc(r#"{"y":2,"x":1}"#);
        let patch = diff_canonical(&base, &reordered).unwrap();
        assert_eq!(apply_json_patch(&base, &patch).unwrap(), reordered);
        // Everything changed: the whole document is smaller than a patch.
        assert_eq!(diff_canonical(&base, br#"{"q":1}"#), None);
        // No change at all: an empty patch.
        assert_eq!(diff_canonical(&base, &base).as_deref(), Some(&b"[]"[..]));
    }

    #[test]
    fn a_large_document_is_diffed_without_its_tree_and_a_small_one_with_it() {
        let base = serde_json::json!({"items": (0..200).collect::<Vec<_>>(), "name": "x"});
        let mut new = base.clone();
        new["items"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!(200));
        let (base, new) = (canonical(&base), canonical(&new));
        // Parsed: the tree's diff appends the element.
        let parsed = NewDocument::parse(&new, new.len()).unwrap();
        assert!(parsed.tree().is_some());
        let patch = parsed.delta_from(&base, true).unwrap();
        assert_eq!(patch, br#"[{"op":"add","path":"/items/200","value":200}]"#);
        // Over the bound: no tree, and a scan can only replace the array, which is most
        // of the document, so the document goes whole.
        let scanned = NewDocument::parse(&new, 16).unwrap();
        assert!(scanned.tree().is_none());
        assert_eq!(scanned.canonical, new);
        assert_eq!(scanned.delta_from(&base, true), None);
        // Nor is a base that is not canonical ever scanned.
        let edited = br#"{"items":[0],"name":"a much longer name than the one before it"}"#;
        let scanned = NewDocument::parse(edited, 16).unwrap();
        let spaced = br#"{"items": [0],"name":"a much longer name than the one before"}"#;
        assert_eq!(scanned.delta_from(spaced, false), None);
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
