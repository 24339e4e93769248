//! Typed access to plist dictionary keys (absent vs wrong type are different errors) and the matching
//! writers that leave `None` out, so every module reads and writes Apple keys the same way.

use plist::{Dictionary, Value};

use crate::ProtocolError;

fn wrong_type(key: &'static str, expected: &str) -> ProtocolError {
    ProtocolError::InvalidValue {
        key,
        reason: format!("expected {expected}"),
    }
}

/// Read-only view of a dictionary that turns plist values into Rust values with precise errors.
#[derive(Clone, Copy)]
pub(crate) struct Fields<'a>(pub(crate) &'a Dictionary);

impl<'a> Fields<'a> {
    pub(crate) fn opt_string(&self, key: &'static str) -> Result<Option<String>, ProtocolError> {
        match self.0.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(wrong_type(key, "a string")),
        }
    }

    pub(crate) fn string(&self, key: &'static str) -> Result<String, ProtocolError> {
        self.opt_string(key)?.ok_or(ProtocolError::MissingKey(key))
    }

    pub(crate) fn opt_bool(&self, key: &'static str) -> Result<Option<bool>, ProtocolError> {
        match self.0.get(key) {
            None => Ok(None),
            Some(Value::Boolean(b)) => Ok(Some(*b)),
            Some(_) => Err(wrong_type(key, "a boolean")),
        }
    }

    pub(crate) fn bool(&self, key: &'static str) -> Result<bool, ProtocolError> {
        self.opt_bool(key)?.ok_or(ProtocolError::MissingKey(key))
    }

    pub(crate) fn opt_int(&self, key: &'static str) -> Result<Option<i64>, ProtocolError> {
        match self.0.get(key) {
            None => Ok(None),
            Some(Value::Integer(i)) => i
                .as_signed()
                .map(Some)
                .ok_or_else(|| wrong_type(key, "an integer within i64")),
            Some(_) => Err(wrong_type(key, "an integer")),
        }
    }

    pub(crate) fn opt_data(&self, key: &'static str) -> Result<Option<Vec<u8>>, ProtocolError> {
        match self.0.get(key) {
            None => Ok(None),
            Some(Value::Data(d)) => Ok(Some(d.clone())),
            Some(_) => Err(wrong_type(key, "data")),
        }
    }

    pub(crate) fn data(&self, key: &'static str) -> Result<Vec<u8>, ProtocolError> {
        self.opt_data(key)?.ok_or(ProtocolError::MissingKey(key))
    }

    pub(crate) fn opt_dict(
        &self,
        key: &'static str,
    ) -> Result<Option<&'a Dictionary>, ProtocolError> {
        match self.0.get(key) {
            None => Ok(None),
            Some(Value::Dictionary(d)) => Ok(Some(d)),
            Some(_) => Err(wrong_type(key, "a dictionary")),
        }
    }

    pub(crate) fn dict(&self, key: &'static str) -> Result<&'a Dictionary, ProtocolError> {
        self.opt_dict(key)?.ok_or(ProtocolError::MissingKey(key))
    }

    pub(crate) fn opt_array(
        &self,
        key: &'static str,
    ) -> Result<Option<&'a [Value]>, ProtocolError> {
        match self.0.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a.as_slice())),
            Some(_) => Err(wrong_type(key, "an array")),
        }
    }

    pub(crate) fn opt_strings(
        &self,
        key: &'static str,
    ) -> Result<Option<Vec<String>>, ProtocolError> {
        let Some(items) = self.opt_array(key)? else {
            return Ok(None);
        };
        items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(wrong_type(key, "an array of strings")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    pub(crate) fn strings(&self, key: &'static str) -> Result<Vec<String>, ProtocolError> {
        self.opt_strings(key)?.ok_or(ProtocolError::MissingKey(key))
    }

    /// The dictionaries of an array key (every element must be a dictionary).
    pub(crate) fn opt_dicts(
        &self,
        key: &'static str,
    ) -> Result<Option<Vec<&'a Dictionary>>, ProtocolError> {
        let Some(items) = self.opt_array(key)? else {
            return Ok(None);
        };
        items
            .iter()
            .map(|v| {
                v.as_dictionary()
                    .ok_or_else(|| wrong_type(key, "an array of dictionaries"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}

/// Builds a dictionary in Apple's key order of our choosing; `None` values are left out entirely.
#[derive(Default)]
pub(crate) struct DictBuilder(pub(crate) Dictionary);

impl DictBuilder {
    pub(crate) fn new() -> Self {
        Self(Dictionary::new())
    }

    pub(crate) fn value(mut self, key: &str, value: Value) -> Self {
        self.0.insert(key.to_owned(), value);
        self
    }

    pub(crate) fn string(self, key: &str, value: &str) -> Self {
        self.value(key, Value::String(value.to_owned()))
    }

    pub(crate) fn opt_string(self, key: &str, value: Option<&String>) -> Self {
        match value {
            Some(v) => self.string(key, v),
            None => self,
        }
    }

    pub(crate) fn bool(self, key: &str, value: bool) -> Self {
        self.value(key, Value::Boolean(value))
    }

    pub(crate) fn opt_bool(self, key: &str, value: Option<bool>) -> Self {
        match value {
            Some(v) => self.bool(key, v),
            None => self,
        }
    }

    pub(crate) fn int(self, key: &str, value: i64) -> Self {
        self.value(key, Value::Integer(value.into()))
    }

    pub(crate) fn opt_int(self, key: &str, value: Option<i64>) -> Self {
        match value {
            Some(v) => self.int(key, v),
            None => self,
        }
    }

    pub(crate) fn data(self, key: &str, value: &[u8]) -> Self {
        self.value(key, Value::Data(value.to_vec()))
    }

    pub(crate) fn opt_data(self, key: &str, value: Option<&Vec<u8>>) -> Self {
        match value {
            Some(v) => self.data(key, v),
            None => self,
        }
    }

    pub(crate) fn strings(self, key: &str, values: &[String]) -> Self {
        self.value(
            key,
            Value::Array(values.iter().cloned().map(Value::String).collect()),
        )
    }

    pub(crate) fn opt_strings(self, key: &str, values: Option<&Vec<String>>) -> Self {
        match values {
            Some(v) => self.strings(key, v),
            None => self,
        }
    }

    pub(crate) fn dict(self, key: &str, value: Dictionary) -> Self {
        self.value(key, Value::Dictionary(value))
    }

    pub(crate) fn opt_dict(self, key: &str, value: Option<Dictionary>) -> Self {
        match value {
            Some(v) => self.dict(key, v),
            None => self,
        }
    }

    pub(crate) fn build(self) -> Dictionary {
        self.0
    }
}

/// serde helpers so binary fields travel as standard base64 strings in the API's JSON.
pub(crate) mod base64_bytes {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD
            .decode(text.trim())
            .map_err(|e| serde::de::Error::custom(format!("invalid base64: {e}")))
    }
}

/// [`base64_bytes`] for optional fields (`null`/absent = `None`).
pub(crate) mod base64_opt {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(
        bytes: &Option<Vec<u8>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => s.serialize_str(&STANDARD.encode(b)),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(text) => STANDARD
                .decode(text.trim())
                .map(Some)
                .map_err(|e| serde::de::Error::custom(format!("invalid base64: {e}"))),
            None => Ok(None),
        }
    }
}
