//! Listings: a requester pages through every record its grant lets it
//! see, optionally filtered on indexed fields. Each page is its own signed
//! request and its own access record (naming every subject released),
//! logged before the page is sent. The owner reads only the scan's range
//! of its store: an index of a scope field, or every record when the grant
//! has no scope. Records outside the scope never appear, and the cursor
//! (sealed) does not tell where the scan went.

use std::collections::BTreeSet;
use std::time::Duration;

use civmesh_certs::{codec, now_unix_millis, NodeId, NodeKey, SignedEnvelope, UnixMillis};
use civmesh_consensus::RaftPeer;
use civmesh_policy::model::{Dataset, FieldClass, FieldValue, Grant, SubjectKeyHash};
use civmesh_policy::{decide, AccessOutcome, AccessRecord, Command, Decision, QueryHeader};
use serde::{Deserialize, Serialize};

use crate::query::cursor::CursorBody;
use crate::query::owner::{key_field_released, project, records_to_send};
use crate::query::read_ahead::ReadAheadKey;
use crate::query::requester::owner_answer;
use crate::query::{
    access_request, AskError, Facts, ListAnswer, ListFilter, ListRefusal, ListWire, QueryProtocolMessage,
    QueryService, SignedListBody, STALE_GRANT_CATCH_UP_MS,
};
use crate::records::{IndexRange, RecordStore, RecordVersion, ScanPlan};
use crate::swarm::SwarmClient;

/// The most filters one listing has.
pub const LIST_FILTERS_MAX: usize = 8;
/// The longest filter value or prefix, in bytes.
pub const LIST_FILTER_BYTES_MAX: usize = 256;
/// Index entries an owner reads for one page at most, per record the page
/// holds (entries it skips are stale, filtered out, or outside a scope of
/// several conditions).
pub const LIST_SCAN_ENTRIES_PER_RECORD_MAX: usize = 4;
/// The records on one page at most, in bytes (about): a page stops there,
/// well under the protocol's `QUERY_MESSAGE_BYTES_MAX`, and continues on
/// the next.
pub const LIST_PAGE_BYTES_MAX: usize = 4 * 1024 * 1024;

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
    /// Keep the page's records in this node's received store, under the grant.
    #[serde(default)]
    pub keep: bool,
}

/// The listing's identity a cursor is bound to: its dataset, grant and filters.
fn listing_identity(header: &QueryHeader, filters: &[ListFilter]) -> [u8; 32] {
    let bytes = codec::encode(&(&header.dataset, header.grant, filters)).unwrap_or_default();
    civmesh_certs::codec::sha256(&bytes)
}

/// How the owner scans for a listing. Under a grant with a scope, only
/// the index ranges of its first scope condition's values (narrowed by a
/// filter on that field) are read, so out-of-scope records are never
/// visited, counted or passed by a cursor. Without a scope: by the first
/// equality filter, else the first prefix filter, else every record. Every
/// other condition is checked on the records read.
fn scan_plan(grant: Option<&Grant>, filters: &[ListFilter]) -> ScanPlan {
    if let Some(condition) = grant.and_then(|grant| grant.scope.first()) {
        let ranges = condition
            .allowed
            .iter()
            .filter(|value| {
                filters
                    .iter()
                    .filter(|filter| filter.field() == condition.field)
                    .all(|filter| filter.matches(Some(value)))
            })
            .filter_map(|value| match value {
                FieldValue::Text(text) => Some(IndexRange::Equals(text.clone())),
                _ => None,
            })
            .collect();
        return ScanPlan::Indexed { field: condition.field.clone(), ranges };
    }
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
    match equals.or_else(prefix) {
        Some((field, range)) => ScanPlan::Indexed { field: field.clone(), ranges: vec![range] },
        None => ScanPlan::Every,
    }
}

/// Checks each filter names a field the listing releases as stored (granted,
/// unmasked, not negative-listed, not sensitive) that is indexed, with a
/// bounded value without NUL.
fn check_filters(
    dataset: &Dataset,
    grant: Option<&Grant>,
    negative_listed: &BTreeSet<String>,
    filters: &[ListFilter],
) -> Result<(), ListRefusal> {
    if filters.len() > LIST_FILTERS_MAX {
        return Err(ListRefusal::TooManyFilters { max: LIST_FILTERS_MAX });
    }
    for filter in filters {
        let field = filter.field().to_string();
        let class = dataset.field(&field).map(|spec| spec.class);
        let granted = match grant {
            Some(grant) => grant.fields.contains(&field),
            None => class == Some(FieldClass::Public),
        };
        if !granted {
            return Err(ListRefusal::FilterFieldNotGranted { field });
        }
        if grant.is_some_and(|grant| grant.masking.contains_key(&field)) {
            return Err(ListRefusal::FilterFieldMasked { field });
        }
        if negative_listed.contains(&field) || class.is_some_and(FieldClass::is_sensitive) {
            return Err(ListRefusal::FilterFieldWithheld { field });
        }
        if !dataset.scope_fields.contains(&field) {
            let indexed = dataset.scope_fields.join(", ");
            return Err(ListRefusal::FilterFieldNotIndexed { field, indexed });
        }
        let text = match filter {
            ListFilter::Equals { value, .. } => value,
            ListFilter::Prefix { prefix, .. } => prefix,
        };
        if text.len() > LIST_FILTER_BYTES_MAX || text.contains('\0') {
            return Err(ListRefusal::Request(format!(
                "a filter value is at most {LIST_FILTER_BYTES_MAX} bytes, without NUL"
            )));
        }
    }
    Ok(())
}

/// About how many bytes `record` takes in an answer.
fn answer_bytes(key: &str, record: &RecordVersion) -> usize {
    let value_bytes = |value: &FieldValue| match value {
        FieldValue::Text(text) => text.len(),
        _ => 8,
    };
    key.len() + record.fields.iter().map(|(name, value)| name.len() + value_bytes(value) + 8).sum::<usize>()
}

/// What a record must satisfy to be listed: the grant's scope (checked
/// again by the decision) and every filter.
#[derive(Clone)]
struct Conditions {
    grant: Option<Grant>,
    filters: Vec<ListFilter>,
}

impl Conditions {
    fn hold(&self, record: &RecordVersion) -> bool {
        self.grant.as_ref().is_none_or(|grant| grant.in_scope(|field| record.fields.get(field)))
            && self.filters.iter().all(|filter| filter.matches(record.fields.get(filter.field())))
    }
}

/// The records one page read, and where the scan stopped.
pub(super) struct PageRead {
    pub(super) found: Vec<(String, SubjectKeyHash, RecordVersion)>,
    /// Where the next page resumes; `None` when the scan reached the end.
    pub(super) resume_after: Option<Vec<u8>>,
}

/// What one page's read needs.
#[derive(Clone)]
struct PageScan {
    dataset: Dataset,
    plan: ScanPlan,
    conditions: Conditions,
    page_size: usize,
}

impl QueryService {
    /// Answers one page of a listing from `peer`, signed.
    pub(super) async fn list(&self, peer: NodeId, wire: ListWire) -> Vec<u8> {
        let (digest, answer) = match self.list_page(peer, wire).await {
            Ok(answered) => answered,
            Err((digest, refusal)) => (digest, ListAnswer::Refused(refusal)),
        };
        self.sign_list_answer(digest, answer)
    }

    /// Counts a listing's answer and signs it, bound to the request's digest.
    pub(super) fn sign_list_answer(&self, request_digest: [u8; 32], answer: ListAnswer) -> Vec<u8> {
        let label = match &answer {
            ListAnswer::Page { .. } => "listed",
            ListAnswer::Denied { .. } => "denied",
            ListAnswer::Refused(_) => "refused",
        };
        crate::api::metrics::Metrics::count(&self.metrics.queries_answered, label);
        self.signed(&SignedListBody { request_digest, answer })
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
        let (dataset, grant, negative_listed) = self.listing_policy(&header);
        let dataset = dataset.ok_or_else(|| fail(ListRefusal::NotOwner(header.dataset.clone())))?;
        check_filters(&dataset, grant.as_ref(), &negative_listed, &wire.filters).map_err(fail)?;
        let identity = listing_identity(&header, &wire.filters);
        let after = match &wire.cursor {
            None => None,
            Some(cursor) => Some(self.open_cursor(cursor, &peer, &identity, now_ms).map_err(fail)?),
        };
        let plan = scan_plan(grant.as_ref(), &wire.filters);
        let conditions = Conditions { grant: grant.clone(), filters: wire.filters.clone() };
        let scan = PageScan { dataset: dataset.clone(), plan, conditions, page_size };
        let read = self.page_records(peer, identity, scan, after).await.map_err(fail)?;
        let facts: Vec<Facts> =
            read.found.iter().map(|(_, subject, record)| Facts { subject: *subject, record }).collect();
        let decision = self.decide_as_owner(&request, &facts, now_ms).map_err(fail)?;
        let (outcome, records) = project(&decision, &header, &read.found);
        // Out of scope, or nothing releasable (no consent): not listed at all.
        let records = records_to_send(records, |index| key_field_released(&dataset, &decision, index));
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

    /// The dataset, the grant and the dataset's negative-listed fields, as
    /// this replica holds them.
    fn listing_policy(&self, header: &QueryHeader) -> (Option<Dataset>, Option<Grant>, BTreeSet<String>) {
        self.log.state().read(|applied| {
            let policy = &applied.policy;
            let grant = header.grant.and_then(|id| policy.grants.get(&id).cloned());
            let negative_listed = policy
                .negative_list
                .keys()
                .filter(|(dataset, _)| *dataset == header.dataset)
                .filter_map(|(_, field)| field.clone())
                .collect();
            (policy.datasets.get(&header.dataset).cloned(), grant, negative_listed)
        })
    }

    /// The scan position in `cursor` (hex), if this owner sealed it for
    /// `peer`'s listing `identity` and it has not expired.
    fn open_cursor(
        &self,
        cursor: &str,
        peer: &NodeId,
        identity: &[u8; 32],
        now_ms: UnixMillis,
    ) -> Result<Vec<u8>, ListRefusal> {
        let bytes = hex::decode(cursor)
            .map_err(|_| ListRefusal::Cursor(crate::query::cursor::CursorError::Forged))?;
        self.cursors
            .open(&bytes, peer, identity, now_ms, self.listing.cursor_age_ms_max)
            .map_err(ListRefusal::Cursor)
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

    /// The page `scan` reaches after `after`: read ahead while the previous
    /// page committed, or read now. Then reads the page after it ahead.
    async fn page_records(
        &self,
        peer: NodeId,
        identity: [u8; 32],
        scan: PageScan,
        after: Option<Vec<u8>>,
    ) -> Result<PageRead, ListRefusal> {
        let page_size = scan.page_size;
        let key =
            |position: Vec<u8>| ReadAheadKey { requester: peer, listing: identity, position, page_size };
        let ahead = match &after {
            Some(position) => {
                self.read_aheads.take(&key(position.clone()), || self.records.generation()).await
            }
            None => None,
        };
        let pair_key = self.pair_key_of(&peer).ok_or_else(|| {
            ListRefusal::Unavailable("this node holds no subject key for the requester's organisation".into())
        })?;
        let read = match ahead {
            Some(read) => read,
            None => read_page(&self.records, &pair_key, &scan, after)?,
        };
        if let Some(position) = &read.resume_after {
            let records = self.records.clone();
            let generation = self.records.generation();
            let next = position.clone();
            let read_next = move || read_page(&records, &pair_key, &scan, Some(next));
            self.read_aheads.start(&self.tasks, key(position.clone()), generation, read_next);
        }
        Ok(read)
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

/// Reads up to `page_size` records that `plan` reaches after `after`,
/// in the grant's scope and matching every filter, visiting a bounded
/// number of entries and stopping at `LIST_PAGE_BYTES_MAX`.
fn read_page(
    store: &RecordStore,
    pair_key: &super::SubjectKey,
    scan: &PageScan,
    mut after: Option<Vec<u8>>,
) -> Result<PageRead, ListRefusal> {
    let unavailable = |error: crate::records::RecordStoreError| ListRefusal::Unavailable(error.to_string());
    let PageScan { dataset, plan, conditions, page_size } = scan;
    let page_size = *page_size;
    let indexed_field = match plan {
        ScanPlan::Indexed { field, .. } => Some(field.as_str()),
        ScanPlan::Every => None,
    };
    let mut found = Vec::with_capacity(page_size);
    let mut bytes = 0usize;
    let mut visits_left = page_size.saturating_mul(LIST_SCAN_ENTRIES_PER_RECORD_MAX).max(1);
    while found.len() < page_size && visits_left > 0 {
        let wanted = (page_size - found.len()).min(visits_left);
        let page = store.scan(&dataset.id, plan, after.as_deref(), wanted).map_err(unavailable)?;
        visits_left -= page.entries.len();
        let keys: Vec<&str> = page.entries.iter().map(|entry| entry.key.as_str()).collect();
        let latest = store.latest_many(&dataset.id, &keys).map_err(unavailable)?;
        for (entry, record) in page.entries.into_iter().zip(latest) {
            if bytes >= LIST_PAGE_BYTES_MAX {
                return Ok(PageRead { found, resume_after: after });
            }
            after = Some(entry.position);
            let Some(record) = record else { continue };
            // A stale index entry: the record's value moved on.
            let stale = indexed_field.is_some_and(|field| {
                !matches!(record.fields.get(field),
                    Some(FieldValue::Text(text)) if Some(text) == entry.value.as_ref())
            });
            if stale || !conditions.hold(&record) {
                continue;
            }
            bytes += answer_bytes(&entry.key, &record);
            let subject = SubjectKeyHash::of(pair_key, &entry.key);
            found.push((entry.key, subject, record));
        }
        if page.done {
            return Ok(PageRead { found, resume_after: None });
        }
    }
    Ok(PageRead { found, resume_after: after })
}

/// The requester's side: signs a fresh header for one page, sends it with
/// the filters and cursor to `owner`, and checks the owner's signed answer.
pub async fn list(
    swarm: &SwarmClient,
    key: &NodeKey,
    owner: &RaftPeer,
    spec: ListSpec,
) -> Result<ListAnswer, AskError> {
    let ListSpec { dataset, fields, purpose, grant, filters, page_size, cursor, keep: _ } = spec;
    let header = QueryHeader { dataset, subjects: Vec::new(), fields, purpose, grant };
    let envelope = SignedEnvelope::sign(key, &header, now_unix_millis())?;
    let digest = envelope.digest();
    let wire = ListWire { header: envelope.to_bytes()?, filters, page_size, cursor };
    let body: SignedListBody = owner_answer(swarm, owner, &QueryProtocolMessage::List(wire)).await?;
    match body.answer {
        // A request that does not decode has no digest to answer to.
        ListAnswer::Refused(refusal)
            if body.request_digest == digest || matches!(refusal, ListRefusal::Request(_)) =>
        {
            Err(AskError::ListRefused(refusal))
        }
        answer if body.request_digest == digest => Ok(answer),
        _ => Err(AskError::OtherQuery),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use civmesh_certs::OrgId;
    use civmesh_policy::model::{
        FieldSpec, FieldType, LegalBasis, MaskingRule, ScopeCondition, SharingCategory,
    };

    fn text(value: &str) -> FieldValue {
        FieldValue::Text(value.into())
    }

    fn dataset() -> Dataset {
        let field = |name: &str, class| FieldSpec { name: name.into(), field_type: FieldType::Text, class };
        Dataset {
            id: "civil-affairs/residents".into(),
            owner: OrgId::new("dept/civil-affairs").unwrap(),
            title: "Residents".into(),
            subject_key_field: "citizen_id".into(),
            sharing: SharingCategory::Conditional,
            fields: vec![
                field("citizen_id", FieldClass::Personal),
                field("phone", FieldClass::Personal),
                field("street", FieldClass::Public),
                field("committee", FieldClass::Public),
                field(
                    "alone",
                    FieldClass::Sensitive(civmesh_policy::model::SensitiveCategory::SpecificIdentity),
                ),
            ],
            scope_fields: vec!["street".into(), "committee".into(), "phone".into(), "alone".into()],
            version: 1,
        }
    }

    fn grant(streets: &[&str]) -> Grant {
        Grant {
            id: 1,
            dataset: "civil-affairs/residents".into(),
            grantor: OrgId::new("dept/civil-affairs").unwrap(),
            grantee: OrgId::new("street/jingansi").unwrap(),
            fields: ["citizen_id", "phone", "street", "committee", "alone"].map(String::from).into(),
            purpose: "care".into(),
            legal_basis: LegalBasis::StatutoryDuty,
            scope: vec![ScopeCondition {
                field: "street".into(),
                allowed: streets.iter().map(|s| text(s)).collect(),
            }],
            valid_from_ms: 0,
            valid_until_ms: u64::MAX,
            masking: [("phone".to_string(), MaskingRule::KeepLast(4))].into(),
            consent_required: false,
            demand: None,
            issued_at_ms: 0,
            revoked: None,
            retention: None,
            assessment: None,
        }
    }

    fn equals(field: &str, value: &str) -> ListFilter {
        ListFilter::Equals { field: field.into(), value: value.into() }
    }

    #[test]
    fn a_scoped_listing_reads_only_the_scope_s_ranges_whatever_the_filters() {
        let scoped = grant(&["jingansi", "nanjingxilu"]);
        let ranges = |filters: &[ListFilter]| match scan_plan(Some(&scoped), filters) {
            ScanPlan::Indexed { field, ranges } if field == "street" => ranges,
            other => panic!("not the scope's index: {other:?}"),
        };
        let both = [IndexRange::Equals("jingansi".into()), IndexRange::Equals("nanjingxilu".into())];
        assert_eq!(ranges(&[]), both);
        assert_eq!(
            ranges(&[equals("committee", "jingansi-1")]),
            both,
            "another field's filter is checked on reads"
        );
        assert_eq!(ranges(&[equals("street", "nanjingxilu")]), [IndexRange::Equals("nanjingxilu".into())]);
        assert_eq!(ranges(&[equals("street", "zhenru")]), [], "another street: nothing is read");
        let prefix = ListFilter::Prefix { field: "street".into(), prefix: "nanjing".into() };
        assert_eq!(ranges(&[prefix]), [IndexRange::Equals("nanjingxilu".into())]);
        assert_eq!(scan_plan(None, &[]), ScanPlan::Every);
    }

    #[test]
    fn filters_name_only_fields_released_as_stored_and_indexed() {
        let (dataset, grant) = (dataset(), grant(&["jingansi"]));
        let listed = ["citizen_id".to_string()].into();
        let none = BTreeSet::new();
        let check = |filter: ListFilter, negative: &BTreeSet<String>| {
            check_filters(&dataset, Some(&grant), negative, &[filter]).err()
        };
        let field = |name: &str| name.to_string();
        assert_eq!(check(equals("street", "jingansi"), &none), None);
        assert_eq!(
            check(equals("phone", "1"), &none),
            Some(ListRefusal::FilterFieldMasked { field: field("phone") })
        );
        assert_eq!(
            check(equals("alone", "x"), &none),
            Some(ListRefusal::FilterFieldWithheld { field: field("alone") })
        );
        assert_eq!(
            check(equals("citizen_id", "x"), &listed),
            Some(ListRefusal::FilterFieldWithheld { field: field("citizen_id") })
        );
        assert!(matches!(
            check(equals("citizen_id", "x"), &none),
            Some(ListRefusal::FilterFieldNotIndexed { .. })
        ));
        assert!(matches!(check(equals("street", "jing\0ansi"), &none), Some(ListRefusal::Request(_))));
        assert!(matches!(check(equals("name", "x"), &none), Some(ListRefusal::FilterFieldNotGranted { .. })));
    }
}
