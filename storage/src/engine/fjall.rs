//! The default engine: fjall, a pure-Rust LSM tree. Writes go to its journal; `sync` fsyncs the
//! journal (`PersistMode::SyncAll`), which makes every earlier batch durable.

use std::ops::Bound;
use std::path::Path;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::{Direction, Engine, KeyValue, Op};
use crate::error::EngineError;

/// A fjall database with one keyspace holding the store's whole key space.
pub struct FjallEngine {
    db: Database,
    keyspace: Keyspace,
}

impl std::fmt::Debug for FjallEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FjallEngine").finish_non_exhaustive()
    }
}

fn backend(e: impl std::fmt::Display) -> EngineError {
    EngineError::Backend {
        engine: "fjall",
        message: e.to_string(),
    }
}

impl FjallEngine {
    /// Opens (or creates) the database in `dir`, with a block cache of `cache_bytes`.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, EngineError> {
        let db = Database::builder(dir)
            .cache_size(cache_bytes)
            .open()
            .map_err(backend)?;
        let keyspace = db
            .keyspace("chorus", KeyspaceCreateOptions::default)
            .map_err(backend)?;
        Ok(Self { db, keyspace })
    }
}

impl Engine for FjallEngine {
    fn name(&self) -> &'static str {
        "fjall"
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        Ok(self.keyspace.get(key).map_err(backend)?.map(|v| v.to_vec()))
    }

    fn scan(
        &self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<KeyValue>, EngineError> {
        let iter = self.keyspace.range::<&[u8], _>((start, end));
        let pair = |guard: fjall::Guard| {
            let (k, v) = guard.into_inner().map_err(backend)?;
            Ok((k.to_vec(), v.to_vec()))
        };
        match direction {
            Direction::Forward => iter.take(limit).map(pair).collect(),
            Direction::Reverse => iter.rev().take(limit).map(pair).collect(),
        }
    }

    fn write(&self, ops: &[Op]) -> Result<(), EngineError> {
        let mut batch = self.db.batch();
        for op in ops {
            match op {
                Op::Put(k, v) => batch.insert(&self.keyspace, k.as_slice(), v.as_slice()),
                Op::Delete(k) => batch.remove(&self.keyspace, k.as_slice()),
            }
        }
        batch.commit().map_err(backend)
    }

    fn sync(&self) -> Result<(), EngineError> {
        self.db.persist(PersistMode::SyncAll).map_err(backend)
    }

    fn disk_bytes(&self) -> Result<u64, EngineError> {
        self.db.disk_space().map_err(backend)
    }
}
