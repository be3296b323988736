//! A record field's value, in JSON as the plain value and in binary as a
//! tagged enum.

use serde::{Deserialize, Serialize};

use crate::model::FieldType;

/// A record field's value. In JSON it is the plain JSON value (`null`,
/// `true`, `42`, `"text"`); in the canonical binary encoding it is a tagged
/// enum, since bincode cannot decode untagged values.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FieldValue {
    /// No value.
    Null,
    /// true or false.
    Boolean(bool),
    /// An integer.
    Integer(i64),
    /// Text (also dates, as `YYYY-MM-DD`).
    Text(String),
}

/// The value as a person reads it: text as it is, numbers and booleans
/// written out, nothing for null.
impl std::fmt::Display for FieldValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FieldValue::Null => Ok(()),
            FieldValue::Boolean(flag) => write!(f, "{flag}"),
            FieldValue::Integer(number) => write!(f, "{number}"),
            FieldValue::Text(text) => f.write_str(text),
        }
    }
}

/// The tagged form used by binary encodings.
#[derive(Serialize, Deserialize)]
enum TaggedFieldValue {
    Null,
    Boolean(bool),
    Integer(i64),
    Text(String),
}

/// The plain form used by JSON.
#[derive(Deserialize)]
#[serde(untagged)]
enum PlainFieldValue {
    Null,
    Boolean(bool),
    Integer(i64),
    Text(String),
}

impl Serialize for FieldValue {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            match self {
                FieldValue::Null => serializer.serialize_none(),
                FieldValue::Boolean(flag) => serializer.serialize_bool(*flag),
                FieldValue::Integer(number) => serializer.serialize_i64(*number),
                FieldValue::Text(text) => serializer.serialize_str(text),
            }
        } else {
            let tagged = match self {
                FieldValue::Null => TaggedFieldValue::Null,
                FieldValue::Boolean(flag) => TaggedFieldValue::Boolean(*flag),
                FieldValue::Integer(number) => TaggedFieldValue::Integer(*number),
                FieldValue::Text(text) => TaggedFieldValue::Text(text.clone()),
            };
            tagged.serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for FieldValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            Ok(match PlainFieldValue::deserialize(deserializer)? {
                PlainFieldValue::Null => FieldValue::Null,
                PlainFieldValue::Boolean(flag) => FieldValue::Boolean(flag),
                PlainFieldValue::Integer(number) => FieldValue::Integer(number),
                PlainFieldValue::Text(text) => FieldValue::Text(text),
            })
        } else {
            Ok(match TaggedFieldValue::deserialize(deserializer)? {
                TaggedFieldValue::Null => FieldValue::Null,
                TaggedFieldValue::Boolean(flag) => FieldValue::Boolean(flag),
                TaggedFieldValue::Integer(number) => FieldValue::Integer(number),
                TaggedFieldValue::Text(text) => FieldValue::Text(text),
            })
        }
    }
}

impl FieldValue {
    /// Whether the value fits `field_type` (null fits any type).
    pub fn fits(&self, field_type: FieldType) -> bool {
        match (self, field_type) {
            (FieldValue::Null, _) => true,
            (FieldValue::Text(_), FieldType::Text) => true,
            (FieldValue::Text(text), FieldType::Date) => is_iso_date(text),
            (FieldValue::Integer(_), FieldType::Integer) => true,
            (FieldValue::Boolean(_), FieldType::Boolean) => true,
            _ => false,
        }
    }
}

fn is_iso_date(text: &str) -> bool {
    let bytes = text.as_bytes();
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return false;
    }
    let digits = |range: std::ops::Range<usize>| -> Option<u32> { text.get(range)?.parse().ok() };
    match (digits(0..4), digits(5..7), digits(8..10)) {
        (Some(_), Some(month), Some(day)) => (1..=12).contains(&month) && (1..=31).contains(&day),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_checked_against_types() {
        let cases = [
            (FieldValue::Text("x".into()), FieldType::Text, true),
            (FieldValue::Text("2024-02-30".into()), FieldType::Date, true),
            (FieldValue::Text("2024-13-01".into()), FieldType::Date, false),
            (FieldValue::Text("yesterday".into()), FieldType::Date, false),
            (FieldValue::Text("2024/02/01".into()), FieldType::Date, false),
            (FieldValue::Text("2024-02/01".into()), FieldType::Date, false),
            (FieldValue::Text("2024/02-01".into()), FieldType::Date, false),
            (FieldValue::Integer(3), FieldType::Text, false),
            (FieldValue::Integer(3), FieldType::Integer, true),
            (FieldValue::Boolean(true), FieldType::Boolean, true),
            (FieldValue::Null, FieldType::Integer, true),
        ];
        for (value, field_type, fits) in cases {
            assert_eq!(value.fits(field_type), fits, "{value:?} as {field_type:?}");
        }
    }

    #[test]
    fn field_values_round_trip_in_both_encodings() {
        let values = vec![
            FieldValue::Null,
            FieldValue::Boolean(true),
            FieldValue::Integer(-7),
            FieldValue::Text("静安寺街道 1号".into()),
        ];
        let bytes = civmesh_certs::codec::encode(&values).unwrap();
        assert_eq!(civmesh_certs::codec::decode_exact::<Vec<FieldValue>>(&bytes, 1024).unwrap(), values);
        let json = serde_json::to_string(&values).unwrap();
        assert_eq!(json, r#"[null,true,-7,"静安寺街道 1号"]"#);
        assert_eq!(serde_json::from_str::<Vec<FieldValue>>(&json).unwrap(), values);
    }
}
