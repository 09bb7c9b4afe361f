//! The second engine: sled 0.34. Its `flush` writes the log with `sync_file_range` only, which
//! does not make data durable on Linux (sled issue #1452), so `sync` also fsyncs sled's data
//! file. Values are capped below sled's blob threshold, because blob files are not synced.

use std::fs::File;
use std::ops::Bound;
use std::path::Path;

use super::{Direction, Engine, KeyValue, MAX_VALUE_BYTES, Op, collect_directed};
use crate::error::EngineError;

/// Segment size: sled writes values over a quarter of it to blob files, which it never syncs.
/// 1 MiB puts that threshold well above [`MAX_VALUE_BYTES`].
const SEGMENT_BYTES: usize = 1024 * 1024;
const _: () = assert!(MAX_VALUE_BYTES * 2 <= SEGMENT_BYTES / 4);

/// A sled database, with an open handle on its data file for fsync.
pub struct SledEngine {
    db: sled::Db,
    data_file: File,
    dir: std::path::PathBuf,
}

impl std::fmt::Debug for SledEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledEngine")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn backend(e: impl std::fmt::Display) -> EngineError {
    EngineError::Backend {
        engine: "sled",
        message: e.to_string(),
    }
}

impl SledEngine {
    /// Opens (or creates) the database in `dir`, with a page cache of `cache_bytes`.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, EngineError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .segment_size(SEGMENT_BYTES)
            // The store syncs when it must; sled's own timer would only add I/O.
            .flush_every_ms(None)
            .open()
            .map_err(backend)?;
        let data_file = File::open(dir.join("db"))?;
        // The directory entry of the data file must be durable too.
        File::open(dir)?.sync_all()?;
        Ok(Self {
            db,
            data_file,
            dir: dir.to_path_buf(),
        })
    }
}

impl Engine for SledEngine {
    fn name(&self) -> &'static str {
        "sled"
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        Ok(self.db.get(key).map_err(backend)?.map(|v| v.to_vec()))
    }

    fn scan(
        &self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<KeyValue>, EngineError> {
        let iter = self.db.range::<&[u8], _>((start, end));
        collect_directed(
            iter,
            direction,
            limit,
            |r: sled::Result<(sled::IVec, sled::IVec)>| {
                let (k, v) = r.map_err(backend)?;
                Ok((k.to_vec(), v.to_vec()))
            },
        )
    }

    fn write(&self, ops: &[Op]) -> Result<(), EngineError> {
        let mut batch = sled::Batch::default();
        for op in ops {
            match op {
                Op::Put(k, v) => {
                    if v.len() > MAX_VALUE_BYTES {
                        return Err(EngineError::ValueTooLarge {
                            len: v.len(),
                            max: MAX_VALUE_BYTES,
                        });
                    }
                    batch.insert(k.as_slice(), v.as_slice());
                }
                Op::Delete(k) => batch.remove(k.as_slice()),
            }
        }
        self.db.apply_batch(batch).map_err(backend)
    }

    fn sync(&self) -> Result<(), EngineError> {
        self.db.flush().map_err(backend)?;
        self.data_file.sync_all()?;
        Ok(())
    }

    fn disk_bytes(&self) -> Result<u64, EngineError> {
        self.db.size_on_disk().map_err(backend)
    }
}
