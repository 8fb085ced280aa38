//! The floor of section 10 on PostgreSQL, on the `postgres` crate: the project's
//! PostgreSQL migrations, set-based statements (arrays expanded by `unnest`, one statement
//! per table) prepared once, one transaction per batch, row ids cached; no engine.

use galactic_war::model::{Galaxy, System};

use crate::harness::KINDS;

/// The project's PostgreSQL migrations, which the floors run as the engine does.
const PG_MIGRATIONS: [&str; 2] = [
    include_str!("../../sql/postgres/0001_initial.sql"),
    include_str!("../../sql/postgres/0002_galaxy_jobs.sql"),
];

/// Structure rows as the engine writes them: an update by the unique key and an insert of
/// the rows it found no row for, in one statement (`src/store/postgres/write.rs`
/// says why). [`PgFloor::plain_structures`] measures what that costs beside a plain update.
const PG_UPSERT_STRUCTURES: &str = "WITH u AS (
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[])
             AS u(system_id, structure_type, level)
     ), updated AS (
         UPDATE structures s SET level = u.level, updated_at = now() FROM u
         WHERE s.system_id = u.system_id AND s.structure_type = u.structure_type
         RETURNING s.system_id, s.structure_type
     )
     INSERT INTO structures (system_id, structure_type, level, updated_at)
     SELECT u.system_id, u.structure_type, u.level, now() FROM u
     WHERE NOT EXISTS (SELECT 1 FROM updated d
         WHERE d.system_id = u.system_id AND d.structure_type = u.structure_type)";

/// The tables every batch updates, whose `fillfactor` the migration sets to 90.
const PG_UPDATED_TABLES: [&str; 3] = ["galaxies", "systems", "structures"];

/// The floor on PostgreSQL: the engine's schema, and set-based statements written here by
/// hand after the store's (arrays expanded by `unnest`, one statement per table, one
/// transaction per batch, prepared once, row ids cached), with no engine. Structure rows
/// by the engine's own statement; event rows by a plain update, or a delete and an insert.
pub struct PgFloor {
    client: postgres::Client,
    galaxy: String,
    ids: Vec<i64>,
    /// The stored event of each system, by the system's index.
    events: Vec<Option<i64>>,
    statements: PgStatements,
    /// Structure rows are written by [`PG_UPSERT_STRUCTURES`] (else by a plain update).
    upsert: bool,
}

struct PgStatements {
    tick: postgres::Statement,
    systems: postgres::Statement,
    structures: postgres::Statement,
    events_in_place: postgres::Statement,
    delete_events: postgres::Statement,
    insert_events: postgres::Statement,
}

/// Arrays of structure rows: system id, type, level.
type StructureArrays = (Vec<i64>, Vec<&'static str>, Vec<i64>);

fn structure_arrays(rows: &[(i64, &System)]) -> StructureArrays {
    let mut arrays: StructureArrays = Default::default();
    for &(id, system) in rows {
        for kind in KINDS {
            arrays.0.push(id);
            arrays.1.push(kind.as_str());
            arrays.2.push(i64::from(system.levels[kind.index()]));
        }
    }
    arrays
}

impl PgFloor {
    /// Database `url` (empty) given the engine's schema, the updated tables' fillfactor
    /// set to `fillfactor`, and `galaxy` stored as the engine stores it.
    pub fn create(url: &str, galaxy: &Galaxy, fillfactor: u32) -> PgFloor {
        let mut client = postgres::Client::connect(url, postgres::NoTls).expect("connects");
        for migration in PG_MIGRATIONS {
            client.batch_execute(migration).expect("migration");
        }
        for table in PG_UPDATED_TABLES {
            client
                .batch_execute(&format!(
                    "ALTER TABLE {table} SET (fillfactor = {fillfactor})"
                ))
                .expect("fillfactor");
        }
        // As the engine's writer commits (and the bench's server's default).
        client
            .batch_execute("SET synchronous_commit = on")
            .expect("synchronous commit");
        let systems = galaxy.systems();
        let mut tx = client.transaction().expect("tx");
        tx.execute(
            "INSERT INTO galaxies (name, config_file, tick) VALUES ($1, $2, $3)",
            &[
                &galaxy.name(),
                &galaxy.config().to_toml(),
                &(galaxy.tick() as i64),
            ],
        )
        .expect("galaxy");
        let column = |f: &dyn Fn(&System) -> u64| -> Vec<i64> {
            systems.iter().map(|s| f(s) as i64).collect()
        };
        let rows = tx
            .query(
                "INSERT INTO systems (galaxy_name, x, y, metal, crew, water, current_tick)
                 SELECT $1, u.x, u.y, u.metal, u.crew, u.water, u.tick FROM unnest(
                     $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[],
                     $7::bigint[]) AS u(x, y, metal, crew, water, tick)
                 RETURNING id, x, y",
                &[
                    &galaxy.name(),
                    &column(&|s| u64::from(s.x)),
                    &column(&|s| u64::from(s.y)),
                    &column(&|s| s.resources.metal),
                    &column(&|s| s.resources.crew),
                    &column(&|s| s.resources.water),
                    &column(&|s| s.tick),
                ],
            )
            .expect("systems");
        let by_coords: std::collections::HashMap<(i64, i64), i64> = rows
            .iter()
            .map(|row| ((row.get(1), row.get(2)), row.get(0)))
            .collect();
        let ids: Vec<i64> = systems
            .iter()
            .map(|s| by_coords[&(i64::from(s.x), i64::from(s.y))])
            .collect();
        let pairs: Vec<(i64, &System)> = ids.iter().copied().zip(systems).collect();
        let (structure_ids, types, levels) = structure_arrays(&pairs);
        tx.execute(
            "INSERT INTO structures (system_id, structure_type, level)
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[])",
            &[&structure_ids, &types, &levels],
        )
        .expect("structures");
        let statements = PgStatements::prepare(&mut tx);
        let mut floor_events = vec![None; systems.len()];
        let built: Vec<(i64, &System)> = pairs
            .iter()
            .copied()
            .filter(|(_, s)| s.build.is_some())
            .collect();
        for (id, system_id) in insert_events(&mut tx, &statements, &built) {
            let index = ids.iter().position(|&i| i == system_id);
            floor_events[index.expect("a system")] = Some(id);
        }
        tx.commit().expect("commit");
        PgFloor {
            client,
            galaxy: galaxy.name().to_owned(),
            ids,
            events: floor_events,
            statements,
            upsert: true,
        }
    }

    /// From now on, structure rows written by a plain update, which cannot write a row
    /// missing from the database (none is missing here).
    pub fn plain_structures(&mut self) {
        self.statements.structures = self
            .client
            .prepare(
                "UPDATE structures s SET level = u.level, updated_at = now()
                 FROM unnest($1::bigint[], $2::text[], $3::bigint[])
                     AS u(system_id, structure_type, level)
                 WHERE s.system_id = u.system_id AND s.structure_type = u.structure_type",
            )
            .expect("prepares");
        self.upsert = false;
    }

    /// Every row of `systems` written in place (the tick, the system, its five structures,
    /// its event, by cached ids): what a save with every row changed needs, when every
    /// system has a build in flight and so an event row.
    pub fn save_in_place(&mut self, tick: u64, systems: &[(usize, &System)]) {
        let rows: Vec<(i64, &System)> = systems.iter().map(|&(i, s)| (self.ids[i], s)).collect();
        let mut tx = self.client.transaction().expect("tx");
        let st = &self.statements;
        update_tick(&mut tx, st, &self.galaxy, tick);
        update_systems(&mut tx, st, &rows);
        update_structures(&mut tx, st, &rows, self.upsert);
        let (mut ids, mut ticks, mut types) = (Vec::new(), Vec::new(), Vec::new());
        for &(index, system) in systems {
            let build = system.build.expect("a build in flight");
            ids.push(self.events[index].expect("a stored event"));
            ticks.push(build.completion_tick as i64);
            types.push(build.structure.as_str());
        }
        let updated = tx
            .execute(&st.events_in_place, &[&ids, &ticks, &types])
            .expect("events");
        assert_eq!(updated, ids.len() as u64);
        tx.commit().expect("commit");
    }

    /// Whole systems written (the tick, the system, its five structures; its event
    /// deleted and inserted again if it has one), with no knowledge of what changed: the
    /// save-everything design, as section 2's SQLite floor.
    pub fn save_full(&mut self, tick: u64, systems: &[(usize, &System)]) {
        let rows: Vec<(i64, &System)> = systems.iter().map(|&(i, s)| (self.ids[i], s)).collect();
        let mut tx = self.client.transaction().expect("tx");
        let st = &self.statements;
        update_tick(&mut tx, st, &self.galaxy, tick);
        update_systems(&mut tx, st, &rows);
        update_structures(&mut tx, st, &rows, self.upsert);
        let ids: Vec<i64> = rows.iter().map(|&(id, _)| id).collect();
        tx.execute(&st.delete_events, &[&ids])
            .expect("delete events");
        let built: Vec<(i64, &System)> = rows
            .iter()
            .copied()
            .filter(|(_, s)| s.build.is_some())
            .collect();
        insert_events(&mut tx, st, &built);
        tx.commit().expect("commit");
    }
}

impl PgStatements {
    fn prepare(tx: &mut postgres::Transaction<'_>) -> PgStatements {
        let mut prepare = |sql: &str| tx.prepare(sql).expect("prepares");
        PgStatements {
            tick: prepare("UPDATE galaxies SET tick = $2, updated_at = now() WHERE name = $1"),
            systems: prepare(
                "UPDATE systems s SET metal = u.metal, crew = u.crew, water = u.water,
                     current_tick = u.current_tick, updated_at = now()
                 FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[],
                     $5::bigint[]) AS u(id, metal, crew, water, current_tick)
                 WHERE s.id = u.id",
            ),
            structures: prepare(PG_UPSERT_STRUCTURES),
            events_in_place: prepare(
                "UPDATE events e SET completion_tick = u.completion_tick,
                     structure_type = u.structure_type
                 FROM unnest($1::bigint[], $2::bigint[], $3::text[])
                     AS u(id, completion_tick, structure_type)
                 WHERE e.id = u.id",
            ),
            delete_events: prepare("DELETE FROM events WHERE system_id = ANY($1::bigint[])"),
            insert_events: prepare(
                "INSERT INTO events (system_id, completion_tick, action_type, structure_type)
                 SELECT u.system_id, u.completion_tick, 'build', u.structure_type
                 FROM unnest($1::bigint[], $2::bigint[], $3::text[])
                     AS u(system_id, completion_tick, structure_type)
                 RETURNING id, system_id",
            ),
        }
    }
}

fn update_tick(tx: &mut postgres::Transaction<'_>, st: &PgStatements, galaxy: &str, tick: u64) {
    tx.execute(&st.tick, &[&galaxy, &(tick as i64)])
        .expect("tick");
}

fn update_systems(tx: &mut postgres::Transaction<'_>, st: &PgStatements, rows: &[(i64, &System)]) {
    let column = |f: &dyn Fn(&System) -> u64| -> Vec<i64> {
        rows.iter().map(|&(_, s)| f(s) as i64).collect()
    };
    let ids: Vec<i64> = rows.iter().map(|&(id, _)| id).collect();
    let updated = tx
        .execute(
            &st.systems,
            &[
                &ids,
                &column(&|s| s.resources.metal),
                &column(&|s| s.resources.crew),
                &column(&|s| s.resources.water),
                &column(&|s| s.tick),
            ],
        )
        .expect("systems");
    assert_eq!(updated, ids.len() as u64);
}

fn update_structures(
    tx: &mut postgres::Transaction<'_>,
    st: &PgStatements,
    rows: &[(i64, &System)],
    upsert: bool,
) {
    let (ids, types, levels) = structure_arrays(rows);
    let written = tx
        .execute(&st.structures, &[&ids, &types, &levels])
        .expect("structures");
    // An upsert counts the rows it inserted: none, every row being stored.
    assert_eq!(written, if upsert { 0 } else { ids.len() as u64 });
}

/// Inserts the events of `built` (systems with a build in flight); their `(id, system id)`.
fn insert_events(
    tx: &mut postgres::Transaction<'_>,
    st: &PgStatements,
    built: &[(i64, &System)],
) -> Vec<(i64, i64)> {
    let (mut ids, mut ticks, mut types) = (Vec::new(), Vec::new(), Vec::new());
    for &(id, system) in built {
        let build = system.build.expect("a build");
        ids.push(id);
        ticks.push(build.completion_tick as i64);
        types.push(build.structure.as_str());
    }
    tx.query(&st.insert_events, &[&ids, &ticks, &types])
        .expect("events")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}
