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
    /// The bundle could not be written (a full disk, say).
    #[error("the bundle could not be written: {0}")]
    Write(String),
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
            BundleError::Write(_) => "write_failed",
        }
    }
}

/// The bundle's fixed part, before the commands (docs/audit-bundle.md,
/// section 3). No signature covers it: a verifier checks the name and the
/// CA against the genesis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleHeader {
    /// The federation's name, as the exporter says.
    pub federation_name: String,
    /// The federation's CA certificate (DER), as the exporter says.
    pub ca_certificate_der: Vec<u8>,
    /// Who exported it.
    pub exported_by: NodeId,
    /// When.
    pub exported_at_ms: UnixMillis,
    /// The first access entry the report covers.
    pub from_entry: u64,
    /// The access entry the report stops before (`u64::MAX`: all).
    pub to_entry: u64,
    /// How many commands follow.
    pub command_count: u64,
}

impl AuditBundle {
    /// Its header.
    pub fn header(&self) -> BundleHeader {
        BundleHeader {
            federation_name: self.federation_name.clone(),
            ca_certificate_der: self.ca_certificate_der.clone(),
            exported_by: self.exported_by,
            exported_at_ms: self.exported_at_ms,
            from_entry: self.from_entry,
            to_entry: self.to_entry,
            command_count: self.commands.len() as u64,
        }
    }
}

/// The largest bundle header, in bytes.
const BUNDLE_HEADER_BYTES_MAX: usize = 1024 * 1024;
/// Where the header starts: after the magic and the version.
const HEADER_OFFSET: u64 = 12;

/// The bundle file (docs/audit-bundle.md): `CIVAUDIT`, the format version
/// (u32 LE), then length-prefixed (u32 LE) canonical encodings of the
/// header and of each command in order, so a reader streams it in bounded
/// pieces.
pub fn encode_bundle(bundle: &AuditBundle) -> Result<Vec<u8>, BundleError> {
    let mut bytes = Vec::new();
    write_bundle_start(&mut bytes, &bundle.header())?;
    for command in &bundle.commands {
        write_command(&mut bytes, command)?;
    }
    Ok(bytes)
}

/// Writes what starts a bundle file: the magic, the version and `header`.
/// [`write_command`] then writes `header.command_count` commands.
pub fn write_bundle_start(out: &mut impl std::io::Write, header: &BundleHeader) -> Result<(), BundleError> {
    let mut start = BUNDLE_MAGIC.to_vec();
    start.extend_from_slice(&BUNDLE_FORMAT_VERSION.to_le_bytes());
    write_all(out, &start)?;
    write_piece(out, codec::encode(header).map_err(|error| BundleError::Corrupt(error.to_string()))?)
}

/// Writes one command of a bundle file, as a length-prefixed piece.
pub fn write_command(out: &mut impl std::io::Write, command: &ArchivedCommand) -> Result<(), BundleError> {
    write_piece(out, codec::encode(command).map_err(|error| BundleError::Corrupt(error.to_string()))?)
}

fn write_piece(out: &mut impl std::io::Write, body: Vec<u8>) -> Result<(), BundleError> {
    let length =
        u32::try_from(body.len()).map_err(|_| BundleError::Corrupt("a piece over 4 GiB".to_string()))?;
    write_all(out, &length.to_le_bytes())?;
    write_all(out, &body)
}

fn write_all(out: &mut impl std::io::Write, bytes: &[u8]) -> Result<(), BundleError> {
    out.write_all(bytes).map_err(|error| BundleError::Write(error.to_string()))
}

/// A bundle read a piece at a time: the header when opened, then each
/// command as the iterator asks, so a bundle of any size is read in memory
/// bounded by its largest piece. Every piece must be canonical; nothing may
/// follow the last command. An error names the piece and its byte offset,
/// and ends the iteration.
pub struct BundleReader<R> {
    reader: R,
    header: BundleHeader,
    commands_read: u64,
    offset: u64,
    done: bool,
}

impl<R: std::io::Read> BundleReader<R> {
    /// Reads the magic, the version and the header.
    pub fn open(mut reader: R) -> Result<Self, BundleError> {
        let mut start = [0u8; HEADER_OFFSET as usize];
        if read_fully(&mut reader, &mut start)? < start.len() || start[..8] != BUNDLE_MAGIC {
            return Err(BundleError::NotABundle);
        }
        let version = u32::from_le_bytes([start[8], start[9], start[10], start[11]]);
        if version != BUNDLE_FORMAT_VERSION {
            return Err(BundleError::UnknownFormatVersion(version));
        }
        let mut bundle = BundleReader {
            reader,
            header: BundleHeader {
                federation_name: String::new(),
                ca_certificate_der: Vec::new(),
                exported_by: NodeId([0; 32]),
                exported_at_ms: 0,
                from_entry: 0,
                to_entry: 0,
                command_count: 0,
            },
            commands_read: 0,
            offset: HEADER_OFFSET,
            done: false,
        };
        let what = format!("the header at byte {HEADER_OFFSET}");
        let piece = bundle.next_piece(BUNDLE_HEADER_BYTES_MAX, &what)?;
        bundle.header = codec::decode_canonical(&piece, BUNDLE_HEADER_BYTES_MAX)
            .map_err(|error| BundleError::Corrupt(format!("{what}: {error}")))?;
        Ok(bundle)
    }

    /// The header.
    pub fn header(&self) -> &BundleHeader {
        &self.header
    }

    /// Reads the next length-prefixed piece.
    fn next_piece(&mut self, bytes_max: usize, what: &str) -> Result<Vec<u8>, BundleError> {
        let corrupt = |detail: String| BundleError::Corrupt(format!("{what}: {detail}"));
        let mut length = [0u8; 4];
        if read_fully(&mut self.reader, &mut length)? < length.len() {
            return Err(corrupt("the file ends early".to_string()));
        }
        let length = u32::from_le_bytes(length) as usize;
        if length > bytes_max {
            return Err(corrupt(format!("{length} bytes, over {bytes_max}")));
        }
        let mut piece = vec![0u8; length];
        if read_fully(&mut self.reader, &mut piece)? < length {
            return Err(corrupt("the file ends early".to_string()));
        }
        self.offset += 4 + length as u64;
        Ok(piece)
    }

    fn next_command(&mut self) -> Result<Option<ArchivedCommand>, BundleError> {
        if self.commands_read == self.header.command_count {
            let mut more = [0u8; 1];
            if read_fully(&mut self.reader, &mut more)? > 0 {
                return Err(BundleError::Corrupt(format!(
                    "bytes after the last command, at byte {}",
                    self.offset
                )));
            }
            return Ok(None);
        }
        let what = format!("command {} at byte {}", self.commands_read + 1, self.offset);
        let piece = self.next_piece(ARCHIVED_COMMAND_BYTES_MAX, &what)?;
        let command = codec::decode_canonical(&piece, ARCHIVED_COMMAND_BYTES_MAX)
            .map_err(|error| BundleError::Corrupt(format!("{what}: {error}")))?;
        self.commands_read += 1;
        Ok(Some(command))
    }
}

impl<R: std::io::Read> Iterator for BundleReader<R> {
    type Item = Result<ArchivedCommand, BundleError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let next = self.next_command().transpose();
        self.done = !matches!(next, Some(Ok(_)));
        next
    }
}

/// Reads until `buffer` is full or the input ends; how many bytes it read.
fn read_fully(reader: &mut impl std::io::Read, buffer: &mut [u8]) -> Result<usize, BundleError> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(BundleError::Corrupt(format!("reading the bundle: {error}"))),
        }
    }
    Ok(filled)
}

/// Reads a bundle file's bytes, all of it into memory
/// ([`BundleReader`] reads one a piece at a time).
pub fn decode_bundle(bytes: &[u8]) -> Result<AuditBundle, BundleError> {
    let reader = BundleReader::open(bytes)?;
    let header = reader.header().clone();
    let commands = reader.collect::<Result<Vec<_>, _>>()?;
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
