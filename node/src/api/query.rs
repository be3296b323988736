//! The query routes: ask an owner for records, subscribe, read the pushes received and the access log.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::api::{ApiError, ApiState, JsonBody, PathParams, QueryParams, Shared, READ_INDEX_TIMEOUT_MS};

/// `POST /v1/query`: ask the dataset's owner for records.
pub(crate) async fn query_owner(
    State(state): State<Shared>,
    JsonBody(request): JsonBody<crate::query::QuerySpec>,
) -> Result<Json<crate::query::QueryAnswer>, ApiError> {
    ask_owner(&state, request).await.map(Json)
}

/// One query through the dataset's owner (`POST /v1/query`, and the
/// console's record page): the owner decides and logs it before it answers.
pub(crate) async fn ask_owner(
    state: &ApiState,
    request: crate::query::QuerySpec,
) -> Result<crate::query::QueryAnswer, ApiError> {
    if request.keys.is_empty() || request.keys.len() > civmesh_policy::access::QUERY_SUBJECTS_MAX {
        return Err(ApiError::bad_request(format!(
            "a query names 1..={} keys",
            civmesh_policy::access::QUERY_SUBJECTS_MAX
        )));
    }
    check_field_count(&request.fields)?;
    let kept = kept_source_of(request.keep, request.grant)?;
    let peer = owner_peer(state, &request.dataset).await?;
    let source = kept.map(|grant| crate::query::KeptSource {
        dataset: request.dataset.clone(),
        owner: peer.node_id,
        fields: request.fields.clone(),
        purpose: request.purpose.clone(),
        grant,
    });
    let refused = |reason: crate::query::AskError| {
        crate::api::metrics::Metrics::count(&state.metrics.queries_asked, "refused");
        ApiError::new(StatusCode::BAD_GATEWAY, reason.to_string())
    };
    let pair_key = state.query.pair_key_for(&peer).await.map_err(refused)?;
    let answer = crate::query::ask(&state.swarm, &state.query.key, &pair_key, &peer, request)
        .await
        .map_err(refused)?;
    crate::api::metrics::Metrics::count(&state.metrics.queries_asked, crate::query::outcome_label(&answer));
    if let (Some(source), crate::query::QueryAnswer::Released { records, access_log_position, .. }) =
        (&source, &answer)
    {
        state.query.keep_received(source, records, *access_log_position).map_err(ApiError::internal)?;
    }
    Ok(answer)
}

/// The grant a request's records are kept under, if it asks to keep them:
/// keeping needs one, so the copies fall under its retention.
fn kept_source_of(keep: bool, grant: Option<u64>) -> Result<Option<u64>, ApiError> {
    match (keep, grant) {
        (false, _) => Ok(None),
        (true, Some(grant)) => Ok(Some(grant)),
        (true, None) => Err(ApiError::bad_request("keeping records needs the grant they are released under")),
    }
}

/// A request names 1..=`REQUEST_FIELDS_MAX` fields (a listing: or a grant,
/// whose fields it then names).
fn check_field_count(fields: &[String]) -> Result<(), ApiError> {
    let max = civmesh_policy::decide::REQUEST_FIELDS_MAX;
    if fields.is_empty() || fields.len() > max {
        return Err(ApiError::bad_request(format!("a request names 1..={max} fields")));
    }
    Ok(())
}

/// One page of a listing under a grant: the owner logs the page (every
/// subject on it) before it answers. Missing fields and purpose default to
/// the grant's.
pub(crate) async fn list_records(
    State(state): State<Shared>,
    JsonBody(spec): JsonBody<crate::query::ListSpec>,
) -> Result<Json<crate::query::ListAnswer>, ApiError> {
    list_page(&state, spec).await.map(Json)
}

/// One page of a listing through the owner (`POST /v1/query/list`, and the
/// console's record pages): fields and purpose default to the grant's.
pub(crate) async fn list_page(
    state: &ApiState,
    mut spec: crate::query::ListSpec,
) -> Result<crate::query::ListAnswer, ApiError> {
    if spec.filters.len() > crate::query::LIST_FILTERS_MAX {
        return Err(ApiError::bad_request(format!(
            "a listing has at most {} filters",
            crate::query::LIST_FILTERS_MAX
        )));
    }
    if spec.cursor.as_ref().is_some_and(|cursor| cursor.len() > 2 * crate::query::cursor::CURSOR_BYTES_MAX) {
        return Err(ApiError::bad_request("the cursor is not one an owner made"));
    }
    if let Some(grant_id) = spec.grant {
        let grant = state.log.state().read(|applied| applied.policy.grants.get(&grant_id).cloned());
        let grant =
            grant.ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no grant {grant_id}")))?;
        if spec.fields.is_empty() {
            spec.fields = grant.fields.iter().cloned().collect();
        }
        if spec.purpose.is_empty() {
            spec.purpose = grant.purpose.clone();
        }
    }
    check_field_count(&spec.fields)?;
    let peer = owner_peer(state, &spec.dataset).await?;
    let source = kept_source_of(spec.keep, spec.grant)?.map(|grant| crate::query::KeptSource {
        dataset: spec.dataset.clone(),
        owner: peer.node_id,
        fields: spec.fields.clone(),
        purpose: spec.purpose.clone(),
        grant,
    });
    let answer = crate::query::list(&state.swarm, &state.query.key, &peer, spec).await.map_err(|error| {
        crate::api::metrics::Metrics::count(&state.metrics.queries_asked, "refused");
        match error {
            crate::query::AskError::ListRefused(crate::query::ListRefusal::Unavailable(_))
            | crate::query::AskError::NoAnswer(_) => {
                ApiError::new(StatusCode::BAD_GATEWAY, error.to_string())
            }
            crate::query::AskError::ListRefused(_) => ApiError::bad_request(error.to_string()),
            _ => ApiError::new(StatusCode::BAD_GATEWAY, error.to_string()),
        }
    })?;
    let label = match answer {
        crate::query::ListAnswer::Page { .. } => "listed",
        _ => "denied",
    };
    crate::api::metrics::Metrics::count(&state.metrics.queries_asked, label);
    if let (Some(source), crate::query::ListAnswer::Page { records, access_log_position, .. }) =
        (&source, &answer)
    {
        state.query.keep_received(source, records, *access_log_position).map_err(ApiError::internal)?;
    }
    Ok(answer)
}

/// One entry of `GET /v1/access-log` (subjects only as keyed hashes).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessLogSummary {
    /// Position in the access log.
    pub sequence: u64,
    /// The requester's PeerId.
    pub requester: String,
    /// The requester's organisation, by name (`street/jingansi`).
    pub requester_org: String,
    /// The owner node's PeerId.
    pub owner: String,
    /// The owner's organisation, by name.
    pub owner_org: String,
    /// The dataset.
    pub dataset: String,
    /// The purpose.
    pub purpose: String,
    /// The grant relied on.
    pub grant: Option<u64>,
    /// How the records reached the requester: a query, a listing's page
    /// or a push.
    pub kind: civmesh_policy::AccessKind,
    /// "permit" or "deny".
    pub outcome: String,
    /// Why denied.
    pub reason: Option<civmesh_policy::ReasonCode>,
    /// Fields released per subject (keyed hashes, hex).
    pub released: Vec<(String, Vec<String>)>,
    /// When the owner decided.
    pub decided_at_ms: u64,
    /// The same, as ISO 8601 in Asia/Shanghai.
    pub decided_at: String,
}

/// The most entries one page of `GET /v1/access-log` holds.
pub const ACCESS_LOG_PAGE_ENTRIES_MAX: usize = 1_000;
/// The bytes (about) of one page of `GET /v1/access-log` at most; a page
/// holds at least one entry.
pub const ACCESS_LOG_PAGE_BYTES_MAX: usize = 4 * 1024 * 1024;

/// `?from=SEQ&limit=N`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogQuery {
    /// The first sequence number wanted (0 = the first entry).
    #[serde(default)]
    pub from: u64,
    /// How many at most (clamped to 1..=`ACCESS_LOG_PAGE_ENTRIES_MAX`).
    #[serde(default = "access_log_page_entries")]
    pub limit: usize,
}

fn access_log_page_entries() -> usize {
    ACCESS_LOG_PAGE_ENTRIES_MAX
}

/// One page of `GET /v1/access-log`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessLogPage {
    /// The entries from `from` on that concern this node's organisation
    /// (its requests and its datasets; every entry for an auditor), in
    /// log order.
    pub entries: Vec<AccessLogSummary>,
    /// Where the next page starts; absent at the end of the log.
    pub next_from: Option<u64>,
    /// How many entries the whole log holds (counts are public).
    pub total: u64,
    /// The first entry this node's replica holds (later than 0 if it
    /// joined by snapshot); absent when it holds none.
    pub held_from: Option<u64>,
}

/// About how many bytes `entry` takes in a page.
fn summary_bytes(entry: &AccessLogSummary) -> usize {
    let released: usize = entry
        .released
        .iter()
        .map(|(subject, fields)| {
            subject.len() + 8 + fields.iter().map(|field| field.len() + 3).sum::<usize>()
        })
        .sum();
    512 + released
}

pub(crate) async fn access_log(
    State(state): State<Shared>,
    QueryParams(query): QueryParams<AccessLogQuery>,
) -> Result<Json<AccessLogPage>, ApiError> {
    let limit = query.limit.clamp(1, ACCESS_LOG_PAGE_ENTRIES_MAX);
    // A node that joined by snapshot holds the entries after it only: the
    // page starts at the first it holds.
    let history = state.log.history();
    let (start, stored) = history.access_entries(query.from, limit).map_err(ApiError::internal)?;
    let (first, held) = history.access_entries(0, 1).map_err(ApiError::internal)?;
    let held_from = (!held.is_empty()).then_some(first);
    let me = state.query.key.node_id();
    Ok(Json(state.log.state().read(|applied| {
        let policy = &applied.policy;
        let org_of = |node: &civmesh_certs::NodeId| {
            policy.members.get(node).map_or_else(String::new, |member| member.org.to_string())
        };
        let concerns = concerns_of(policy, &me);
        let mut entries = Vec::new();
        let mut page_bytes = 0;
        let mut scanned = 0;
        for entry in &stored {
            if concerns(entry) {
                let summary = summarise(entry, org_of);
                page_bytes += summary_bytes(&summary);
                if page_bytes > ACCESS_LOG_PAGE_BYTES_MAX && !entries.is_empty() {
                    break;
                }
                entries.push(summary);
            }
            scanned += 1;
        }
        let next = start + scanned;
        let next_from = (next < policy.access_log_length && scanned > 0).then_some(next);
        AccessLogPage { entries, next_from, total: policy.access_log_length, held_from }
    })))
}

/// Whether an entry concerns node `me`'s organisation: its own request, or
/// an access to its own data. An auditor is concerned with every entry;
/// a node that is no active member, with none.
fn concerns_of<'a>(
    policy: &'a civmesh_policy::PolicyState,
    me: &civmesh_certs::NodeId,
) -> impl Fn(&civmesh_policy::AccessLogEntry) -> bool + 'a {
    let mine = policy.active_member(me).map(|member| (member.org.clone(), member.role));
    move |entry| match &mine {
        Some((_, civmesh_certs::Role::Auditor)) => true,
        Some((org, _)) => [&entry.requester, &entry.owner]
            .iter()
            .any(|node| policy.members.get(node).is_some_and(|member| member.org == *org)),
        None => false,
    }
}

/// What `GET /v1/access-log` says of one entry; `org_of` names a node's organisation.
fn summarise(
    entry: &civmesh_policy::AccessLogEntry,
    org_of: impl Fn(&civmesh_certs::NodeId) -> String,
) -> AccessLogSummary {
    let (outcome, reason, released) = match &entry.outcome {
        civmesh_policy::AccessOutcome::Deny { reason } => ("deny", Some(*reason), Vec::new()),
        civmesh_policy::AccessOutcome::Permit { released } => (
            "permit",
            None,
            released.iter().map(|release| (hex::encode(release.subject.0), release.fields.clone())).collect(),
        ),
    };
    AccessLogSummary {
        sequence: entry.sequence,
        requester: entry.requester.to_string(),
        requester_org: org_of(&entry.requester),
        owner: entry.owner.to_string(),
        owner_org: org_of(&entry.owner),
        dataset: entry.header.dataset.clone(),
        purpose: entry.header.purpose.clone(),
        grant: entry.header.grant,
        kind: entry.kind(),
        outcome: outcome.to_string(),
        reason,
        released,
        decided_at_ms: entry.decided_at_ms,
        decided_at: civmesh_policy::evaluation::format_time(entry.decided_at_ms),
    }
}

/// The owner of `dataset` as Raft knows it (with its address).
async fn owner_peer(state: &ApiState, dataset: &str) -> Result<civmesh_consensus::RaftPeer, ApiError> {
    let find_owner = || {
        state.log.state().read(|applied| {
            let dataset = applied.policy.datasets.get(dataset)?;
            applied
                .policy
                .members
                .values()
                .find(|member| member.org == dataset.owner && member.revoked.is_none())
                .map(|member| member.node_id)
        })
    };
    let mut owner = find_owner();
    if owner.is_none() {
        // Perhaps published a moment ago: catch up with the leader once.
        state.log.linearizable_read_index(Duration::from_millis(READ_INDEX_TIMEOUT_MS)).await?;
        owner = find_owner();
    }
    let owner = owner.ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, format!("no active owner node for dataset {dataset}"))
    })?;
    if owner == state.log.me().node_id {
        // A node cannot dial itself: its own records are read directly.
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("this node owns {dataset}: read its records with POST /v1/records/show"),
        ));
    }
    state.log.peer_of(&owner).ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the owner's address is unknown".to_string())
    })
}

pub(crate) async fn subscribe(
    State(state): State<Shared>,
    JsonBody(spec): JsonBody<crate::query::SubscriptionSpec>,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_field_count(&spec.fields)?;
    let owner = owner_peer(&state, &spec.dataset).await?;
    let subscription = state.query.subscribe_to(&owner, spec).await.map_err(|error| match error {
        // The owner read the request and refused it: the request is wrong.
        crate::query::SubscribeToError::Refused(_) => ApiError::bad_request(error.to_string()),
        _ => ApiError::new(StatusCode::BAD_GATEWAY, error.to_string()),
    })?;
    Ok(Json(serde_json::json!({ "subscription": subscription })))
}

pub(crate) async fn subscription_updates(
    State(state): State<Shared>,
) -> Json<Vec<crate::query::ReceivedPush>> {
    Json(state.query.received_pushes())
}

/// `GET /v1/subscriptions/{id}`: one of this node's subscriptions as its
/// subscriber sees it: the initial listing's progress, the copy, the pushes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubscriptionView {
    /// The subscription id, hex.
    pub subscription: String,
    /// The dataset.
    pub dataset: String,
    /// The owner's organisation.
    pub owner_org: String,
    /// The grant relied on.
    pub grant: Option<u64>,
    /// For what.
    pub purpose: String,
    /// The fields subscribed to.
    pub fields: Vec<String>,
    /// When the owner accepted it (ISO 8601, Asia/Shanghai).
    pub started_at: String,
    /// The initial listing: `listing` or `done`.
    pub initial_sync: String,
    /// Listing pages received.
    pub pages: u64,
    /// Records the listing delivered.
    pub records_listed: u64,
    /// When the initial listing finished.
    pub initial_sync_finished_at: Option<String>,
    /// Subjects the copy holds.
    pub records_held: u64,
    /// The access-log position of the newest push.
    pub last_push_position: Option<u64>,
    /// When the newest push arrived.
    pub last_change_at: Option<String>,
    /// How long the newest push took from the owner's signature to here.
    pub last_push_lag_ms: Option<u64>,
    /// Why the last listing page failed, if it did.
    pub last_error: Option<String>,
}

fn subscription_id(id: &str) -> Result<[u8; 32], ApiError> {
    civmesh_policy::hex_digest::from_hex(id)
        .ok_or_else(|| ApiError::bad_request(format!("{id:?} is not a subscription id (64 hex digits)")))
}

fn progress_of(state: &ApiState, digest: &[u8; 32], id: &str) -> Result<crate::query::Progress, ApiError> {
    state
        .query
        .progress(digest)
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("this node made no subscription {id}")))
}

pub(crate) async fn subscription(
    State(state): State<Shared>,
    PathParams(id): PathParams<String>,
) -> Result<Json<SubscriptionView>, ApiError> {
    let digest = subscription_id(&id)?;
    let progress = progress_of(&state, &digest, &id)?;
    let owner_org = state.log.state().read(|applied| {
        applied.policy.members.get(&progress.owner).map_or_else(String::new, |member| member.org.to_string())
    });
    let time = civmesh_policy::evaluation::format_time;
    let (initial_sync, finished_at) = match progress.initial_sync {
        crate::query::InitialSync::Listing { .. } => ("listing", None),
        crate::query::InitialSync::Done { finished_at_ms } => ("done", Some(time(finished_at_ms))),
    };
    Ok(Json(SubscriptionView {
        subscription: id,
        dataset: progress.dataset,
        owner_org,
        grant: progress.grant,
        purpose: progress.purpose,
        fields: progress.fields,
        started_at: time(progress.started_at_ms),
        initial_sync: initial_sync.to_string(),
        pages: progress.pages,
        records_listed: progress.records_listed,
        initial_sync_finished_at: finished_at,
        records_held: progress.records_held,
        last_push_position: progress.last_push_position,
        last_change_at: progress.last_change_at_ms.map(time),
        last_push_lag_ms: progress.last_push_lag_ms,
        last_error: progress.last_error,
    }))
}

/// What `POST /v1/subscriptions/{id}/records` reads of a copy.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyPageRequest {
    /// Continue after this subject (the previous page's `next`).
    #[serde(default)]
    pub after: Option<String>,
    /// Records wanted, 1..=1000 (100 if absent).
    #[serde(default)]
    pub page_size: Option<u32>,
}

/// A page of a subscription's copy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CopyPage {
    /// The records, in subject order.
    pub records: Vec<crate::query::ReleasedRecord>,
    /// Where the next page starts; none after the last.
    pub next: Option<String>,
}

pub(crate) async fn subscription_records(
    State(state): State<Shared>,
    PathParams(id): PathParams<String>,
    JsonBody(request): JsonBody<CopyPageRequest>,
) -> Result<Json<CopyPage>, ApiError> {
    let digest = subscription_id(&id)?;
    progress_of(&state, &digest, &id)?;
    let page_size = request.page_size.unwrap_or(100) as usize;
    if page_size == 0 || page_size > crate::query::COPY_PAGE_RECORDS_MAX {
        return Err(ApiError::bad_request(format!(
            "page_size is 1..={}",
            crate::query::COPY_PAGE_RECORDS_MAX
        )));
    }
    let after = match &request.after {
        Some(after) => Some(civmesh_policy::hex_digest::from_hex(after).ok_or_else(|| {
            ApiError::bad_request("after is a subject from a previous page (64 hex digits)")
        })?),
        None => None,
    };
    let records = state.query.copy_page(&digest, after.as_ref(), page_size).map_err(ApiError::internal)?;
    let next = (records.len() == page_size)
        .then(|| records.last().map(|record| civmesh_policy::hex_digest::to_hex(&record.subject.0)))
        .flatten();
    Ok(Json(CopyPage { records, next }))
}
