//! Stream keys: every random stream is keyed by (seed, purpose, generation, tensor key).
//!
//! The key material is BLAKE3 in key-derivation mode (a fixed context string) over a
//! length-prefixed encoding of the four fields, so it is the same on every platform and no two
//! distinct field tuples share an encoding. Keying by the tensor's key string (not its position
//! or shape) is what keeps same-shaped tensors from receiving identical noise.

use super::philox;

/// BLAKE3 derive-key context; changing it changes every child ever generated.
const CONTEXT: &str = "smd-onnx 2026 mutation stream key v1";

/// What a stream is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The dense Gaussian ε.
    Eps,
    /// The partition assignment of elements to subspaces.
    Assign,
    /// The random subset of subspace `s` in density mode (`"density/<s>"`).
    Density(u32),
    /// The assignment of whole tensors to subspaces in layer mode.
    Layer,
}

impl Purpose {
    /// Key material, frozen by `stable_value`: these labels are not mode names
    /// ([`super::ModeName`]) and must not follow a renamed mode, or old recipes would regenerate
    /// other children.
    fn label(self) -> String {
        match self {
            Self::Eps => "eps".into(),
            Self::Assign => "assign".into(),
            Self::Density(s) => format!("density/{s}"),
            Self::Layer => "layer".into(),
        }
    }
}

/// An extendable stream of key bytes for one (seed, purpose, generation, tensor).
pub struct KeyStream(blake3::OutputReader);

impl KeyStream {
    /// Derives the stream. `generation` is `None` for static subspaces (shared by all
    /// generations).
    pub fn new(seed: u64, purpose: Purpose, generation: Option<u32>, tensor: &str) -> Self {
        let mut h = blake3::Hasher::new_derive_key(CONTEXT);
        h.update(&seed.to_le_bytes());
        let label = purpose.label();
        h.update(&(label.len() as u64).to_le_bytes());
        h.update(label.as_bytes());
        match generation {
            None => h.update(&[0]),
            Some(g) => h.update(&[1]).update(&g.to_le_bytes()),
        };
        h.update(&(tensor.len() as u64).to_le_bytes());
        h.update(tensor.as_bytes());
        Self(h.finalize_xof())
    }

    /// The next 64 bits, little-endian.
    pub fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.0.fill(&mut b);
        u64::from_le_bytes(b)
    }

    /// A Philox key from the next 64 bits.
    pub fn philox_key(&mut self) -> philox::Key {
        let k = self.next_u64();
        [k as u32, (k >> 32) as u32]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_separated() {
        let k = |seed, p, g, t: &str| KeyStream::new(seed, p, g, t).next_u64();
        let base = k(1, Purpose::Eps, Some(0), "w");
        assert_ne!(base, k(2, Purpose::Eps, Some(0), "w"));
        assert_ne!(base, k(1, Purpose::Assign, Some(0), "w"));
        assert_ne!(base, k(1, Purpose::Eps, Some(1), "w"));
        assert_ne!(base, k(1, Purpose::Eps, None, "w"));
        assert_ne!(base, k(1, Purpose::Eps, Some(0), "w2"));
        assert_ne!(
            k(1, Purpose::Density(1), None, "0"),
            k(1, Purpose::Density(10), None, "")
        );
        assert_eq!(base, k(1, Purpose::Eps, Some(0), "w"));
    }

    #[test]
    fn stable_value() {
        // Pins the derivation: a change here silently changes every recipe's children.
        let got = KeyStream::new(42, Purpose::Eps, Some(3), "graph/fc1.weight").next_u64();
        assert_eq!(got, PINNED);
    }
    const PINNED: u64 = 8_887_438_391_806_830_001;
}
