//! Where the configuration service keeps everything: keys under [`PREFIX`], a system prefix
//! the raw KV API can neither read nor write. Namespace paths are stored with a trailing
//! slash (`/` is the root, `/env/prod/` a namespace), so that one key prefix holds a
//! namespace's whole subtree and nothing else (`/env/` does not cover `/envoy/`).

/// The first byte of every system key. The raw KV API's key space ends below it.
pub const SYSTEM_BYTE: u8 = 0xFF;

/// Everything the configuration service stores starts with this.
pub const PREFIX: &[u8] = b"\xffconfman/";

/// Segments of namespace paths and entry keys: letters, digits, `.`, `_`, `-`.
pub const NAME_BYTES_MAX: usize = 255;

/// Namespace depth, counting segments: `/a/b/c` is 3.
pub const DEPTH_MAX: usize = 32;

fn key(kind: &[u8], rest: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(PREFIX.len() + 64);
    out.extend_from_slice(PREFIX);
    out.extend_from_slice(kind);
    for part in rest {
        out.extend_from_slice(part);
    }
    out
}

/// The end of the range of keys starting with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return end;
        }
    }
    Vec::new()
}

pub fn principal(name: &str) -> Vec<u8> {
    key(b"p/", &[name.as_bytes()])
}

pub fn principals() -> Vec<u8> {
    key(b"p/", &[])
}

pub fn token(id: &str) -> Vec<u8> {
    key(b"t/", &[id.as_bytes()])
}

pub fn tokens() -> Vec<u8> {
    key(b"t/", &[])
}

/// `stored` is a stored namespace path (trailing slash).
pub fn namespace(stored: &str) -> Vec<u8> {
    key(b"n", &[stored.as_bytes()])
}

/// Every namespace strictly below `stored`.
pub fn namespaces_below(stored: &str) -> Vec<u8> {
    namespace(stored)
}

/// The published entry's record (its newest revision).
pub fn meta(stored: &str, entry: &str) -> Vec<u8> {
    key(b"m", &[stored.as_bytes(), b"\0", entry.as_bytes()])
}

/// Entries of the namespace itself.
pub fn metas_in(stored: &str) -> Vec<u8> {
    key(b"m", &[stored.as_bytes(), b"\0"])
}

/// Entries of the namespace and its whole subtree.
pub fn metas_under(stored: &str) -> Vec<u8> {
    key(b"m", &[stored.as_bytes()])
}

/// Splits a meta key into (stored namespace, entry key).
pub fn split_meta(meta_key: &[u8]) -> Option<(String, String)> {
    let rest = meta_key.strip_prefix(PREFIX)?.strip_prefix(b"m")?;
    let zero = rest.iter().position(|&b| b == 0)?;
    let ns = std::str::from_utf8(&rest[..zero]).ok()?;
    let entry = std::str::from_utf8(&rest[zero + 1..]).ok()?;
    Some((ns.to_string(), entry.to_string()))
}

/// The value of revision `revision` of an entry (absent for a deletion).
pub fn value(stored: &str, entry: &str, revision: u64) -> Vec<u8> {
    key(
        b"v",
        &[
            stored.as_bytes(),
            b"\0",
            entry.as_bytes(),
            b"\0",
            &revision.to_be_bytes(),
        ],
    )
}

/// The record of revision `revision` of an entry.
pub fn history(stored: &str, entry: &str, revision: u64) -> Vec<u8> {
    key(
        b"h",
        &[
            stored.as_bytes(),
            b"\0",
            entry.as_bytes(),
            b"\0",
            &revision.to_be_bytes(),
        ],
    )
}

pub fn histories(stored: &str, entry: &str) -> Vec<u8> {
    key(b"h", &[stored.as_bytes(), b"\0", entry.as_bytes(), b"\0"])
}

pub fn change(id: u64) -> Vec<u8> {
    key(b"c/", &[&id.to_be_bytes()])
}

pub fn changes() -> Vec<u8> {
    key(b"c/", &[])
}

/// Every value the edits of change `id` will write.
pub fn change_values(id: u64) -> Vec<u8> {
    key(b"d/", &[&id.to_be_bytes()])
}

/// The value an edit of change `id` writes to an entry.
pub fn change_value(id: u64, stored: &str, entry: &str) -> Vec<u8> {
    key(
        b"d/",
        &[
            &id.to_be_bytes(),
            stored.as_bytes(),
            b"\0",
            entry.as_bytes(),
        ],
    )
}

/// The change a principal's `createChange` with `client_token` created, so that a
/// retry of that call returns it instead of creating another.
pub fn client_token(principal: &str, client_token: &str) -> Vec<u8> {
    key(
        b"r/",
        &[principal.as_bytes(), b"\0", client_token.as_bytes()],
    )
}

/// The last change id handed out.
pub fn change_sequence() -> Vec<u8> {
    key(b"s/change", &[])
}

/// Audit events sort by time, then by a nonce chosen with it, then by their index within
/// one call.
pub fn audit(at_ms: u64, nonce: &[u8; 8], index: u16) -> Vec<u8> {
    key(b"a/", &[&at_ms.to_be_bytes(), nonce, &index.to_be_bytes()])
}

pub fn audits_from(at_ms: u64) -> Vec<u8> {
    key(b"a/", &[&at_ms.to_be_bytes()])
}

pub fn audits() -> Vec<u8> {
    key(b"a/", &[])
}

/// An audit event's id: its key after the prefix, in hex.
pub fn audit_id(audit_key: &[u8]) -> String {
    let suffix = audit_key.get(PREFIX.len() + 2..).unwrap_or_default();
    suffix.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn audit_key_of_id(id: &str) -> Option<Vec<u8>> {
    if id.len() != 36 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..18)
        .map(|i| u8::from_str_radix(&id[2 * i..2 * i + 2], 16).ok())
        .collect();
    Some(key(b"a/", &[&bytes?]))
}

/// Whether `name` is a valid namespace segment, entry key or principal name.
pub fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NAME_BYTES_MAX
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A namespace path as users write it (`/`, `/env/prod`, a trailing slash allowed) turned
/// into its stored form (`/`, `/env/prod/`).
pub fn stored_path(path: &str) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err(format!("namespace path {path:?} must start with '/'"));
    }
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if path.contains("//") {
        return Err(format!("namespace path {path:?} has an empty segment"));
    }
    if segments.len() > DEPTH_MAX {
        return Err(format!(
            "namespace path {path:?} is deeper than {DEPTH_MAX} segments"
        ));
    }
    if let Some(bad) = segments.iter().find(|s| !is_name(s)) {
        return Err(format!(
            "namespace segment {bad:?} must be 1 to {NAME_BYTES_MAX} letters, digits, '.', '_' \
             or '-'"
        ));
    }
    let mut stored = String::from("/");
    for segment in segments {
        stored.push_str(segment);
        stored.push('/');
    }
    Ok(stored)
}

/// The stored path as users see it: `/env/prod`.
pub fn display_path(stored: &str) -> String {
    match stored {
        "/" => "/".to_string(),
        _ => stored.trim_end_matches('/').to_string(),
    }
}

/// `/`, `/a/`, `/a/b/` for `/a/b/`: the namespace and every one above it, root first.
pub fn ancestors(stored: &str) -> Vec<String> {
    let mut out = vec!["/".to_string()];
    let mut at = String::from("/");
    for segment in stored.split('/').filter(|s| !s.is_empty()) {
        at.push_str(segment);
        at.push('/');
        out.push(at.clone());
    }
    out
}

/// The parent of a stored path; None for the root.
pub fn parent(stored: &str) -> Option<String> {
    let ancestors = ancestors(stored);
    (ancestors.len() > 1).then(|| ancestors[ancestors.len() - 2].clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_stored_with_a_trailing_slash_and_checked() {
        assert_eq!(stored_path("/").unwrap(), "/");
        assert_eq!(stored_path("/env/prod").unwrap(), "/env/prod/");
        assert_eq!(stored_path("/env/prod/").unwrap(), "/env/prod/");
        assert!(stored_path("env").is_err());
        assert!(stored_path("/a//b").is_err());
        assert!(stored_path("/a/b c").is_err());
        assert!(stored_path("/a/..").is_err());
        assert_eq!(display_path("/env/prod/"), "/env/prod");
        assert_eq!(ancestors("/a/b/"), vec!["/", "/a/", "/a/b/"]);
        assert_eq!(parent("/a/b/").as_deref(), Some("/a/"));
        assert_eq!(parent("/"), None);
    }

    #[test]
    fn a_subtree_prefix_holds_its_subtree_only() {
        let under = metas_under("/env/");
        assert!(meta("/env/", "k").starts_with(&under));
        assert!(meta("/env/prod/", "k").starts_with(&under));
        assert!(!meta("/envoy/", "k").starts_with(&under));
        assert!(!meta("/env/prod/", "k").starts_with(&metas_in("/env/")));
        assert_eq!(
            split_meta(&meta("/env/prod/", "db")),
            Some(("/env/prod/".to_string(), "db".to_string()))
        );
    }

    #[test]
    fn audit_ids_round_trip() {
        let key = audit(1_700_000_000_000, &[1, 2, 3, 4, 5, 6, 7, 8], 3);
        let id = audit_id(&key);
        assert_eq!(audit_key_of_id(&id), Some(key));
        assert_eq!(audit_key_of_id("xyz"), None);
    }

    #[test]
    fn prefix_end_is_past_every_key_with_the_prefix() {
        assert_eq!(prefix_end(b"ab"), b"ac".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert!(prefix_end(b"\xff\xff").is_empty());
    }
}
