//! The writer's queue as its users see it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::sync::OwnedSemaphorePermit;

use super::{Completion, FailState, Request};
use crate::engine::Op;
use crate::error::StoreError;

/// The writer's queue as its users see it: room is reserved before any lock is taken, requests
/// are queued with their completion, and nothing is taken after a failed write or below the
/// free-space watermark (for writes that add data).
pub(crate) struct Queue {
    /// Requests for the writer; `None` asks it to stop after what came before.
    tx: std::sync::mpsc::SyncSender<Option<Request>>,
    closed: std::sync::atomic::AtomicBool,
    slots: Arc<tokio::sync::Semaphore>,
    pub(crate) failed: Arc<FailState>,
    /// The free-space watermark (off for stores over a given engine).
    disk: crate::disk::DiskWatch,
}

impl Queue {
    /// A queue of `capacity` requests in front of the writer reading from `tx`'s receiver.
    pub(crate) fn new(
        tx: std::sync::mpsc::SyncSender<Option<Request>>,
        capacity: usize,
        failed: Arc<FailState>,
        disk: crate::disk::DiskWatch,
    ) -> Self {
        Self {
            tx,
            closed: std::sync::atomic::AtomicBool::new(false),
            slots: Arc::new(tokio::sync::Semaphore::new(capacity)),
            failed,
            disk,
        }
    }

    /// Whether writes are taken: not after a failed write, nor below the watermark.
    pub(crate) fn health(&self) -> Result<(), StoreError> {
        self.failed.check()?;
        self.disk.check()
    }

    /// [`Queue::reserve`] for a write that adds data (an entry, a channel): refused below the
    /// free-space watermark, before anything is assigned.
    pub(crate) async fn reserve_growth(&self) -> Result<OwnedSemaphorePermit, StoreError> {
        self.health()?;
        self.reserve().await
    }

    /// Waits for room in the writer's queue. Taken before any channel lock, so that a full
    /// queue makes callers wait without blocking others' locks.
    pub(crate) async fn reserve(&self) -> Result<OwnedSemaphorePermit, StoreError> {
        self.failed.check()?;
        self.slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Closed)
    }

    /// Queues a request with a permit already reserved. Never blocks: the permit guarantees room.
    pub(crate) fn enqueue(
        &self,
        ops: Vec<Op>,
        completion: Completion,
        permit: OwnedSemaphorePermit,
    ) -> Result<(), StoreError> {
        self.send(ops, completion, false, permit)
    }

    /// Reserves room, queues and returns once the request is queued.
    pub(crate) async fn submit(
        &self,
        ops: Vec<Op>,
        completion: Completion,
        force_sync: bool,
    ) -> Result<(), StoreError> {
        let permit = self.reserve().await?;
        self.send(ops, completion, force_sync, permit)
    }

    /// A request sent after `close` is never answered: its caller sees `Closed`.
    fn send(
        &self,
        ops: Vec<Op>,
        completion: Completion,
        force_sync: bool,
        permit: OwnedSemaphorePermit,
    ) -> Result<(), StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        let request = Request {
            ops,
            completion,
            force_sync,
            _permit: Some(permit),
            queued_at: Instant::now(),
        };
        self.tx.send(Some(request)).map_err(|_| StoreError::Closed)
    }

    /// Asks the writer to stop after what is queued (once); later requests get `Closed`.
    pub(crate) fn close(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            let _ = self.tx.send(None);
        }
    }
}
