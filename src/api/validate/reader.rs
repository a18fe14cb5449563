//! Reading JSON objects field by field for validation: every problem is
//! collected with its code and path instead of stopping at the first, a
//! field can be absent, invalid or read ([`Got`]), and unknown keys are
//! reported (with the nearest known name) when an object is opened.

use crate::api::body::shorten;
use crate::api::error::{ApiError, ErrorCode, FieldError};
use serde_json::{Map, Value};

/// The problems found so far; validation goes on after one, so that a
/// client learns of all of them at once.
#[derive(Default)]
pub(super) struct Problems(Vec<FieldError>);

impl Problems {
    pub(super) fn push(&mut self, code: ErrorCode, field: &str, message: impl Into<String>) {
        let field = (!field.is_empty()).then(|| field.to_string());
        self.0.push(FieldError::new(code, field, message));
    }

    pub(super) fn finish<T>(self, value: Option<T>) -> Result<T, ApiError> {
        if let Some(error) = ApiError::from_problems(self.0) {
            return Err(error);
        }
        // A reader returns `None` only after pushing a problem; this is a
        // guard, not a path.
        value.ok_or_else(|| ApiError::internal("validation produced nothing"))
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) fn len(&self) -> usize {
        self.0.len()
    }
}

/// `at.name`, or `name` at the top.
pub(super) fn join_path(at: &str, name: &str) -> String {
    if at.is_empty() {
        name.to_string()
    } else {
        format!("{at}.{name}")
    }
}

pub(super) fn index_path(at: &str, i: usize) -> String {
    format!("{at}[{i}]")
}

// --- reading JSON objects ---

/// A field as read: absent (or `null`), present but invalid (and already
/// reported), or its value. Keeping "invalid" apart from "absent" stops a
/// bad value from being replaced by the default and then reported again
/// through a rule that depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Got<T> {
    Absent,
    Bad,
    Ok(T),
}

impl<T> Got<T> {
    pub(super) fn ok(self) -> Option<T> {
        match self {
            Got::Ok(v) => Some(v),
            _ => None,
        }
    }

    pub(super) fn or(self, default: T) -> Option<T> {
        match self {
            Got::Ok(v) => Some(v),
            Got::Absent => Some(default),
            Got::Bad => None,
        }
    }

    pub(super) fn as_ref(&self) -> Got<&T> {
        match self {
            Got::Ok(v) => Got::Ok(v),
            Got::Absent => Got::Absent,
            Got::Bad => Got::Bad,
        }
    }

    pub(super) fn map<U>(self, f: impl FnOnce(T) -> U) -> Got<U> {
        match self {
            Got::Ok(v) => Got::Ok(f(v)),
            Got::Absent => Got::Absent,
            Got::Bad => Got::Bad,
        }
    }
}

/// A JSON object being read; opening it reports the keys it does not have.
pub(super) struct Obj<'v> {
    map: &'v Map<String, Value>,
    at: String,
}

/// Opens `value` as an object with `fields`, or reports it.
pub(super) fn object<'v>(
    value: &'v Value,
    at: &str,
    what: &str,
    fields: &[&str],
    p: &mut Problems,
) -> Option<Obj<'v>> {
    let Value::Object(map) = value else {
        p.push(
            ErrorCode::InvalidType,
            at,
            format!("expected {what} (a JSON object), got {}", type_name(value)),
        );
        return None;
    };
    for key in map.keys() {
        if !fields.contains(&key.as_str()) {
            let hint = match suggest(key, fields) {
                Some(near) => format!("did you mean `{near}`? "),
                None => String::new(),
            };
            p.push(
                ErrorCode::UnknownField,
                &join_path(at, &shorten(key)),
                format!(
                    "unknown field {} in {what}; {hint}the fields are: {}",
                    quoted(key),
                    fields.join(", ")
                ),
            );
        }
    }
    Some(Obj {
        map,
        at: at.to_string(),
    })
}

impl<'v> Obj<'v> {
    pub(super) fn path(&self, name: &str) -> String {
        join_path(&self.at, name)
    }

    /// The value of a field, `null` counting as absent.
    pub(super) fn get(&self, name: &str) -> Option<&'v Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    pub(super) fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub(super) fn str(&self, name: &str, p: &mut Problems) -> Got<&'v str> {
        match self.get(name) {
            None => Got::Absent,
            Some(Value::String(s)) => Got::Ok(s),
            Some(other) => {
                p.push(
                    ErrorCode::InvalidType,
                    &self.path(name),
                    format!("{name} must be a string, got {}", type_name(other)),
                );
                Got::Bad
            }
        }
    }

    /// An integer of any size JSON can write exactly; range checks are the
    /// caller's, so they can say what the range is for.
    pub(super) fn int(&self, name: &str, p: &mut Problems) -> Got<i128> {
        match self.get(name) {
            None => Got::Absent,
            Some(v) => match integer(v) {
                Some(n) => Got::Ok(n),
                None => {
                    p.push(
                        ErrorCode::InvalidType,
                        &self.path(name),
                        format!("{name} must be an integer, got {}", type_name(v)),
                    );
                    Got::Bad
                }
            },
        }
    }

    /// An integer within `lo..=hi`, else `code` with `what` as the message.
    pub(super) fn int_in(
        &self,
        name: &str,
        (lo, hi): (i128, i128),
        code: ErrorCode,
        what: &str,
        p: &mut Problems,
    ) -> Got<i128> {
        match self.int(name, p) {
            Got::Ok(n) if n < lo || n > hi => {
                p.push(code, &self.path(name), format!("{what}, got {n}"));
                Got::Bad
            }
            other => other,
        }
    }

    pub(super) fn array(&self, name: &str, p: &mut Problems) -> Got<&'v Vec<Value>> {
        match self.get(name) {
            None => Got::Absent,
            Some(Value::Array(items)) => Got::Ok(items),
            Some(other) => {
                p.push(
                    ErrorCode::InvalidType,
                    &self.path(name),
                    format!("{name} must be a list, got {}", type_name(other)),
                );
                Got::Bad
            }
        }
    }

    /// Reports a required field that is absent.
    pub(super) fn require<T>(
        &self,
        name: &str,
        got: Got<T>,
        why: &str,
        p: &mut Problems,
    ) -> Option<T> {
        match got {
            Got::Ok(v) => Some(v),
            Got::Bad => None,
            Got::Absent => {
                p.push(
                    ErrorCode::MissingField,
                    &self.path(name),
                    format!("{name} is required{why}"),
                );
                None
            }
        }
    }
}

pub(super) fn integer(v: &Value) -> Option<i128> {
    let Value::Number(n) = v else { return None };
    n.as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
}

/// A client's string as error messages quote it: cut short, so that a
/// 16 MiB value is not sent back in every problem that mentions it.
pub(super) fn quoted(text: &str) -> String {
    format!("{:?}", shorten(text))
}

pub(super) fn type_name(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {}", quoted(s)),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// A field name close to `key`: same letters in another case, or at most
/// two edits away.
fn suggest<'f>(key: &str, fields: &[&'f str]) -> Option<&'f str> {
    let lower = key.to_ascii_lowercase().replace('-', "_");
    fields
        .iter()
        .map(|f| (edit_distance(&lower, f), *f))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, f)| f)
}

fn edit_distance(a: &str, b: &str) -> usize {
    // Field names are short; an unknown key may be long, and is cut short
    // instead of costing quadratic time.
    let a: Vec<char> = a.chars().take(64).collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev.last().copied().unwrap_or(0)
}

/// One of `names` (matched exactly), else an `invalid_value` problem.
pub(super) fn one_of<T: Copy>(
    obj: &Obj<'_>,
    name: &str,
    names: &[(&str, T)],
    p: &mut Problems,
) -> Got<T> {
    match obj.str(name, p) {
        Got::Ok(s) => match names.iter().find(|(n, _)| *n == s) {
            Some((_, v)) => Got::Ok(*v),
            None => {
                let allowed: Vec<&str> = names.iter().map(|(n, _)| *n).collect();
                p.push(
                    ErrorCode::InvalidValue,
                    &obj.path(name),
                    format!(
                        "{name} must be one of {}, got {}",
                        allowed.join(", "),
                        quoted(s)
                    ),
                );
                Got::Bad
            }
        },
        Got::Absent => Got::Absent,
        Got::Bad => Got::Bad,
    }
}
