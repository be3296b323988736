//! The demo city: its organisations and nodes, its two datasets, and the
//! grant the streets hold. One home for the unit tests, the end-to-end
//! tests, the benchmarks and the demo. Built with the `fixtures` feature
//! (and in this crate's own tests).

use std::ops::Range;

use civmesh_certs::{OrgId, Role, UnixMillis};

use crate::command::{DatasetSpec, GrantSpec};
use crate::model::{FieldClass, FieldSpec, FieldType, LegalBasis, SensitiveCategory, SharingCategory};

/// Market supervision's enterprise registry.
pub const ENTERPRISES: &str = "market-supervision/enterprise-registry";
/// Civil affairs' residents.
pub const RESIDENTS: &str = "civil-affairs/residents";
/// The purpose the demo's streets give for reading the enterprise registry.
pub const STREET_INSPECTION: &str = "street-inspection";

/// One node of the demo city.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CityNode {
    /// Its short name.
    pub name: &'static str,
    /// Its organisation.
    pub org: &'static str,
    /// Its role.
    pub role: Role,
    /// Whether it votes in the policy log.
    pub voter: bool,
}

const fn node(name: &'static str, org: &'static str, role: Role, voter: bool) -> CityNode {
    CityNode { name, org, role, voter }
}

/// Every node of the demo city: 3 voters and 4 learners.
pub const CITY: [CityNode; 7] = [
    node("hub", "hub/city", Role::Hub, true),
    node("market", "dept/market-supervision", Role::Department, true),
    node("civil", "dept/civil-affairs", Role::Department, true),
    node("jingansi", "street/jingansi", Role::Street, false),
    node("nanjingxilu", "street/nanjingxilu", Role::Street, false),
    node("zhenru", "street/zhenru", Role::Street, false),
    node("auditor", "auditor/municipal-audit", Role::Auditor, false),
];

/// The city node with this short name.
pub fn city_node(name: &str) -> Option<CityNode> {
    CITY.into_iter().find(|node| node.name == name)
}

fn field(name: &str, field_type: FieldType, class: FieldClass) -> FieldSpec {
    FieldSpec { name: name.into(), field_type, class }
}

/// The enterprise registry: registered and operating addresses.
pub fn enterprise_dataset() -> DatasetSpec {
    DatasetSpec {
        id: ENTERPRISES.into(),
        title: "Enterprise registry".into(),
        subject_key_field: "credit_code".into(),
        sharing: SharingCategory::Conditional,
        fields: vec![
            field("credit_code", FieldType::Text, FieldClass::Public),
            field("name", FieldType::Text, FieldClass::Public),
            field("registered_address", FieldType::Text, FieldClass::Public),
            field("operating_address", FieldType::Text, FieldClass::Internal),
            field("legal_rep_phone", FieldType::Text, FieldClass::Personal),
            field("district", FieldType::Text, FieldClass::Public),
            field("street", FieldType::Text, FieldClass::Public),
        ],
        scope_fields: vec!["district".into(), "street".into()],
    }
}

/// Residents, with a sensitive flag for people 80 and over living alone.
pub fn resident_dataset() -> DatasetSpec {
    DatasetSpec {
        id: RESIDENTS.into(),
        title: "Residents".into(),
        subject_key_field: "citizen_id".into(),
        sharing: SharingCategory::Conditional,
        fields: vec![
            field("citizen_id", FieldType::Text, FieldClass::Personal),
            field("name", FieldType::Text, FieldClass::Personal),
            field("address", FieldType::Text, FieldClass::Personal),
            field("age", FieldType::Integer, FieldClass::Personal),
            field(
                "lives_alone_80_plus",
                FieldType::Boolean,
                FieldClass::Sensitive(SensitiveCategory::SpecificIdentity),
            ),
            field("district", FieldType::Text, FieldClass::Public),
            field("street", FieldType::Text, FieldClass::Public),
            field("committee", FieldType::Text, FieldClass::Public),
        ],
        scope_fields: vec!["district".into(), "street".into(), "committee".into()],
    }
}

/// A grant of `dataset`'s `fields` to `grantee` for `purpose` under a
/// statutory duty, valid over `valid` (ms), with no scope, masking,
/// consent, demand or assessment, and the fixtures' [`RETENTION`].
pub fn statutory_grant(
    dataset: &str,
    grantee: &OrgId,
    fields: &[&str],
    purpose: &str,
    valid: Range<UnixMillis>,
) -> GrantSpec {
    GrantSpec {
        dataset: dataset.into(),
        grantee: grantee.clone(),
        fields: fields.iter().map(|field| field.to_string()).collect(),
        purpose: purpose.into(),
        legal_basis: LegalBasis::StatutoryDuty,
        scope: vec![],
        valid_from_ms: valid.start,
        valid_until_ms: valid.end,
        masking: Default::default(),
        consent_required: false,
        demand: None,
        retention: Some(RETENTION),
        assessment: None,
    }
}

/// The retention of the fixtures' grants: copies kept a year, deleted
/// within a day.
pub const RETENTION: crate::deletion::Retention =
    crate::deletion::Retention { keep_ms: 365 * DAY_MS, delete_within_ms: DAY_MS };
const DAY_MS: u64 = 24 * 60 * 60 * 1000;
