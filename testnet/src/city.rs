//! The demo city shared by the demo, the end-to-end tests and benchmarks:
//! its nodes and its two datasets.

use civmesh_policy::model::{
    FieldClass, FieldSpec, FieldType, LegalBasis, MaskingRule, SensitiveCategory, SharingCategory,
};
use civmesh_policy::{DatasetSpec, GrantSpec};

use crate::NodeSpec;

/// The purpose the demo's streets give for reading the enterprise registry.
pub const STREET_INSPECTION: &str = "street-inspection";

/// Market supervision's enterprise registry.
pub const ENTERPRISES: &str = "market-supervision/enterprise-registry";
/// Civil affairs' residents.
pub const RESIDENTS: &str = "civil-affairs/residents";

/// Every node of the demo city: (name, organisation, role, voter).
const CITY: [(&str, &str, &str, bool); 7] = [
    ("hub", "hub/city", "hub", true),
    ("market", "dept/market-supervision", "department", true),
    ("civil", "dept/civil-affairs", "department", true),
    ("jingansi", "street/jingansi", "street", false),
    ("nanjingxilu", "street/nanjingxilu", "street", false),
    ("zhenru", "street/zhenru", "street", false),
    ("auditor", "auditor/municipal-audit", "auditor", false),
];

/// The named nodes of the demo city, in the order given. Unknown names are
/// skipped, so a typo shows up as a missing node in the caller's test.
pub fn city(names: &[&str]) -> Vec<NodeSpec> {
    names
        .iter()
        .filter_map(|name| CITY.iter().find(|(city_name, ..)| city_name == name))
        .map(|(name, org, role, voter)| NodeSpec::new(name, org, role, *voter))
        .collect()
}

/// The whole demo city: 3 voters and 4 learners.
pub fn whole_city() -> Vec<NodeSpec> {
    city(&CITY.map(|(name, ..)| name))
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
        ],
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
        ],
    }
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
    Ok(GrantSpec {
        dataset: ENTERPRISES.into(),
        grantee: civmesh_certs::OrgId::new(grantee)?,
        fields: fields.iter().map(|field| field.to_string()).collect(),
        purpose: STREET_INSPECTION.into(),
        legal_basis: LegalBasis::StatutoryDuty,
        scope: vec![],
        valid_from_ms: now_ms.saturating_sub(60_000),
        valid_until_ms: now_ms + 86_400_000,
        masking: masking.iter().map(|(field, rule)| (field.to_string(), *rule)).collect(),
        consent_required: false,
        demand: None,
    })
}
