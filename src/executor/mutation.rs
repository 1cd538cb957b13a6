//! Pure value transformations of the mutations and compares; no storage access here.

use super::command::{Compare, CompareOp, CompareTarget};
use super::keys::Versioned;

const VERSIONSTAMP_BYTES: usize = 10;
const OFFSET_BYTES: usize = 4;

/// FoundationDB ADD: `existing` is zero-extended or truncated to the width of `param`,
/// added little-endian, and the carry out of the top byte is dropped. An absent key counts
/// as zero. An empty `param` yields an empty value, as in FoundationDB.
pub fn little_endian_add(existing: Option<&[u8]>, param: &[u8]) -> Vec<u8> {
    let existing = existing.unwrap_or_default();
    let mut out = Vec::with_capacity(param.len());
    let mut carry = 0u16;
    for (i, &byte) in param.iter().enumerate() {
        let sum = u16::from(byte) + u16::from(existing.get(i).copied().unwrap_or(0)) + carry;
        out.push(sum as u8); // Truncation is the point: the carry moves to the next byte.
        carry = sum >> 8;
    }
    out
}

/// Strips the trailing little-endian u32 offset from `param` and writes `stamp` there.
/// Err carries the deterministic reason the command is rejected.
pub fn place_versionstamp(param: &[u8], stamp: &[u8; 10]) -> Result<Vec<u8>, String> {
    let Some(body_len) = param.len().checked_sub(OFFSET_BYTES) else {
        return Err(format!(
            "versionstamp operand shorter than its {OFFSET_BYTES}-byte offset"
        ));
    };
    let (body, offset) = param.split_at(body_len);
    let offset = u32::from_le_bytes(offset.try_into().expect("4 bytes")) as usize;
    if offset
        .checked_add(VERSIONSTAMP_BYTES)
        .is_none_or(|stamp_end| stamp_end > body_len)
    {
        return Err(format!(
            "versionstamp offset {offset} + {VERSIONSTAMP_BYTES} exceeds the {body_len}-byte operand"
        ));
    }
    let mut out = body.to_vec();
    out[offset..offset + VERSIONSTAMP_BYTES].copy_from_slice(stamp);
    Ok(out)
}

/// Evaluates one compare against the key's newest state (`None` or a tombstone: absent).
/// Err carries the reason the whole Txn is rejected (a missing operand, an unordered op).
pub fn evaluate_compare(compare: &Compare, current: Option<&Versioned>) -> Result<bool, String> {
    let live = current.and_then(Versioned::live);
    match compare.target {
        CompareTarget::Value => {
            let Some(expected) = &compare.value else {
                return Err("Value compare without value".into());
            };
            // An absent key has no value to order: only "not equal" holds.
            Ok(match live.and_then(|v| v.value.as_deref()) {
                None => compare.op == CompareOp::NotEqual,
                Some(actual) => ordered(compare.op, actual.cmp(expected.as_slice())),
            })
        }
        CompareTarget::ModVersion | CompareTarget::CreateVersion => {
            let Some(expected) = compare.version else {
                return Err("version compare without version".into());
            };
            let actual = live.map_or(0, |v| match compare.target {
                CompareTarget::ModVersion => v.mod_version,
                _ => v.create_version,
            });
            Ok(ordered(compare.op, actual.cmp(&expected)))
        }
        CompareTarget::Exists => {
            let Some(expected) = compare.exists else {
                return Err("Exists compare without exists".into());
            };
            match compare.op {
                CompareOp::Equal => Ok(live.is_some() == expected),
                CompareOp::NotEqual => Ok(live.is_some() != expected),
                CompareOp::Less | CompareOp::Greater => {
                    Err("Exists compare with an order op".into())
                }
            }
        }
    }
}

fn ordered(op: CompareOp, actual_vs_expected: std::cmp::Ordering) -> bool {
    use std::cmp::Ordering;
    match op {
        CompareOp::Equal => actual_vs_expected == Ordering::Equal,
        CompareOp::NotEqual => actual_vs_expected != Ordering::Equal,
        CompareOp::Less => actual_vs_expected == Ordering::Less,
        CompareOp::Greater => actual_vs_expected == Ordering::Greater,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_wraps_at_param_width() {
        assert_eq!(little_endian_add(None, &[5, 0]), vec![5, 0]);
        assert_eq!(little_endian_add(Some(&[0xFF]), &[1, 0]), vec![0, 1]);
        assert_eq!(little_endian_add(Some(&[0xFF, 0xFF]), &[1, 0]), vec![0, 0]);
        // Existing longer than param: truncated to the param width.
        assert_eq!(little_endian_add(Some(&[1, 2, 3, 4]), &[1]), vec![2]);
        // Existing shorter: zero-extended.
        assert_eq!(
            little_endian_add(Some(&[0xFF]), &[1, 0, 0, 0]),
            vec![0, 1, 0, 0]
        );
        assert_eq!(little_endian_add(Some(&[9]), &[]), Vec::<u8>::new());
        let minus_one = u64::MAX.to_le_bytes();
        assert_eq!(
            little_endian_add(Some(&10u64.to_le_bytes()), &minus_one),
            9u64.to_le_bytes()
        );
    }

    #[test]
    fn versionstamp_offsets() {
        let stamp = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        let mut param = b"ab__________cd".to_vec();
        param.extend_from_slice(&2u32.to_le_bytes());
        assert_eq!(
            place_versionstamp(&param, &stamp).unwrap(),
            [b"ab".as_slice(), stamp.as_slice(), b"cd".as_slice()].concat()
        );
        let mut edge = vec![0u8; 10];
        edge.extend_from_slice(&0u32.to_le_bytes());
        assert_eq!(place_versionstamp(&edge, &stamp).unwrap(), stamp.to_vec());
        let mut past = vec![0u8; 10];
        past.extend_from_slice(&1u32.to_le_bytes());
        assert!(place_versionstamp(&past, &stamp).is_err());
        let mut huge = vec![0u8; 10];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(place_versionstamp(&huge, &stamp).is_err());
        assert!(place_versionstamp(&[0, 0, 0], &stamp).is_err());
    }
}
