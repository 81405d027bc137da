//! Name normalisation and the name hash used as the rule-table key.
//!
//! A name's key is built label by label from the root down, so that the
//! kernel can hash every label once while it parses the question and then
//! derive the key of every parent suffix without reading the name again:
//!
//! ```text
//! key(".")        = ROOT_KEY
//! key(label.rest) = suffix_key(key(rest), label_hash(label))
//! ```
//!
//! Labels are hashed after ASCII lowercasing, so `Ads.Example.COM` and
//! `ads.example.com` have the same key (RFC 4343: DNS names compare
//! case-insensitively in ASCII only).

/// FNV-1a 64-bit offset basis.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64-bit prime.
pub const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Key of the root name. No rule can be placed on the root.
pub const ROOT_KEY: u64 = 0x6a09_e667_f3bc_c908;

/// Maximum length of a name in wire form, root label included (RFC 1035 §3.1).
pub const MAX_NAME_WIRE_LEN: usize = 255;
/// Maximum length of one label (RFC 1035 §2.3.4).
pub const MAX_LABEL_LEN: usize = 63;

/// Lowercases one byte if it is an ASCII capital letter; any other byte is
/// returned unchanged.
#[inline(always)]
pub const fn ascii_lower(byte: u8) -> u8 {
    if byte >= b'A' && byte <= b'Z' {
        byte | 0x20
    } else {
        byte
    }
}

/// Feeds one byte into a running label hash. The byte is lowercased first.
#[inline(always)]
pub const fn label_hash_step(hash: u64, byte: u8) -> u64 {
    (hash ^ ascii_lower(byte) as u64).wrapping_mul(FNV_PRIME)
}

/// Hashes one label (without its length byte).
#[inline(always)]
pub fn label_hash(label: &[u8]) -> u64 {
    let mut hash = FNV_OFFSET;
    for &byte in label {
        hash = label_hash_step(hash, byte);
    }
    hash
}

/// The 64-bit finaliser of MurmurHash3: a bijection that spreads every input
/// bit over the whole output, so bucket indices and tags taken from different
/// bits of a key are independent.
#[inline(always)]
pub const fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

/// Derives the key of `label.parent` from the key of `parent` and the hash
/// of `label`.
#[inline(always)]
pub const fn suffix_key(parent_key: u64, label_hash: u64) -> u64 {
    mix64(parent_key.rotate_left(23) ^ label_hash)
}

/// Error returned when a presentation-form name cannot be a DNS name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameError {
    /// The name has no labels (empty or only `.`).
    Empty,
    /// A label is empty (two dots in a row, or a leading dot).
    EmptyLabel,
    /// A label is longer than 63 bytes.
    LabelTooLong,
    /// The name is longer than 255 bytes in wire form.
    NameTooLong,
}

impl core::fmt::Display for NameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Empty => "the name is empty",
            Self::EmptyLabel => "the name has an empty label",
            Self::LabelTooLong => "a label is longer than 63 bytes",
            Self::NameTooLong => "the name is longer than 255 bytes in wire form",
        })
    }
}

/// Computes the key of a name in presentation form (`ads.example.com`,
/// with or without a trailing dot). Escapes (`\.`) are not interpreted:
/// block lists never use them.
pub fn name_key(name: &str) -> Result<u64, NameError> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    // Wire length: one length byte per label plus its bytes, plus the root.
    if name.len() + 2 > MAX_NAME_WIRE_LEN {
        return Err(NameError::NameTooLong);
    }
    let mut key = ROOT_KEY;
    for label in name.as_bytes().rsplit(|&b| b == b'.') {
        if label.is_empty() {
            return Err(NameError::EmptyLabel);
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(NameError::LabelTooLong);
        }
        key = suffix_key(key, label_hash(label));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ignores_ascii_case_and_trailing_dot() {
        assert_eq!(name_key("Ads.Example.COM"), name_key("ads.example.com."));
    }

    #[test]
    fn key_differs_for_parent_and_child() {
        assert_ne!(name_key("example.com"), name_key("ads.example.com"));
        assert_ne!(name_key("a.bc"), name_key("ab.c"));
    }

    #[test]
    fn key_is_built_from_parent_key() {
        let parent = name_key("example.com").unwrap();
        let child = suffix_key(parent, label_hash(b"ads"));
        assert_eq!(Ok(child), name_key("ads.example.com"));
    }

    #[test]
    fn name_key_rejects_bad_names() {
        assert_eq!(name_key(""), Err(NameError::Empty));
        assert_eq!(name_key("."), Err(NameError::Empty));
        assert_eq!(name_key("a..b"), Err(NameError::EmptyLabel));
        assert_eq!(name_key(&"a".repeat(64)), Err(NameError::LabelTooLong));
        let long = vec!["a".repeat(63); 4].join(".");
        assert_eq!(name_key(&long), Err(NameError::NameTooLong));
    }

    #[test]
    fn name_of_253_characters_is_accepted() {
        // 63+1+63+1+63+1+61 = 253 characters, 255 bytes in wire form.
        let name = format!("{0}.{0}.{0}.{1}", "a".repeat(63), "b".repeat(61));
        assert_eq!(name.len(), 253);
        assert!(name_key(&name).is_ok());
    }

    #[test]
    fn non_ascii_bytes_are_not_folded() {
        assert_ne!(label_hash("É".as_bytes()), label_hash("é".as_bytes()));
    }

    proptest::proptest! {
        #[test]
        fn key_is_case_insensitive(name in "[a-zA-Z0-9_-]{1,20}(\\.[a-zA-Z0-9_-]{1,20}){0,4}") {
            proptest::prop_assert_eq!(name_key(&name), name_key(&name.to_ascii_lowercase()));
        }
    }
}
