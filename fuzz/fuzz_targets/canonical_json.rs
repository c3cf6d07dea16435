//! Canonical JSON: both parsers on any text, the printed form held to the
//! spec's rules, and printing, parsing and printing again changes nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use myelin_crypto::{canonicalize, parse_canonical_object, to_canonical_string};
use myelin_fuzz::canonical::assert_canonical;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The appendix's algorithm: any JSON value, integral numbers however written.
    if let Ok(printed) = canonicalize(text) {
        assert_canonical(&printed);
        assert_eq!(
            canonicalize(&printed).ok().as_deref(),
            Some(printed.as_str()),
            "canonical text is its own canonical form"
        );
    }
    // The strict parser of what is signed and hashed.
    let Ok(object) = parse_canonical_object(text) else {
        return;
    };
    let printed = to_canonical_string(&object);
    assert_canonical(&printed);
    let reparsed = parse_canonical_object(&printed).expect("printed canonical JSON parses");
    assert_eq!(reparsed, object, "the round trip keeps every value");
    assert_eq!(to_canonical_string(&reparsed), printed);
    // What the strict parser accepts, the appendix's algorithm prints alike.
    assert_eq!(canonicalize(text).ok().as_deref(), Some(printed.as_str()));
});
