//! Pages read ahead. When an owner answers a listing's page with a cursor,
//! it reads the next page while this page's access record commits and the
//! requester asks for the next one, so the read is off the page's critical
//! path. A page read ahead is only a cache of the store: it is used by the
//! same requester's same listing, at the same position and page size, and
//! only if no record was written since the read began; otherwise the page
//! is read again. Everything else (signature, replay, decision, filters,
//! the access record) happens for the next request as for any other.

use std::collections::VecDeque;
use std::sync::Mutex;

use civmesh_certs::NodeId;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

use super::listing::PageRead;
use super::ListRefusal;

/// Pages read ahead kept at most (each at most `LIST_PAGE_BYTES_MAX`); the
/// oldest goes first.
pub const LIST_READ_AHEAD_PAGES_MAX: usize = 8;

/// Which request a page read ahead is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ReadAheadKey {
    /// The requester.
    pub requester: NodeId,
    /// The listing's identity (dataset, grant, filters).
    pub listing: [u8; 32],
    /// Where the page starts: the position the previous page's cursor seals.
    pub position: Vec<u8>,
    /// Records on the page at most.
    pub page_size: usize,
}

struct ReadAhead {
    key: ReadAheadKey,
    /// The record store's generation when the read began.
    generation: u64,
    read: JoinHandle<Result<PageRead, ListRefusal>>,
}

/// The pages read ahead, oldest first.
#[derive(Default)]
pub(super) struct ReadAheads {
    pages: Mutex<VecDeque<ReadAhead>>,
}

impl ReadAheads {
    /// Reads the page `key` names in the background with `read`; the store
    /// was at `generation` before it began.
    pub fn start(
        &self,
        tasks: &TaskTracker,
        key: ReadAheadKey,
        generation: u64,
        read: impl FnOnce() -> Result<PageRead, ListRefusal> + Send + 'static,
    ) {
        let Ok(mut pages) = self.pages.lock() else { return };
        pages.retain(|page| page.key != key);
        while pages.len() >= LIST_READ_AHEAD_PAGES_MAX {
            pages.pop_front();
        }
        pages.push_back(ReadAhead { key, generation, read: tasks.spawn_blocking(read) });
        debug_assert!(pages.len() <= LIST_READ_AHEAD_PAGES_MAX);
    }

    /// The page read ahead for `key`, if there is one and the store is still
    /// at the generation it was read at (`current` says where it is now).
    pub async fn take(&self, key: &ReadAheadKey, current: impl Fn() -> u64) -> Option<PageRead> {
        let ahead = {
            let mut pages = self.pages.lock().ok()?;
            let index = pages.iter().position(|page| &page.key == key)?;
            pages.remove(index)?
        };
        let read = ahead.read.await.ok()?.ok()?;
        (current() == ahead.generation).then_some(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use civmesh_certs::NodeKey;

    fn key(position: u8) -> ReadAheadKey {
        let requester = NodeKey::generate().unwrap().node_id();
        ReadAheadKey { requester, listing: [7; 32], position: vec![position], page_size: 500 }
    }

    fn page(resume: u8) -> PageRead {
        PageRead { found: Vec::new(), resume_after: Some(vec![resume]) }
    }

    #[tokio::test]
    async fn a_page_is_used_once_by_its_own_request_and_only_if_nothing_was_written() {
        let (aheads, tasks) = (ReadAheads::default(), TaskTracker::new());
        let first = key(1);
        aheads.start(&tasks, first.clone(), 5, || Ok(page(2)));
        let other_size = ReadAheadKey { page_size: 499, ..first.clone() };
        assert!(aheads.take(&other_size, || 5).await.is_none(), "another page size");
        let other_requester = ReadAheadKey { requester: key(1).requester, ..first.clone() };
        assert!(aheads.take(&other_requester, || 5).await.is_none(), "another requester");
        assert_eq!(aheads.take(&first, || 5).await.map(|read| read.resume_after), Some(Some(vec![2])));
        assert!(aheads.take(&first, || 5).await.is_none(), "used once");
        aheads.start(&tasks, first.clone(), 5, || Ok(page(2)));
        assert!(aheads.take(&first, || 6).await.is_none(), "a record was written since");
        aheads.start(&tasks, first.clone(), 5, || Err(ListRefusal::Unavailable("disk".into())));
        assert!(aheads.take(&first, || 5).await.is_none(), "a failed read is read again");
    }

    #[tokio::test]
    async fn at_most_the_bound_are_kept_oldest_dropped_first() {
        let (aheads, tasks) = (ReadAheads::default(), TaskTracker::new());
        let keys: Vec<ReadAheadKey> = (0..=LIST_READ_AHEAD_PAGES_MAX as u8).map(key).collect();
        for key in &keys {
            aheads.start(&tasks, key.clone(), 0, || Ok(page(0)));
        }
        assert_eq!(aheads.pages.lock().unwrap().len(), LIST_READ_AHEAD_PAGES_MAX);
        assert!(aheads.take(&keys[0], || 0).await.is_none(), "the oldest was dropped");
        assert!(aheads.take(&keys[LIST_READ_AHEAD_PAGES_MAX], || 0).await.is_some());
    }
}
