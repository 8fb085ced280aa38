//! What a PostgreSQL primary says of its replication, as the engine reports it
//! (`/healthz`, `/metrics`): whether a commit it counts as saved is on a standby too.
//! Read now and then by the writer on its own session; a leaf of the store.

/// How the primary replicates its commits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicationMode {
    /// No standby streams from the primary, and none is required: a commit is on the
    /// primary's disk only.
    None,
    /// Standbys stream, none synchronously: a failover loses what they had not received
    /// (up to the replication lag).
    Async,
    /// `synchronous_standby_names` is set: a commit counts as saved only once a
    /// synchronous standby has it (with no such standby connected, commits wait, and the
    /// writer reports them as failing after its call timeout).
    Sync,
}

impl ReplicationMode {
    pub const ALL: [ReplicationMode; 3] = [
        ReplicationMode::None,
        ReplicationMode::Async,
        ReplicationMode::Sync,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReplicationMode::None => "none",
            ReplicationMode::Async => "async",
            ReplicationMode::Sync => "sync",
        }
    }
}

/// The primary's replication as last read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Replication {
    pub mode: ReplicationMode,
    /// Standbys streaming from the primary now (`pg_stat_replication`).
    pub standbys: u64,
    /// Of those, the ones the primary waits for (`sync` or `quorum`); `None` when the
    /// database role may not see it (it needs `pg_read_all_stats` or `pg_monitor`).
    pub synchronous_standbys: Option<u64>,
}

impl Replication {
    /// From what the primary says: its `synchronous_standby_names`, and its streaming
    /// standbys with their `sync_state` (`None` where the role may not see it).
    pub fn from_primary(synchronous_standby_names: &str, sync_states: &[Option<String>]) -> Self {
        let standbys = sync_states.len() as u64;
        let visible = sync_states.iter().all(Option::is_some);
        let synchronous = sync_states
            .iter()
            .flatten()
            .filter(|state| matches!(state.as_str(), "sync" | "quorum"))
            .count() as u64;
        let mode = if !synchronous_standby_names.trim().is_empty() {
            ReplicationMode::Sync
        } else if standbys > 0 {
            ReplicationMode::Async
        } else {
            ReplicationMode::None
        };
        Replication {
            mode,
            standbys,
            synchronous_standbys: visible.then_some(synchronous),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mode_follows_the_primarys_settings_and_standbys() {
        let none = Replication::from_primary("", &[]);
        assert_eq!(none.mode, ReplicationMode::None);
        assert_eq!(none.synchronous_standbys, Some(0));
        let async_ = Replication::from_primary(" ", &[Some("async".into())]);
        assert_eq!(async_.mode, ReplicationMode::Async);
        assert_eq!((async_.standbys, async_.synchronous_standbys), (1, Some(0)));
        let sync =
            Replication::from_primary("'*'", &[Some("sync".into()), Some("potential".into())]);
        assert_eq!(sync.mode, ReplicationMode::Sync);
        assert_eq!((sync.standbys, sync.synchronous_standbys), (2, Some(1)));
        // Required but none connected: commits wait; the count says why.
        let waiting = Replication::from_primary("s1", &[]);
        assert_eq!((waiting.mode, waiting.standbys), (ReplicationMode::Sync, 0));
        // A role without pg_read_all_stats sees the standbys, not their state.
        let hidden = Replication::from_primary("", &[None]);
        assert_eq!(hidden.mode, ReplicationMode::Async);
        assert_eq!(hidden.synchronous_standbys, None);
    }
}
