//! Normalisation and validation of the names that list rules carry.
//!
//! Every name is brought to the form the kernel hashes: ASCII lowercase
//! (RFC 4343), no trailing dot, and internationalised labels converted to
//! punycode A-labels (RFC 5891 §4 via UTS #46 processing). Each label has
//! 1–63 bytes and the whole name at most 253 characters, which is 255 bytes
//! in wire form (RFC 1035 §2.3.4). Labels may contain letters, digits, `-`
//! and `_`: underscores are not host-name characters, but they appear in
//! real DNS names (`_dmarc`, tracking hosts) and in published lists.

use std::borrow::Cow;

use dnsgate_common::name::{MAX_LABEL_LEN, ROOT_KEY, label_hash, suffix_key};

/// Maximum length of a name in presentation form without the trailing dot.
pub const MAX_NAME_LEN: usize = 253;

/// Brings a name to normal form, or returns why it is not a valid name.
pub fn normalize(raw: &str) -> Result<Cow<'_, str>, String> {
    let trimmed = raw.strip_suffix('.').unwrap_or(raw);
    if trimmed.is_empty() {
        return Err(format!("{raw:?} is not a name"));
    }
    let name: Cow<'_, str> = if trimmed.is_ascii() {
        if trimmed.bytes().any(|byte| byte.is_ascii_uppercase()) {
            Cow::Owned(trimmed.to_ascii_lowercase())
        } else {
            Cow::Borrowed(trimmed)
        }
    } else {
        match idna::domain_to_ascii(trimmed) {
            Ok(ascii) => Cow::Owned(ascii),
            Err(_) => return Err(format!("{raw:?} is not a valid internationalised name")),
        }
    };
    validate(&name).map_err(|reason| format!("{raw:?}: {reason}"))?;
    Ok(name)
}

/// Checks the length and characters of a lowercase ASCII name.
fn validate(name: &str) -> Result<(), &'static str> {
    if name.len() > MAX_NAME_LEN {
        return Err("the name is longer than 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("the name has an empty label");
        }
        if label.len() > MAX_LABEL_LEN {
            return Err("a label is longer than 63 characters");
        }
        let allowed = |byte: u8| {
            byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-' || byte == b'_'
        };
        if !label.bytes().all(allowed) {
            return Err(
                "the name contains a character other than letters, digits, '-', '_' and '.'",
            );
        }
    }
    Ok(())
}

/// Keys of a normalised name's suffixes from the top-level label down to
/// the whole name, as the kernel computes them: for `a.example.com` the keys
/// of `com`, `example.com` and `a.example.com`.
pub fn suffix_keys(name: &str) -> impl Iterator<Item = u64> + '_ {
    name.rsplit('.').scan(ROOT_KEY, |key, label| {
        *key = suffix_key(*key, label_hash(label.as_bytes()));
        Some(*key)
    })
}

/// Key of a normalised name.
pub fn key(name: &str) -> u64 {
    suffix_keys(name).last().unwrap_or(ROOT_KEY)
}

/// Checks whether a name is written as an IPv4 or IPv6 address, which lists
/// use for rules on addresses in responses rather than on names.
pub fn is_address_literal(name: &str) -> bool {
    name.parse::<std::net::IpAddr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowercases_and_drops_trailing_dot() {
        assert_eq!(normalize("Ads.Example.COM.").unwrap(), "ads.example.com");
    }

    #[test]
    fn keeps_normal_names_borrowed() {
        assert!(matches!(
            normalize("ads.example.com").unwrap(),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn converts_idn_to_punycode() {
        assert_eq!(
            normalize("bücher.example").unwrap(),
            "xn--bcher-kva.example"
        );
        assert_eq!(normalize("MÜNCHEN.de").unwrap(), "xn--mnchen-3ya.de");
    }

    #[test]
    fn accepts_underscores_and_hyphens() {
        assert_eq!(
            normalize("_dmarc.my-host.example").unwrap(),
            "_dmarc.my-host.example"
        );
    }

    #[test]
    fn rejects_bad_names() {
        assert!(normalize("").is_err());
        assert!(normalize(".").is_err());
        assert!(normalize("a..b").is_err());
        assert!(normalize(".a.b").is_err());
        assert!(normalize(&format!("{}.com", "a".repeat(64))).is_err());
        assert!(normalize("ads.example.com/path").is_err());
        assert!(normalize("*.example.com").is_err());
        assert!(normalize("ex ample.com").is_err());
    }

    #[test]
    fn length_limit_is_253_characters() {
        let name = format!("{0}.{0}.{0}.{1}", "a".repeat(63), "b".repeat(61));
        assert_eq!(name.len(), 253);
        assert!(normalize(&name).is_ok());
        assert!(normalize(&format!("x{name}")).is_err());
    }

    #[test]
    fn key_matches_common_name_key() {
        for name in ["com", "example.com", "a.b.example.com"] {
            assert_eq!(Ok(key(name)), dnsgate_common::name::name_key(name));
        }
        let keys: Vec<u64> = suffix_keys("a.example.com").collect();
        assert_eq!(keys.len(), 3);
        assert_eq!(Ok(keys[1]), dnsgate_common::name::name_key("example.com"));
    }

    #[test]
    fn address_literals() {
        assert!(is_address_literal("0.0.0.0"));
        assert!(is_address_literal("::1"));
        assert!(!is_address_literal("0.0.0.0.example"));
    }
}
