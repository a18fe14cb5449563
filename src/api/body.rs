//! Request bodies as JSON values: the size limit, syntax errors with their
//! line and column, duplicate keys refused. (PATCH merges with
//! `json_patch::merge`, RFC 7386.)
//!
//! Every body is read into a [`Value`] first and validated from there (see
//! [`super::validate`]): one reader for POST, PUT and the result of a
//! merge. serde_json's own `Value` keeps the last of two equal keys without
//! a word, so this reader builds the value itself and refuses them.

use super::error::{ApiError, ErrorCode};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::cell::RefCell;
use std::fmt;

/// Parses a request body of at most `limit` bytes.
pub fn read_json(body: &[u8], limit: usize) -> Result<Value, ApiError> {
    if body.len() > limit {
        return Err(ApiError::body_too_large(limit));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(
            ErrorCode::MalformedJson,
            "the request body is empty; expected a JSON object",
        ));
    }
    let duplicate = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = ValueSeed {
        at: &Seg::Root,
        duplicate: &duplicate,
    }
    .deserialize(&mut de)
    .and_then(|value| de.end().map(|()| value));
    parsed.map_err(|e| {
        let message = message_of(&e);
        match duplicate.into_inner() {
            Some(field) => ApiError::at(
                ErrorCode::DuplicateKey,
                field,
                format!("{message} at line {}, column {}", e.line(), e.column()),
            ),
            None => ApiError::new(
                ErrorCode::MalformedJson,
                format!(
                    "malformed JSON at line {}, column {}: {message}",
                    e.line(),
                    e.column()
                ),
            ),
        }
    })
}

/// `text` cut to 64 characters (with `…`), for error messages and paths
/// that quote what a client sent: the body can be 16 MiB, the error should
/// not be.
pub(crate) fn shorten(text: &str) -> std::borrow::Cow<'_, str> {
    const MAX: usize = 64;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]).into(),
        None => text.into(),
    }
}

/// serde_json's message without the " at line L column C" it appends.
fn message_of(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    text.strip_suffix(&suffix).unwrap_or(&text).to_string()
}

/// Where the reader is, as a chain on the stack: rendered only when a
/// duplicate key needs naming, so reading costs no allocations for it.
enum Seg<'a> {
    Root,
    Key(&'a Seg<'a>, &'a str),
    Index(&'a Seg<'a>, usize),
}

impl Seg<'_> {
    fn render(&self, out: &mut String) {
        match self {
            Seg::Root => {}
            Seg::Key(parent, key) => {
                parent.render(out);
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&shorten(key));
            }
            Seg::Index(parent, i) => {
                parent.render(out);
                out.push_str(&format!("[{i}]"));
            }
        }
    }
}

/// Builds a [`Value`], refusing duplicate keys; records the path of the
/// first duplicate in `duplicate`.
struct ValueSeed<'a> {
    at: &'a Seg<'a>,
    duplicate: &'a RefCell<Option<String>>,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // JSON text has no NaN or infinity, so this is always a number.
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        loop {
            let seed = ValueSeed {
                at: &Seg::Index(self.at, out.len()),
                duplicate: self.duplicate,
            };
            match seq.next_element_seed(seed)? {
                Some(v) => out.push(v),
                None => return Ok(Value::Array(out)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let seg = Seg::Key(self.at, &key);
            let value = map.next_value_seed(ValueSeed {
                at: &seg,
                duplicate: self.duplicate,
            })?;
            if out.contains_key(&key) {
                let mut path = String::new();
                seg.render(&mut path);
                *self.duplicate.borrow_mut() = Some(path);
                return Err(de::Error::custom(format_args!(
                    "duplicate key `{}` (a key may appear once in an object)",
                    shorten(&key)
                )));
            }
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}
