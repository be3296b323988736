//! Prometheus metrics, served at `GET /metrics` (behind the API token).
//! Counters are updated where things happen; gauges of the policy log and
//! the swarm are read at scrape time. No label ever carries personal data.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The outcome label of answered queries.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// released, denied or refused.
    pub outcome: &'static str,
}

/// The node's metrics.
pub struct Metrics {
    registry: Registry,
    /// Queries this node answered as an owner, by outcome.
    pub queries_answered: Family<OutcomeLabel, Counter>,
    /// Queries this node sent as a requester, by outcome.
    pub queries_asked: Family<OutcomeLabel, Counter>,
    /// Rows written by imports.
    pub records_imported: Counter,
    /// Policy commands submitted through the API, by outcome.
    pub commands_submitted: Family<OutcomeLabel, Counter>,
    /// Correction stages this node logged, by stage.
    pub correction_stages_logged: Family<OutcomeLabel, Counter>,
    /// Peers' requests refused as security events, by stable code.
    pub security_events: Family<OutcomeLabel, Counter>,
    /// Inbound requests refused because their queue was full, by protocol.
    pub inbound_queue_full: Family<OutcomeLabel, Counter>,
    applied_index: Gauge,
    committed_index: Gauge,
    term: Gauge,
    is_leader: Gauge,
    connected_peers: Gauge,
    access_log_length: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("civmesh");
        let metrics = Metrics {
            queries_answered: Family::default(),
            queries_asked: Family::default(),
            records_imported: Counter::default(),
            commands_submitted: Family::default(),
            correction_stages_logged: Family::default(),
            security_events: Family::default(),
            inbound_queue_full: Family::default(),
            applied_index: Gauge::default(),
            committed_index: Gauge::default(),
            term: Gauge::default(),
            is_leader: Gauge::default(),
            connected_peers: Gauge::default(),
            access_log_length: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "queries_answered",
            "Queries answered as the data owner",
            metrics.queries_answered.clone(),
        );
        registry.register("queries_asked", "Queries sent to data owners", metrics.queries_asked.clone());
        registry.register(
            "records_imported",
            "Record rows written by imports",
            metrics.records_imported.clone(),
        );
        registry.register(
            "commands_submitted",
            "Policy commands submitted through the API",
            metrics.commands_submitted.clone(),
        );
        registry.register(
            "correction_stages_logged",
            "Correction lifecycle stages this node logged, by stage",
            metrics.correction_stages_logged.clone(),
        );
        registry.register(
            "security_events",
            "Peers' requests refused as security events, by code",
            metrics.security_events.clone(),
        );
        registry.register(
            "inbound_queue_full",
            "Inbound peer requests refused because their queue was full, by protocol",
            metrics.inbound_queue_full.clone(),
        );
        registry.register(
            "raft_applied_index",
            "Last policy-log index applied",
            metrics.applied_index.clone(),
        );
        registry.register(
            "raft_committed_index",
            "Last policy-log index known committed",
            metrics.committed_index.clone(),
        );
        registry.register("raft_term", "Current Raft term", metrics.term.clone());
        registry.register("raft_is_leader", "1 if this node leads the policy log", metrics.is_leader.clone());
        registry.register("connected_peers", "libp2p peers connected now", metrics.connected_peers.clone());
        registry.register(
            "access_log_length",
            "Entries in the replicated access log",
            metrics.access_log_length.clone(),
        );
        Metrics { registry, ..metrics }
    }
}

fn gauge_value(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Metrics {
    /// Counts one outcome in `family`.
    pub fn count(family: &Family<OutcomeLabel, Counter>, outcome: &'static str) {
        family.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// The text exposition, after refreshing the gauges.
    pub fn render(
        &self,
        status: &civmesh_consensus::Status,
        connected_peers: usize,
        access_log_length: u64,
    ) -> String {
        self.applied_index.set(gauge_value(status.applied_index));
        self.committed_index.set(gauge_value(status.committed_index));
        self.term.set(gauge_value(status.term));
        self.is_leader.set(i64::from(status.role == "leader"));
        self.connected_peers.set(gauge_value(connected_peers as u64));
        self.access_log_length.set(gauge_value(access_log_length));
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}
