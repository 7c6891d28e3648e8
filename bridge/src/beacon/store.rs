//! The pulse database (SQLite): every published pulse, every certificate that signed one, and the
//! committed next local random value, so a restart continues the chain and keeps the commitment.
//!
//! The committed value is secret until its pulse is published: the file is created readable by
//! its owner only (and the systemd unit's `UMask=0077` and `StateDirectory=` keep it so).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension as _};

use super::pulse::{hex, Pulse, VALUE_LEN};

/// Errors of the pulse database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("failed to open the beacon database {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("failed to create the beacon database {path} (does its directory exist and can the bridge write it?)")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("beacon database query failed")]
    Query(#[from] rusqlite::Error),
    #[error("a stored pulse is not valid JSON")]
    Json(#[from] serde_json::Error),
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS pulses (
    chain   INTEGER NOT NULL,
    idx     INTEGER NOT NULL,
    time_ms INTEGER NOT NULL,
    json    TEXT NOT NULL,
    PRIMARY KEY (chain, idx)
);
CREATE INDEX IF NOT EXISTS pulses_time ON pulses (time_ms);
CREATE TABLE IF NOT EXISTS certificates (
    id  TEXT PRIMARY KEY,
    der BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS commitment (
    one        INTEGER PRIMARY KEY CHECK (one = 1),
    chain      INTEGER NOT NULL,
    next_local BLOB NOT NULL
);
";

/// The pulse database; one connection behind a mutex (queries take microseconds).
#[derive(Debug)]
pub struct Store {
    conn: Mutex<Connection>,
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Store {
    /// Opens (or creates, mode 0600) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|source| StoreError::Create { path: path.to_owned(), source })?;
        let open = |source| StoreError::Open { path: path.to_owned(), source };
        let conn = Connection::open(path).map_err(open)?;
        conn.execute_batch(SCHEMA).map_err(open)?;
        Ok(Self { conn: Mutex::new(conn) })
    }

    /// Opens an existing database for reading (the verifier).
    pub fn open_read_only(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|source| StoreError::Open { path: path.to_owned(), source })?;
        Ok(Self { conn: Mutex::new(conn) })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn one(&self, sql: &str, args: impl rusqlite::Params) -> Result<Option<Pulse>, StoreError> {
        let json: Option<String> = self.conn().query_row(sql, args, |r| r.get(0)).optional()?;
        json.map(|j| serde_json::from_str(&j).map_err(StoreError::from)).transpose()
    }

    /// The latest pulse.
    pub fn last(&self) -> Result<Option<Pulse>, StoreError> {
        self.one("SELECT json FROM pulses ORDER BY time_ms DESC LIMIT 1", [])
    }

    /// Pulse `idx` of chain `chain`.
    pub fn get(&self, chain: u64, idx: u64) -> Result<Option<Pulse>, StoreError> {
        self.one(
            "SELECT json FROM pulses WHERE chain = ?1 AND idx = ?2",
            params![to_i64(chain), to_i64(idx)],
        )
    }

    /// The last pulse of chain `chain`.
    pub fn last_of(&self, chain: u64) -> Result<Option<Pulse>, StoreError> {
        self.one(
            "SELECT json FROM pulses WHERE chain = ?1 ORDER BY idx DESC LIMIT 1",
            params![to_i64(chain)],
        )
    }

    /// The first pulse at or after `time_ms` (NIST's `/pulse/time/{ms}`).
    pub fn at_or_after(&self, time_ms: u64) -> Result<Option<Pulse>, StoreError> {
        self.one(
            "SELECT json FROM pulses WHERE time_ms >= ?1 ORDER BY time_ms LIMIT 1",
            params![to_i64(time_ms)],
        )
    }

    /// The first pulse of chain `chain` at or after `time_ms`.
    pub fn first_in_chain_from(
        &self,
        chain: u64,
        time_ms: u64,
    ) -> Result<Option<Pulse>, StoreError> {
        self.one(
            "SELECT json FROM pulses WHERE chain = ?1 AND time_ms >= ?2 ORDER BY idx LIMIT 1",
            params![to_i64(chain), to_i64(time_ms)],
        )
    }

    /// The committed next local random value and the chain it was committed in.
    pub fn commitment(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let row: Option<(i64, Vec<u8>)> = self
            .conn()
            .query_row("SELECT chain, next_local FROM commitment WHERE one = 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        Ok(row.filter(|(_, v)| v.len() == VALUE_LEN).map(|(c, v)| (c as u64, v)))
    }

    /// Stores `pulse` and the value its `precommitmentValue` commits to, in one transaction.
    pub fn append(&self, pulse: &Pulse, next_local: &[u8]) -> Result<(), StoreError> {
        let json = serde_json::to_string(pulse)?;
        let time = pulse.time_ms().unwrap_or_default();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO pulses (chain, idx, time_ms, json) VALUES (?1, ?2, ?3, ?4)",
            params![to_i64(pulse.chain_index), to_i64(pulse.pulse_index), to_i64(time), json],
        )?;
        tx.execute(
            "INSERT INTO commitment (one, chain, next_local) VALUES (1, ?1, ?2)
             ON CONFLICT (one) DO UPDATE SET chain = excluded.chain, next_local = excluded.next_local",
            params![to_i64(pulse.chain_index), next_local],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Keeps a certificate (DER) under its id (lower-case hex of SHA-512).
    pub fn put_certificate(&self, id: &[u8], der: &[u8]) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT OR IGNORE INTO certificates (id, der) VALUES (?1, ?2)",
            params![hex(id, false), der],
        )?;
        Ok(())
    }

    /// A certificate (DER) by its id.
    pub fn certificate(&self, id: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT der FROM certificates WHERE id = ?1", params![hex(id, false)], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Replaces a stored pulse's JSON (tests of the verifier's tamper detection).
    #[cfg(test)]
    pub fn overwrite(&self, pulse: &Pulse) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE pulses SET json = ?3 WHERE chain = ?1 AND idx = ?2",
            params![
                to_i64(pulse.chain_index),
                to_i64(pulse.pulse_index),
                serde_json::to_string(pulse)?
            ],
        )?;
        Ok(())
    }
}
