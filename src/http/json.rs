//! The JSON bodies of the API (README, *The HTTP API*): what goes on the wire, built from the model's and the
//! application's plain values, which know nothing of JSON.
//!
//! Every shape here borrows what it shows and serialises it in place: a sequence or a map
//! is written item by item (`collect_seq`, `collect_map`), never collected into a new
//! vector, so that answering the hot requests (a system, an order) allocates nothing
//! beyond the body itself (see the allocation rule in [`super::server`]).
//!
//! Field order is the wire's: the fields are written in the order they are declared, and
//! clients and tests read the bytes. `BuildJson` and `ErrorJson` are in alphabetical order
//! because they were first written with `serde_json::json!`, which sorts its keys.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

use serde::{Serialize, Serializer};

use crate::app::{CreatedGalaxy, GalaxyDetails, GalaxyListing, GalaxyPage, Health, HistoryPage};
use crate::model::{
    Build, Cost, EventDetails, HistoryEntry, Resources, StructureDetails, SystemDetails,
    SystemSummary,
};

/// `{"error": "..."}`, every refusal's body.
#[derive(Serialize)]
pub struct ErrorJson<'a> {
    pub error: &'a str,
}

/// `{"error": "...", "owner": "URL"}`: a galaxy served by another daemon, at `owner`.
#[derive(Serialize)]
pub struct ElsewhereJson<'a> {
    pub error: &'a str,
    pub owner: &'a str,
}

/// `{"applied": true, "durable": false, "error": "..."}`: a durable order applied in memory
/// whose commit failed (503): it is saved later, and must not be sent again.
#[derive(Serialize)]
pub struct NotDurableJson<'a> {
    pub applied: bool,
    pub durable: bool,
    pub error: &'a str,
}

/// `{"error": "...", "archived": true}`: a galaxy archived, restored only by an admin.
#[derive(Serialize)]
pub struct ArchivedErrorJson<'a> {
    pub error: &'a str,
    pub archived: bool,
}

/// `POST /admin/galaxies/{name}/archive`'s answer.
#[derive(Serialize)]
pub struct ArchivedJson<'a> {
    pub name: &'a str,
    pub archived: bool,
    pub systems: u64,
    pub bytes: u64,
}

/// `POST /admin/galaxies/{name}/restore`'s answer.
#[derive(Serialize)]
pub struct RestoredJson<'a> {
    pub name: &'a str,
    pub restored: bool,
    pub systems: usize,
    pub tick: u64,
}

/// One entry of a galaxy's history: `{"tick","x","y","action","structure","level"}`.
#[derive(Serialize)]
struct HistoryEntryJson {
    tick: u64,
    x: u32,
    y: u32,
    action: &'static str,
    structure: &'static str,
    level: u32,
}

impl From<&HistoryEntry> for HistoryEntryJson {
    fn from(e: &HistoryEntry) -> Self {
        HistoryEntryJson {
            tick: e.tick,
            x: e.x,
            y: e.y,
            action: e.kind.name(),
            structure: e.structure.as_str(),
            level: e.level,
        }
    }
}

/// `GET /admin/galaxies/{name}/history`'s answer.
#[derive(Serialize)]
pub struct HistoryJson<'a> {
    name: &'a str,
    since_tick: u64,
    limit: usize,
    entries: Each<'a, HistoryEntry, HistoryEntryJson>,
}

impl<'a> From<&'a HistoryPage> for HistoryJson<'a> {
    fn from(page: &'a HistoryPage) -> Self {
        HistoryJson {
            name: &page.name,
            since_tick: page.since_tick,
            limit: page.limit,
            entries: Each(&page.entries, HistoryEntryJson::from),
        }
    }
}

/// Items of a slice, each shown as `J`, written one by one.
struct Each<'a, T, J>(&'a [T], fn(&'a T) -> J);

impl<'a, T, J: Serialize> Serialize for Each<'a, T, J> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(self.1))
    }
}

/// `{"metal","crew","water"}`.
#[derive(Serialize)]
struct ResourcesJson {
    metal: u64,
    crew: u64,
    water: u64,
}

impl From<Resources> for ResourcesJson {
    fn from(r: Resources) -> Self {
        ResourcesJson {
            metal: r.metal,
            crew: r.crew,
            water: r.water,
        }
    }
}

/// A level's cost in the colony's build menu: `{"metal","crew","water","ticks"}`.
#[derive(Serialize)]
struct CostJson {
    metal: u64,
    crew: u64,
    water: u64,
    ticks: u64,
}

impl From<&Cost> for CostJson {
    fn from(c: &Cost) -> Self {
        CostJson {
            metal: c.metal,
            crew: c.crew,
            water: c.water,
            ticks: c.ticks,
        }
    }
}

/// A build in flight among a system's events: `{"completion_tick","action","structure"}`.
#[derive(Serialize)]
struct EventJson {
    completion_tick: u64,
    action: &'static str,
    structure: &'static str,
}

impl From<&EventDetails> for EventJson {
    fn from(e: &EventDetails) -> Self {
        EventJson {
            completion_tick: e.completion_tick,
            action: e.action,
            structure: e.structure.as_str(),
        }
    }
}

/// `POST .../build/{structure}`'s answer: `{"action","completion_tick","structure"}`.
#[derive(Serialize)]
pub struct BuildJson {
    action: &'static str,
    completion_tick: u64,
    structure: &'static str,
}

impl From<Build> for BuildJson {
    fn from(b: Build) -> Self {
        BuildJson {
            action: "build",
            completion_tick: b.completion_tick,
            structure: b.structure.as_str(),
        }
    }
}

/// `GET /galaxies/{name}/systems/{x}/{y}`'s answer.
#[derive(Serialize)]
pub struct SystemJson<'a> {
    x: u32,
    y: u32,
    score: u64,
    resources: ResourcesJson,
    production: ResourcesJson,
    structures: &'a BTreeMap<&'static str, u32>,
    events: Each<'a, EventDetails, EventJson>,
}

impl<'a> From<&'a SystemDetails> for SystemJson<'a> {
    fn from(d: &'a SystemDetails) -> Self {
        SystemJson {
            x: d.x,
            y: d.y,
            score: d.score,
            resources: d.resources.into(),
            production: d.production.into(),
            structures: &d.structures,
            events: Each(&d.events, EventJson::from),
        }
    }
}

/// The colony's build menu: structure name to the cost of its next level.
struct BuildsJson<'a>(&'a BTreeMap<&'static str, Cost>);

impl Serialize for BuildsJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(
            self.0
                .iter()
                .map(|(name, cost)| (name, CostJson::from(cost))),
        )
    }
}

/// `GET /galaxies/{name}/systems/{x}/{y}/{structure}`'s answer; `builds` only for the
/// colony.
#[derive(Serialize)]
pub struct StructureJson<'a> {
    structure: &'static str,
    level: u32,
    production: ResourcesJson,
    #[serde(skip_serializing_if = "Option::is_none")]
    builds: Option<BuildsJson<'a>>,
}

impl<'a> From<&'a StructureDetails> for StructureJson<'a> {
    fn from(d: &'a StructureDetails) -> Self {
        StructureJson {
            structure: d.structure.as_str(),
            level: d.level,
            production: d.production.into(),
            builds: d.builds.as_ref().map(BuildsJson),
        }
    }
}

/// One system of a galaxy's page: `{"x","y","score"}`.
#[derive(Serialize)]
struct SummaryJson {
    x: u32,
    y: u32,
    score: u64,
}

impl From<&SystemSummary> for SummaryJson {
    fn from(s: &SystemSummary) -> Self {
        SummaryJson {
            x: s.x,
            y: s.y,
            score: s.score,
        }
    }
}

/// `GET /galaxies/{name}`'s answer: one page of the galaxy's systems.
#[derive(Serialize)]
pub struct GalaxyJson<'a> {
    name: &'a str,
    tick: u64,
    system_count: usize,
    systems: Each<'a, SystemSummary, SummaryJson>,
    offset: usize,
    limit: usize,
}

impl<'a> From<&'a GalaxyDetails> for GalaxyJson<'a> {
    fn from(d: &'a GalaxyDetails) -> Self {
        GalaxyJson {
            name: &d.name,
            tick: d.tick,
            system_count: d.system_count,
            systems: Each(&d.systems, SummaryJson::from),
            offset: d.offset,
            limit: d.limit,
        }
    }
}

/// One entry of `GET /galaxies`: `{"name","loaded","owner"}` (`owner` is `null` unless
/// several daemons share the database), and `"archived": true` for an archived galaxy.
#[derive(Serialize)]
struct ListingJson<'a> {
    name: &'a str,
    loaded: bool,
    owner: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    archived: bool,
}

impl<'a> From<&'a GalaxyListing> for ListingJson<'a> {
    fn from(l: &'a GalaxyListing) -> Self {
        ListingJson {
            name: &l.name,
            loaded: l.loaded,
            owner: l.owner.as_deref(),
            archived: l.archived,
        }
    }
}

/// `GET /galaxies`'s answer: one page of the galaxies.
#[derive(Serialize)]
pub struct GalaxiesJson<'a> {
    galaxies: Each<'a, GalaxyListing, ListingJson<'a>>,
    total: usize,
    offset: usize,
    limit: usize,
}

impl<'a> From<&'a GalaxyPage> for GalaxiesJson<'a> {
    fn from(p: &'a GalaxyPage) -> Self {
        GalaxiesJson {
            galaxies: Each(&p.galaxies, ListingJson::from),
            total: p.total,
            offset: p.offset,
            limit: p.limit,
        }
    }
}

/// `POST /galaxies/{name}`'s answer: `{"name","tick","systems"}`.
#[derive(Serialize)]
pub struct CreatedJson<'a> {
    name: &'a str,
    tick: u64,
    systems: usize,
}

impl<'a> From<&'a CreatedGalaxy> for CreatedJson<'a> {
    fn from(c: &'a CreatedGalaxy) -> Self {
        CreatedJson {
            name: &c.name,
            tick: c.tick,
            systems: c.systems,
        }
    }
}

/// `GET /healthz`'s persistence part.
#[derive(Serialize)]
struct PersistenceJson<'a> {
    state: &'static str,
    dirty_systems: u64,
    last_error: Option<&'a str>,
    /// PostgreSQL only, once the writer has looked.
    #[serde(skip_serializing_if = "Option::is_none")]
    replication: Option<ReplicationJson>,
}

/// The primary's replication, in `GET /healthz`.
#[derive(Serialize)]
struct ReplicationJson {
    mode: &'static str,
    standbys: u64,
    /// `null` when the database role may not see the standbys' state.
    synchronous_standbys: Option<u64>,
}

/// `GET /healthz`'s answer.
#[derive(Serialize)]
pub struct HealthJson<'a> {
    status: &'static str,
    persistence: PersistenceJson<'a>,
    /// `open`, or `closed: disk` / `closed: systems` for creations without the admin token.
    creation: &'static str,
}

impl<'a> From<&'a Health> for HealthJson<'a> {
    fn from(h: &'a Health) -> Self {
        HealthJson {
            status: h.status,
            persistence: PersistenceJson {
                state: h.persistence.state.as_str(),
                dirty_systems: h.persistence.dirty_systems,
                last_error: h.persistence.last_error.as_deref(),
                replication: h.persistence.replication.map(|r| ReplicationJson {
                    mode: r.mode.as_str(),
                    standbys: r.standbys,
                    synchronous_standbys: r.synchronous_standbys,
                }),
            },
            creation: h.creation,
        }
    }
}

/// `POST /admin/save`'s answer.
#[derive(Serialize)]
pub struct SavedJson {
    pub saved_systems: u64,
}

/// `POST /admin/backup`'s answer: the file written.
#[derive(Serialize)]
pub struct BackupJson<'a> {
    path: Cow<'a, str>,
}

impl<'a> From<&'a Path> for BackupJson<'a> {
    fn from(path: &'a Path) -> Self {
        BackupJson {
            path: path.to_string_lossy(),
        }
    }
}

#[cfg(test)]
mod tests {
    //! One test per shape, each against the bytes the API has always sent.

    use super::*;
    use crate::app::PersistenceHealth;
    use crate::model::StructureKind;
    use crate::persistence::metrics::PersistenceState;

    fn json(value: &impl Serialize) -> String {
        serde_json::to_string(value).unwrap()
    }

    const R: Resources = Resources {
        metal: 1,
        crew: 2,
        water: 3,
    };

    #[test]
    fn a_system() {
        let details = SystemDetails {
            x: 4,
            y: 5,
            score: 6,
            resources: R,
            production: Resources::ZERO,
            structures: BTreeMap::from([("colony", 1), ("asteroidmine", 0)]),
            events: vec![EventDetails::from(Build {
                completion_tick: 9,
                structure: StructureKind::Hatchery,
            })],
        };
        assert_eq!(
            json(&SystemJson::from(&details)),
            r#"{"x":4,"y":5,"score":6,"resources":{"metal":1,"crew":2,"water":3},"production":{"metal":0,"crew":0,"water":0},"structures":{"asteroidmine":0,"colony":1},"events":[{"completion_tick":9,"action":"build","structure":"hatchery"}]}"#
        );
        let quiet = SystemDetails {
            events: Vec::new(),
            ..details
        };
        assert!(json(&SystemJson::from(&quiet)).ends_with(r#""events":[]}"#));
    }

    #[test]
    fn a_structure_with_and_without_the_build_menu() {
        let cost = Cost {
            metal: 1,
            crew: 2,
            water: 3,
            ticks: 4,
        };
        let colony = StructureDetails {
            structure: StructureKind::Colony,
            level: 2,
            production: R,
            builds: Some(BTreeMap::from([("hatchery", cost), ("colony", cost)])),
        };
        assert_eq!(
            json(&StructureJson::from(&colony)),
            r#"{"structure":"colony","level":2,"production":{"metal":1,"crew":2,"water":3},"builds":{"colony":{"metal":1,"crew":2,"water":3,"ticks":4},"hatchery":{"metal":1,"crew":2,"water":3,"ticks":4}}}"#
        );
        let mine = StructureDetails {
            structure: StructureKind::AsteroidMine,
            builds: None,
            ..colony
        };
        assert_eq!(
            json(&StructureJson::from(&mine)),
            r#"{"structure":"asteroidmine","level":2,"production":{"metal":1,"crew":2,"water":3}}"#
        );
    }

    #[test]
    fn an_order() {
        let build = Build {
            completion_tick: 1_700_000_000,
            structure: StructureKind::StorageDepot,
        };
        assert_eq!(
            json(&BuildJson::from(build)),
            r#"{"action":"build","completion_tick":1700000000,"structure":"storagedepot"}"#
        );
    }

    #[test]
    fn a_galaxy_page_and_the_galaxies() {
        let page = GalaxyDetails {
            name: "g".into(),
            tick: 7,
            system_count: 2,
            systems: vec![
                SystemSummary {
                    x: 0,
                    y: 1,
                    score: 1,
                },
                SystemSummary {
                    x: 2,
                    y: 3,
                    score: 4,
                },
            ],
            offset: 0,
            limit: 1000,
        };
        assert_eq!(
            json(&GalaxyJson::from(&page)),
            r#"{"name":"g","tick":7,"system_count":2,"systems":[{"x":0,"y":1,"score":1},{"x":2,"y":3,"score":4}],"offset":0,"limit":1000}"#
        );
        let galaxies = GalaxyPage {
            galaxies: vec![
                GalaxyListing {
                    name: "a".into(),
                    loaded: true,
                    archived: false,
                    owner: Some("http://10.0.0.5:3050".into()),
                },
                GalaxyListing {
                    name: "b\"".into(),
                    loaded: false,
                    archived: true,
                    owner: None,
                },
            ],
            total: 3,
            offset: 1,
            limit: 2,
        };
        assert_eq!(
            json(&GalaxiesJson::from(&galaxies)),
            r#"{"galaxies":[{"name":"a","loaded":true,"owner":"http://10.0.0.5:3050"},{"name":"b\"","loaded":false,"owner":null,"archived":true}],"total":3,"offset":1,"limit":2}"#
        );
    }

    #[test]
    fn a_creation() {
        let created = CreatedGalaxy {
            name: "g".into(),
            tick: 5,
            systems: 200,
        };
        assert_eq!(
            json(&CreatedJson::from(&created)),
            r#"{"name":"g","tick":5,"systems":200}"#
        );
    }

    #[test]
    fn health_in_every_state() {
        let health = |status, state, last_error: Option<&str>| Health {
            status,
            persistence: PersistenceHealth {
                state,
                dirty_systems: 3,
                last_error: last_error.map(str::to_owned),
                replication: None,
            },
            creation: "open",
        };
        assert_eq!(
            json(&HealthJson::from(&health(
                "ok",
                PersistenceState::Healthy,
                None
            ))),
            r#"{"status":"ok","persistence":{"state":"healthy","dirty_systems":3,"last_error":null},"creation":"open"}"#
        );
        assert_eq!(
            json(&HealthJson::from(&health(
                "degraded",
                PersistenceState::MemoryOnly,
                Some("disk \"gone\"")
            ))),
            r#"{"status":"degraded","persistence":{"state":"memory-only","dirty_systems":3,"last_error":"disk \"gone\""},"creation":"open"}"#
        );
        let mut on_postgres = health("ok", PersistenceState::Healthy, None);
        on_postgres.persistence.replication = Some(crate::store::Replication::from_primary(
            "*",
            &[Some("sync".to_owned())],
        ));
        let body = json(&HealthJson::from(&on_postgres));
        assert!(
            body.contains(r#""replication":{"mode":"sync","standbys":1,"synchronous_standbys":1}"#),
            "{body}"
        );
        for (state, wire) in [
            (PersistenceState::Retrying, "retrying"),
            (PersistenceState::Disabled, "disabled"),
            (PersistenceState::Lagging, "lagging"),
        ] {
            let body = json(&HealthJson::from(&health("ok", state, None)));
            assert!(body.contains(&format!(r#""state":"{wire}""#)), "{body}");
        }
    }

    #[test]
    fn admin_answers_and_errors() {
        assert_eq!(
            json(&SavedJson { saved_systems: 12 }),
            r#"{"saved_systems":12}"#
        );
        assert_eq!(
            json(&BackupJson::from(Path::new("/b/galactic_war-x.db"))),
            r#"{"path":"/b/galactic_war-x.db"}"#
        );
        assert_eq!(
            json(&ErrorJson {
                error: "galaxy 'g' not found\n"
            }),
            r#"{"error":"galaxy 'g' not found\n"}"#
        );
        assert_eq!(
            json(&ElsewhereJson {
                error: "galaxy 'g' is served by another daemon",
                owner: "http://10.0.0.5:3050",
            }),
            r#"{"error":"galaxy 'g' is served by another daemon","owner":"http://10.0.0.5:3050"}"#
        );
    }
}
