//! The policy log's one RocksDB database: its column families, the options
//! they share, and what it holds in memory.
//!
//! Memory is bounded whatever the history's length:
//! - the memtables of all families together by [`MEMTABLES_BYTES_MAX`];
//! - data, index and filter blocks by the one block cache,
//!   [`BLOCK_CACHE_BYTES_MAX`]. Indexes and filters are partitioned, so
//!   only their top levels (a few hundred bytes per table file) stay
//!   pinned outside the cache's turnover.
//!
//! A family left to RocksDB's defaults would get a block cache of its own
//! (32 MiB each) and keep every table's whole index and filter in memory,
//! which grows with the data.

use std::path::Path;

use rocksdb::{BlockBasedIndexType, BlockBasedOptions, Cache, ColumnFamilyDescriptor, Options, DB};

use crate::history::{
    ACCESS_LOG_FAMILY, ARCHIVE_FAMILY, AUDIT_LEAVES_FAMILY, AUDIT_TREE_FAMILY, CHECKPOINTS_FAMILY,
    CORRECTIONS_CLOSED_FAMILY, HISTORY_META_FAMILY,
};
use crate::nonces::{NONCES_BY_TIME_FAMILY, NONCES_FAMILY};
use crate::store::{LOG_FAMILY, LOG_META_FAMILY, STATE_FAMILY};

/// The memtables of all column families together, in bytes at most.
const MEMTABLES_BYTES_MAX: usize = 64 * 1024 * 1024;
/// The one block cache every column family reads through, in bytes.
const BLOCK_CACHE_BYTES_MAX: usize = 32 * 1024 * 1024;
/// Bloom filter bits per key, for point reads.
const BLOOM_FILTER_BITS_PER_KEY: f64 = 10.0;

/// Every column family of the database.
const FAMILIES: [&str; 12] = [
    LOG_FAMILY,
    LOG_META_FAMILY,
    STATE_FAMILY,
    ARCHIVE_FAMILY,
    ACCESS_LOG_FAMILY,
    AUDIT_LEAVES_FAMILY,
    AUDIT_TREE_FAMILY,
    CHECKPOINTS_FAMILY,
    CORRECTIONS_CLOSED_FAMILY,
    HISTORY_META_FAMILY,
    NONCES_FAMILY,
    NONCES_BY_TIME_FAMILY,
];

/// What the database holds in memory now, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StorageMemory {
    /// The memtables of every family, flushed or not.
    pub memtables_bytes: u64,
    /// Table readers: what is held per table file outside the cache.
    pub table_readers_bytes: u64,
    /// The block cache in use, pinned blocks included.
    pub block_cache_bytes: u64,
}

/// Opens (or creates) the database in `directory` with every family.
pub(crate) fn open(directory: &Path) -> Result<DB, rocksdb::Error> {
    let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES_MAX);
    let mut options = family_options(&cache);
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    // One bound on the memtables of every column family together.
    options.set_db_write_buffer_size(MEMTABLES_BYTES_MAX);
    // The default family, unused, is named too: left out, it would get
    // RocksDB's default options, and a cache of its own.
    let families = std::iter::once(rocksdb::DEFAULT_COLUMN_FAMILY_NAME)
        .chain(FAMILIES)
        .map(|name| ColumnFamilyDescriptor::new(name, family_options(&cache)));
    DB::open_cf_descriptors(&options, directory, families)
}

/// A family's options: its blocks, partitioned indexes and filters in
/// `cache` (which the database's families share), bloom filters for point
/// reads. The record store opens its families with these too.
pub fn family_options(cache: &Cache) -> Options {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    table.set_bloom_filter(BLOOM_FILTER_BITS_PER_KEY, false);
    table.set_index_type(BlockBasedIndexType::TwoLevelIndexSearch);
    table.set_partition_filters(true);
    table.set_cache_index_and_filter_blocks(true);
    table.set_pin_top_level_index_and_filter(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    let mut options = Options::default();
    options.set_block_based_table_factory(&table);
    options
}

/// What `db` holds in memory now. A property RocksDB does not give counts 0.
pub(crate) fn memory(db: &DB) -> StorageMemory {
    let mut memory = StorageMemory::default();
    for name in FAMILIES {
        let Some(family) = db.cf_handle(name) else { continue };
        let property = |key: &str| db.property_int_value_cf(family, key).ok().flatten().unwrap_or(0);
        memory.memtables_bytes += property("rocksdb.cur-size-all-mem-tables");
        memory.table_readers_bytes += property("rocksdb.estimate-table-readers-mem");
        // Every family reads through the same cache: count it once.
        memory.block_cache_bytes = memory.block_cache_bytes.max(property("rocksdb.block-cache-usage"));
    }
    memory
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_counts_the_memtables_written_and_the_one_cache_every_family_reads_through() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path()).unwrap();
        let empty = memory(&db);
        let log = db.cf_handle(LOG_FAMILY).unwrap();
        for index in 0u64..2_000 {
            db.put_cf(log, index.to_be_bytes(), [7u8; 512]).unwrap();
        }
        let written = memory(&db);
        assert!(written.memtables_bytes >= empty.memtables_bytes + 2_000 * 512, "{written:?}");
        db.flush_cf(log).unwrap();
        for index in 0u64..2_000 {
            assert!(db.get_cf(log, index.to_be_bytes()).unwrap().is_some());
        }
        let read = memory(&db);
        assert!(read.block_cache_bytes > 2_000 * 512 / 2, "{read:?}");
        assert!(read.block_cache_bytes <= BLOCK_CACHE_BYTES_MAX as u64, "{read:?}");
        // Another family, never read, sees the same cache in use.
        let nonces = db.cf_handle(NONCES_FAMILY).unwrap();
        let seen = db.property_int_value_cf(nonces, "rocksdb.block-cache-usage").unwrap().unwrap();
        assert_eq!(seen, read.block_cache_bytes);
    }
}
