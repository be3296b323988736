//! Consents: a subject's consent, taken by the owner on its behalf, and
//! the one rule for what it allows.

use super::rejection::{check_text, Rejection};
use super::{Applied, PolicyState};
use crate::decide::{ConsentCoverage, ReasonCode};
use crate::model::{Consent, ConsentKey, Grant, SubjectKeyHash, NAME_BYTES_MAX};

impl PolicyState {
    /// The one consent rule: what `subject`'s consent, as recorded now,
    /// allows under `grant`. `Err(ConsentMissing)` when the grant needs a
    /// consent and none is given (never recorded, or withdrawn).
    pub fn check_consent(
        &self,
        grant: &Grant,
        subject: &SubjectKeyHash,
    ) -> Result<ConsentCoverage, ReasonCode> {
        if !grant.needs_consent() {
            return Ok(ConsentCoverage::AllFields);
        }
        let key = ConsentKey {
            subject: *subject,
            dataset: grant.dataset.clone(),
            grantee: grant.grantee.clone(),
            purpose: grant.purpose.clone(),
        };
        match self.consents.get(&key) {
            Some(consent) if consent.given && consent.covers_sensitive => Ok(ConsentCoverage::AllFields),
            Some(consent) if consent.given => Ok(ConsentCoverage::NotSensitive),
            _ => Err(ReasonCode::ConsentMissing),
        }
    }

    pub(super) fn validate_consent(&self, purpose: &str, channel: &str) -> Result<(), Rejection> {
        check_text("purpose", purpose, NAME_BYTES_MAX)?;
        check_text("channel", channel, NAME_BYTES_MAX)
    }

    /// Keeps the latest consent per subject, dataset, grantee and purpose.
    /// A withdrawal of a given consent makes its subject's copies due for
    /// deletion at every holder; a withdrawal of the separate consent for
    /// sensitive fields alone (Art. 29), at every holder of a grant that
    /// releases one.
    pub(super) fn record_consent(&mut self, key: ConsentKey, consent: Consent) -> Applied {
        let held = self.consents.get(&key);
        let withdrawn = !consent.given && held.is_some_and(|held| held.given);
        let sensitive_withdrawn = consent.given
            && !consent.covers_sensitive
            && held.is_some_and(|held| held.given && held.covers_sensitive);
        if withdrawn || sensitive_withdrawn {
            self.note_consent_withdrawn(&key, consent.recorded_at_ms, sensitive_withdrawn);
        }
        self.consents.insert(key, consent);
        Applied::Done
    }
}
