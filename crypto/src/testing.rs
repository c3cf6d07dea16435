//! Shared test fixtures: the published signing keys and proptest strategies.

use proptest::prelude::*;
use ruma::{CanonicalJsonObject, CanonicalJsonValue, Int};

use crate::SigningKey;

/// Source: matrix-org/matrix-spec, content/appendices.md, commit
/// d0ba2aaef801e0134a4e5c6054a2c2f41bb55531 ("Signing Key": the seed of
/// `ed25519:1` for server `domain`). The public key is not stated in the spec;
/// it was derived with PyNaCl by the extractor of
/// /work/shared/vectors/matrix-spec-appendices.json.
pub(crate) const SPEC_SEED: &str = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1";
pub(crate) const SPEC_PUBLIC_KEY: &str = "XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI";

/// Source: ruma/ruma, crates/ruma-signatures/src/lib.rs (mod tests, `pkcs8()`),
/// commit 0908aaa9847093ecb32bc6edf0af525f726717fd: the seed inside ruma's
/// PKCS#8 v2 test key, also `ed25519:1` for server `domain`.
pub(crate) const RUMA_SEED: &str = "2OjO919uwYS3oMP7tR/g+In9i9M1dXaYg9z+0DRP7q0";

/// The spec appendix's test key, `ed25519:1`.
pub(crate) fn spec_key() -> SigningKey {
    SigningKey::from_seed_base64(SPEC_SEED, "1").unwrap()
}

/// ruma's test key, `ed25519:1`.
pub(crate) fn ruma_key() -> SigningKey {
    SigningKey::from_seed_base64(RUMA_SEED, "1").unwrap()
}

/// Parses a JSON object literal used as a test vector.
pub(crate) fn object(json: &str) -> CanonicalJsonObject {
    crate::parse_canonical_object(json).unwrap()
}

/// Any canonical JSON value, nested up to four levels.
pub(crate) fn canonical_value() -> impl Strategy<Value = CanonicalJsonValue> {
    let leaf = prop_oneof![
        Just(CanonicalJsonValue::Null),
        any::<bool>().prop_map(CanonicalJsonValue::Bool),
        (-9_007_199_254_740_991_i64..=9_007_199_254_740_991)
            .prop_map(|i| CanonicalJsonValue::Integer(Int::new(i).unwrap())),
        any::<String>().prop_map(CanonicalJsonValue::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(CanonicalJsonValue::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..8)
                .prop_map(CanonicalJsonValue::Object),
        ]
    })
}

/// Any canonical JSON object.
pub(crate) fn canonical_object() -> impl Strategy<Value = CanonicalJsonObject> {
    prop::collection::btree_map(any::<String>(), canonical_value(), 0..8)
}
