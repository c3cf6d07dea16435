use proptest::prelude::*;

use super::{JsonError, canonicalize, parse_canonical_object, to_canonical_string};
use crate::testing::canonical_object;

/// Source: matrix-org/matrix-spec, content/appendices.md, commit
/// d0ba2aaef801e0134a4e5c6054a2c2f41bb55531 ("Canonical JSON" examples),
/// as extracted to /work/shared/vectors/matrix-spec-appendices.json.
const SPEC_VECTORS: &[(&str, &str)] = &[
    ("{}\n", "{}"),
    (
        "{\n    \"one\": 1,\n    \"two\": \"Two\"\n}\n",
        r#"{"one":1,"two":"Two"}"#,
    ),
    (
        "{\n    \"b\": \"2\",\n    \"a\": \"1\"\n}\n",
        r#"{"a":"1","b":"2"}"#,
    ),
    ("{\"b\":\"2\",\"a\":\"1\"}\n", r#"{"a":"1","b":"2"}"#),
    (
        r#"{
    "auth": {
        "success": true,
        "mxid": "@john.doe:example.com",
        "profile": {
            "display_name": "John Doe",
            "three_pids": [
                {
                    "medium": "email",
                    "address": "john.doe@example.org"
                },
                {
                    "medium": "msisdn",
                    "address": "123456789"
                }
            ]
        }
    }
}
"#,
        r#"{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe","three_pids":[{"address":"john.doe@example.org","medium":"email"},{"address":"123456789","medium":"msisdn"}]},"success":true}}"#,
    ),
    ("{\n    \"a\": \"日本語\"\n}\n", r#"{"a":"日本語"}"#),
    (
        "{\n    \"本\": 2,\n    \"日\": 1\n}\n",
        r#"{"日":1,"本":2}"#,
    ),
    ("{\n    \"a\": \"\\u65E5\"\n}\n", r#"{"a":"日"}"#),
    ("{\n    \"a\": null\n}\n", r#"{"a":null}"#),
    (
        "{\n    \"a\": -0,\n    \"b\": 1e10\n}\n",
        r#"{"a":0,"b":10000000000}"#,
    ),
];

#[test]
fn spec_vectors_canonicalize_to_exact_bytes() {
    for (input, expected) in SPEC_VECTORS {
        assert_eq!(
            canonicalize(input).unwrap().as_bytes(),
            expected.as_bytes(),
            "{input:?}"
        );
    }
}

#[test]
fn spec_vectors_without_float_syntax_parse_strictly_to_exact_bytes() {
    // Every vector but the last writes its numbers as plain integers.
    for (input, expected) in &SPEC_VECTORS[..SPEC_VECTORS.len() - 1] {
        let object = parse_canonical_object(input).unwrap();
        assert_eq!(
            to_canonical_string(&object).as_bytes(),
            expected.as_bytes(),
            "{input:?}"
        );
    }
}

#[test]
fn strict_parse_rejects_exponent_with_path() {
    let err = parse_canonical_object(r#"{"content":{"sizes":[1, 1e10]}}"#).unwrap_err();
    assert!(
        matches!(&err, JsonError::NotAnInteger { path } if path == "content.sizes.1"),
        "{err:?}"
    );
}

#[test]
fn fractions_are_rejected_by_both_parsers() {
    assert!(matches!(
        canonicalize(r#"{"a":1.5}"#),
        Err(JsonError::NotAnInteger { path }) if path == "a"
    ));
    assert!(matches!(
        parse_canonical_object(r#"{"a":1.5}"#),
        Err(JsonError::NotAnInteger { path }) if path == "a"
    ));
}

#[test]
fn integer_range_is_enforced() {
    assert_eq!(
        canonicalize("[9007199254740991]").unwrap(),
        "[9007199254740991]"
    );
    assert_eq!(
        canonicalize("[-9007199254740991]").unwrap(),
        "[-9007199254740991]"
    );
    for input in [
        "[9007199254740992]",
        "[-9007199254740992]",
        "[18446744073709551615]",
        "[1e16]",
    ] {
        assert!(
            matches!(
                canonicalize(input),
                Err(JsonError::IntegerOutOfRange { .. })
            ),
            "{input}"
        );
    }
    assert!(matches!(
        parse_canonical_object(r#"{"a":{"b":9007199254740992}}"#),
        Err(JsonError::IntegerOutOfRange { path }) if path == "a.b"
    ));
}

#[test]
fn syntax_errors_and_non_objects() {
    assert!(matches!(
        parse_canonical_object("{\"a\":"),
        Err(JsonError::Syntax { line: 1, .. })
    ));
    assert!(matches!(
        parse_canonical_object("[1]"),
        Err(JsonError::NotAnObject)
    ));
}

#[test]
fn error_messages_do_not_echo_values() {
    let err = parse_canonical_object(r#"{"secret":"hunter2", "n": 0.5}"#).unwrap_err();
    assert_eq!(err.to_string(), "number at `n` is not an integer");
}

proptest! {
    #[test]
    fn canonical_text_round_trips(object in canonical_object()) {
        let text = to_canonical_string(&object);
        let parsed = parse_canonical_object(&text).unwrap();
        prop_assert_eq!(&parsed, &object);
        prop_assert_eq!(to_canonical_string(&parsed), text.clone());
        prop_assert_eq!(canonicalize(&text).unwrap(), text);
    }

    #[test]
    fn canonicalize_ignores_formatting(object in canonical_object()) {
        let pretty = serde_json::to_string_pretty(&object).unwrap();
        prop_assert_eq!(canonicalize(&pretty).unwrap(), to_canonical_string(&object));
    }
}
