//! Request bodies: JSON text to a request struct, with the one rule for
//! which failures are malformed JSON (400 `invalid_json`) and which are a
//! wrong shape (422 `validation_failed`); and the one rule for a whole
//! number in a query string ([`whole_number`]).

use serde::de::DeserializeOwned;

use crate::core::error::Error;

/// Parses a JSON object body into `T`.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    // RFC 8259 §8.1: JSON text is UTF-8 (serde_json checks only the strings it keeps).
    if std::str::from_utf8(bytes).is_err() {
        return Err(Error::InvalidJson("the request body is not UTF-8".into()));
    }
    // serde's derived structs also accept a JSON array of the field values in
    // order; every body we read is an object, so refuse anything else first.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            Ok(_) => Error::validation("validation_failed", "the request body must be a JSON object"),
            Err(e) => Error::InvalidJson(format!("the request body is not valid JSON: {e}")),
        });
    }
    serde_json::from_slice(bytes).map_err(|e| {
        // A shape error can be met before a syntax error further on (an
        // unknown field in a truncated body): broken JSON is always a 400.
        let syntax = if e.is_data() { serde_json::from_slice::<serde::de::IgnoredAny>(bytes).err() } else { None };
        match syntax {
            Some(syntax) => Error::InvalidJson(format!("the request body is not valid JSON: {syntax}")),
            None if e.is_data() => Error::validation("validation_failed", e.to_string()),
            None => Error::InvalidJson(format!("the request body is not valid JSON: {e}")),
        }
    })
}

/// A query parameter's whole number: ASCII digits only — no sign, space or
/// other form that Rust's `parse` would also take (`+5`) — fitting a `u32`.
pub fn whole_number(v: &str) -> Option<u32> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::flows::account::LoginRequest;

    fn code(body: &str) -> &'static str {
        parse_json::<LoginRequest>(body.as_bytes()).unwrap_err().problem().code
    }

    #[test]
    fn a_whole_number_is_digits_and_nothing_else() {
        assert_eq!((whole_number("0"), whole_number("42"), whole_number("007")), (Some(0), Some(42), Some(7)));
        assert_eq!(whole_number("4294967295"), Some(u32::MAX));
        for bad in ["", "+5", "-5", " 5", "5 ", "5.0", "1e3", "0x10", "4294967296", "５"] {
            assert_eq!(whole_number(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn broken_json_is_invalid_json_even_after_a_shape_error() {
        assert_eq!(
            parse_json::<LoginRequest>(b"{\"email\": \"\xff\", \"x\": 1}").unwrap_err().problem().code,
            "invalid_json"
        );
        for body in [
            "{\"a\": ",
            "{\"email\": \"x\"",
            "not json",
            "{'a': 1}",
            "{\"email\": \"a\", \"password\": \"b\"}}",
            "\u{0}",
            "[1,",
        ] {
            assert_eq!(code(body), "invalid_json", "{body}");
        }
    }

    #[test]
    fn well_formed_json_of_the_wrong_shape_is_a_validation_error() {
        for body in
            ["{\"a\": 1}", "{\"email\": 1, \"password\": \"x\"}", "{\"email\": \"a\"}", "[\"a\", \"b\"]", "42", "null"]
        {
            assert_eq!(code(body), "validation_failed", "{body}");
        }
        assert!(parse_json::<LoginRequest>(br#" {"email": "a@b.example", "password": "p"} "#).is_ok());
    }
}
