//! The demo city shared by the demo, the end-to-end tests and benchmarks:
//! its nodes and its two datasets, from [`civmesh_policy::fixtures`].

use civmesh_policy::fixtures::{statutory_grant, CITY};
use civmesh_policy::model::MaskingRule;
use civmesh_policy::GrantSpec;

pub use civmesh_policy::fixtures::{
    enterprise_dataset, resident_dataset, ENTERPRISES, RESIDENTS, STREET_INSPECTION,
};

use crate::NodeSpec;

/// The named nodes of the demo city, in the order given. Unknown names are
/// skipped, so a typo shows up as a missing node in the caller's test.
pub fn city(names: &[&str]) -> Vec<NodeSpec> {
    names
        .iter()
        .filter_map(|name| civmesh_policy::fixtures::city_node(name))
        .map(|node| NodeSpec::new(node.name, node.org, node.role.as_str(), node.voter))
        .collect()
}

/// The whole demo city: 3 voters and 4 learners.
pub fn whole_city() -> Vec<NodeSpec> {
    city(&CITY.map(|node| node.name))
}

/// A grant of enterprise-registry `fields` to `grantee` for street
/// inspection under a statutory duty, valid from a minute ago for a day,
/// with `masking`.
pub fn street_inspection_grant(
    grantee: &str,
    fields: &[&str],
    masking: &[(&str, MaskingRule)],
) -> anyhow::Result<GrantSpec> {
    let now_ms = civmesh_certs::now_unix_millis();
    let grantee = civmesh_certs::OrgId::new(grantee)?;
    let valid = now_ms.saturating_sub(60_000)..now_ms + 86_400_000;
    let mut spec = statutory_grant(ENTERPRISES, &grantee, fields, STREET_INSPECTION, valid);
    spec.masking = masking.iter().map(|(field, rule)| (field.to_string(), *rule)).collect();
    Ok(spec)
}
