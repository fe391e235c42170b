//! berthd's local state database: one redb file under the data root holding container
//! records, volume records and other per-node metadata, each as versioned JSON.
//!
//! Owns: durability and the on-disk encoding (a [`Versioned`] envelope, so a later layout can
//! migrate old records). Does not own what the records mean (the services do).

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A table of JSON records keyed by a string.
#[derive(Clone, Copy)]
pub struct Table {
    name: &'static str,
    def: TableDefinition<'static, &'static str, &'static [u8]>,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Table").field(&self.name).finish()
    }
}

impl Table {
    pub const fn new(name: &'static str) -> Self {
        Table {
            name,
            def: TableDefinition::new(name),
        }
    }
}

/// Errors of the state database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state database {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: Box<redb::DatabaseError>,
    },
    #[error("state database: {0}")]
    Db(Box<redb::Error>),
    #[error("record {key} in {table}: {source}")]
    Decode {
        table: &'static str,
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("record {key} in {table} has version {version}, this berthd reads up to {max}")]
    TooNew {
        table: &'static str,
        key: String,
        version: u32,
        max: u32,
    },
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(Box::new(e.into()))
            }
        }
    )*};
}
from_redb!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// The on-disk envelope of every record: a layout version and the data.
#[derive(Debug, Serialize, Deserialize)]
struct Versioned<T> {
    v: u32,
    data: T,
}

/// Current layout version of every record kind.
pub const RECORD_VERSION: u32 = 1;

/// The state database, shared by the services.
#[derive(Debug, Clone)]
pub struct Store {
    db: Arc<Database>,
}

impl Store {
    /// Opens (or creates) `<dir>/berthd.redb`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join("berthd.redb");
        let db = Database::create(&path).map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source: Box::new(source),
        })?;
        Ok(Store { db: Arc::new(db) })
    }

    /// Writes `value` under `key`, durably.
    pub fn put<T: Serialize>(&self, table: Table, key: &str, value: &T) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(&Versioned {
            v: RECORD_VERSION,
            data: value,
        })
        .expect("records serialise");
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(table.def)?;
            t.insert(key, bytes.as_slice())?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Removes `key`; true if it existed.
    pub fn delete(&self, table: Table, key: &str) -> Result<bool, StoreError> {
        let tx = self.db.begin_write()?;
        let existed = {
            let mut t = tx.open_table(table.def)?;
            let old = t.remove(key)?;
            old.is_some()
        };
        tx.commit()?;
        Ok(existed)
    }

    /// Every record of `table`, by key.
    pub fn list<T: DeserializeOwned>(&self, table: Table) -> Result<Vec<(String, T)>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = match tx.open_table(table.def) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            let key = k.value().to_string();
            let value = decode(table, &key, v.value())?;
            out.push((key, value));
        }
        Ok(out)
    }
}

fn decode<T: DeserializeOwned>(table: Table, key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    let name = table.name;
    let env: Versioned<serde_json::Value> =
        serde_json::from_slice(bytes).map_err(|source| StoreError::Decode {
            table: name,
            key: key.into(),
            source,
        })?;
    if env.v > RECORD_VERSION {
        return Err(StoreError::TooNew {
            table: name,
            key: key.into(),
            version: env.v,
            max: RECORD_VERSION,
        });
    }
    serde_json::from_value(env.data).map_err(|source| StoreError::Decode {
        table: name,
        key: key.into(),
        source,
    })
}

/// Container records by ID.
pub const CONTAINERS: Table = Table::new("containers");
/// Volume records by name.
pub const VOLUMES: Table = Table::new("volumes");

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Rec {
        a: u32,
    }

    #[test]
    fn records_survive_reopen_and_delete() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            assert!(s.list::<Rec>(VOLUMES).unwrap().is_empty());
            s.put(VOLUMES, "x", &Rec { a: 1 }).unwrap();
            s.put(VOLUMES, "y", &Rec { a: 2 }).unwrap();
            assert!(s.delete(VOLUMES, "y").unwrap());
            assert!(!s.delete(VOLUMES, "y").unwrap());
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(
            s.list::<Rec>(VOLUMES).unwrap(),
            vec![("x".to_string(), Rec { a: 1 })]
        );
    }

    #[test]
    fn newer_records_are_refused_not_misread() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let raw = serde_json::to_vec(&Versioned {
            v: RECORD_VERSION + 1,
            data: Rec { a: 3 },
        })
        .unwrap();
        let tx = s.db.begin_write().unwrap();
        tx.open_table(VOLUMES.def)
            .unwrap()
            .insert("z", raw.as_slice())
            .unwrap();
        tx.commit().unwrap();
        assert!(matches!(
            s.list::<Rec>(VOLUMES),
            Err(StoreError::TooNew { version, .. }) if version == RECORD_VERSION + 1
        ));
    }
}
