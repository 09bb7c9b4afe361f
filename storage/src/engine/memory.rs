//! An in-memory engine for fast unit and property tests. `sync` does nothing: nothing here
//! survives the process.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::RwLock;

use super::{Direction, Engine, KeyValue, Op, collect_directed};
use crate::error::EngineError;

/// A `BTreeMap` behind a lock.
#[derive(Debug, Default)]
pub struct MemoryEngine {
    map: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemoryEngine {
    /// An empty engine.
    pub fn new() -> Self {
        Self::default()
    }
}

fn poisoned() -> EngineError {
    EngineError::Failed("memory engine lock poisoned".into())
}

impl Engine for MemoryEngine {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        Ok(self.map.read().map_err(|_| poisoned())?.get(key).cloned())
    }

    fn scan(
        &self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<KeyValue>, EngineError> {
        let map = self.map.read().map_err(|_| poisoned())?;
        let range = map.range::<[u8], _>((start, end));
        collect_directed(range, direction, limit, |(k, v)| Ok((k.clone(), v.clone())))
    }

    fn write(&self, ops: &[Op]) -> Result<(), EngineError> {
        let mut map = self.map.write().map_err(|_| poisoned())?;
        for op in ops {
            match op {
                Op::Put(k, v) => {
                    map.insert(k.clone(), v.clone());
                }
                Op::Delete(k) => {
                    map.remove(k);
                }
            }
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), EngineError> {
        Ok(())
    }

    fn visit_snapshot(&self, visit: &mut super::Visitor<'_>) -> Result<bool, EngineError> {
        let copy = self.map.read().map_err(|_| poisoned())?.clone();
        for (k, v) in &copy {
            visit(k, v)?;
        }
        Ok(true)
    }

    fn disk_bytes(&self) -> Result<u64, EngineError> {
        Ok(0)
    }
}
