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

/// The stage label of the policy log's commit timings.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabel {
    /// A [`civmesh_consensus::Stage`]'s name.
    pub stage: &'static str,
}

/// The kind label of the policy log's storage memory.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MemoryLabel {
    /// memtables, table_readers or block_cache.
    pub kind: &'static str,
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
    deletions_overdue: Gauge,
    deletions_overdue_here: Gauge,
    subject_requests_overdue: Gauge,
    storage_memory_bytes: Family<MemoryLabel, Gauge>,
    stage_passes: Family<StageLabel, Counter>,
    stage_microseconds: Family<StageLabel, Counter>,
    /// Held while the stage counters catch up with the policy log's totals.
    stage_catch_up: std::sync::Mutex<()>,
}

/// What the metrics read from this replica's policy state.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogFigures {
    /// Entries in the access log.
    pub access_log_length: u64,
    /// Deletions due, past their bound, with no receipt, at any holder.
    pub deletions_overdue: u64,
    /// The same at this node.
    pub deletions_overdue_here: u64,
    /// Subjects' requests still open past their deadline, at any owner.
    pub subject_requests_overdue: u64,
    /// What the policy log's database holds in memory.
    pub storage_memory: civmesh_consensus::StorageMemory,
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
            deletions_overdue: Gauge::default(),
            deletions_overdue_here: Gauge::default(),
            subject_requests_overdue: Gauge::default(),
            storage_memory_bytes: Family::default(),
            stage_passes: Family::default(),
            stage_microseconds: Family::default(),
            stage_catch_up: std::sync::Mutex::new(()),
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
        register_log_gauges(&mut registry, &metrics);
        Metrics { registry, ..metrics }
    }
}

/// Registers the gauges read from the policy state ([`LogFigures`]).
fn register_log_gauges(registry: &mut Registry, metrics: &Metrics) {
    registry.register(
        "access_log_length",
        "Entries in the replicated access log",
        metrics.access_log_length.clone(),
    );
    registry.register(
        "deletions_overdue",
        "Deletions of received copies past their bound without a receipt, at any holder",
        metrics.deletions_overdue.clone(),
    );
    registry.register(
        "deletions_overdue_here",
        "Deletions of received copies past their bound without a receipt, at this node",
        metrics.deletions_overdue_here.clone(),
    );
    registry.register(
        "subject_requests_overdue",
        "Subjects' requests (access, correction, deletion) still open past their deadline, at any owner",
        metrics.subject_requests_overdue.clone(),
    );
    registry.register(
        "policy_log_storage_memory_bytes",
        "Bytes the policy log's database holds in memory, by kind (each kind is bounded)",
        metrics.storage_memory_bytes.clone(),
    );
    registry.register(
        "policy_log_stage_passes",
        "Times this node passed each stage of a policy-log commit",
        metrics.stage_passes.clone(),
    );
    registry.register(
        "policy_log_stage_microseconds",
        "Microseconds this node spent in each stage of a policy-log commit",
        metrics.stage_microseconds.clone(),
    );
}

fn gauge_value(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Metrics {
    /// Brings the stage counters to the policy log's totals since start.
    fn catch_up_stages(&self, stage_times: &[(civmesh_consensus::Stage, civmesh_consensus::StageTotal)]) {
        let _catching_up = self.stage_catch_up.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for (stage, total) in stage_times {
            let label = StageLabel { stage: stage.name() };
            for (family, value) in
                [(&self.stage_passes, total.count), (&self.stage_microseconds, total.micros)]
            {
                let counter = family.get_or_create(&label);
                counter.inc_by(value.saturating_sub(counter.get()));
            }
        }
    }

    /// Counts one outcome in `family`.
    pub fn count(family: &Family<OutcomeLabel, Counter>, outcome: &'static str) {
        family.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// The text exposition, after refreshing the gauges.
    pub fn render(
        &self,
        status: &civmesh_consensus::Status,
        connected_peers: usize,
        figures: LogFigures,
        stage_times: &[(civmesh_consensus::Stage, civmesh_consensus::StageTotal)],
    ) -> String {
        self.catch_up_stages(stage_times);
        self.applied_index.set(gauge_value(status.applied_index));
        self.committed_index.set(gauge_value(status.committed_index));
        self.term.set(gauge_value(status.term));
        self.is_leader.set(i64::from(status.role == "leader"));
        self.connected_peers.set(gauge_value(connected_peers as u64));
        self.access_log_length.set(gauge_value(figures.access_log_length));
        self.deletions_overdue.set(gauge_value(figures.deletions_overdue));
        self.deletions_overdue_here.set(gauge_value(figures.deletions_overdue_here));
        self.subject_requests_overdue.set(gauge_value(figures.subject_requests_overdue));
        let memory = figures.storage_memory;
        for (kind, bytes) in [
            ("memtables", memory.memtables_bytes),
            ("table_readers", memory.table_readers_bytes),
            ("block_cache", memory.block_cache_bytes),
        ] {
            self.storage_memory_bytes.get_or_create(&MemoryLabel { kind }).set(gauge_value(bytes));
        }
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}
