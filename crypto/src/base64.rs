//! Unpadded base64, the encoding the Matrix spec uses for keys, signatures and hashes.
//!
//! See the spec's [unpadded base64] appendix. Encoding never pads; decoding
//! accepts input with or without padding and tolerates non-zero trailing
//! bits, because the spec's own published test seed has them.
//!
//! [unpadded base64]: https://spec.matrix.org/v1.16/appendices/#unpadded-base64

use ruma::serde::{Base64, Base64DecodeError, base64::Standard};

/// Encodes `bytes` as unpadded base64 with the standard alphabet.
pub(crate) fn encode(bytes: &[u8]) -> String {
    Base64::<Standard, _>::new(bytes).encode()
}

/// Decodes unpadded (or padded) standard base64.
pub(crate) fn decode(text: &str) -> Result<Vec<u8>, Base64DecodeError> {
    Base64::<Standard>::parse(text).map(Base64::into_inner)
}

#[cfg(test)]
mod tests {
    use super::{decode, encode};

    /// Source: matrix-org/matrix-spec, content/appendices.md, commit
    /// d0ba2aaef801e0134a4e5c6054a2c2f41bb55531 ("Unpadded Base64").
    const SPEC_VECTORS: &[(&str, &str)] = &[
        ("", ""),
        ("f", "Zg"),
        ("fo", "Zm8"),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg"),
        ("fooba", "Zm9vYmE"),
        ("foobar", "Zm9vYmFy"),
    ];

    #[test]
    fn spec_vectors_encode() {
        for (input, expected) in SPEC_VECTORS {
            assert_eq!(encode(input.as_bytes()), *expected, "input {input:?}");
        }
    }

    #[test]
    fn spec_vectors_decode() {
        for (expected, input) in SPEC_VECTORS {
            assert_eq!(
                decode(input).unwrap(),
                expected.as_bytes(),
                "input {input:?}"
            );
        }
    }

    #[test]
    fn decode_accepts_padding() {
        assert_eq!(decode("Zm8=").unwrap(), b"fo");
    }

    #[test]
    fn decode_rejects_non_base64() {
        assert!(decode("Zm9v!").is_err());
    }
}
