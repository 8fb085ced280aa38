//! The read-only store, [`PostgresReader`]: one session per reader, for loads on a cache
//! miss and look-ups of stored names and owners.
//!
//! It never writes: it has no write method, and its session refuses writes besides
//! (`default_transaction_read_only`). A session found broken is replaced once and the
//! read run again, which is safe because it only reads.

use std::cell::RefCell;

use ::postgres::{Client, Config};

use super::super::{ArchiveInfo, FailureKind, Owner, ReadStore, RowIds, Storage, StoreError};
use super::error::LOG;
use super::hosts::primary_moved_from;
use super::migrate::{refuse_newer, schema_version};
use super::session::{connect_on, session_config, Access, APPLICATION_NAME};
use super::stall::Call;
use super::{archive, history, load, owners};
use crate::model::{Galaxy, HistoryEntry};
use crate::settings::postgres_label;

/// A read-only session, for loads on a cache miss and look-ups of stored names. It has
/// no write method, and the server refuses writes on it besides (its transactions are
/// read-only by default):
///
/// ```compile_fail
/// use galactic_war::testing::{PostgresReader, WriteStore};
/// fn write(reader: &mut PostgresReader) {
///     let _ = reader.write_batch(&["g".to_owned()], &[]); // PostgresReader is no WriteStore
/// }
/// ```
pub struct PostgresReader {
    config: Config,
    label: String,
    /// `RefCell`: the client needs `&mut` to query, and a reader is lent to one thread at
    /// a time (`ReadStore` is `Send`, not `Sync`).
    pub(super) client: RefCell<Client>,
    /// The host the session is on, when the URL names several.
    host: RefCell<Option<String>>,
}

impl PostgresReader {
    /// Opens a read-only session, refusing a newer schema.
    pub fn open(url: &str) -> Result<PostgresReader, StoreError> {
        let config = session_config(url, APPLICATION_NAME)?;
        let label = postgres_label(url);
        let (mut client, host) = connect_on(&config, &label, Access::ReadOnly)?;
        refuse_newer(&label, schema_version(&mut client)?)?;
        Ok(PostgresReader {
            config,
            label,
            client: RefCell::new(client),
            host: RefCell::new(host),
        })
    }

    /// A new session in place of the current one.
    fn reconnect(&self, client: &mut Client) -> Result<(), StoreError> {
        let (new, host) = connect_on(&self.config, &self.label, Access::ReadOnly)?;
        *client = new;
        *self.host.borrow_mut() = host;
        Ok(())
    }

    /// Runs `read` on the session. A session found broken (the server restarted since
    /// this reader last ran) is replaced once and `read` runs again: it only reads.
    fn with_client<T>(
        &self,
        read: impl Fn(&mut Client) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let _call = Call::start();
        let mut client = self.client.borrow_mut();
        // Its reads would still be answered by a server that is no longer the primary
        // (demoted, or cut off from the new one), with what may be old data: it follows
        // the other sessions there.
        let moved = self
            .host
            .borrow()
            .as_deref()
            .is_some_and(primary_moved_from);
        if moved {
            log::info!(target: LOG, "{}: the primary moved; a reader follows it", self.label);
            self.reconnect(&mut client)?;
        }
        match read(&mut client) {
            Err(error) if client.is_closed() || error.kind() == FailureKind::Unavailable => {
                log::debug!(target: LOG, "{}: a reader's session was lost ({error}); reconnecting", self.label);
                self.reconnect(&mut client)?;
                read(&mut client)
            }
            result => result,
        }
    }
}

impl ReadStore for PostgresReader {
    fn load_galaxy_with_ids(&self, name: &str) -> Result<Option<(Galaxy, RowIds)>, StoreError> {
        self.with_client(|client| load::load_galaxy_with_ids(client, name))
    }

    fn galaxy_names(&self) -> Result<Vec<String>, StoreError> {
        self.with_client(load::galaxy_names)
    }

    fn galaxy_exists(&self, name: &str) -> Result<bool, StoreError> {
        self.with_client(|client| load::galaxy_exists(client, name))
    }

    fn galaxy_sizes(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.with_client(load::galaxy_sizes)
    }

    fn history(
        &self,
        name: &str,
        since_tick: u64,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        self.with_client(|client| history::history(client, name, since_tick, limit))
    }

    fn read_archive(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.with_client(|client| archive::read_archive(client, name))
    }

    fn archives(&self) -> Result<Vec<ArchiveInfo>, StoreError> {
        self.with_client(archive::archives)
    }

    fn idle_galaxies(
        &self,
        idle: std::time::Duration,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.with_client(|client| archive::idle_galaxies(client, idle, limit))
    }

    fn storage(&self) -> Result<Storage, StoreError> {
        self.with_client(archive::measure)
    }

    fn galaxy_owners(&self) -> Result<Vec<(String, Option<Owner>)>, StoreError> {
        self.with_client(owners::galaxy_owners)
    }
}
