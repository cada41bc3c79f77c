//! Durable Raft storage in one redb database per node: the log, the vote,
//! the committed index and the last snapshot. Every write is one redb
//! transaction committed with `Durability::Immediate` (fsync) before Raft
//! is told it is done, as Raft requires of the vote and the log.
//!
//! The state machine lives in memory and is rebuilt at start from the last
//! snapshot plus the committed log after it (openraft re-applies up to the
//! saved committed index).

// openraft's storage traits return its `StorageError`, which is large; the
// helpers here return the same type rather than convert at every call.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, RwLock};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftLogReader, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership, Vote,
};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::state::{Outcome, State};
use crate::{NodeId, TypeConfig};

const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("logs");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

type StorageResult<T> = Result<T, StorageError<NodeId>>;

fn read_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::read(&e).into()
}
fn write_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write(&e).into()
}

/// Opens (or creates) the node's database.
pub fn open(dir: &Path) -> Result<Arc<Database>, std::io::Error> {
    std::fs::create_dir_all(dir)?;
    let db = Database::create(dir.join("raft.redb")).map_err(std::io::Error::other)?;
    let txn = db.begin_write().map_err(std::io::Error::other)?;
    txn.open_table(LOGS).map_err(std::io::Error::other)?;
    txn.open_table(META).map_err(std::io::Error::other)?;
    txn.commit().map_err(std::io::Error::other)?;
    Ok(Arc::new(db))
}

fn get_raw(db: &Database, key: &str) -> StorageResult<Option<Vec<u8>>> {
    let txn = db.begin_read().map_err(read_err)?;
    let table = txn.open_table(META).map_err(read_err)?;
    Ok(table
        .get(key)
        .map_err(read_err)?
        .map(|v| v.value().to_vec()))
}

fn put_raw(db: &Database, key: &str, bytes: &[u8]) -> StorageResult<()> {
    let txn = db.begin_write().map_err(write_err)?;
    {
        let mut table = txn.open_table(META).map_err(write_err)?;
        table.insert(key, bytes).map_err(write_err)?;
    }
    txn.commit().map_err(write_err)
}

fn get_meta<T: for<'de> Deserialize<'de>>(db: &Database, key: &str) -> StorageResult<Option<T>> {
    match get_raw(db, key)? {
        Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(read_err),
        None => Ok(None),
    }
}

fn put_meta<T: Serialize>(db: &Database, key: &str, value: &T) -> StorageResult<()> {
    put_raw(db, key, &serde_json::to_vec(value).map_err(write_err)?)
}

/// The Raft log and vote. Cloned for each log reader: redb serialises
/// writers and lets readers see the last committed transaction.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    pub fn new(db: Arc<Database>) -> LogStore {
        LogStore { db }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(LOGS).map_err(read_err)?;
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s + 1,
            Bound::Unbounded => 0,
        };
        let mut out = Vec::new();
        for item in table.range(start..).map_err(read_err)? {
            let (k, v) = item.map_err(read_err)?;
            if !range.contains(&k.value()) {
                break;
            }
            out.push(serde_json::from_slice(v.value()).map_err(read_err)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let last_purged: Option<LogId<NodeId>> = get_meta(&self.db, "last_purged")?;
        let txn = self.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(LOGS).map_err(read_err)?;
        let last = match table.last().map_err(read_err)? {
            Some((_, v)) => {
                let e: Entry<TypeConfig> = serde_json::from_slice(v.value()).map_err(read_err)?;
                Some(e.log_id)
            }
            None => last_purged,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        put_meta(&self.db, "vote", vote)
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        get_meta(&self.db, "vote")
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        put_meta(&self.db, "committed", &committed)
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        Ok(get_meta::<Option<LogId<NodeId>>>(&self.db, "committed")?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let txn = self.db.begin_write().map_err(write_err)?;
        {
            let mut table = txn.open_table(LOGS).map_err(write_err)?;
            for entry in entries {
                let bytes = serde_json::to_vec(&entry).map_err(write_err)?;
                table
                    .insert(entry.log_id.index, bytes.as_slice())
                    .map_err(write_err)?;
            }
        }
        // Immediate durability: the commit returns after fsync.
        let result = txn.commit().map_err(std::io::Error::other);
        let failed = result.as_ref().err().map(|e| e.to_string());
        callback.log_io_completed(result);
        match failed {
            Some(e) => Err(write_err(std::io::Error::other(e))),
            None => Ok(()),
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let txn = self.db.begin_write().map_err(write_err)?;
        {
            let mut table = txn.open_table(LOGS).map_err(write_err)?;
            table
                .retain_in(log_id.index.., |_, _| false)
                .map_err(write_err)?;
        }
        txn.commit().map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let bytes = serde_json::to_vec(&log_id).map_err(write_err)?;
        let txn = self.db.begin_write().map_err(write_err)?;
        {
            let mut meta = txn.open_table(META).map_err(write_err)?;
            meta.insert("last_purged", bytes.as_slice())
                .map_err(write_err)?;
            let mut table = txn.open_table(LOGS).map_err(write_err)?;
            table
                .retain_in(..=log_id.index, |_, _| false)
                .map_err(write_err)?;
        }
        txn.commit().map_err(write_err)
    }
}

/// What a snapshot holds: the state and what Raft needs to resume from it.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, openraft::BasicNode>,
    state: State,
}

/// The applied state, shared with the API (reads) and watchers.
pub struct Applied {
    pub last_applied: Option<LogId<NodeId>>,
    pub membership: StoredMembership<NodeId, openraft::BasicNode>,
    pub state: State,
}

#[derive(Clone)]
pub struct StateMachine {
    db: Arc<Database>,
    pub applied: Arc<RwLock<Applied>>,
    /// Bumped with the state's revision, for long-polling watchers.
    pub changes: Arc<tokio::sync::watch::Sender<u64>>,
}

impl StateMachine {
    /// The state machine as of the last snapshot on disk (or empty).
    pub fn load(db: Arc<Database>) -> StorageResult<StateMachine> {
        let stored: Option<StoredSnapshot> = get_meta(&db, "snapshot")?;
        let applied = match stored {
            Some(s) => Applied {
                last_applied: s.meta.last_log_id,
                membership: s.meta.last_membership.clone(),
                state: s.state,
            },
            None => Applied {
                last_applied: None,
                membership: StoredMembership::default(),
                state: State::default(),
            },
        };
        let (changes, _) = tokio::sync::watch::channel(applied.state.revision);
        Ok(StateMachine {
            db,
            applied: Arc::new(RwLock::new(applied)),
            changes: Arc::new(changes),
        })
    }

    fn snapshot_now(&self) -> StorageResult<Snapshot<TypeConfig>> {
        let (meta, bytes) = {
            let a = self.applied.read().unwrap_or_else(|p| p.into_inner());
            let id = a.last_applied.map_or("0-0".to_string(), |l| {
                format!("{}-{}", l.leader_id, l.index)
            });
            let meta = SnapshotMeta {
                last_log_id: a.last_applied,
                last_membership: a.membership.clone(),
                snapshot_id: id,
            };
            let stored = StoredSnapshot {
                meta: meta.clone(),
                state: a.state.clone(),
            };
            (meta, serde_json::to_vec(&stored).map_err(write_err)?)
        };
        put_raw(&self.db, "snapshot", &bytes)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        self.snapshot_now()
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(
        Option<LogId<NodeId>>,
        StoredMembership<NodeId, openraft::BasicNode>,
    )> {
        let a = self.applied.read().unwrap_or_else(|p| p.into_inner());
        Ok((a.last_applied, a.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<Outcome>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut outcomes = Vec::new();
        let revision = {
            let mut a = self.applied.write().unwrap_or_else(|p| p.into_inner());
            for entry in entries {
                a.last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => outcomes.push(Outcome {
                        revision: a.state.revision,
                        ..Outcome::default()
                    }),
                    EntryPayload::Normal(command) => outcomes.push(a.state.apply(command)),
                    EntryPayload::Membership(m) => {
                        a.membership = StoredMembership::new(Some(entry.log_id), m);
                        outcomes.push(Outcome {
                            revision: a.state.revision,
                            ..Outcome::default()
                        });
                    }
                }
            }
            a.state.revision
        };
        self.changes.send_replace(revision);
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let stored: StoredSnapshot =
            serde_json::from_slice(snapshot.get_ref()).map_err(read_err)?;
        let revision = {
            let mut a = self.applied.write().unwrap_or_else(|p| p.into_inner());
            a.last_applied = meta.last_log_id;
            a.membership = meta.last_membership.clone();
            a.state = stored.state;
            a.state.revision
        };
        put_raw(&self.db, "snapshot", snapshot.get_ref())?;
        self.changes.send_replace(revision);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let Some(bytes) = get_raw(&self.db, "snapshot")? else {
            return Ok(None);
        };
        let parsed: StoredSnapshot = serde_json::from_slice(&bytes).map_err(read_err)?;
        Ok(Some(Snapshot {
            meta: parsed.meta,
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}
