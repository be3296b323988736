//! Corrections in the log: who logs which stage, in which order, and what
//! the owner may accept without review.

use super::*;

impl PolicyState {
    /// Checks a correction stage against the correction's track so far.
    pub(super) fn validate_correction_event(
        &self,
        event: &CorrectionEvent,
        signer_org: &OrgId,
    ) -> Result<(), Rejection> {
        if event.payload_sha256 != event.correction {
            return Err(reject(RejectionCode::InvalidArgument, "the payload hash is not the correction id"));
        }
        if event.fields.is_empty() || event.fields.len() > CORRECTION_CHANGES_MAX {
            return Err(reject(
                RejectionCode::InvalidArgument,
                format!("a correction changes 1..={CORRECTION_CHANGES_MAX} fields"),
            ));
        }
        for field in &event.fields {
            check_text("field", field, NAME_BYTES_MAX)?;
        }
        if event.reason_code.len() > NAME_BYTES_MAX {
            return Err(reject(RejectionCode::InvalidArgument, "the reason code is too long"));
        }
        let dataset = self
            .datasets
            .get(&event.dataset)
            .ok_or_else(|| reject(RejectionCode::DatasetUnknown, format!("no dataset {}", event.dataset)))?;
        let Some(track) = self.corrections.get(&event.correction) else {
            if event.stage != CorrectionStage::Submitted {
                return Err(reject(RejectionCode::CorrectionUnknown, "no such correction was submitted"));
            }
            if dataset.owner == *signer_org {
                return Err(reject(
                    RejectionCode::InvalidArgument,
                    "an owner changes its own records directly, not by correction",
                ));
            }
            return Ok(());
        };
        if event.stage == CorrectionStage::Submitted {
            return Err(reject(RejectionCode::CorrectionDuplicate, "this correction was submitted before"));
        }
        if track.submitter != event.submitter || track.dataset != event.dataset {
            return Err(reject(
                RejectionCode::InvalidArgument,
                "the event names another submitter or dataset than the submission",
            ));
        }
        if !track.allows(event.stage) {
            return Err(reject(
                RejectionCode::CorrectionStageOutOfOrder,
                format!("{:?} cannot follow {:?}", event.stage, track.stage()),
            ));
        }
        Ok(())
    }

    pub(super) fn record_correction_event(
        &mut self,
        event: CorrectionEvent,
        signer_org: OrgId,
        at_ms: UnixMillis,
    ) {
        if event.stage == CorrectionStage::Submitted {
            let owner = self.datasets.get(&event.dataset).map(|dataset| dataset.owner.clone());
            let Some(owner) = owner else { return };
            self.corrections.insert(
                event.correction,
                CorrectionTrack {
                    dataset: event.dataset,
                    owner,
                    submitter_org: signer_org,
                    submitter: event.submitter,
                    subject: event.subject,
                    fields: event.fields,
                    stages: vec![(CorrectionStage::Submitted, at_ms)],
                    reason_code: String::new(),
                    applied_version: None,
                },
            );
            return;
        }
        if let Some(track) = self.corrections.get_mut(&event.correction) {
            track.stages.push((event.stage, at_ms));
            match event.stage {
                CorrectionStage::Rejected => track.reason_code = event.reason_code,
                CorrectionStage::Applied => track.applied_version = event.version,
                _ => {}
            }
        }
    }

    /// Whether an auto-accept rule covers a correction from `submitter` to
    /// `dataset` that changes exactly `fields`.
    pub fn auto_accepts(&self, dataset: &DatasetId, submitter: &OrgId, fields: &BTreeSet<FieldName>) -> bool {
        self.auto_accept_rules
            .get(&(dataset.clone(), submitter.clone()))
            .is_some_and(|allowed| fields.is_subset(allowed))
    }
}
