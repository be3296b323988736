//! Containing a hostile peer: per-peer rate limits and quotas, and the one
//! place where a refused request becomes a security event (a counter in
//! `/metrics` and a structured log line naming the peer and its
//! organisation, never personal data).

use std::num::NonZeroU32;

use civmesh_certs::NodeId;
use civmesh_consensus::SharedState;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::api::metrics::Metrics;
use crate::config::LimitsSection;

/// Why a peer's request was refused before any work was done for it. The
/// `Display` form starts with the stable code the peer sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PeerRefusal {
    /// The peer sends faster than its limit.
    #[error("rate_limited: over this node's per-peer limit, retry later")]
    RateLimited,
    /// The peer holds as many of something as it may.
    #[error("quota_exceeded: this peer holds as many subscriptions as it may")]
    QuotaExceeded,
}

impl PeerRefusal {
    /// The stable code, for metrics labels.
    pub fn code(self) -> &'static str {
        match self {
            PeerRefusal::RateLimited => "rate_limited",
            PeerRefusal::QuotaExceeded => "quota_exceeded",
        }
    }
}

/// Why `[limits]` cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("[limits] {0} must be at least 1")]
pub struct LimitsError(&'static str);

/// The per-peer limits of one node, from `[limits]`. The limiters keep
/// one cell per peer that asked, and only members pass the gate, so they
/// are bounded by the federation's size.
pub struct PeerLimits {
    queries: DefaultKeyedRateLimiter<NodeId>,
    corrections: DefaultKeyedRateLimiter<NodeId>,
    subject_requests: DefaultKeyedRateLimiter<NodeId>,
    /// Subscriptions one peer may hold at this owner.
    pub subscriptions_per_peer_max: usize,
}

impl PeerLimits {
    /// The limits `section` names.
    pub fn new(section: &LimitsSection) -> Result<Self, LimitsError> {
        let bounds = |rate: u32, burst: u32, rate_name, burst_name| -> Result<_, LimitsError> {
            let rate = NonZeroU32::new(rate).ok_or(LimitsError(rate_name))?;
            let burst = NonZeroU32::new(burst).ok_or(LimitsError(burst_name))?;
            Ok((rate, burst))
        };
        let quota = |rate: u32, burst: u32, rate_name, burst_name| -> Result<Quota, LimitsError> {
            let (rate, burst) = bounds(rate, burst, rate_name, burst_name)?;
            Ok(Quota::per_second(rate).allow_burst(burst))
        };
        let (subject_rate, subject_burst) = bounds(
            section.subject_requests_per_peer_per_minute,
            section.subject_request_burst_per_peer_max,
            "subject_requests_per_peer_per_minute",
            "subject_request_burst_per_peer_max",
        )?;
        Ok(PeerLimits {
            queries: RateLimiter::keyed(quota(
                section.queries_per_peer_per_second,
                section.query_burst_per_peer_max,
                "queries_per_peer_per_second",
                "query_burst_per_peer_max",
            )?),
            corrections: RateLimiter::keyed(quota(
                section.corrections_per_peer_per_second,
                section.correction_burst_per_peer_max,
                "corrections_per_peer_per_second",
                "correction_burst_per_peer_max",
            )?),
            subject_requests: RateLimiter::keyed(Quota::per_minute(subject_rate).allow_burst(subject_burst)),
            subscriptions_per_peer_max: usize::try_from(section.subscriptions_per_peer_max)
                .ok()
                .filter(|max| *max > 0)
                .ok_or(LimitsError("subscriptions_per_peer_max"))?,
        })
    }

    /// Takes one query (or subscription request) from `peer`'s allowance.
    pub fn allow_query(&self, peer: &NodeId) -> Result<(), PeerRefusal> {
        self.queries.check_key(peer).map_err(|_| PeerRefusal::RateLimited)
    }

    /// Takes one correction delivery from `peer`'s allowance.
    pub fn allow_correction(&self, peer: &NodeId) -> Result<(), PeerRefusal> {
        self.corrections.check_key(peer).map_err(|_| PeerRefusal::RateLimited)
    }

    /// Takes one subject's request (as an intake) from `peer`'s allowance.
    pub fn allow_subject_request(&self, peer: &NodeId) -> Result<(), PeerRefusal> {
        self.subject_requests.check_key(peer).map_err(|_| PeerRefusal::RateLimited)
    }
}

/// Counts and logs one refused request from `peer`. The log line names the
/// peer's organisation when the policy log knows it.
pub fn report(metrics: &Metrics, state: &SharedState, peer: &NodeId, kind: &'static str) {
    Metrics::count(&metrics.security_events, kind);
    let org = state.read(|applied| applied.policy.members.get(peer).map(|member| member.org.to_string()));
    tracing::warn!(
        target: "civmesh::security",
        %peer,
        org = org.as_deref().unwrap_or("unknown"),
        kind,
        "refused a peer's request"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_over_its_limit_is_refused_and_others_are_not() {
        let section = LimitsSection {
            queries_per_peer_per_second: 1,
            query_burst_per_peer_max: 3,
            ..LimitsSection::default()
        };
        let limits = PeerLimits::new(&section).unwrap();
        let (flooder, other) = (NodeId([1; 32]), NodeId([2; 32]));
        for _ in 0..3 {
            assert_eq!(limits.allow_query(&flooder), Ok(()));
        }
        assert_eq!(limits.allow_query(&flooder), Err(PeerRefusal::RateLimited));
        assert_eq!(limits.allow_query(&other), Ok(()));
        assert_eq!(limits.allow_correction(&flooder), Ok(()));
    }

    #[test]
    fn subject_requests_have_their_own_tight_limit_per_peer() {
        let limits = PeerLimits::new(&LimitsSection::default()).unwrap();
        let (prober, other) = (NodeId([1; 32]), NodeId([2; 32]));
        for _ in 0..LimitsSection::default().subject_request_burst_per_peer_max {
            assert_eq!(limits.allow_subject_request(&prober), Ok(()));
        }
        assert_eq!(limits.allow_subject_request(&prober), Err(PeerRefusal::RateLimited));
        assert_eq!(limits.allow_subject_request(&other), Ok(()));
        assert_eq!(limits.allow_query(&prober), Ok(()), "queries are counted apart");
    }

    #[test]
    fn zero_limits_are_configuration_errors() {
        for section in [
            LimitsSection { queries_per_peer_per_second: 0, ..LimitsSection::default() },
            LimitsSection { correction_burst_per_peer_max: 0, ..LimitsSection::default() },
            LimitsSection { subscriptions_per_peer_max: 0, ..LimitsSection::default() },
            LimitsSection { subject_requests_per_peer_per_minute: 0, ..LimitsSection::default() },
            LimitsSection { subject_request_burst_per_peer_max: 0, ..LimitsSection::default() },
        ] {
            assert!(PeerLimits::new(&section).is_err(), "{section:?}");
        }
        assert!(PeerRefusal::RateLimited.to_string().starts_with(PeerRefusal::RateLimited.code()));
    }
}
