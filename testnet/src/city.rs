//! The demo city shared by the demo, the end-to-end tests and benchmarks:
//! its nodes and its two datasets, from [`civmesh_policy::fixtures`], and
//! the synthetic records the seed imports, so every check knows what each
//! street should see.

use std::io::Write;

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

/// A grant to street `street` of the enterprises on that street: their
/// credit codes, names, operating addresses, streets and the legal
/// representative's phone, masked to its last 4 digits; for a day.
pub fn street_scoped_grant(street: &str) -> anyhow::Result<GrantSpec> {
    let fields = ["credit_code", "name", "operating_address", "legal_rep_phone", "street"];
    let masking = [("legal_rep_phone", MaskingRule::KeepLast(4))];
    let mut spec = street_inspection_grant(&format!("street/{street}"), &fields, &masking)?;
    spec.scope = vec![civmesh_policy::model::ScopeCondition {
        field: "street".into(),
        allowed: [civmesh_policy::model::FieldValue::Text(street.into())].into(),
    }];
    Ok(spec)
}

/// The streets of Jing'an in the generated data (the first two run nodes).
pub const JINGAN_STREETS: [&str; 3] = ["jingansi", "nanjingxilu", "caojiadu"];
/// The streets of Putuo in the generated data (the first runs a node).
pub const PUTUO_STREETS: [&str; 2] = ["zhenru", "changzheng"];
/// The streets of Huangpu in the generated data (no node).
pub const HUANGPU_STREETS: [&str; 2] = ["waitan", "yuyuan"];

const ROADS: [&str; 5] = ["Nanjing West Road", "Changde Road", "Yuyuan Road", "Wuding Road", "Huashan Road"];

/// The credit code of generated enterprise `index`.
pub fn enterprise_key(index: usize) -> String {
    format!("913101{index:012}")
}

/// The citizen id of generated resident `index`.
pub fn resident_key(index: usize) -> String {
    format!("3101061940{index:08}")
}

/// One generated enterprise: what the seed imports, and what the checks
/// expect the owner to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enterprise {
    /// Its name.
    pub name: String,
    /// Where it is registered.
    pub registered_address: String,
    /// Where it operates.
    pub operating_address: String,
    /// Its legal representative's phone.
    pub phone: String,
    /// Its district.
    pub district: &'static str,
    /// Its street (街道).
    pub street: &'static str,
}

impl Enterprise {
    /// Enterprise `index`: odd ones in Jing'an, spread over its streets in
    /// turn (so Jing'an Temple holds those with `index % 6 == 1`), even
    /// ones in Putuo; every seventh operates somewhere other than where it
    /// is registered.
    pub fn generated(index: usize) -> Self {
        let registered_address = format!("{} {}", index % 900 + 1, ROADS[index % ROADS.len()]);
        let operating_address = if index.is_multiple_of(7) {
            format!("{} {}", (index * 3) % 900 + 1, ROADS[(index + 2) % ROADS.len()])
        } else {
            registered_address.clone()
        };
        let (district, street) = if index % 2 == 1 {
            ("jingan", JINGAN_STREETS[(index / 2) % JINGAN_STREETS.len()])
        } else {
            ("putuo", PUTUO_STREETS[(index / 2) % PUTUO_STREETS.len()])
        };
        Enterprise {
            name: format!("Enterprise {index}"),
            registered_address,
            operating_address,
            phone: format!("138{index:08}"),
            district,
            street,
        }
    }
}

/// The keys of the first `count` generated enterprises on `street`, in key order.
pub fn enterprises_on(street: &str, count: usize) -> Vec<String> {
    (0..count).filter(|index| Enterprise::generated(*index).street == street).map(enterprise_key).collect()
}

/// Writes the first `count` generated enterprises as the registry's CSV.
pub fn write_enterprises(path: &std::path::Path, count: usize) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "credit_code,name,registered_address,operating_address,legal_rep_phone,district,street")?;
    for index in 0..count {
        let Enterprise { name, registered_address, operating_address, phone, district, street } =
            Enterprise::generated(index);
        let key = enterprise_key(index);
        writeln!(out, "{key},{name},{registered_address},{operating_address},{phone},{district},{street}")?;
    }
    out.flush()?;
    Ok(())
}

/// Writes the first `count` generated residents, aged 20-99, over three
/// districts, their streets and four committees (居委) per street; the
/// sensitive flag marks people 80 and over living alone.
pub fn write_residents(path: &std::path::Path, count: usize) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "citizen_id,name,address,age,lives_alone_80_plus,district,street,committee")?;
    for index in 0..count {
        let age = 20 + index % 80;
        let alone = age >= 80 && index % 3 == 0;
        let (district, streets): (&str, &[&str]) = match index % 3 {
            0 => ("jingan", &JINGAN_STREETS),
            1 => ("putuo", &PUTUO_STREETS),
            _ => ("huangpu", &HUANGPU_STREETS),
        };
        let street = streets[(index / 3) % streets.len()];
        let committee = format!("{street}-{}", (index / 9) % 4 + 1);
        writeln!(
            out,
            "{},Resident {index},{} {},{age},{alone},{district},{street},{committee}",
            resident_key(index),
            index % 900 + 1,
            ROADS[index % ROADS.len()],
        )?;
    }
    out.flush()?;
    Ok(())
}
