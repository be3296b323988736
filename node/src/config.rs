//! The node's configuration file, `DATA_DIR/civmesh.toml`, written by
//! `civmesh init` and read by `civmesh run`. Unknown keys are errors, so a
//! typo never silently falls back to a default.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The configuration file's name inside the data directory.
pub const CONFIG_FILE_NAME: &str = "civmesh.toml";
/// The largest configuration file read, in bytes.
pub const CONFIG_FILE_BYTES_MAX: u64 = 64 * 1024;

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is larger than any configuration could be.
    #[error("{0} is too large to be a civmesh configuration")]
    TooLarge(PathBuf),
    /// The file is not valid TOML for this schema.
    #[error("{path} is not a valid civmesh configuration: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and column.
        reason: String,
    },
}

/// `civmesh.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Files and addresses.
    pub node: NodeSection,
    /// Whom to trust before the policy log has a genesis.
    #[serde(default)]
    pub trust: TrustSection,
    /// Raft tuning.
    #[serde(default)]
    pub raft: RaftSection,
    /// What one peer may ask of this node.
    #[serde(default)]
    pub limits: LimitsSection,
    /// Corrections: the bounds on attachments.
    #[serde(default)]
    pub corrections: CorrectionsSection,
    /// Listings this node answers as an owner: page sizes and cursor age.
    #[serde(default)]
    pub listing: ListingSection,
    /// How often this node, as a holder, deletes what is due.
    #[serde(default)]
    pub retention: RetentionSection,
    /// The subjects' requests this node takes: their default deadline.
    #[serde(default)]
    pub subject_requests: SubjectRequestsSection,
}

/// `[subject_requests]`: the requests from the subject (PIPL Art. 44-47)
/// this node takes as an intake: how many days the owner has to answer
/// one that names no deadline of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubjectRequestsSection {
    /// The owner's deadline, in days after filing (1 to 60).
    pub deadline_days: u64,
}

/// The bounds on [`SubjectRequestsSection::deadline_days`], in days (the
/// policy log's, `SUBJECT_REQUEST_DEADLINE_MS_MIN..=_MAX`).
pub const DEADLINE_DAYS_RANGE: std::ops::RangeInclusive<u64> = 1..=60;

impl Default for SubjectRequestsSection {
    fn default() -> Self {
        SubjectRequestsSection {
            deadline_days: civmesh_policy::subject_request::SUBJECT_REQUEST_DEADLINE_DAYS_DEFAULT,
        }
    }
}

impl SubjectRequestsSection {
    /// The default deadline, checked against [`DEADLINE_DAYS_RANGE`].
    pub fn deadline_days(&self) -> Result<u64, ConfigError> {
        within("[subject_requests] deadline_days", self.deadline_days, DEADLINE_DAYS_RANGE)
    }
}

/// `[retention]`: how often a holder deletes copies whose retention ended,
/// whose grant ended, or whose consent was withdrawn. A deletion is made
/// at most `sweep_interval_ms` after it is due (and at start, before the
/// node serves anything); a grant's `delete_within` is the log's bound.
/// The same sweep prunes the log's closed corrections kept longer than
/// `closed_corrections_kept_days`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSection {
    /// Between two deletion sweeps, in milliseconds (1 s to 1 hour).
    pub sweep_interval_ms: u64,
    /// How long this node keeps a closed correction for evaluations, in
    /// days after it closed (two years and a day, past the console
    /// dashboard's 104 weeks, to 100 years; three years and a day by
    /// default).
    pub closed_corrections_kept_days: u64,
}

/// The bounds on [`RetentionSection::sweep_interval_ms`], in milliseconds.
pub const SWEEP_INTERVAL_MS_RANGE: std::ops::RangeInclusive<u64> = 1_000..=3_600_000;
/// The bounds on [`RetentionSection::closed_corrections_kept_days`], in days.
pub const CLOSED_CORRECTIONS_KEPT_DAYS_RANGE: std::ops::RangeInclusive<u64> = 731..=36_500;

impl Default for RetentionSection {
    fn default() -> Self {
        RetentionSection { sweep_interval_ms: 60_000, closed_corrections_kept_days: 3 * 365 + 1 }
    }
}

impl RetentionSection {
    /// The sweep interval, checked against [`SWEEP_INTERVAL_MS_RANGE`].
    pub fn sweep_interval_ms(&self) -> Result<u64, ConfigError> {
        within("[retention] sweep_interval_ms", self.sweep_interval_ms, SWEEP_INTERVAL_MS_RANGE)
    }

    /// How long closed corrections are kept, checked against
    /// [`CLOSED_CORRECTIONS_KEPT_DAYS_RANGE`].
    pub fn closed_corrections_kept_days(&self) -> Result<u64, ConfigError> {
        within(
            "[retention] closed_corrections_kept_days",
            self.closed_corrections_kept_days,
            CLOSED_CORRECTIONS_KEPT_DAYS_RANGE,
        )
    }
}

/// `[listing]`: the bounds on the pages of a listing this owner answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListingSection {
    /// Records on a page when the requester does not say.
    pub page_records_default: u32,
    /// Records on a page at most; at most the protocol's bound on the
    /// subjects one access record names (`QUERY_SUBJECTS_MAX`).
    pub page_records_max: u32,
    /// How long a listing's cursor stays valid, in milliseconds.
    pub cursor_age_ms_max: u64,
}

impl Default for ListingSection {
    fn default() -> Self {
        ListingSection {
            page_records_default: 500,
            page_records_max: 1_000,
            cursor_age_ms_max: 7 * 86_400_000,
        }
    }
}

impl ListingSection {
    /// The bounds, checked: 1 <= default <= max <= `QUERY_SUBJECTS_MAX`.
    pub fn bounds(&self) -> Result<crate::query::ListingBounds, ConfigError> {
        let subjects_max = civmesh_policy::access::QUERY_SUBJECTS_MAX as u32;
        let fits = 1 <= self.page_records_default
            && self.page_records_default <= self.page_records_max
            && self.page_records_max <= subjects_max
            && self.cursor_age_ms_max > 0;
        if !fits {
            return Err(ConfigError::Invalid {
                path: PathBuf::from(CONFIG_FILE_NAME),
                reason: format!(
                    "[listing] needs 1 <= page_records_default <= page_records_max <= {subjects_max} \
                     and cursor_age_ms_max > 0"
                ),
            });
        }
        Ok(crate::query::ListingBounds {
            page_records_default: self.page_records_default,
            page_records_max: self.page_records_max,
            cursor_age_ms_max: self.cursor_age_ms_max,
        })
    }
}

/// `[limits]`: per-peer rates and quotas. A peer over a limit gets a
/// refusal with the code `rate_limited` or `quota_exceeded`; nothing it
/// sends is dropped silently.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Queries and subscription requests one peer may send, per second,
    /// sustained.
    pub queries_per_peer_per_second: u32,
    /// Queries one peer may send at once above the sustained rate.
    pub query_burst_per_peer_max: u32,
    /// Corrections one peer may deliver, per second, sustained.
    pub corrections_per_peer_per_second: u32,
    /// Corrections one peer may deliver at once above the sustained rate.
    pub correction_burst_per_peer_max: u32,
    /// Subscriptions one peer may hold at this owner.
    pub subscriptions_per_peer_max: u32,
    /// Subjects' requests one peer (an intake) may send this owner, per
    /// minute, sustained: each one tells whether a record exists, so the
    /// rate is a person's, not a system's.
    pub subject_requests_per_peer_per_minute: u32,
    /// Subjects' requests one peer may send at once above the sustained rate.
    pub subject_request_burst_per_peer_max: u32,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            queries_per_peer_per_second: 500,
            query_burst_per_peer_max: 1_000,
            corrections_per_peer_per_second: 50,
            correction_burst_per_peer_max: 100,
            subscriptions_per_peer_max: 64,
            subject_requests_per_peer_per_minute: 10,
            subject_request_burst_per_peer_max: 10,
        }
    }
}

/// `[corrections]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorrectionsSection {
    /// The most attachments (photos, PDFs) one correction carries; at most
    /// the protocol's `CORRECTION_ATTACHMENTS_MAX`.
    pub attachments_max: usize,
    /// The largest attachment, in bytes.
    pub attachment_bytes_max: u64,
}

impl Default for CorrectionsSection {
    fn default() -> Self {
        CorrectionsSection {
            attachments_max: crate::corrections::attachments::ATTACHMENTS_MAX_DEFAULT,
            attachment_bytes_max: crate::corrections::attachments::ATTACHMENT_BYTES_MAX_DEFAULT,
        }
    }
}

/// `[node]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// The node key (PKCS#8, mode 0600), relative to the data directory.
    pub key_file: PathBuf,
    /// The node certificate.
    pub certificate_file: PathBuf,
    /// The federation CA certificate.
    pub ca_certificate_file: PathBuf,
    /// The API token file (mode 0600).
    pub api_token_file: PathBuf,
    /// libp2p listen multiaddr, e.g. `/ip4/127.0.0.1/tcp/7001`.
    pub p2p_listen: String,
    /// The libp2p address peers dial, when it differs from the listen
    /// address (behind a NAT, a port forward or a test's proxy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p2p_advertise: Option<String>,
    /// HTTP API listen address, e.g. `127.0.0.1:8001`.
    pub api_listen: String,
    /// This organisation's subject key, hex (mode 0600): an owner derives
    /// from it the key that hashes the subjects each requesting
    /// organisation names ([`civmesh_policy::subject_keys`]). Not the
    /// federation's secret, which only auditors hold.
    #[serde(default)]
    pub org_subject_key_file: Option<PathBuf>,
}

/// `[trust]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustSection {
    /// PeerIds admitted before genesis (the founding voters). After genesis
    /// only the policy log's active members are admitted.
    #[serde(default)]
    pub bootstrap_peers: Vec<String>,
}

/// `[raft]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftSection {
    /// Leader heartbeat interval.
    pub heartbeat_interval_ms: u64,
    /// Election timeout, lower bound.
    pub election_timeout_min_ms: u64,
    /// Election timeout, upper bound.
    pub election_timeout_max_ms: u64,
    /// Snapshot after this many entries.
    pub snapshot_after_entries: u64,
    /// Entries kept behind a snapshot.
    pub entries_kept_after_snapshot: u64,
    /// The largest snapshot chunk this node sends, in bytes (1 KiB to
    /// 4 MiB): smaller on a slow link, so each chunk arrives in time.
    pub snapshot_chunk_bytes_max: u64,
}

/// The bounds on [`RaftSection::snapshot_after_entries`], in log entries.
/// It must be the same on every node: replicas build their snapshots at its
/// multiples, and confirm one another's there.
pub const SNAPSHOT_AFTER_ENTRIES_RANGE: std::ops::RangeInclusive<u64> = 10..=10_000_000;

/// The bounds on [`RaftSection::snapshot_chunk_bytes_max`], in bytes.
pub const SNAPSHOT_CHUNK_BYTES_RANGE: std::ops::RangeInclusive<u64> = 1024..=4 * 1024 * 1024;

impl RaftSection {
    /// The snapshot interval, checked against [`SNAPSHOT_AFTER_ENTRIES_RANGE`].
    pub fn snapshot_after_entries(&self) -> Result<u64, ConfigError> {
        within("[raft] snapshot_after_entries", self.snapshot_after_entries, SNAPSHOT_AFTER_ENTRIES_RANGE)
    }

    /// The snapshot chunk bound, checked against [`SNAPSHOT_CHUNK_BYTES_RANGE`].
    pub fn snapshot_chunk_bytes_max(&self) -> Result<u64, ConfigError> {
        within("[raft] snapshot_chunk_bytes_max", self.snapshot_chunk_bytes_max, SNAPSHOT_CHUNK_BYTES_RANGE)
    }
}

/// `value` of the setting `name` if it is within `range`; a typed error
/// naming both otherwise.
fn within(name: &str, value: u64, range: std::ops::RangeInclusive<u64>) -> Result<u64, ConfigError> {
    if !range.contains(&value) {
        return Err(ConfigError::Invalid {
            path: PathBuf::from(CONFIG_FILE_NAME),
            reason: format!("{name} must be from {} to {}", range.start(), range.end()),
        });
    }
    Ok(value)
}

impl Default for RaftSection {
    fn default() -> Self {
        RaftSection {
            heartbeat_interval_ms: 100,
            election_timeout_min_ms: 400,
            election_timeout_max_ms: 800,
            snapshot_after_entries: 5_000,
            entries_kept_after_snapshot: 1_000,
            snapshot_chunk_bytes_max: 4 * 1024 * 1024,
        }
    }
}

impl NodeConfig {
    /// Reads and validates `DATA_DIR/civmesh.toml`.
    pub fn load(data_dir: &Path) -> Result<Self, ConfigError> {
        let path = data_dir.join(CONFIG_FILE_NAME);
        let io_error = |source| ConfigError::Io { path: path.clone(), source };
        if std::fs::metadata(&path).map_err(io_error)?.len() > CONFIG_FILE_BYTES_MAX {
            return Err(ConfigError::TooLarge(path));
        }
        let text = std::fs::read_to_string(&path).map_err(io_error)?;
        let config: NodeConfig = toml::from_str(&text)
            .map_err(|error| ConfigError::Invalid { path: path.clone(), reason: error.to_string() })?;
        // A bound no section's type can state is checked here, so a node
        // never starts with it.
        let checked = config
            .subject_requests
            .deadline_days()
            .and(config.raft.snapshot_chunk_bytes_max())
            .and(config.raft.snapshot_after_entries())
            .and(config.retention.closed_corrections_kept_days());
        if let Err(ConfigError::Invalid { reason, .. }) = checked {
            return Err(ConfigError::Invalid { path, reason });
        }
        Ok(config)
    }

    /// A path from the configuration, resolved against the data directory.
    pub fn resolve(data_dir: &Path, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            data_dir.join(path)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) {
        std::fs::write(dir.join(CONFIG_FILE_NAME), text).unwrap();
    }

    #[test]
    fn corrupt_or_misspelt_configs_are_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        let valid = "[node]\nkey_file = \"node.key\"\ncertificate_file = \"node.pem\"\nca_certificate_file = \"ca.pem\"\napi_token_file = \"api-token\"\np2p_listen = \"/ip4/127.0.0.1/tcp/0\"\napi_listen = \"127.0.0.1:0\"\n";
        write(dir.path(), valid);
        let config = NodeConfig::load(dir.path()).unwrap();
        assert_eq!(config.raft, RaftSection::default());
        assert_eq!(config.limits, LimitsSection::default());
        assert_eq!(
            (config.corrections.attachments_max, config.corrections.attachment_bytes_max),
            (5, 20 << 20)
        );
        write(
            dir.path(),
            &format!("{valid}[corrections]\nattachments_max = 2\nattachment_bytes_max = 1024\n"),
        );
        assert_eq!(NodeConfig::load(dir.path()).unwrap().corrections.attachment_bytes_max, 1024);
        for (days, loaded) in [(None, 15), (Some(1), 1), (Some(60), 60)] {
            let section =
                days.map_or(String::new(), |days| format!("[subject_requests]\ndeadline_days = {days}\n"));
            write(dir.path(), &format!("{valid}{section}"));
            assert_eq!(
                NodeConfig::load(dir.path()).unwrap().subject_requests.deadline_days().unwrap(),
                loaded
            );
        }
        for bad in [
            "[node",
            "garbage = = 1",
            &valid.replace("key_file", "kee_file"),
            &format!("{valid}[raft]\nheartbeat_interval_ms = \"fast\"\n"),
            &format!("{valid}[limits]\nqueries_per_peer_per_second = -1\n"),
            &format!("{valid}[limits]\nquery_per_peer = 5\n"),
            &format!("{valid}[corrections]\nattachment_size = 1\n"),
            &format!("{valid}[subject_requests]\ndeadline_days = 0\n"),
            &format!("{valid}[subject_requests]\ndeadline_days = 61\n"),
            &format!("{valid}[subject_requests]\ndeadline_days = -1\n"),
            &format!("{valid}[subject_requests]\ndeadline = 15\n"),
            &format!("{valid}[raft]\nsnapshot_chunk_bytes_max = 1023\n"),
            &format!("{valid}[raft]\nsnapshot_after_entries = 0\n"),
            &format!("{valid}[raft]\nsnapshot_chunk_bytes_max = 4194305\n"),
            &format!("{valid}[retention]\nclosed_corrections_kept_days = 730\n"),
            &format!("{valid}[retention]\nclosed_corrections_kept_days = 36501\n"),
        ] {
            write(dir.path(), bad);
            assert!(matches!(NodeConfig::load(dir.path()), Err(ConfigError::Invalid { .. })), "{bad}");
        }
        assert!(matches!(NodeConfig::load(&dir.path().join("missing")), Err(ConfigError::Io { .. })));
    }
}
