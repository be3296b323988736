//! A subscriber's copy of a subscription, which starts with the data: once
//! the owner accepts the subscription, the subscriber lists every record
//! in its scope (page by page, each page logged by the owner like any
//! listing), then keeps the changes the owner pushes. Each page and the
//! cursor after it are one synced write, so after a restart or a partition
//! the listing resumes where the copy ends: no gap, and no subject twice
//! (the copy holds each subject once, at its newest version).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use civmesh_certs::{codec, now_unix_millis, NodeId, UnixMillis};
use serde::{Deserialize, Serialize};

use crate::query::{list, AskError, ListAnswer, ListSpec, QueryService, ReleasedRecord};
use crate::records::{CopiedRecord, RecordStoreError, COPY_BYTES_MAX};

/// How often the subscriber looks for listings to continue.
pub const SYNC_TICK_MS: u64 = 200;
/// The first wait after a failed page, doubled per failure up to the max.
pub const SYNC_RETRY_BACKOFF_MS_MIN: u64 = 500;
/// The longest wait between tries of a failing listing.
pub const SYNC_RETRY_BACKOFF_MS_MAX: u64 = 30_000;
/// Records of a copy read per page at most.
pub const COPY_PAGE_RECORDS_MAX: usize = 1_000;

/// Where a subscription's initial listing stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InitialSync {
    /// Listing; the next page starts at the cursor (none: the first page).
    Listing {
        /// The owner's cursor.
        cursor: Option<String>,
    },
    /// Every record in scope was listed.
    Done {
        /// When the last page arrived.
        finished_at_ms: UnixMillis,
    },
}

/// What the subscriber keeps about one of its subscriptions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// The dataset.
    pub dataset: String,
    /// The owner node.
    pub owner: NodeId,
    /// The fields subscribed to.
    pub fields: Vec<String>,
    /// For what.
    pub purpose: String,
    /// The grant relied on.
    pub grant: Option<u64>,
    /// Records per listing page (0: the owner's default).
    pub page_size: u32,
    /// When the owner accepted it.
    pub started_at_ms: UnixMillis,
    /// The initial listing.
    pub initial_sync: InitialSync,
    /// Listing pages received.
    pub pages: u64,
    /// Records the listing delivered.
    pub records_listed: u64,
    /// Subjects the copy holds.
    pub records_held: u64,
    /// The access-log position of the newest push received.
    pub last_push_position: Option<u64>,
    /// When the newest push arrived.
    pub last_change_at_ms: Option<UnixMillis>,
    /// How long the newest push took from the owner's signature to here.
    pub last_push_lag_ms: Option<u64>,
    /// Why the last page failed, if it did (cleared by the next page).
    pub last_error: Option<String>,
    /// Whether this is no subscription but the answers to queries and
    /// listing pages this node chose to keep ([`QueryService::keep_received`]).
    pub kept: bool,
}

/// The most reads one page of a copy makes to fill itself past copies
/// that fell due.
const COPY_PAGE_READS_MAX: usize = 16;

/// Why a copy could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The store failed.
    #[error("{0}")]
    Store(#[from] RecordStoreError),
    /// A kept entry does not decode.
    #[error("a kept subscription entry is corrupt: {0}")]
    Corrupt(#[from] civmesh_certs::codec::CodecError),
    /// The progress lock is poisoned.
    #[error("the subscription progress is unavailable")]
    Unavailable,
    /// The owner's address is not known to the policy log.
    #[error("the owner's address is unknown")]
    OwnerUnreachable,
    /// The owner did not list the page.
    #[error("{0}")]
    Listing(#[from] AskError),
    /// The owner denied the listing.
    #[error("the owner denied the listing: {0}")]
    Denied(String),
}

fn copied(records: &[ReleasedRecord]) -> Result<Vec<CopiedRecord>, CopyError> {
    records
        .iter()
        .map(|record| {
            Ok(CopiedRecord {
                subject: record.subject.0,
                version: record.version,
                bytes: codec::encode(record)?,
            })
        })
        .collect()
}

impl QueryService {
    /// Starts the copy of a subscription the owner just accepted.
    pub(super) fn start_copy(&self, digest: &[u8; 32], progress: &Progress) -> Result<(), CopyError> {
        let _held = self.progress_lock.lock().map_err(|_| CopyError::Unavailable)?;
        self.records.put_progress(digest, &codec::encode(progress)?)?;
        Ok(())
    }

    /// A subscription's progress, if this node made it.
    pub fn progress(&self, digest: &[u8; 32]) -> Result<Option<Progress>, CopyError> {
        let Some(bytes) = self.records.progress(digest)? else { return Ok(None) };
        Ok(Some(codec::decode_exact(&bytes, COPY_BYTES_MAX)?))
    }

    /// Up to `limit` records of a subscription's copy after subject `after`.
    pub fn copy_page(
        &self,
        digest: &[u8; 32],
        after: Option<&[u8; 32]>,
        limit: usize,
    ) -> Result<Vec<ReleasedRecord>, CopyError> {
        let limit = limit.clamp(1, COPY_PAGE_RECORDS_MAX);
        let progress = self.progress(digest)?;
        let mut records: Vec<ReleasedRecord> = Vec::new();
        let mut after = after.copied();
        // What fell due is not served while it waits for the next sweep;
        // the page is filled from further on, a bounded number of reads.
        for _ in 0..COPY_PAGE_READS_MAX {
            let wanted = limit - records.len();
            let held = self.records.copies(digest, after.as_ref(), wanted)?;
            let Some((last, _)) = held.last() else { break };
            after = Some(*last);
            let read = held.len();
            let mut page = Vec::with_capacity(read);
            for (_, bytes) in held {
                page.push(codec::decode_exact(&bytes, COPY_BYTES_MAX)?);
            }
            match &progress {
                Some(progress) => records.extend(self.still_keepable(progress, &page)),
                None => records.extend(page),
            }
            if records.len() == limit || read < wanted {
                break;
            }
        }
        Ok(records)
    }

    /// Keeps `records` in a subscription's copy and updates its progress
    /// with `update`, in one synced write; nothing for a subscription
    /// without progress (one made before copies were kept).
    pub(super) fn keep_in_copy(
        &self,
        digest: &[u8; 32],
        records: &[ReleasedRecord],
        logged_at: Option<u64>,
        update: impl FnOnce(&mut Progress),
    ) -> Result<(), CopyError> {
        let released_at_ms = self.released_at_ms(logged_at);
        let _held = self.progress_lock.lock().map_err(|_| CopyError::Unavailable)?;
        let Some(mut progress) = self.progress(digest)? else { return Ok(()) };
        // A copy arriving after its grant ended, or its subject's consent
        // was withdrawn (a push retried late), is not kept: it would never
        // fall due again.
        let records = self.still_keepable(&progress, records);
        let copies = copied(&records)?;
        update(&mut progress);
        // The count of subjects held is written in the same batch as them.
        self.records.put_copies(digest, &copies, released_at_ms, |added| {
            progress.records_held += added;
            codec::encode(&progress).map_err(|error| RecordStoreError::Corrupt(error.to_string()))
        })?;
        Ok(())
    }

    /// Asks the owner for the next page of a subscription's listing and
    /// keeps it; returns whether the listing is done.
    async fn sync_page(&self, digest: &[u8; 32]) -> Result<bool, CopyError> {
        let Some(progress) = self.progress(digest)? else { return Ok(true) };
        let InitialSync::Listing { cursor } = progress.initial_sync.clone() else { return Ok(true) };
        let owner = self.log.peer_of(&progress.owner).ok_or(CopyError::OwnerUnreachable)?;
        let spec = ListSpec {
            dataset: progress.dataset.clone(),
            fields: progress.fields.clone(),
            purpose: progress.purpose.clone(),
            grant: progress.grant,
            filters: Vec::new(),
            page_size: progress.page_size,
            cursor,
            keep: false,
        };
        let (records, next_cursor, position) = match list(&self.swarm, &self.key, &owner, spec).await? {
            ListAnswer::Page { records, next_cursor, access_log_position } => {
                (records, next_cursor, access_log_position)
            }
            ListAnswer::Denied { reason, .. } => {
                return Err(CopyError::Denied(serde_json::to_string(&reason).unwrap_or_default()))
            }
            ListAnswer::Refused(refusal) => return Err(CopyError::Listing(AskError::ListRefused(refusal))),
        };
        let done = next_cursor.is_none();
        let listed = records.len() as u64;
        self.keep_in_copy(digest, &records, Some(position), |progress| {
            progress.pages += 1;
            progress.records_listed += listed;
            progress.last_error = None;
            progress.initial_sync = match next_cursor {
                Some(cursor) => InitialSync::Listing { cursor: Some(cursor) },
                None => InitialSync::Done { finished_at_ms: now_unix_millis() },
            };
        })?;
        Ok(done)
    }

    /// Continues every unfinished initial listing, page by page, retrying a
    /// failing one with a bounded backoff; runs until `stop`.
    pub async fn run_initial_syncs(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_millis(SYNC_TICK_MS));
        let mut backoff: BTreeMap<[u8; 32], (UnixMillis, u64)> = BTreeMap::new();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            let mine: Vec<[u8; 32]> =
                self.my_subscriptions.lock().map(|mine| mine.keys().copied().collect()).unwrap_or_default();
            for digest in mine {
                if backoff.get(&digest).is_some_and(|(next_at_ms, _)| *next_at_ms > now_unix_millis()) {
                    continue;
                }
                loop {
                    // A page in flight is dropped at shutdown: nothing of
                    // it is written until it has arrived whole.
                    let page = tokio::select! {
                        page = self.sync_page(&digest) => page,
                        _ = stop.changed() => return,
                    };
                    match page {
                        Ok(true) => {
                            backoff.remove(&digest);
                            break;
                        }
                        Ok(false) => {}
                        Err(error) => {
                            let wait_ms =
                                backoff.get(&digest).map_or(SYNC_RETRY_BACKOFF_MS_MIN, |(_, wait_ms)| {
                                    (wait_ms * 2).min(SYNC_RETRY_BACKOFF_MS_MAX)
                                });
                            backoff.insert(digest, (now_unix_millis() + wait_ms, wait_ms));
                            tracing::warn!(%error, wait_ms, "a subscription's initial listing failed; retrying");
                            let message = error.to_string();
                            let _ = self.keep_in_copy(&digest, &[], None, |progress| {
                                progress.last_error = Some(message)
                            });
                            break;
                        }
                    }
                }
            }
        }
    }
}
