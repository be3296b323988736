//! The one canonical binary encoding civmesh signs and hashes: bincode 2
//! (standard config, variable-length integers) over serde, with a size limit
//! on decode and no trailing bytes allowed.
//!
//! Types that go through here must encode deterministically: use `BTreeMap`
//! and `BTreeSet`, never `HashMap`.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The largest value [`decode_exact`] accepts, in bytes. Callers with a
/// tighter bound check the length before decoding.
pub const DECODE_BYTES_MAX: usize = 16 * 1024 * 1024;

/// The largest value [`decode_exact_large`] accepts, in bytes: for the few
/// stored values bounded by something other than a message (the policy
/// log's state image, whose replay window alone may take about 110 MB).
pub const LARGE_DECODE_BYTES_MAX: usize = 256 * 1024 * 1024;

/// Why a value could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The input is longer than the limit.
    #[error("{bytes} bytes exceeds the limit of {bytes_max}")]
    TooLarge {
        /// Input length.
        bytes: usize,
        /// The limit.
        bytes_max: usize,
    },
    /// The bytes do not decode as the expected type (truncated or corrupt).
    #[error("malformed encoding: {0}")]
    Malformed(String),
    /// A value decoded but bytes were left over.
    #[error("{0} trailing bytes after the value")]
    TrailingBytes(usize),
    /// The value could not be encoded.
    #[error("could not encode: {0}")]
    Encode(String),
    /// The reader failed (a disk error), before the bytes could be judged.
    #[error("cannot read the value: {0}")]
    Read(String),
    /// The bytes decode, but are not the value's one canonical encoding
    /// (a length or integer written longer than it needs, say).
    #[error("not the canonical encoding of the value it decodes to")]
    NonCanonical,
}

fn config() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<DECODE_BYTES_MAX>,
> {
    bincode::config::standard().with_limit::<DECODE_BYTES_MAX>()
}

/// Encodes `value` canonically.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, config()).map_err(|error| CodecError::Encode(error.to_string()))
}

/// Decodes exactly one `T` from all of `bytes`, which must be at most
/// `bytes_max` (and [`DECODE_BYTES_MAX`]) long.
pub fn decode_exact<T: DeserializeOwned>(bytes: &[u8], bytes_max: usize) -> Result<T, CodecError> {
    check_length(bytes, bytes_max.min(DECODE_BYTES_MAX))?;
    finish(bytes, bincode::serde::decode_from_slice(bytes, config()))
}

/// [`decode_exact`], and `bytes` must be exactly what [`encode`] makes of
/// the value: bincode reads an integer written in a longer form than it
/// needs, so two byte strings could stand for one value. Everything that is
/// signed or hashed is decoded with this, so a value has one hash.
pub fn decode_canonical<T: DeserializeOwned + Serialize>(
    bytes: &[u8],
    bytes_max: usize,
) -> Result<T, CodecError> {
    let value: T = decode_exact(bytes, bytes_max)?;
    if encode(&value)? != bytes {
        return Err(CodecError::NonCanonical);
    }
    Ok(value)
}

/// [`decode_exact`] up to [`LARGE_DECODE_BYTES_MAX`].
pub fn decode_exact_large<T: DeserializeOwned>(bytes: &[u8], bytes_max: usize) -> Result<T, CodecError> {
    check_length(bytes, bytes_max.min(LARGE_DECODE_BYTES_MAX))?;
    let config = bincode::config::standard().with_limit::<LARGE_DECODE_BYTES_MAX>();
    finish(bytes, bincode::serde::decode_from_slice(bytes, config))
}

/// Encodes `value` canonically into `writer`, and returns the bytes written.
/// For values too large to hold twice (a state image written to a file).
pub fn encode_into_writer<T: Serialize + ?Sized, W: std::io::Write>(
    value: &T,
    writer: &mut W,
) -> Result<usize, CodecError> {
    bincode::serde::encode_into_std_write(value, writer, config())
        .map_err(|error| CodecError::Encode(error.to_string()))
}

/// Decodes exactly one `T` from all of `reader`, which may hold at most
/// `bytes_max` (and [`LARGE_DECODE_BYTES_MAX`]) bytes: [`decode_exact_large`]
/// without holding the bytes.
pub fn decode_large_from_reader<T: DeserializeOwned, R: std::io::Read>(
    reader: R,
    bytes_max: usize,
) -> Result<T, CodecError> {
    let bytes_max = bytes_max.min(LARGE_DECODE_BYTES_MAX);
    let mut limited = std::io::Read::take(reader, bytes_max as u64 + 1);
    let value = decode_large_prefix_from_reader(&mut limited, bytes_max)?;
    let rest = std::io::copy(&mut limited, &mut std::io::sink())
        .map_err(|error| CodecError::Read(error.to_string()))?;
    if limited.limit() == 0 {
        return Err(CodecError::TooLarge { bytes: bytes_max + 1, bytes_max });
    }
    if rest > 0 {
        return Err(CodecError::TrailingBytes(usize::try_from(rest).unwrap_or(usize::MAX)));
    }
    Ok(value)
}

/// Decodes one `T` of at most `bytes_max` (and [`LARGE_DECODE_BYTES_MAX`])
/// bytes from the start of `reader`, reading nothing past it: what follows
/// is left to the caller.
pub fn decode_large_prefix_from_reader<T: DeserializeOwned, R: std::io::Read>(
    reader: &mut R,
    bytes_max: usize,
) -> Result<T, CodecError> {
    let bytes_max = bytes_max.min(LARGE_DECODE_BYTES_MAX);
    let mut limited = std::io::Read::take(reader, bytes_max as u64 + 1);
    let config = bincode::config::standard().with_limit::<LARGE_DECODE_BYTES_MAX>();
    let value = bincode::serde::decode_from_std_read(&mut limited, config).map_err(|error| match error {
        bincode::error::DecodeError::Io { inner, .. }
            if inner.kind() != std::io::ErrorKind::UnexpectedEof =>
        {
            CodecError::Read(inner.to_string())
        }
        other => CodecError::Malformed(other.to_string()),
    })?;
    if limited.limit() == 0 {
        return Err(CodecError::TooLarge { bytes: bytes_max + 1, bytes_max });
    }
    Ok(value)
}

fn check_length(bytes: &[u8], bytes_max: usize) -> Result<(), CodecError> {
    if bytes.len() > bytes_max {
        return Err(CodecError::TooLarge { bytes: bytes.len(), bytes_max });
    }
    Ok(())
}

fn finish<T>(
    bytes: &[u8],
    decoded: Result<(T, usize), bincode::error::DecodeError>,
) -> Result<T, CodecError> {
    let (value, read) = decoded.map_err(|error| CodecError::Malformed(error.to_string()))?;
    if read != bytes.len() {
        return Err(CodecError::TrailingBytes(bytes.len() - read));
    }
    Ok(value)
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    out
}
