//! Reads on a cache miss: a small pool of read-only connections.
//!
//! [`ReaderPool`] lends read-only connections, opened on demand up to [`READERS`]. Loads
//! may hold at most `READERS - 1` of them at once, so the quick look-ups (`is_stored`,
//! `stored_names`, which creation and `GET /galaxies` need) always find one within the
//! time of another look-up, never behind a load of millions of rows. A connection is used
//! outside every lock: the pool's mutex guards only the list of idle connections.
//!
//! (Which thread reads a galaxy, once however many miss on it, and whether what it read
//! may go into memory, is `crate::galaxies`' decision.) The pool's lock is a leaf: never
//! held while taking another lock or running SQL.

use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::store::{OpenReader, ReadStore, StoreError};

/// Read-only connections for loads and look-ups. Four: loads are bound by decoding rows
/// (CPU), not by the database's locks, so more than the cores a small server has buys
/// nothing, while a single connection let one huge load stall every other load.
pub const READERS: usize = 4;

/// What a connection is borrowed for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// Reading a whole galaxy: may take long; at most `READERS - 1` at once.
    Load,
    /// A query on the `galaxies` table only: quick; may take any connection.
    Lookup,
}

pub(crate) struct ReaderPool {
    open: OpenReader,
    /// How long a caller waits for a connection to come back before giving up
    /// ([`StoreError::ReadersBusy`]); `None`: as long as it takes. A server database
    /// bounds it, so that while it does not answer, requests that need it give up rather
    /// than queue behind each other's call timeouts, holding the HTTP workers.
    wait: Option<Duration>,
    state: Mutex<PoolState>,
    returned: Condvar,
}

struct PoolState {
    idle: Vec<Box<dyn ReadStore>>,
    /// Connections in existence: idle or lent.
    opened: usize,
    /// Connections lent for loads.
    loading: usize,
}

impl ReaderPool {
    /// Opens the first connection now, so a database the reader cannot open fails the
    /// engine's start rather than the first load.
    pub(crate) fn open(open: OpenReader, wait: Option<Duration>) -> Result<ReaderPool, StoreError> {
        let first = open()?;
        Ok(ReaderPool {
            open,
            wait,
            state: Mutex::new(PoolState {
                idle: vec![first],
                opened: 1,
                loading: 0,
            }),
            returned: Condvar::new(),
        })
    }

    /// Runs `query` on a borrowed connection, first waiting for one to come back when all
    /// that `purpose` may use are lent. After an error the connection is closed rather
    /// than lent again (a new one is opened on demand), so a broken one cannot linger.
    pub(crate) fn with<T>(
        &self,
        purpose: Purpose,
        query: impl FnOnce(&dyn ReadStore) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let (store, mut lent) = self.lend(purpose)?;
        let result = query(store.as_ref());
        if result.is_ok() {
            lent.keep = Some(store);
        }
        result
    }

    fn lend(&self, purpose: Purpose) -> Result<(Box<dyn ReadStore>, Lent<'_>), StoreError> {
        let load = purpose == Purpose::Load;
        let deadline = self.wait.map(|wait| (wait, Instant::now() + wait));
        let mut state = self.state.lock();
        loop {
            if !load || state.loading < READERS - 1 {
                if let Some(store) = state.idle.pop() {
                    state.loading += usize::from(load);
                    return Ok((store, Lent::new(self, load)));
                }
                if state.opened < READERS {
                    state.opened += 1;
                    state.loading += usize::from(load);
                    drop(state);
                    // From here the counts are the guard's to restore, whatever happens.
                    let lent = Lent::new(self, load);
                    // Opening reads the schema: outside the pool's lock.
                    return Ok(((self.open)()?, lent));
                }
            }
            match deadline {
                Some((wait, until)) => {
                    if self.returned.wait_until(&mut state, until).timed_out() {
                        return Err(StoreError::ReadersBusy(wait));
                    }
                }
                None => self.returned.wait(&mut state),
            }
        }
    }
}

/// A lent connection's place in the pool. Dropping it (also by unwinding) returns the
/// connection kept in `keep`, or with `None` gives up its place so another can be opened.
struct Lent<'a> {
    pool: &'a ReaderPool,
    load: bool,
    keep: Option<Box<dyn ReadStore>>,
}

impl<'a> Lent<'a> {
    fn new(pool: &'a ReaderPool, load: bool) -> Lent<'a> {
        Lent {
            pool,
            load,
            keep: None,
        }
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        let mut state = self.pool.state.lock();
        state.loading -= usize::from(self.load);
        match self.keep.take() {
            Some(store) => state.idle.push(store),
            None => state.opened -= 1,
        }
        drop(state);
        // All: a waiting look-up may proceed where a waiting load may not.
        self.pool.returned.notify_all();
    }
}
