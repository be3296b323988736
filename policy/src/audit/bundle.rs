//! The audit bundle: every command from genesis on, and its file format
//! (docs/audit-bundle.md).

use civmesh_certs::{codec, NodeId, UnixMillis};
use serde::{Deserialize, Serialize};

use super::{ARCHIVED_COMMAND_BYTES_MAX, BUNDLE_FORMAT_VERSION, BUNDLE_MAGIC};

/// One command as the log applied it (the unit of the archive and bundle).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedCommand {
    /// 1 for the first command ever applied, then +1.
    pub sequence: u64,
    /// The policy-log entry that carried it.
    pub log_index: u64,
    /// The entry's time (the leader's stamp), which apply uses.
    pub entry_time_ms: UnixMillis,
    /// The signed command, wire bytes.
    pub envelope: Vec<u8>,
    /// Whether the log accepted it.
    pub accepted: bool,
}

/// A self-contained audit bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditBundle {
    /// The federation's name (from genesis).
    pub federation_name: String,
    /// The federation's CA certificate (DER), as genesis recorded it.
    pub ca_certificate_der: Vec<u8>,
    /// Who exported it.
    pub exported_by: NodeId,
    /// When.
    pub exported_at_ms: UnixMillis,
    /// The first access entry the report covers.
    pub from_entry: u64,
    /// The access entry the report stops before (`u64::MAX`: all).
    pub to_entry: u64,
    /// Every command from genesis on, in log order.
    pub commands: Vec<ArchivedCommand>,
}

/// Why a bundle could not be read or trusted at all.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Not a civmesh audit bundle.
    #[error("not a civmesh audit bundle (no CIVAUDIT header)")]
    NotABundle,
    /// A format this verifier does not know.
    #[error("unknown bundle format version {0} (this verifier reads version {BUNDLE_FORMAT_VERSION})")]
    UnknownFormatVersion(u32),
    /// Cut short or damaged.
    #[error("the bundle is truncated or corrupt: {0}")]
    Corrupt(String),
    /// Signed under another CA.
    #[error("the bundle is from another federation: its CA is not the trusted CA")]
    OtherFederation,
    /// The first command is not a genesis naming the bundle's CA.
    #[error("the bundle does not start with its federation's genesis: {0}")]
    NoGenesis(String),
}

impl BundleError {
    /// Its stable name, as docs/audit-bundle.md and the test vectors give it.
    pub fn code(&self) -> &'static str {
        match self {
            BundleError::NotABundle => "not_a_bundle",
            BundleError::UnknownFormatVersion(_) => "unknown_format_version",
            BundleError::Corrupt(_) => "corrupt",
            BundleError::OtherFederation => "other_federation",
            BundleError::NoGenesis(_) => "no_genesis",
        }
    }
}

/// The bundle's fixed part, before the commands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct BundleHeader {
    federation_name: String,
    ca_certificate_der: Vec<u8>,
    exported_by: NodeId,
    exported_at_ms: UnixMillis,
    from_entry: u64,
    to_entry: u64,
    command_count: u64,
}

/// The largest bundle header, in bytes.
const BUNDLE_HEADER_BYTES_MAX: usize = 1024 * 1024;

/// The bundle file (docs/audit-bundle.md): `CIVAUDIT`, the format version
/// (u32 LE), then length-prefixed (u32 LE) canonical encodings of the
/// header and of each command in order, so a reader streams it in bounded
/// pieces.
pub fn encode_bundle(bundle: &AuditBundle) -> Result<Vec<u8>, BundleError> {
    let header = BundleHeader {
        federation_name: bundle.federation_name.clone(),
        ca_certificate_der: bundle.ca_certificate_der.clone(),
        exported_by: bundle.exported_by,
        exported_at_ms: bundle.exported_at_ms,
        from_entry: bundle.from_entry,
        to_entry: bundle.to_entry,
        command_count: bundle.commands.len() as u64,
    };
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&BUNDLE_MAGIC);
    bytes.extend_from_slice(&BUNDLE_FORMAT_VERSION.to_le_bytes());
    let mut frame = |body: Vec<u8>| -> Result<(), BundleError> {
        let length =
            u32::try_from(body.len()).map_err(|_| BundleError::Corrupt("a piece over 4 GiB".to_string()))?;
        bytes.extend_from_slice(&length.to_le_bytes());
        bytes.extend_from_slice(&body);
        Ok(())
    };
    frame(codec::encode(&header).map_err(|error| BundleError::Corrupt(error.to_string()))?)?;
    for command in &bundle.commands {
        frame(codec::encode(command).map_err(|error| BundleError::Corrupt(error.to_string()))?)?;
    }
    Ok(bytes)
}

/// Reads the next length-prefixed piece at `*offset`.
fn next_piece<'a>(
    bytes: &'a [u8],
    offset: &mut usize,
    bytes_max: usize,
    what: &str,
) -> Result<&'a [u8], BundleError> {
    let corrupt = |detail: String| BundleError::Corrupt(format!("{what}: {detail}"));
    let length_bytes =
        bytes.get(*offset..*offset + 4).ok_or_else(|| corrupt("the file ends early".to_string()))?;
    let length =
        u32::from_le_bytes([length_bytes[0], length_bytes[1], length_bytes[2], length_bytes[3]]) as usize;
    if length > bytes_max {
        return Err(corrupt(format!("{length} bytes, over {bytes_max}")));
    }
    let piece = bytes
        .get(*offset + 4..*offset + 4 + length)
        .ok_or_else(|| corrupt("the file ends early".to_string()))?;
    *offset += 4 + length;
    Ok(piece)
}

/// Reads a bundle file's bytes.
pub fn decode_bundle(bytes: &[u8]) -> Result<AuditBundle, BundleError> {
    if bytes.len() < 12 || bytes[..8] != BUNDLE_MAGIC {
        return Err(BundleError::NotABundle);
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version != BUNDLE_FORMAT_VERSION {
        return Err(BundleError::UnknownFormatVersion(version));
    }
    let mut offset = 12;
    let piece = next_piece(bytes, &mut offset, BUNDLE_HEADER_BYTES_MAX, "the header at byte 12")?;
    let header: BundleHeader = codec::decode_canonical(piece, BUNDLE_HEADER_BYTES_MAX)
        .map_err(|error| BundleError::Corrupt(format!("the header at byte 12: {error}")))?;
    let mut commands = Vec::with_capacity(header.command_count.min(10_000_000) as usize);
    for sequence in 1..=header.command_count {
        let what = format!("command {sequence} at byte {offset}");
        let piece = next_piece(bytes, &mut offset, ARCHIVED_COMMAND_BYTES_MAX, &what)?;
        commands.push(
            codec::decode_canonical(piece, ARCHIVED_COMMAND_BYTES_MAX)
                .map_err(|error| BundleError::Corrupt(format!("{what}: {error}")))?,
        );
    }
    if offset != bytes.len() {
        return Err(BundleError::Corrupt(format!(
            "{} bytes after the last command, at byte {offset}",
            bytes.len() - offset
        )));
    }
    Ok(AuditBundle {
        federation_name: header.federation_name,
        ca_certificate_der: header.ca_certificate_der,
        exported_by: header.exported_by,
        exported_at_ms: header.exported_at_ms,
        from_entry: header.from_entry,
        to_entry: header.to_entry,
        commands,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_bundle_bytes_are_typed_errors() {
        assert!(matches!(decode_bundle(b"nonsense"), Err(BundleError::NotABundle)));
        assert!(matches!(decode_bundle(b"not an audit bundle"), Err(BundleError::NotABundle)));
        let mut wrong_version = BUNDLE_MAGIC.to_vec();
        wrong_version.extend_from_slice(&7u32.to_le_bytes());
        assert!(matches!(decode_bundle(&wrong_version), Err(BundleError::UnknownFormatVersion(7))));
        let mut truncated = BUNDLE_MAGIC.to_vec();
        truncated.extend_from_slice(&BUNDLE_FORMAT_VERSION.to_le_bytes());
        truncated.extend_from_slice(&[3, 1, 2]);
        assert!(matches!(decode_bundle(&truncated), Err(BundleError::Corrupt(_))));
    }

    /// A bundle of one command whose encoding is `command_bytes` long.
    fn bundle_with_command_of(command_bytes: usize) -> Vec<u8> {
        let command = |envelope_bytes: usize| ArchivedCommand {
            sequence: 1,
            log_index: 1,
            entry_time_ms: 1,
            envelope: vec![7; envelope_bytes],
            accepted: true,
        };
        let mut envelope_bytes = command_bytes;
        while codec::encode(&command(envelope_bytes)).unwrap().len() > command_bytes {
            envelope_bytes -= 1;
        }
        let bundle = AuditBundle {
            federation_name: "city".to_string(),
            ca_certificate_der: vec![1, 2, 3],
            exported_by: NodeId([9; 32]),
            exported_at_ms: 5,
            from_entry: 0,
            to_entry: u64::MAX,
            commands: vec![command(envelope_bytes)],
        };
        assert_eq!(codec::encode(&bundle.commands[0]).unwrap().len(), command_bytes);
        encode_bundle(&bundle).unwrap()
    }

    #[test]
    fn a_header_is_read_up_to_its_bound() {
        let with_ca_of = |ca_bytes: usize| AuditBundle {
            federation_name: "city".to_string(),
            ca_certificate_der: vec![1; ca_bytes],
            exported_by: NodeId([9; 32]),
            exported_at_ms: 5,
            from_entry: 0,
            to_entry: u64::MAX,
            commands: Vec::new(),
        };
        let bundle = with_ca_of(64 * 1024);
        assert_eq!(decode_bundle(&encode_bundle(&bundle).unwrap()).unwrap(), bundle);
        match decode_bundle(&encode_bundle(&with_ca_of(BUNDLE_HEADER_BYTES_MAX)).unwrap()) {
            Err(BundleError::Corrupt(detail)) => {
                assert!(detail.starts_with("the header at byte 12: "), "{detail}")
            }
            other => panic!("expected a corrupt header, got {other:?}"),
        }
    }

    #[test]
    fn an_archived_command_holds_any_envelope_and_little_more() {
        let envelope_max = civmesh_certs::ENVELOPE_BYTES_MAX;
        assert!(decode_bundle(&bundle_with_command_of(envelope_max + 64)).is_ok());
        assert!(decode_bundle(&bundle_with_command_of(envelope_max + 2048)).is_err());
    }

    #[test]
    fn an_archived_command_is_read_up_to_its_bound_and_not_one_byte_over() {
        let at_bound = decode_bundle(&bundle_with_command_of(ARCHIVED_COMMAND_BYTES_MAX)).unwrap();
        assert_eq!(at_bound.commands.len(), 1);
        match decode_bundle(&bundle_with_command_of(ARCHIVED_COMMAND_BYTES_MAX + 1)) {
            Err(BundleError::Corrupt(detail)) => assert!(detail.contains("over"), "{detail}"),
            other => panic!("expected a corrupt bundle, got {other:?}"),
        }
    }
}
