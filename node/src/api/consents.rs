//! `POST /v1/consents`: the dataset's owner records a subject's consent,
//! or its withdrawal (PIPL Art. 14-15), taken at one of its channels. The
//! node hashes the record key under the key it shares with the grantee
//! (as the grantee's requests name subjects), so the log holds no key and
//! every replica matches the consent to the grantee's releases.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use civmesh_certs::OrgId;
use civmesh_policy::model::{SubjectKeyHash, NAME_BYTES_MAX};
use civmesh_policy::Command;
use serde::{Deserialize, Serialize};

use crate::api::grants::commit_as_node;
use crate::api::{ApiError, JsonBody, Shared};
use crate::records::RECORD_KEY_BYTES_MAX;

/// The body of `POST /v1/consents`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentRequest {
    /// The dataset (this node's organisation's).
    pub dataset: String,
    /// The subject's record key (never logged).
    pub record_key: String,
    /// The organisation whose access it allows.
    pub grantee: String,
    /// For what.
    pub purpose: String,
    /// Given (true) or withdrawn (false).
    pub given: bool,
    /// Whether it includes the separate consent for sensitive fields.
    #[serde(default)]
    pub covers_sensitive: bool,
    /// How it was taken, e.g. `street_window`, `online_form`.
    pub channel: String,
}

/// `POST /v1/consents`: signs and commits the consent; a withdrawal makes
/// every holder of the grantee's copies of this subject delete them.
pub(crate) async fn record_consent(
    State(state): State<Shared>,
    JsonBody(request): JsonBody<ConsentRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if request.record_key.is_empty() || request.record_key.len() > RECORD_KEY_BYTES_MAX {
        return Err(ApiError::bad_request(format!("the record key is 1..={RECORD_KEY_BYTES_MAX} bytes")));
    }
    for (what, text) in
        [("purpose", &request.purpose), ("channel", &request.channel), ("dataset", &request.dataset)]
    {
        if text.trim().is_empty() || text.len() > NAME_BYTES_MAX {
            return Err(ApiError::bad_request(format!("the {what} is 1..={NAME_BYTES_MAX} bytes")));
        }
    }
    let grantee = OrgId::new(&request.grantee)
        .map_err(|_| ApiError::bad_request("the grantee is an organisation id, kind/name"))?;
    let owned = state.log.state().read(|applied| applied.policy.owns(&state.identity.org, &request.dataset));
    if !owned {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("this node does not own {}", request.dataset),
        ));
    }
    let pair_key = state.query.subject_keys.for_requester(&grantee).ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "this node has no organisation subject key to hash the subject with",
        )
    })?;
    let command = Command::RecordConsent {
        subject: SubjectKeyHash::of(&pair_key, &request.record_key),
        dataset: request.dataset,
        grantee,
        purpose: request.purpose,
        given: request.given,
        covers_sensitive: request.covers_sensitive,
        channel: request.channel,
    };
    commit_as_node(&state, command).await?;
    Ok(Json(serde_json::json!({ "recorded": if request.given { "given" } else { "withdrawn" } })))
}
