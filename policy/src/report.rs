//! `catalog match`: lines the demand list up against the catalog and the
//! grants, so operators see what is missing, waiting or expiring.

use std::collections::BTreeSet;

use civmesh_certs::UnixMillis;
use serde::{Deserialize, Serialize};

use crate::model::{DatasetId, DemandId, GrantId};
use crate::state::PolicyState;

const MILLIS_PER_DAY: u64 = 86_400_000;

/// The catalog-match report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogMatch {
    /// Demands for datasets nobody publishes.
    pub demands_without_producer: Vec<DemandId>,
    /// Demands for published datasets with no active grant that covers them.
    pub demands_without_grant: Vec<DemandId>,
    /// Active grants that expire within the horizon.
    pub grants_expiring: Vec<GrantId>,
    /// Published datasets no demand asks for.
    pub datasets_without_demand: Vec<DatasetId>,
}

/// Builds the report at `now_ms`, with grants expiring within
/// `expiry_horizon_days` listed.
pub fn catalog_match(state: &PolicyState, now_ms: UnixMillis, expiry_horizon_days: u32) -> CatalogMatch {
    let horizon_ms = now_ms.saturating_add(u64::from(expiry_horizon_days) * MILLIS_PER_DAY);
    let active = |grant: &&crate::model::Grant| grant.revoked.is_none() && now_ms < grant.valid_until_ms;
    let mut report = CatalogMatch::default();
    for demand in state.demands.values() {
        if !state.datasets.contains_key(&demand.dataset) {
            report.demands_without_producer.push(demand.id);
            continue;
        }
        let covered = state.grants.values().filter(active).any(|grant| {
            grant.dataset == demand.dataset
                && grant.grantee == demand.requester
                && grant.purpose == demand.purpose
                && demand.fields.is_subset(&grant.fields)
        });
        if !covered {
            report.demands_without_grant.push(demand.id);
        }
    }
    report.grants_expiring = state
        .grants
        .values()
        .filter(active)
        .filter(|grant| grant.valid_until_ms <= horizon_ms)
        .map(|grant| grant.id)
        .collect();
    let demanded: BTreeSet<&DatasetId> = state.demands.values().map(|demand| &demand.dataset).collect();
    report.datasets_without_demand =
        state.datasets.keys().filter(|id| !demanded.contains(id)).cloned().collect();
    report
}
