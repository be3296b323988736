//! The catalog match of one demand, for the officer who decides it: which
//! requested fields the dataset has (and their classes), which are on the
//! negative list, the grants the requester already holds on the dataset,
//! and whether one of them already covers the demand (the federation-wide
//! `civmesh_policy::catalog_match`).

use civmesh_certs::UnixMillis;
use civmesh_policy::model::{Demand, FieldClass, GrantId};
use civmesh_policy::{CatalogMatch, PolicyState};

/// The grants expiring within this many days count as expiring in the match.
const EXPIRY_HORIZON_DAYS: u32 = 30;

/// One requested field, against the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FieldMatch {
    /// The field asked for.
    pub name: String,
    /// Its class, if the dataset has it.
    pub class: Option<FieldClass>,
    /// Whether it (or the whole dataset) is on the negative list.
    pub negative_listed: bool,
}

/// A grant the requester already holds on the demand's dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct HeldGrant {
    /// Its number.
    pub id: GrantId,
    /// Its fields.
    pub fields: Vec<String>,
    /// Its purpose.
    pub purpose: String,
    /// The end of its window.
    pub valid_until_ms: UnixMillis,
    /// Whether it ends within the match's horizon.
    pub expiring: bool,
}

/// The match of one demand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DemandMatch {
    /// The requested fields, in order.
    pub fields: Vec<FieldMatch>,
    /// The requester's grants on the dataset, usable now.
    pub held: Vec<HeldGrant>,
    /// Whether an active grant already gives the requester every field for
    /// the demand's purpose.
    pub covered: bool,
}

/// The federation-wide catalog match at `now_ms`, which each demand's
/// match reads (made once per page).
pub(super) fn report(policy: &PolicyState, now_ms: UnixMillis) -> CatalogMatch {
    civmesh_policy::catalog_match(policy, now_ms, EXPIRY_HORIZON_DAYS)
}

/// The match of `demand` in `policy` at `now_ms`, given the catalog match
/// `report` of that moment.
pub(super) fn demand_match(
    policy: &PolicyState,
    report: &CatalogMatch,
    demand: &Demand,
    now_ms: UnixMillis,
) -> DemandMatch {
    let dataset = policy.datasets.get(&demand.dataset);
    let listed =
        |field: Option<&String>| policy.negative_list.contains_key(&(demand.dataset.clone(), field.cloned()));
    let whole_dataset_listed = listed(None);
    let fields = demand
        .fields
        .iter()
        .map(|name| FieldMatch {
            name: name.clone(),
            class: dataset.and_then(|dataset| dataset.field(name)).map(|spec| spec.class),
            negative_listed: whole_dataset_listed || listed(Some(name)),
        })
        .collect();
    let held = policy
        .grants
        .values()
        .filter(|grant| grant.check_usable(&demand.requester, &demand.dataset, None, now_ms).is_ok())
        .map(|grant| HeldGrant {
            id: grant.id,
            fields: grant.fields.iter().cloned().collect(),
            purpose: grant.purpose.clone(),
            valid_until_ms: grant.valid_until_ms,
            expiring: report.grants_expiring.contains(&grant.id),
        })
        .collect();
    let covered = dataset.is_some() && !report.demands_without_grant.contains(&demand.id);
    DemandMatch { fields, held, covered }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use civmesh_certs::OrgId;
    use civmesh_policy::model::{
        Dataset, FieldSpec, FieldType, Grant, LegalBasis, NegativeListEntry, SharingCategory,
    };

    use super::*;

    const NOW_MS: UnixMillis = 1_780_000_000_000;
    const DAY_MS: UnixMillis = 86_400_000;
    const ENTERPRISES: &str = "market-supervision/enterprise-registry";

    fn org(name: &str) -> OrgId {
        OrgId::new(name).unwrap()
    }

    fn policy() -> PolicyState {
        let field = |name: &str, class| FieldSpec { name: name.into(), field_type: FieldType::Text, class };
        let dataset = Dataset {
            id: ENTERPRISES.into(),
            owner: org("dept/market-supervision"),
            title: "Enterprise registry".into(),
            subject_key_field: "credit_code".into(),
            sharing: SharingCategory::Conditional,
            fields: vec![
                field("credit_code", FieldClass::Public),
                field("name", FieldClass::Public),
                field("legal_rep_phone", FieldClass::Personal),
                field("district", FieldClass::Public),
                field("street", FieldClass::Public),
            ],
            scope_fields: vec!["district".into(), "street".into()],
            version: 1,
        };
        let mut policy = PolicyState::default();
        policy.datasets.insert(ENTERPRISES.into(), dataset);
        policy
    }

    fn demand(fields: &[&str]) -> Demand {
        Demand {
            id: 1,
            requester: org("street/jingansi"),
            dataset: ENTERPRISES.into(),
            fields: fields.iter().map(|field| field.to_string()).collect::<BTreeSet<_>>(),
            purpose: "street-inspection".into(),
            legal_basis: LegalBasis::StatutoryDuty,
            filed_at_ms: NOW_MS - DAY_MS,
            reason: None,
            until_ms: None,
            refused: None,
        }
    }

    fn grant(id: GrantId, fields: &[&str], until_ms: UnixMillis) -> Grant {
        Grant {
            id,
            dataset: ENTERPRISES.into(),
            grantor: org("dept/market-supervision"),
            grantee: org("street/jingansi"),
            fields: fields.iter().map(|field| field.to_string()).collect(),
            purpose: "street-inspection".into(),
            legal_basis: LegalBasis::StatutoryDuty,
            scope: Vec::new(),
            valid_from_ms: NOW_MS - DAY_MS,
            valid_until_ms: until_ms,
            masking: Default::default(),
            consent_required: false,
            demand: None,
            issued_at_ms: NOW_MS - DAY_MS,
            revoked: None,
            retention: None,
            assessment: None,
        }
    }

    /// The match of a demand for `fields`, filed in `policy`, at `at_ms`.
    fn matched(policy: &mut PolicyState, fields: &[&str], at_ms: UnixMillis) -> DemandMatch {
        let wanted = demand(fields);
        policy.demands.insert(wanted.id, wanted.clone());
        demand_match(policy, &report(policy, at_ms), &wanted, at_ms)
    }

    #[test]
    fn a_demand_is_matched_field_by_field_against_the_catalog_and_the_negative_list() {
        let mut policy = policy();
        let key = (ENTERPRISES.to_string(), Some("legal_rep_phone".to_string()));
        let entry = NegativeListEntry { dataset: key.0.clone(), field: key.1.clone(), reason: "no".into() };
        policy.negative_list.insert(key, entry);
        let found = matched(&mut policy, &["name", "legal_rep_phone", "shoe_size"], NOW_MS);
        let by_name = |name: &str| found.fields.iter().find(|field| field.name == name).unwrap().clone();
        assert_eq!(by_name("name").class, Some(FieldClass::Public));
        assert!(!by_name("name").negative_listed);
        assert_eq!(by_name("legal_rep_phone").class, Some(FieldClass::Personal));
        assert!(by_name("legal_rep_phone").negative_listed);
        assert_eq!(by_name("shoe_size").class, None);
        assert!(found.held.is_empty() && !found.covered);
    }

    #[test]
    fn grants_held_are_listed_and_one_that_gives_every_field_covers_the_demand() {
        let mut policy = policy();
        policy.grants.insert(1, grant(1, &["name"], NOW_MS + 10 * DAY_MS));
        let found = matched(&mut policy, &["name", "street"], NOW_MS);
        assert_eq!(found.held.len(), 1);
        assert!(found.held[0].expiring && !found.covered);
        policy.grants.insert(2, grant(2, &["name", "street", "district"], NOW_MS + 300 * DAY_MS));
        let found = matched(&mut policy, &["name", "street"], NOW_MS);
        assert_eq!(found.held.iter().map(|held| held.id).collect::<Vec<_>>(), [1, 2]);
        assert!(!found.held[1].expiring && found.covered);
        // An ended grant is neither held nor covering.
        let found = matched(&mut policy, &["name", "street"], NOW_MS + 400 * DAY_MS);
        assert!(found.held.is_empty() && !found.covered);
    }
}
