//! The raw-rusqlite floor of sections 1 and 2: what plain rusqlite does with no engine at
//! all. The same schema (the project's own migration), the same pragmas (and SQLite's
//! automatic checkpoint at the WAL size where the engine asks its checkpoint thread for
//! one), prepared statements, cached row ids, one transaction per batch.

use std::path::Path;
use std::time::Duration;

use galactic_war::model::{Galaxy, System};
use galactic_war::settings::CHECKPOINT_PAGES;
use galactic_war::testing::WRITER_PRAGMAS;
use rusqlite::{params, Connection};

use crate::harness::KINDS;

const SCHEMA: &str = include_str!("../../sql/sqlite/0001_initial.sql");

/// A database written by plain statements, its galaxy's system ids cached by index.
pub struct Floor {
    conn: Connection,
    galaxy: String,
    ids: Vec<i64>,
}

impl Floor {
    /// A fresh database holding `galaxy` exactly as the engine stores it.
    pub fn create(path: &Path, galaxy: &Galaxy) -> Floor {
        let mut conn = Connection::open(path).expect("opens");
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
        )
        .expect("pragmas");
        // The engine's writer's pragmas, exactly, and SQLite's automatic checkpoint at the
        // size at which the engine's writer asks its checkpoint thread for one.
        conn.execute_batch(WRITER_PRAGMAS).expect("cache");
        conn.execute_batch(&format!("PRAGMA wal_autocheckpoint = {CHECKPOINT_PAGES};"))
            .expect("checkpoint threshold");
        conn.busy_timeout(Duration::from_secs(5))
            .expect("busy timeout");
        conn.execute_batch(SCHEMA).expect("schema");
        let tx = conn.transaction().expect("tx");
        tx.execute(
            "INSERT INTO galaxies (name, config_file, tick) VALUES (?1, ?2, 0)",
            params![galaxy.name(), galaxy.config().to_toml()],
        )
        .expect("galaxy");
        let mut ids = Vec::with_capacity(galaxy.systems().len());
        for system in galaxy.systems() {
            tx.execute(
                "INSERT INTO systems (galaxy_name, x, y, metal, crew, water, current_tick) VALUES (?1, ?2, ?3, 0, 0, 0, 0)",
                params![galaxy.name(), system.x, system.y],
            )
            .expect("system");
            let id = tx.last_insert_rowid();
            for kind in KINDS {
                tx.execute(
                    "INSERT INTO structures (system_id, structure_type, level) VALUES (?1, ?2, 1)",
                    params![id, kind.as_str()],
                )
                .expect("structure");
            }
            ids.push(id);
        }
        tx.commit().expect("commit");
        Floor {
            conn,
            galaxy: galaxy.name().to_owned(),
            ids,
        }
    }

    /// Writes full systems in one transaction with the plain statements of a
    /// save-everything design: one system upsert, five structure upserts (by cached system
    /// id), delete and insert of its event.
    pub fn save_full(&mut self, systems: &[(usize, &System)]) {
        let tx = self.conn.transaction().expect("tx");
        {
            let mut update = tx
                .prepare_cached(
                    "INSERT INTO systems (galaxy_name, x, y, metal, crew, water, current_tick)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (galaxy_name, x, y) DO UPDATE SET metal = excluded.metal,
                     crew = excluded.crew, water = excluded.water,
                     current_tick = excluded.current_tick, updated_at = CURRENT_TIMESTAMP",
                )
                .expect("prepare");
            let mut upsert = tx
                .prepare_cached(
                    "INSERT INTO structures (system_id, structure_type, level) VALUES (?1, ?2, ?3)
                     ON CONFLICT (system_id, structure_type) DO UPDATE SET level = excluded.level, updated_at = CURRENT_TIMESTAMP",
                )
                .expect("prepare");
            let mut delete = tx
                .prepare_cached("DELETE FROM events WHERE system_id = ?1")
                .expect("prepare");
            let mut insert = tx
                .prepare_cached("INSERT INTO events (system_id, completion_tick, action_type, structure_type) VALUES (?1, ?2, 'build', ?3)")
                .expect("prepare");
            for (index, system) in systems {
                let id = self.ids[*index];
                let r = system.resources;
                update
                    .execute(params![
                        self.galaxy,
                        system.x,
                        system.y,
                        r.metal as i64,
                        r.crew as i64,
                        r.water as i64,
                        system.tick as i64
                    ])
                    .expect("upsert");
                for kind in KINDS {
                    upsert
                        .execute(params![id, kind.as_str(), system.levels[kind.index()]])
                        .expect("upsert");
                }
                delete.execute([id]).expect("delete");
                if let Some(build) = system.build {
                    insert
                        .execute(params![
                            id,
                            build.completion_tick as i64,
                            build.structure.as_str()
                        ])
                        .expect("insert");
                }
            }
        }
        tx.commit().expect("commit");
    }
}
