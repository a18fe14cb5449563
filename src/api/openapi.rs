//! The OpenAPI 3.1 document of the whole API, served at
//! `/api/v1/openapi.json`. It is a file (`openapi.json`, beside this one),
//! written by hand and embedded, so that it reads as the API's reference;
//! tests hold it to [`super::ROUTES`], to the error codes, to the fields the
//! validators accept and to the views the handlers send.

/// The document, as served.
pub const DOCUMENT: &str = include_str!("openapi.json");

/// The document as a JSON value.
pub fn document() -> serde_json::Value {
    // The file is checked to parse by a test; a broken build still serves
    // something rather than panicking.
    serde_json::from_str(DOCUMENT).unwrap_or(serde_json::Value::Null)
}
