//! A running digest of everything the executor writes, slot by slot: `digest(s)` is a hash
//! of `digest(s - 1)`, the slot number, and the bytes of slot `s`'s RocksDB write batch
//! (every key and value it puts or deletes, in order). Apply is deterministic, so replicas
//! at the same slot hold the same digest; a replica that applied anything differently holds
//! another one from that slot on, for ever. The driver compares digests with its peers
//! (`replica::driver::divergence`). The digest is written in the slot's own batch, so it
//! survives a crash with the data it covers, and travels in snapshots.

use sha2::{Digest, Sha256};

use super::error::{Error, Result};
use crate::consensus::Slot;

/// Bytes kept of the SHA-256: enough that two different histories collide with
/// probability 2^-128.
pub const DIGEST_BYTES: usize = 16;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct StateDigest {
    /// The chain starts after this slot (0: at the first slot). Digests of chains with
    /// different bases are not comparable.
    pub base: Slot,
    /// The digest at the executor's applied slot.
    pub value: [u8; DIGEST_BYTES],
}

impl StateDigest {
    /// A chain that starts after slot `base`.
    pub fn start(base: Slot) -> StateDigest {
        StateDigest {
            base,
            value: [0; DIGEST_BYTES],
        }
    }

    /// The digest after slot `slot` wrote `written` (its batch's bytes).
    pub fn next(&self, slot: Slot, written: &[u8]) -> StateDigest {
        let mut hasher = Sha256::new();
        hasher.update(self.value);
        hasher.update(slot.to_be_bytes());
        hasher.update(written);
        let full = hasher.finalize();
        let mut value = [0; DIGEST_BYTES];
        value.copy_from_slice(&full[..DIGEST_BYTES]);
        StateDigest {
            base: self.base,
            value,
        }
    }

    pub fn decode(value: &[u8], base: Slot) -> Result<StateDigest> {
        let value = value
            .try_into()
            .map_err(|_| Error::Corrupt(format!("a digest of {} bytes", value.len())))?;
        Ok(StateDigest { base, value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_different_byte_or_slot_gives_a_different_chain_for_ever() {
        let start = StateDigest::start(0);
        let a = start.next(1, b"put k v");
        assert_eq!(a, start.next(1, b"put k v"), "deterministic");
        assert_ne!(a, start.next(1, b"put k w"));
        assert_ne!(a, start.next(2, b"put k v"));
        let (a2, b2) = (a.next(2, b"x"), start.next(1, b"put k w").next(2, b"x"));
        assert_ne!(a2, b2, "the same later slot does not heal a difference");
        assert!(StateDigest::decode(&[0; 3], 0).is_err());
        assert_eq!(StateDigest::decode(&a.value, 0).unwrap(), a);
    }
}
