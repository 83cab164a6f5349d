//! In-process digests: a `u64` that stands for a value the operator only compares with later
//! values of the same kind (credentials, labels, messages, resourceVersions, Event keys), kept
//! instead of the value itself. Only ever compared within one process: the hash is not stable
//! across Rust versions.

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher, Hash};

/// The digest of `value`.
pub fn of<T: Hash + ?Sized>(value: &T) -> u64 {
    BuildHasherDefault::<DefaultHasher>::default().hash_one(value)
}

#[cfg(test)]
mod tests {
    #[test]
    fn equal_values_have_equal_digests() {
        assert_eq!(super::of("a"), super::of(&"a".to_string()));
        assert_ne!(super::of("a"), super::of("b"));
    }
}
