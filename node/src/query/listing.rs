//! Listings: a requester pages through every record its grant lets it
//! see, optionally filtered on indexed fields. Each page is its own signed
//! request and its own access record (naming every subject released),
//! logged before the page is sent. The owner reads only the scan's range
//! of its store: an index of a scope field, or every record when the grant
//! has no scope. Records outside the scope never appear, and the cursor
//! (sealed) does not tell where the scan went.

use std::time::Duration;

use civmesh_certs::{codec, now_unix_millis, NodeId, NodeKey, SignedEnvelope, UnixMillis};
use civmesh_consensus::RaftPeer;
use civmesh_policy::model::{Dataset, Grant, SubjectKeyHash};
use civmesh_policy::{decide, AccessOutcome, AccessRecord, Command, Decision, QueryHeader};
use serde::{Deserialize, Serialize};

use crate::query::cursor::CursorBody;
use crate::query::owner::{key_field_released, project, records_to_send};
use crate::query::{
    access_request, AskError, Facts, ListAnswer, ListFilter, ListRefusal, ListWire, QueryProtocolMessage,
    QueryService, SignedListBody, QUERY_TIMEOUT_MS, STALE_GRANT_CATCH_UP_MS,
};
use crate::records::{IndexRange, RecordVersion, ScanPlan};
use crate::swarm::{Protocol, SwarmClient};

/// The most filters one listing has.
pub const LIST_FILTERS_MAX: usize = 8;
/// The longest filter value or prefix, in bytes.
pub const LIST_FILTER_BYTES_MAX: usize = 256;
/// Index entries an owner reads for one page at most, per record the page
/// holds (entries it skips are stale, or filtered out).
pub const LIST_SCAN_ENTRIES_PER_RECORD_MAX: usize = 4;

/// An owner's bounds on listings (`[listing]` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListingBounds {
    /// Records on a page when the requester does not say.
    pub page_records_default: u32,
    /// Records on a page at most.
    pub page_records_max: u32,
    /// How long a cursor stays valid, in milliseconds.
    pub cursor_age_ms_max: u64,
}

/// What a requester lists (`POST /v1/query/list`, `civmesh records list`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListSpec {
    /// The dataset.
    pub dataset: String,
    /// The fields wanted; the grant's if none.
    #[serde(default)]
    pub fields: Vec<String>,
    /// For what; the grant's if empty.
    #[serde(default)]
    pub purpose: String,
    /// The grant relied on.
    #[serde(default)]
    pub grant: Option<u64>,
    /// Conditions on indexed, granted, unmasked fields.
    #[serde(default)]
    pub filters: Vec<ListFilter>,
    /// Records wanted on the page; 0 or absent for the owner's default.
    #[serde(default)]
    pub page_size: u32,
    /// Where the previous page ended.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// The listing's identity a cursor is bound to: its dataset, grant and filters.
fn listing_identity(header: &QueryHeader, filters: &[ListFilter]) -> [u8; 32] {
    let bytes = codec::encode(&(&header.dataset, header.grant, filters)).unwrap_or_default();
    civmesh_certs::codec::sha256(&bytes)
}

/// How the owner scans for a listing: by the first equality filter, else
/// the first prefix filter, else the grant's first scope condition, else
/// every record. Every other condition is checked on the records read.
fn scan_plan(grant: Option<&Grant>, filters: &[ListFilter]) -> ScanPlan {
    let equals = filters.iter().find_map(|filter| match filter {
        ListFilter::Equals { field, value } => Some((field, IndexRange::Equals(value.clone()))),
        ListFilter::Prefix { .. } => None,
    });
    let prefix = || {
        filters.iter().find_map(|filter| match filter {
            ListFilter::Prefix { field, prefix } => Some((field, IndexRange::Prefix(prefix.clone()))),
            ListFilter::Equals { .. } => None,
        })
    };
    if let Some((field, range)) = equals.or_else(prefix) {
        return ScanPlan::Indexed { field: field.clone(), ranges: vec![range] };
    }
    let Some(condition) = grant.and_then(|grant| grant.scope.first()) else { return ScanPlan::Every };
    let ranges = condition
        .allowed
        .iter()
        .filter_map(|value| match value {
            civmesh_policy::model::FieldValue::Text(text) => Some(IndexRange::Equals(text.clone())),
            _ => None,
        })
        .collect();
    ScanPlan::Indexed { field: condition.field.clone(), ranges }
}

/// Checks each filter names a granted, unmasked, indexed field.
fn check_filters(
    dataset: &Dataset,
    grant: Option<&Grant>,
    filters: &[ListFilter],
) -> Result<(), ListRefusal> {
    if filters.len() > LIST_FILTERS_MAX {
        return Err(ListRefusal::TooManyFilters { max: LIST_FILTERS_MAX });
    }
    for filter in filters {
        let field = filter.field().to_string();
        let granted = match grant {
            Some(grant) => grant.fields.contains(&field),
            None => dataset
                .field(&field)
                .is_some_and(|spec| spec.class == civmesh_policy::model::FieldClass::Public),
        };
        if !granted {
            return Err(ListRefusal::FilterFieldNotGranted { field });
        }
        if grant.is_some_and(|grant| grant.masking.contains_key(&field)) {
            return Err(ListRefusal::FilterFieldMasked { field });
        }
        if !dataset.scope_fields.contains(&field) {
            let indexed = dataset.scope_fields.join(", ");
            return Err(ListRefusal::FilterFieldNotIndexed { field, indexed });
        }
        let text = match filter {
            ListFilter::Equals { value, .. } => value,
            ListFilter::Prefix { prefix, .. } => prefix,
        };
        if text.len() > LIST_FILTER_BYTES_MAX {
            return Err(ListRefusal::Request(format!(
                "a filter value is at most {LIST_FILTER_BYTES_MAX} bytes"
            )));
        }
    }
    Ok(())
}

/// The records one page read, and where the scan stopped.
struct PageRead {
    found: Vec<(String, SubjectKeyHash, RecordVersion)>,
    /// Where the next page resumes; `None` when the scan reached the end.
    resume_after: Option<Vec<u8>>,
}

impl QueryService {
    /// Answers one page of a listing from `peer`, signed.
    pub(super) async fn list(&self, peer: NodeId, wire: ListWire) -> Vec<u8> {
        let (digest, answer) = match self.list_page(peer, wire).await {
            Ok(answered) => answered,
            Err((digest, refusal)) => (digest, ListAnswer::Refused(refusal)),
        };
        let label = match &answer {
            ListAnswer::Page { .. } => "listed",
            ListAnswer::Denied { .. } => "denied",
            ListAnswer::Refused(_) => "refused",
        };
        crate::api::metrics::Metrics::count(&self.metrics.queries_answered, label);
        let body = SignedListBody { request_digest: digest, answer };
        SignedEnvelope::sign(&self.key, &body, now_unix_millis())
            .and_then(|envelope| envelope.to_bytes())
            .unwrap_or_default()
    }

    async fn list_page(
        &self,
        peer: NodeId,
        wire: ListWire,
    ) -> Result<([u8; 32], ListAnswer), ([u8; 32], ListRefusal)> {
        let bounds = self.listing;
        let envelope = SignedEnvelope::<QueryHeader>::from_bytes(&wire.header)
            .map_err(|error| ([0; 32], ListRefusal::Request(error.to_string())))?;
        let digest = envelope.digest();
        let fail = |refusal: ListRefusal| (digest, refusal);
        let page_size = match wire.page_size {
            0 => bounds.page_records_default,
            asked if asked > bounds.page_records_max => {
                return Err(fail(ListRefusal::PageSizeOverBound { asked, max: bounds.page_records_max }));
            }
            asked => asked,
        } as usize;
        let verified = {
            let mut guard = self
                .replay_guard
                .lock()
                .map_err(|_| fail(ListRefusal::Unavailable("replay guard unavailable".into())))?;
            envelope
                .verify_from(&peer, &mut guard, now_unix_millis())
                .map_err(|error| fail(ListRefusal::Request(error.to_string())))?
        };
        let header = verified.payload;
        if !header.subjects.is_empty() {
            return Err(fail(ListRefusal::NamesSubjects));
        }
        let request = access_request(peer, &header);
        let none: [Facts; 0] = [];
        let now_ms = now_unix_millis();
        let mut decision = self.decide_as_owner(&request, &none, now_ms).map_err(fail)?;
        if matches!(decision, Decision::Deny(_)) && header.grant.is_some() {
            // The grant may be newer than this replica: catch up once.
            if self.log.linearizable_read_index(Duration::from_millis(STALE_GRANT_CATCH_UP_MS)).await.is_ok()
            {
                decision = self.decide_as_owner(&request, &none, now_ms).map_err(fail)?;
            }
        }
        if let Decision::Deny(reason) = decision {
            let position =
                self.log_listing(envelope, AccessOutcome::Deny { reason }, now_ms).await.map_err(fail)?;
            return Ok((digest, ListAnswer::Denied { reason, access_log_position: position }));
        }
        let (dataset, grant) = self.log.state().read(|applied| {
            let policy = &applied.policy;
            let grant = header.grant.and_then(|id| policy.grants.get(&id).cloned());
            (policy.datasets.get(&header.dataset).cloned(), grant)
        });
        let dataset = dataset.ok_or_else(|| fail(ListRefusal::NotOwner(header.dataset.clone())))?;
        check_filters(&dataset, grant.as_ref(), &wire.filters).map_err(fail)?;
        let identity = listing_identity(&header, &wire.filters);
        let after = match &wire.cursor {
            None => None,
            Some(cursor) => {
                let bytes = hex::decode(cursor)
                    .map_err(|_| fail(ListRefusal::Cursor(crate::query::cursor::CursorError::Forged)))?;
                let position = self
                    .cursors
                    .open(&bytes, &peer, &identity, now_ms, bounds.cursor_age_ms_max)
                    .map_err(|error| fail(ListRefusal::Cursor(error)))?;
                Some(position)
            }
        };
        let plan = scan_plan(grant.as_ref(), &wire.filters);
        let read = self.read_page(&dataset, &plan, &wire.filters, after, page_size).map_err(fail)?;
        let facts: Vec<Facts> =
            read.found.iter().map(|(_, subject, record)| Facts { subject: *subject, record }).collect();
        let decision = self.decide_as_owner(&request, &facts, now_ms).map_err(fail)?;
        let (outcome, records) = project(&decision, &header, &read.found);
        // Out of scope, or nothing releasable (no consent): not listed at all.
        let records = records_to_send(records, key_field_released(&dataset, &decision));
        let position = self.log_listing(envelope, outcome, now_ms).await.map_err(fail)?;
        let next_cursor = read
            .resume_after
            .map(|position| CursorBody { requester: peer, listing: identity, position, issued_at_ms: now_ms })
            .map(|body| self.cursors.seal(&body).map(hex::encode))
            .map(|sealed| {
                sealed.ok_or_else(|| fail(ListRefusal::Unavailable("cannot seal the cursor".into())))
            })
            .transpose()?;
        Ok((digest, ListAnswer::Page { records, next_cursor, access_log_position: position }))
    }

    /// Decides `request` on this replica, if this node's organisation owns the dataset.
    fn decide_as_owner(
        &self,
        request: &civmesh_policy::AccessRequest,
        facts: &[Facts],
        now_ms: UnixMillis,
    ) -> Result<Decision, ListRefusal> {
        let me = self.key.node_id();
        self.log
            .state()
            .read(|applied| {
                let policy = &applied.policy;
                let owned = policy.datasets.get(&request.dataset).is_some_and(|dataset| {
                    policy.active_member(&me).is_some_and(|member| member.org == dataset.owner)
                });
                owned.then(|| decide(policy, request, facts, now_ms))
            })
            .ok_or_else(|| ListRefusal::NotOwner(request.dataset.clone()))
    }

    /// Reads up to `page_size` records that `plan` reaches after `after`
    /// and every filter holds for, visiting a bounded number of entries.
    fn read_page(
        &self,
        dataset: &Dataset,
        plan: &ScanPlan,
        filters: &[ListFilter],
        mut after: Option<Vec<u8>>,
        page_size: usize,
    ) -> Result<PageRead, ListRefusal> {
        let unavailable =
            |error: crate::records::RecordStoreError| ListRefusal::Unavailable(error.to_string());
        let indexed_field = match plan {
            ScanPlan::Indexed { field, .. } => Some(field.as_str()),
            ScanPlan::Every => None,
        };
        let mut found = Vec::with_capacity(page_size);
        let mut visits_left = page_size.saturating_mul(LIST_SCAN_ENTRIES_PER_RECORD_MAX).max(1);
        while found.len() < page_size && visits_left > 0 {
            let wanted = (page_size - found.len()).min(visits_left);
            let page = self.records.scan(&dataset.id, plan, after.as_deref(), wanted).map_err(unavailable)?;
            visits_left -= page.entries.len();
            for entry in page.entries {
                after = Some(entry.position);
                let Some(record) = self.records.latest(&dataset.id, &entry.key).map_err(unavailable)? else {
                    continue;
                };
                // A stale index entry: the record's value moved on.
                let stale = indexed_field.is_some_and(|field| {
                    !matches!(record.fields.get(field),
                        Some(civmesh_policy::model::FieldValue::Text(text)) if Some(text) == entry.value.as_ref())
                });
                if stale || !filters.iter().all(|filter| filter.matches(record.fields.get(filter.field()))) {
                    continue;
                }
                let subject = SubjectKeyHash::of(&self.subject_key_secret, &entry.key);
                found.push((entry.key, subject, record));
            }
            if page.done {
                return Ok(PageRead { found, resume_after: None });
            }
        }
        Ok(PageRead { found, resume_after: after })
    }

    /// Logs one page (its outcome) as a listing access record.
    async fn log_listing(
        &self,
        request: SignedEnvelope<QueryHeader>,
        outcome: AccessOutcome,
        decided_at_ms: UnixMillis,
    ) -> Result<u64, ListRefusal> {
        let record = AccessRecord { request, outcome, decided_at_ms };
        let command = SignedEnvelope::sign(&self.key, &Command::RecordListing(record), decided_at_ms)
            .map_err(|error| ListRefusal::Unavailable(error.to_string()))?;
        self.log_access(command).await.map_err(|error| ListRefusal::Unavailable(error.to_string()))
    }
}

/// The requester's side: signs a fresh header for one page, sends it with
/// the filters and cursor to `owner`, and checks the owner's signed answer.
pub async fn list(
    swarm: &SwarmClient,
    key: &NodeKey,
    owner: &RaftPeer,
    spec: ListSpec,
) -> Result<ListAnswer, AskError> {
    let ListSpec { dataset, fields, purpose, grant, filters, page_size, cursor } = spec;
    let header = QueryHeader { dataset, subjects: Vec::new(), fields, purpose, grant };
    let envelope = SignedEnvelope::sign(key, &header, now_unix_millis())?;
    let digest = envelope.digest();
    let wire = ListWire { header: envelope.to_bytes()?, filters, page_size, cursor };
    let bytes = codec::encode(&QueryProtocolMessage::List(wire))?;
    let answer = swarm
        .request_on(Protocol::Query, owner, bytes, Duration::from_millis(QUERY_TIMEOUT_MS))
        .await
        .map_err(AskError::NoAnswer)?;
    let signed = SignedEnvelope::<SignedListBody>::from_bytes(&answer)?;
    let body = signed.verify_signature().map_err(AskError::Signature)?;
    if body.signer != owner.node_id {
        return Err(AskError::NotFromOwner);
    }
    match body.payload.answer {
        // A request that does not decode has no digest to answer to.
        ListAnswer::Refused(refusal)
            if body.payload.request_digest == digest || matches!(refusal, ListRefusal::Request(_)) =>
        {
            Err(AskError::ListRefused(refusal))
        }
        answer if body.payload.request_digest == digest => Ok(answer),
        _ => Err(AskError::OtherQuery),
    }
}
