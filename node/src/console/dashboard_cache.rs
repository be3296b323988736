//! The dashboard's evaluations, computed once per period and applied log
//! index and kept a short while, so one page view, its chart images and its
//! downloads cost one evaluation between them. The page names the index it
//! was made from (`at=` in the charts' and downloads' URLs); a request naming
//! an index still kept is answered from it without asking the leader again.
//! Anything else reads the leader's index (a linearizable read) and uses or
//! computes the evaluation of the state applied then. Evaluations are
//! computed one at a time per node ([`DashboardCache`], in the console's state).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use civmesh_policy::evaluation::{into_series, DepartmentSeries, EvaluationQuery, StreetSeries};

use crate::api::{ApiError, Shared, READ_INDEX_TIMEOUT_MS};

/// Evaluations kept at most.
const CACHE_ENTRIES_MAX: usize = 4;
/// How long an evaluation is kept after it was computed, in ms.
const CACHE_AGE_MAX_MS: u64 = 60_000;

/// One evaluation, grouped for the dashboard.
#[derive(Debug)]
pub(super) struct Figures {
    /// The log index of the applied state it was computed from.
    pub(super) at: u64,
    /// One series per department (owner and dataset), in the evaluation's order.
    pub(super) departments: Vec<DepartmentSeries>,
    /// One series per street, in the evaluation's order.
    pub(super) streets: Vec<StreetSeries>,
}

/// Which evaluation an entry is: the period and the applied log index.
#[derive(PartialEq)]
struct Key {
    query: EvaluationQuery,
    at: u64,
}

/// A few values by key, each dropped [`CACHE_AGE_MAX_MS`] after it was put,
/// the oldest dropped first when [`CACHE_ENTRIES_MAX`] are kept.
struct Cache<K, V> {
    entries: Vec<(K, Instant, V)>,
}

impl<K: PartialEq, V: Clone> Cache<K, V> {
    /// An empty cache.
    const fn new() -> Self {
        Cache { entries: Vec::new() }
    }

    /// The value kept for `key` at `now`, if any (expired ones are dropped).
    fn get(&mut self, key: &K, now: Instant) -> Option<V> {
        self.expire(now);
        self.entries.iter().find(|(kept, _, _)| kept == key).map(|(_, _, value)| value.clone())
    }

    /// Keeps `value` for `key` from `now`, dropping the oldest entries over
    /// [`CACHE_ENTRIES_MAX`].
    fn put(&mut self, key: K, value: V, now: Instant) {
        self.expire(now);
        self.entries.retain(|(kept, _, _)| *kept != key);
        while self.entries.len() >= CACHE_ENTRIES_MAX {
            self.entries.remove(0);
        }
        self.entries.push((key, now, value));
    }

    /// Drops the entries older than [`CACHE_AGE_MAX_MS`] at `now`.
    fn expire(&mut self, now: Instant) {
        let age_max = Duration::from_millis(CACHE_AGE_MAX_MS);
        self.entries.retain(|(_, made, _)| now.saturating_duration_since(*made) <= age_max);
    }
}

/// A node's dashboard evaluations: those kept, and the turn to compute one.
pub(in crate::console) struct DashboardCache {
    kept: Mutex<Cache<Key, Arc<Figures>>>,
    /// Held while an evaluation is computed: one at a time.
    computing: tokio::sync::Mutex<()>,
}

impl Default for DashboardCache {
    fn default() -> Self {
        DashboardCache { kept: Mutex::new(Cache::new()), computing: tokio::sync::Mutex::const_new(()) }
    }
}

impl DashboardCache {
    /// The evaluation kept for `key`, if any.
    fn kept(&self, key: &Key) -> Option<Arc<Figures>> {
        self.kept.lock().unwrap_or_else(PoisonError::into_inner).get(key, Instant::now())
    }
}

/// The figures of `query`: those of the applied index `at` if given and
/// still kept; else, after a linearizable read, those of the state applied
/// then, kept or computed (and kept).
pub(super) async fn figures(
    state: &Shared,
    query: &EvaluationQuery,
    at: Option<u64>,
) -> Result<Arc<Figures>, ApiError> {
    let cache = &state.console.dashboard;
    let key = |at| Key { query: query.clone(), at };
    if let Some(figures) = at.and_then(|at| cache.kept(&key(at))) {
        return Ok(figures);
    }
    state.log.linearizable_read_index(Duration::from_millis(READ_INDEX_TIMEOUT_MS)).await?;
    let applied = || state.log.state().read(|applied| applied.applied_index);
    if let Some(figures) = cache.kept(&key(applied())) {
        return Ok(figures);
    }
    let _one_at_a_time = cache.computing.lock().await;
    // Another request may have computed it while this one waited.
    if let Some(figures) = cache.kept(&key(applied())) {
        return Ok(figures);
    }
    let (at, evaluation) = crate::corrections::http::evaluation_as_applied(state, query).await?;
    let (departments, streets) = into_series(evaluation);
    let figures = Arc::new(Figures { at, departments, streets });
    cache.kept.lock().unwrap_or_else(PoisonError::into_inner).put(
        key(at),
        Arc::clone(&figures),
        Instant::now(),
    );
    Ok(figures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_keeps_a_few_entries_for_a_short_while() {
        let start = Instant::now();
        let later = |ms| start + Duration::from_millis(ms);
        let mut cache: Cache<u64, &str> = Cache::new();
        cache.put(1, "one", start);
        assert_eq!(cache.get(&1, later(CACHE_AGE_MAX_MS)), Some("one"));
        assert_eq!(cache.get(&2, start), None);
        assert_eq!(cache.get(&1, later(CACHE_AGE_MAX_MS + 1)), None, "dropped after its age");
        assert!(cache.entries.is_empty());
        for key in 0..=CACHE_ENTRIES_MAX as u64 {
            cache.put(key, "any", later(key));
        }
        assert_eq!(cache.entries.len(), CACHE_ENTRIES_MAX);
        assert_eq!(cache.get(&0, later(10)), None, "the oldest went first");
        assert_eq!(cache.get(&(CACHE_ENTRIES_MAX as u64), later(10)), Some("any"));
        cache.put(1, "again", later(20));
        assert_eq!(cache.entries.len(), CACHE_ENTRIES_MAX, "one entry per key");
        assert_eq!(cache.get(&1, later(20)), Some("again"));
    }

    #[test]
    fn entries_are_one_periods_at_one_index() {
        let key = |to_ms, at| Key {
            query: EvaluationQuery { from_ms: Some(0), to_ms: Some(to_ms), ..EvaluationQuery::default() },
            at,
        };
        assert!(key(1, 7) == key(1, 7));
        assert!(key(1, 7) != key(2, 7), "another period");
        assert!(key(1, 7) != key(1, 8), "another index");
        let mut cache = Cache::new();
        cache.put(key(1, 7), "seven", Instant::now());
        assert_eq!(cache.get(&key(1, 7), Instant::now()), Some("seven"));
        assert_eq!(cache.get(&key(1, 8), Instant::now()), None);
    }
}
