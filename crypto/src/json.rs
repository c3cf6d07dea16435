//! Canonical JSON: parsing JSON into ruma's [`CanonicalJsonObject`] and printing it back.
//!
//! Everything that is signed or hashed in Matrix is first encoded as
//! [canonical JSON]: object keys sorted by code point, no insignificant
//! whitespace, UTF-8 rather than `\u` escapes, and only integers in
//! `[-(2^53)+1, 2^53-1]`. The value types are ruma's; this module adds the two
//! entry points Myelin needs and errors that say where a document went wrong.
//!
//! Two parsers, because the spec has two audiences:
//!
//! - [`parse_canonical_object`] is for PDUs and anything else that will be
//!   signed or hashed. It follows the room version 6+ rules as ruma and Synapse
//!   enforce them: any number written with a fraction or an exponent (`1.0`,
//!   `1e10`) is rejected, even if its value is integral.
//! - [`canonicalize`] implements the appendix's "Canonical JSON" algorithm
//!   for arbitrary JSON text, where `-0` and `1e10` are integral numbers and
//!   print as `0` and `10000000000`.
//!
//! [canonical JSON]: https://spec.matrix.org/v1.16/appendices/#canonical-json

use ruma::{CanonicalJsonObject, CanonicalJsonValue, Int};
use serde_json::{Number, Value as JsonValue};

/// Errors from parsing or canonicalizing JSON.
///
/// Messages name the position or the path of the offending value, never the
/// value itself: documents may carry message content or key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JsonError {
    /// The text is not JSON.
    #[error("invalid JSON at line {line}, column {column}")]
    Syntax {
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
    },

    /// The top-level value is not an object.
    #[error("expected a JSON object at the top level")]
    NotAnObject,

    /// A number has a fraction or exponent where only integers are allowed,
    /// or is not integral at all.
    #[error("number at `{path}` is not an integer")]
    NotAnInteger {
        /// Dotted path to the number (`content.size`, `prev_events.0`).
        path: String,
    },

    /// An integer lies outside the canonical JSON range `[-(2^53)+1, 2^53-1]`.
    #[error("integer at `{path}` is outside the canonical JSON range")]
    IntegerOutOfRange {
        /// Dotted path to the integer.
        path: String,
    },
}

/// Parses `json` into a canonical JSON object, strictly.
///
/// This is the parser for PDUs and for every object whose signature or hash
/// will be checked: numbers must be written as plain integers. Duplicate keys
/// keep the last value, as `serde_json` does.
///
/// # Errors
///
/// [`JsonError::Syntax`] if `json` is not JSON, [`JsonError::NotAnObject`] if it
/// is not an object, and [`JsonError::NotAnInteger`] or
/// [`JsonError::IntegerOutOfRange`] for numbers canonical JSON cannot carry.
pub fn parse_canonical_object(json: &str) -> Result<CanonicalJsonObject, JsonError> {
    match to_canonical(parse(json)?, Numbers::Strict)? {
        CanonicalJsonValue::Object(object) => Ok(object),
        _ => Err(JsonError::NotAnObject),
    }
}

/// Prints `object` as canonical JSON.
///
/// These are the bytes that are signed and hashed (after the removals each
/// algorithm specifies), and the bytes Myelin stores and serves.
pub fn to_canonical_string(object: &CanonicalJsonObject) -> String {
    // ruma's `Display` is the canonical encoding: keys are sorted because the
    // object is a `BTreeMap` and `serde_json` writes compactly without `\u`
    // escapes. Serialising a canonical value cannot fail (string keys, no
    // floats), so `to_string` cannot hit its formatter-error panic.
    CanonicalJsonValue::Object(object.clone()).to_string()
}

/// Re-encodes any JSON text as canonical JSON, following the spec appendix.
///
/// Unlike [`parse_canonical_object`], any JSON value is accepted at the top
/// level, and a number is accepted whenever its value is an integer in range,
/// however it is written (`-0` becomes `0`, `1e10` becomes `10000000000`).
///
/// # Errors
///
/// [`JsonError::Syntax`] if `json` is not JSON, [`JsonError::NotAnInteger`] for
/// a number with a fractional part, [`JsonError::IntegerOutOfRange`] for an
/// integer outside the canonical range.
pub fn canonicalize(json: &str) -> Result<String, JsonError> {
    Ok(to_canonical(parse(json)?, Numbers::Integral)?.to_string())
}

/// How numbers written in the source text are treated.
#[derive(Clone, Copy)]
enum Numbers {
    /// Only numbers written as integers (no fraction, no exponent).
    Strict,
    /// Any number whose value is an integer.
    Integral,
}

/// The canonical JSON integer bound, 2^53 - 1.
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

fn parse(json: &str) -> Result<JsonValue, JsonError> {
    serde_json::from_str(json).map_err(|error| JsonError::Syntax {
        line: error.line(),
        column: error.column(),
    })
}

fn to_canonical(value: JsonValue, numbers: Numbers) -> Result<CanonicalJsonValue, JsonError> {
    Ok(match value {
        JsonValue::Null => CanonicalJsonValue::Null,
        JsonValue::Bool(b) => CanonicalJsonValue::Bool(b),
        JsonValue::String(s) => CanonicalJsonValue::String(s),
        JsonValue::Number(n) => CanonicalJsonValue::Integer(to_int(&n, numbers)?),
        JsonValue::Array(items) => CanonicalJsonValue::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(index, item)| {
                    to_canonical(item, numbers).map_err(|e| prefix_path(e, &index.to_string()))
                })
                .collect::<Result<_, _>>()?,
        ),
        JsonValue::Object(map) => CanonicalJsonValue::Object(
            map.into_iter()
                .map(|(key, item)| match to_canonical(item, numbers) {
                    Ok(item) => Ok((key, item)),
                    Err(e) => Err(prefix_path(e, &key)),
                })
                .collect::<Result<_, _>>()?,
        ),
    })
}

fn to_int(number: &Number, numbers: Numbers) -> Result<Int, JsonError> {
    let out_of_range = || JsonError::IntegerOutOfRange {
        path: String::new(),
    };
    if let Some(i) = number.as_i64() {
        return Int::new(i).ok_or_else(out_of_range);
    }
    if number.is_u64() {
        // Only values above i64::MAX get here, far outside the range.
        return Err(out_of_range());
    }
    let not_an_integer = || JsonError::NotAnInteger {
        path: String::new(),
    };
    match (numbers, number.as_f64()) {
        (Numbers::Integral, Some(f)) if f.is_finite() && f.fract() == 0.0 => {
            if f.abs() > MAX_SAFE_INTEGER {
                return Err(out_of_range());
            }
            // Exact: `f` is integral and within ±(2^53 - 1). `-0.0` becomes 0.
            #[allow(clippy::cast_possible_truncation)]
            Int::new(f as i64).ok_or_else(out_of_range)
        }
        _ => Err(not_an_integer()),
    }
}

/// Adds one path segment in front of the path an error carries.
fn prefix_path(error: JsonError, segment: &str) -> JsonError {
    let join = |path: String| {
        if path.is_empty() {
            segment.to_owned()
        } else {
            format!("{segment}.{path}")
        }
    };
    match error {
        JsonError::NotAnInteger { path } => JsonError::NotAnInteger { path: join(path) },
        JsonError::IntegerOutOfRange { path } => JsonError::IntegerOutOfRange { path: join(path) },
        other => other,
    }
}

#[cfg(test)]
mod tests;
