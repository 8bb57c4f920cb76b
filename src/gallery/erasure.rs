//! Erasure as a tombstone that every writer checks.
//!
//! Erasing an identity (`DELETE /v1/identities/{id}`) is written to a durable **erasure
//! log** in the gallery's own database (`erasures`: one row per erasure, in the same
//! transaction as the deletion), and marked in this process's [`Erasures`] register
//! *before* anything is deleted, so nothing new can match the person while the erasure
//! runs. The register is what the writers downstream of recognition ask
//! ([`Erasures::get`]): the event bus (outbox, recent events, the live stream), the
//! snapshot stage and the history recorder. A track decided as the person before the
//! erasure and ending after it therefore leaves no event, snapshot or appearance naming
//! them.
//!
//! Each node applies every erasure in the log to what it keeps of its own (its outbox,
//! snapshots, the history links) through the gallery's erasure hooks, and remembers how
//! far it applied the log ([`ErasureCursor`], kept in its outbox database). At start it
//! replays what it has not applied before it serves, so a node that was down during an
//! erasure (or whose change feed was pruned meanwhile) still forgets the person.
//!
//! The log holds identity ids (random UUIDs, no name, no face) and the time: it is kept
//! as long as the gallery, since a node may come back after any time.

use std::collections::HashMap;
use std::sync::RwLock;

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// One row of the erasure log.
#[derive(Debug, Clone, PartialEq)]
pub struct Erasure {
    /// Position in the log (increasing in commit order).
    pub seq: i64,
    pub identity: Uuid,
    pub at: DateTime<Utc>,
    /// Whether the person's appearances were erased with them (`?appearances=erase`):
    /// then every node deletes what it recorded as them instead of keeping it unknown.
    pub appearances: bool,
}

/// Identities erased (or being erased) as this process knows them: id → whether their
/// appearances go too. Shared by the gallery and every writer that must not name them.
#[derive(Debug, Default)]
pub struct Erasures {
    marked: RwLock<HashMap<Uuid, bool>>,
}

impl Erasures {
    /// From now on, `identity` is erased (`appearances`: with its appearances).
    pub fn mark(&self, identity: Uuid, appearances: bool) {
        let mut marked = self.marked.write().unwrap_or_else(|p| p.into_inner());
        let e = marked.entry(identity).or_insert(appearances);
        *e |= appearances;
    }

    /// An erasure that failed before it was durable: `identity` is back.
    pub fn lift(&self, identity: Uuid) {
        self.marked
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&identity);
    }

    /// `Some(appearances)` when `identity` is erased.
    pub fn get(&self, identity: Uuid) -> Option<bool> {
        self.marked
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&identity)
            .copied()
    }

    pub fn is_erased(&self, identity: Uuid) -> bool {
        self.get(identity).is_some()
    }
}

/// How far a node applied the erasure log to what it keeps of its own. Durable for a
/// service node (its outbox database), so a restart replays only what it missed.
pub trait ErasureCursor: Send + Sync {
    /// The last log position applied (0: none).
    fn position(&self) -> Result<i64, String>;
    /// Every erasure up to `seq` was applied.
    fn advance(&self, seq: i64) -> Result<(), String>;
}

/// A cursor in memory, starting where it is created: for processes that keep nothing
/// of their own to scrub (the CLI, tests) and before a service sets its durable one.
#[derive(Debug)]
pub struct MemoryCursor(std::sync::atomic::AtomicI64);

impl MemoryCursor {
    pub fn at(seq: i64) -> MemoryCursor {
        MemoryCursor(std::sync::atomic::AtomicI64::new(seq))
    }
}

impl ErasureCursor for MemoryCursor {
    fn position(&self) -> Result<i64, String> {
        Ok(self.0.load(std::sync::atomic::Ordering::SeqCst))
    }

    fn advance(&self, seq: i64) -> Result<(), String> {
        self.0.fetch_max(seq, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_is_seen_until_lifted_and_appearances_only_widen() {
        let e = Erasures::default();
        let id = Uuid::now_v7();
        assert_eq!(e.get(id), None);
        e.mark(id, true);
        e.mark(id, false);
        assert_eq!(e.get(id), Some(true));
        e.lift(id);
        assert!(!e.is_erased(id));
    }

    #[test]
    fn a_memory_cursor_never_goes_back() {
        let c = MemoryCursor::at(5);
        c.advance(9).unwrap();
        c.advance(7).unwrap();
        assert_eq!(c.position().unwrap(), 9);
    }
}
