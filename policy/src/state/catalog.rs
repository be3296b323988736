//! The catalog and the negative list: datasets, their owners and schemas,
//! and what is never shared.

use std::collections::BTreeSet;

use civmesh_certs::OrgId;

use super::rejection::{check_text, reject, Rejection, RejectionCode};
use super::{Applied, PolicyState};
use crate::command::DatasetSpec;
use crate::model::{
    Dataset, DatasetId, FieldName, FieldType, NegativeListEntry, NAME_BYTES_MAX, REASON_BYTES_MAX,
    SCHEMA_FIELDS_MAX, SCOPE_FIELDS_MAX,
};

impl PolicyState {
    /// Whether `org` owns `dataset` (a dataset that does not exist is no one's).
    pub fn owns(&self, org: &OrgId, dataset: &DatasetId) -> bool {
        self.datasets.get(dataset).is_some_and(|dataset| dataset.owner == *org)
    }

    /// Rejects a signer whose organisation does not own `dataset`.
    pub(super) fn check_owner(&self, org: &OrgId, dataset: &DatasetId) -> Result<(), Rejection> {
        let owner = &self
            .datasets
            .get(dataset)
            .ok_or_else(|| reject(RejectionCode::DatasetUnknown, format!("no dataset {dataset}")))?
            .owner;
        if owner != org {
            return Err(reject(
                RejectionCode::NotAuthorised,
                format!("{org} does not own {dataset} (owner: {owner})"),
            ));
        }
        Ok(())
    }

    /// A new dataset may be published by anyone; a republished one only by
    /// its owner.
    pub(super) fn check_publisher(&self, org: &OrgId, dataset: &DatasetId) -> Result<(), Rejection> {
        match self.datasets.get(dataset) {
            Some(existing) if existing.owner != *org => {
                Err(reject(RejectionCode::NotAuthorised, format!("{dataset} is owned by {}", existing.owner)))
            }
            _ => Ok(()),
        }
    }

    /// Rejects an unknown dataset, or a field not in its schema.
    pub(super) fn check_fields<'a>(
        &self,
        dataset: &DatasetId,
        fields: impl Iterator<Item = &'a FieldName>,
    ) -> Result<(), Rejection> {
        let schema = self
            .datasets
            .get(dataset)
            .ok_or_else(|| reject(RejectionCode::DatasetUnknown, format!("no dataset {dataset}")))?;
        for field in fields {
            if schema.field(field).is_none() {
                return Err(reject(RejectionCode::FieldUnknown, format!("{dataset} has no field {field:?}")));
            }
        }
        Ok(())
    }

    /// Whether the negative list holds the whole dataset (`None`) or `field`.
    pub(super) fn negative_listed(&self, dataset: &DatasetId, field: Option<&FieldName>) -> bool {
        self.negative_list.contains_key(&(dataset.clone(), field.cloned()))
    }

    pub(super) fn publish_dataset(&mut self, spec: DatasetSpec, owner: OrgId) -> Applied {
        let version = self.datasets.get(&spec.id).map_or(1, |existing| existing.version + 1);
        let dataset = Dataset {
            id: spec.id.clone(),
            owner,
            title: spec.title,
            subject_key_field: spec.subject_key_field,
            sharing: spec.sharing,
            fields: spec.fields,
            scope_fields: spec.scope_fields,
            version,
        };
        self.datasets.insert(spec.id, dataset);
        Applied::Done
    }

    pub(super) fn validate_negative_list_entry(
        &self,
        dataset: &DatasetId,
        field: Option<&FieldName>,
        reason: &str,
    ) -> Result<(), Rejection> {
        check_text("reason", reason, REASON_BYTES_MAX)?;
        self.check_fields(dataset, field.into_iter())
    }

    pub(super) fn add_negative_list_entry(&mut self, entry: NegativeListEntry) -> Applied {
        self.negative_list.insert((entry.dataset.clone(), entry.field.clone()), entry);
        Applied::Done
    }

    pub(super) fn validate_negative_list_removal(
        &self,
        dataset: &DatasetId,
        field: Option<&FieldName>,
    ) -> Result<(), Rejection> {
        if self.negative_listed(dataset, field) {
            return Ok(());
        }
        Err(reject(
            RejectionCode::NegativeListEntryUnknown,
            format!("{dataset} {:?} is not negative-listed", field),
        ))
    }

    pub(super) fn remove_negative_list_entry(
        &mut self,
        dataset: DatasetId,
        field: Option<FieldName>,
    ) -> Applied {
        self.negative_list.remove(&(dataset, field));
        Applied::Done
    }
}

/// Checks a dataset's own shape: its names, and a schema of unique fields
/// that holds the subject key.
pub(super) fn validate_dataset(spec: &DatasetSpec) -> Result<(), Rejection> {
    check_text("dataset id", &spec.id, NAME_BYTES_MAX)?;
    check_text("title", &spec.title, REASON_BYTES_MAX)?;
    if spec.fields.is_empty() || spec.fields.len() > SCHEMA_FIELDS_MAX {
        return Err(reject(
            RejectionCode::InvalidArgument,
            format!("a schema has 1..={SCHEMA_FIELDS_MAX} fields"),
        ));
    }
    let mut names = BTreeSet::new();
    for field in &spec.fields {
        check_text("field name", &field.name, NAME_BYTES_MAX)?;
        if !names.insert(field.name.as_str()) {
            return Err(reject(
                RejectionCode::InvalidArgument,
                format!("field {:?} appears twice", field.name),
            ));
        }
    }
    if !names.contains(spec.subject_key_field.as_str()) {
        return Err(reject(
            RejectionCode::FieldUnknown,
            format!("subject key field {:?} is not in the schema", spec.subject_key_field),
        ));
    }
    validate_scope_fields(spec)
}

/// Checks the declared scope fields: a few distinct text fields of the schema.
fn validate_scope_fields(spec: &DatasetSpec) -> Result<(), Rejection> {
    if spec.scope_fields.len() > SCOPE_FIELDS_MAX {
        return Err(reject(
            RejectionCode::InvalidArgument,
            format!("a dataset declares at most {SCOPE_FIELDS_MAX} scope fields"),
        ));
    }
    let mut seen = BTreeSet::new();
    for name in &spec.scope_fields {
        let field = spec.fields.iter().find(|field| field.name == *name).ok_or_else(|| {
            reject(RejectionCode::FieldUnknown, format!("scope field {name:?} is not in the schema"))
        })?;
        if field.field_type != FieldType::Text || !seen.insert(name) {
            return Err(reject(
                RejectionCode::InvalidArgument,
                format!("scope field {name:?} must be a text field, declared once"),
            ));
        }
    }
    Ok(())
}
