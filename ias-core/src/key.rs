//! API key secrets: generation, hashing, display prefixes.
//!
//! A secret is `ias_` followed by 40 random base62 characters (about 238
//! bits). Only its SHA-256 is stored: a slow password hash adds nothing for
//! a secret with that much entropy, and the hot path must stay fast.

use std::fmt;

use rand::Rng;
use sha2::{Digest, Sha256};

/// The text every ias key starts with.
pub const KEY_PREFIX: &str = "ias_";

/// Random characters after [`KEY_PREFIX`].
pub const KEY_RANDOM_LEN: usize = 40;

/// Characters of the secret kept as the display prefix.
pub const DISPLAY_PREFIX_LEN: usize = 12;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A freshly generated key secret, to be shown to its owner once.
///
/// Its `Debug` output hides the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct KeySecret(String);

impl KeySecret {
    /// Generates a new random secret from the operating system's generator.
    pub fn generate() -> Self {
        KeySecret::from_rng(&mut rand::rng())
    }

    /// A secret drawn from `rng`, in the same format as [`KeySecret::generate`].
    ///
    /// Only as secret as `rng`: a generator seeded with a known value (as
    /// `ias-admin seed --seed` does) makes keys anyone can recompute, fit
    /// for test data only.
    pub fn from_rng<R: Rng + ?Sized>(rng: &mut R) -> Self {
        let mut text = String::with_capacity(KEY_PREFIX.len() + KEY_RANDOM_LEN);
        text.push_str(KEY_PREFIX);
        text.extend(
            (0..KEY_RANDOM_LEN).map(|_| char::from(BASE62[rng.random_range(0..BASE62.len())])),
        );
        KeySecret(text)
    }

    /// The secret text.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The SHA-256 of the secret, as stored.
    pub fn hash(&self) -> KeyHash {
        KeyHash::of(&self.0)
    }

    /// The non-secret display prefix, such as `ias_3fK9xQ2a`.
    pub fn display_prefix(&self) -> String {
        self.0.chars().take(DISPLAY_PREFIX_LEN).collect()
    }
}

impl fmt::Debug for KeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeySecret({}…)", self.display_prefix())
    }
}

/// Whether `presented` has the shape of an ias key, checked before any lookup.
pub fn is_well_formed(presented: &str) -> bool {
    presented.len() == KEY_PREFIX.len() + KEY_RANDOM_LEN
        && presented.starts_with(KEY_PREFIX)
        && presented[KEY_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric())
}

/// The SHA-256 digest of a key secret.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    /// Hashes a presented secret.
    pub fn of(secret: &str) -> Self {
        KeyHash(Sha256::digest(secret.as_bytes()).into())
    }

    /// The digest as lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyHash(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_well_formed_and_distinct() {
        let a = KeySecret::generate();
        let b = KeySecret::generate();
        assert!(is_well_formed(a.expose()));
        assert_ne!(a, b);
        assert_ne!(a.hash(), b.hash());
        assert_eq!(a.display_prefix().len(), DISPLAY_PREFIX_LEN);
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let key = KeySecret::generate();
        let shown = format!("{key:?} {:?}", key.hash());
        assert!(!shown.contains(key.expose()));
        assert!(!shown.contains(&key.hash().to_hex()));
    }

    #[test]
    fn malformed_keys_are_recognised() {
        for bad in ["", "ias_", "sk-abc", &format!("ias_{}", "!".repeat(40))] {
            assert!(!is_well_formed(bad), "{bad:?}");
        }
    }
}
