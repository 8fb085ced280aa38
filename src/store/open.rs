//! Opening a database: the one place that chooses a store from the database URL, once, at
//! start-up.

use std::sync::Arc;

use super::sqlite::StartupCheck;
use super::{postgres, sqlite, BusyDeadline, Opened, StoreError};
use crate::settings::{DatabaseUrl, PersistenceSettings};
use crate::systemd::Notifier;

/// Opens the database `url` names with the store that serves it: checks as much of it as
/// `check` says, migrates it, and starts the store's helpers. Its waits end at `deadline`
/// once that is set.
pub(crate) fn open(
    url: &DatabaseUrl,
    settings: &PersistenceSettings,
    check: StartupCheck,
    deadline: Arc<BusyDeadline>,
    notifier: &Notifier,
) -> Result<Opened, StoreError> {
    match url {
        DatabaseUrl::Postgres(url) => postgres::open(url, settings, deadline),
        DatabaseUrl::File(_) | DatabaseUrl::Memory => {
            sqlite::open(url, settings, check, deadline, notifier)
        }
    }
}
