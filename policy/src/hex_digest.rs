//! Digests and ids (`[u8; 32]`) as lowercase hex in human-readable formats
//! (JSON: what people and department systems read) and as 32 raw bytes in
//! the canonical binary encoding, which is therefore unchanged: signatures
//! over it stay valid. Use with `#[serde(with = "crate::hex_digest")]`, or
//! [`many`] for a `Vec<[u8; 32]>`. Reading JSON also accepts the older form,
//! an array of 32 numbers.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `digest` as lowercase hex.
pub fn to_hex(digest: &[u8; 32]) -> String {
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// 64 hex digits as a digest.
pub fn from_hex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut digest = [0u8; 32];
    for (index, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(index * 2..index * 2 + 2)?, 16).ok()?;
    }
    Some(digest)
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Readable {
    Hex(String),
    Bytes([u8; 32]),
}

impl Readable {
    fn digest<E: serde::de::Error>(self) -> Result<[u8; 32], E> {
        match self {
            Readable::Bytes(bytes) => Ok(bytes),
            Readable::Hex(text) => {
                from_hex(&text).ok_or_else(|| E::custom(format!("{text:?} is not 64 hex digits")))
            }
        }
    }
}

/// Serializes one digest.
pub fn serialize<S: Serializer>(digest: &[u8; 32], serializer: S) -> Result<S::Ok, S::Error> {
    if serializer.is_human_readable() {
        serializer.serialize_str(&to_hex(digest))
    } else {
        digest.serialize(serializer)
    }
}

/// Deserializes one digest.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<[u8; 32], D::Error> {
    if deserializer.is_human_readable() {
        Readable::deserialize(deserializer)?.digest()
    } else {
        <[u8; 32]>::deserialize(deserializer)
    }
}

/// The same for a list of digests.
pub mod many {
    use super::*;

    /// Serializes a list of digests.
    pub fn serialize<S: Serializer>(digests: &[[u8; 32]], serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_seq(digests.iter().map(to_hex))
        } else {
            digests.serialize(serializer)
        }
    }

    /// Deserializes a list of digests.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<[u8; 32]>, D::Error> {
        if deserializer.is_human_readable() {
            Vec::<Readable>::deserialize(deserializer)?.into_iter().map(Readable::digest).collect()
        } else {
            Vec::<[u8; 32]>::deserialize(deserializer)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Signed {
        #[serde(with = "crate::hex_digest")]
        id: [u8; 32],
        #[serde(with = "crate::hex_digest::many")]
        attachments: Vec<[u8; 32]>,
    }

    #[test]
    fn hex_in_json_raw_bytes_in_the_canonical_encoding() {
        let value = Signed { id: [0xab; 32], attachments: vec![[1; 32], [0xff; 32]] };
        let json = serde_json::to_value(&value).unwrap();
        assert_eq!(json["id"], "ab".repeat(32));
        assert_eq!(json["attachments"][1], "ff".repeat(32));
        assert_eq!(serde_json::from_value::<Signed>(json).unwrap(), value);
        let bytes = civmesh_certs::codec::encode(&value).unwrap();
        let raw = civmesh_certs::codec::encode(&([0xabu8; 32], vec![[1u8; 32], [0xff; 32]])).unwrap();
        assert_eq!(bytes, raw, "the binary encoding is the plain arrays'");
        assert_eq!(civmesh_certs::codec::decode_exact::<Signed>(&bytes, 1024).unwrap(), value);
        let numbers = [0xabu8; 32];
        let old = serde_json::json!({ "id": numbers, "attachments": [] });
        assert_eq!(serde_json::from_value::<Signed>(old).unwrap().id, [0xab; 32]);
        assert!(
            serde_json::from_value::<Signed>(serde_json::json!({ "id": "zz", "attachments": [] })).is_err()
        );
    }

    #[test]
    fn only_exactly_64_hex_digits_are_a_digest() {
        let digits = "0123456789abcdef".repeat(4);
        assert_eq!(from_hex(&digits).map(|digest| to_hex(&digest)), Some(digits.clone()));
        assert_eq!(from_hex(&digits.to_uppercase()).map(|digest| to_hex(&digest)), Some(digits.clone()));
        for bad in [format!("{digits}00"), digits[..62].to_string(), format!("é{}", &digits[2..])] {
            assert_eq!(from_hex(&bad), None, "{bad}");
        }
    }
}
