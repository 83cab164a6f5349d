//! Names at Kubernetes' limits.
//!
//! Users may give a CacheInstance any DNS-subdomain name up to 253 characters in a namespace of
//! up to 63. Some places the operator puts that name cap shorter: label values stop at 63
//! characters, and object names the operator derives (an Event is named
//! `<object>.<timestamp>`) at 253. Such values are shortened the way Kubernetes shortens
//! generated names: a prefix of the original, then a hash of the whole, so they stay unique,
//! stable and recognisable.

use sha2::{Digest, Sha256};

/// Longest label value Kubernetes accepts.
pub const LABEL_VALUE_MAX: usize = 63;
/// Longest object name (DNS subdomain) Kubernetes accepts.
pub const NAME_MAX: usize = 253;

/// Hex digits of the hash appended to a shortened value.
const HASH_HEX: usize = 10;

/// `value` if it fits in `max` characters, else its first characters and a hash of the whole
/// (`<prefix>-<10 hex>`), with the prefix ending in a letter or digit so that the result is a
/// valid label value and DNS subdomain whenever `value` is one.
pub fn shorten(value: &str, max: usize) -> String {
    if value.len() <= max {
        return value.to_string();
    }
    let digest = Sha256::digest(value.as_bytes());
    let hash: String = digest
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        .chars()
        .take(HASH_HEX)
        .collect();
    let room = max.saturating_sub(HASH_HEX + 1);
    let mut end = room.min(value.len());
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    let prefix = value[..end].trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    if prefix.is_empty() {
        hash
    } else {
        format!("{prefix}-{hash}")
    }
}

/// A label value naming an object: its name, shortened with a hash past 63 characters.
pub fn label_value(name: &str) -> String {
    shorten(name, LABEL_VALUE_MAX)
}

/// The name of an Event about object `name` created at `nanos` (as `kubectl` and kube's
/// recorder name them, `<name>.<hex nanos>`), with the object's part shortened so that the
/// whole stays a valid object name.
pub fn event_name(name: &str, nanos: i128) -> String {
    let suffix = format!(".{nanos:x}");
    format!("{}{suffix}", shorten(name, NAME_MAX - suffix.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_label_value(v: &str) -> bool {
        v.len() <= 63
            && (v.is_empty()
                || (v.starts_with(|c: char| c.is_ascii_alphanumeric())
                    && v.ends_with(|c: char| c.is_ascii_alphanumeric())
                    && v.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))))
    }

    #[test]
    fn short_values_are_kept() {
        assert_eq!(label_value("crm-cache"), "crm-cache");
        let exactly = "a".repeat(63);
        assert_eq!(label_value(&exactly), exactly);
    }

    #[test]
    fn long_values_are_shortened_uniquely_and_stably() {
        let a = format!("{}-a", "cache.".repeat(40));
        let b = format!("{}-b", "cache.".repeat(40));
        let (sa, sb) = (label_value(&a), label_value(&b));
        assert!(is_label_value(&sa), "{sa}");
        assert!(is_label_value(&sb), "{sb}");
        assert_ne!(sa, sb);
        assert_eq!(sa, label_value(&a));
        assert!(sa.starts_with("cache.cache."));
        // The prefix never ends in a separator.
        let dots = format!("{}x", "a.".repeat(40));
        assert!(is_label_value(&label_value(&dots)));
    }

    #[test]
    fn event_names_fit_for_the_longest_object_names() {
        let name = format!("{}z", "x".repeat(252));
        let event = event_name(&name, 0x18ed_14a2_8e0b_5990);
        assert!(event.len() <= NAME_MAX, "{}", event.len());
        assert!(event.ends_with(".18ed14a28e0b5990"));
        assert_eq!(event_name("crm-cache", 255), "crm-cache.ff");
    }
}
