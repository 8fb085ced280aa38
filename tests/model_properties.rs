//! Property tests of the game model: reads are invisible, accrual splits cleanly, configs
//! survive a TOML round trip, a played galaxy survives an archive round trip (and a damaged
//! archive is refused or decodes to the same galaxy, never a panic).

use std::collections::BTreeMap;

use galactic_war::archive;
use galactic_war::model::{
    produced_between, Amounts, CostConfig, Galaxy, GalaxyConfig, MapSize, StructureConfig,
    StructureKind, SystemsConfig,
};
use galactic_war::testing::GalaxyInternals;
use proptest::prelude::*;

fn amounts(max: u64) -> impl Strategy<Value = Amounts> {
    (0..=max, 0..=max, 0..=max, prop::option::of(0.5f64..3.0)).prop_map(
        |(crew, metal, water, multiplier)| Amounts {
            multiplier,
            crew,
            metal,
            water,
        },
    )
}

fn structure() -> impl Strategy<Value = StructureConfig> {
    (
        0u32..4,
        prop::option::of(0.5f64..3.0),
        prop::option::of(amounts(20_000)),
        prop::option::of(amounts(3_000)),
        prop::option::of((amounts(300), 0u64..400)),
        prop::option::of("[a-z ]{0,20}"),
    )
        .prop_map(
            |(starting_level, multiplier, production, storage, cost, description)| {
                StructureConfig {
                    description,
                    starting_level,
                    multiplier,
                    production,
                    storage,
                    cost: cost.map(|(a, time)| CostConfig {
                        multiplier: a.multiplier,
                        crew: a.crew,
                        metal: a.metal,
                        water: a.water,
                        time,
                    }),
                }
            },
        )
}

fn config() -> impl Strategy<Value = GalaxyConfig> {
    (0u64..6, 0u64..6)
        .prop_flat_map(|(x, y)| {
            let cells = (x + 1) * (y + 1);
            (
                Just(MapSize { x, y }),
                1..=cells.min(12),
                amounts(2_000),
                prop::collection::btree_map(
                    prop::sample::select(StructureKind::ALL.to_vec()),
                    structure(),
                    0..=5,
                ),
            )
        })
        .prop_map(|(size, system_count, start, structures)| GalaxyConfig {
            system_count,
            size,
            systems: SystemsConfig {
                resources: Amounts {
                    multiplier: None,
                    ..start
                },
                structures: structures
                    .into_iter()
                    .map(|(kind, s)| (kind.as_str().to_owned(), s))
                    .collect::<BTreeMap<_, _>>(),
            },
        })
}

/// A step of play: wait `wait` ticks, peek at some systems along the way (only in the
/// galaxy that reads), then order a build in the system picked by `pick`.
#[derive(Clone, Debug)]
struct Step {
    wait: u64,
    peeks: Vec<(u64, usize)>,
    pick: usize,
    structure: StructureKind,
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        (
            0u64..3_000,
            prop::collection::vec((0u64..3_000, any::<usize>()), 0..4),
            any::<usize>(),
            prop::sample::select(StructureKind::ALL.to_vec()),
        )
            .prop_map(|(wait, peeks, pick, structure)| Step {
                wait,
                peeks,
                pick,
                structure,
            }),
        0..40,
    )
}

/// Everything a player can observe of a galaxy at `tick`.
fn observe(galaxy: &mut Galaxy, tick: u64) -> String {
    let mut seen = format!("{:?}\n", galaxy.summaries(tick));
    let coords: Vec<_> = galaxy.systems().iter().map(|s| (s.x, s.y)).collect();
    for (x, y) in coords {
        let (x, y) = (u64::from(x), u64::from(y));
        seen += &format!("{:?}\n", galaxy.system_details(tick, x, y));
        for kind in StructureKind::ALL {
            seen += &format!("{:?}\n", galaxy.structure_details(tick, x, y, kind));
        }
    }
    seen
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Querying at any set of intermediate ticks yields exactly the state one query at the
    /// final tick yields, and the same orders succeed or fail the same way.
    #[test]
    fn reads_are_invisible(config in config(), seed in any::<u64>(), steps in steps(), tail in 0u64..10_000) {
        let mut reader = Galaxy::create("g", config.clone(), seed, 0).unwrap();
        let mut quiet = Galaxy::create("g", config, seed, 0).unwrap();
        let mut tick = 0;
        for step in &steps {
            let mut peeks = step.peeks.clone();
            peeks.sort();
            for (offset, pick) in peeks {
                let at = tick + offset.min(step.wait);
                let system = &reader.systems()[pick % reader.systems().len()];
                let (x, y) = (u64::from(system.x), u64::from(system.y));
                reader.system_details(at, x, y).unwrap();
                reader.structure_details(at, x, y, StructureKind::ALL[pick % 5]).ok();
                reader.summaries(at).unwrap();
            }
            tick += step.wait;
            let system = &quiet.systems()[step.pick % quiet.systems().len()];
            let (x, y) = (u64::from(system.x), u64::from(system.y));
            let a = reader.build(tick, x, y, step.structure);
            let b = quiet.build(tick, x, y, step.structure);
            prop_assert_eq!(a, b);
        }
        prop_assert_eq!(reader.systems(), quiet.systems());
        prop_assert_eq!(reader.unsaved_changes(), quiet.unsaved_changes());
        let end = tick + tail;
        prop_assert_eq!(observe(&mut reader, end), observe(&mut quiet, end));
    }

    /// Accrual over [a, c] equals accrual over [a, b] then [b, c] when no event falls between.
    #[test]
    fn accrual_splits(config in config(), seed in any::<u64>(), a in 0u64..1_000_000, ab in 0u64..500_000, bc in 0u64..500_000) {
        let galaxy = Galaxy::create("g", config, seed, a).unwrap();
        let (b, c) = (a + ab, a + ab + bc);
        for system in galaxy.systems() {
            let (at_b, _) = system.projected(galaxy.rules(), b);
            let (via_b, _) = at_b.projected(galaxy.rules(), c);
            let (direct, _) = system.projected(galaxy.rules(), c);
            prop_assert_eq!(via_b, direct);
        }
    }

    #[test]
    fn produced_between_is_additive(per_hour in any::<u64>(), a in any::<u64>(), ab in any::<u64>(), bc in any::<u64>()) {
        let a = a / 4;
        let b = a + ab / 4;
        let c = b + bc / 4;
        let split = u128::from(produced_between(per_hour.min(i64::MAX as u64), a, b))
            + u128::from(produced_between(per_hour.min(i64::MAX as u64), b, c));
        let whole = u128::from(produced_between(per_hour.min(i64::MAX as u64), a, c));
        // Exact unless the whole interval saturated at the representable maximum.
        if whole < i64::MAX as u128 {
            prop_assert_eq!(split, whole);
        }
    }

    /// A config serialised to TOML and parsed back creates the same galaxy from the same seed.
    #[test]
    fn config_round_trips_through_toml(config in config(), seed in any::<u64>()) {
        let text = config.to_toml();
        let (parsed, _) = GalaxyConfig::from_toml(&text).unwrap();
        prop_assert_eq!(&parsed, &config);
        let original = Galaxy::create("g", config, seed, 0).unwrap();
        let again = Galaxy::create("g", parsed, seed, 0).unwrap();
        prop_assert_eq!(original, again);
    }
}

/// A galaxy of `config` from `seed` after `steps` (refused orders included), with its
/// changes taken: what an archive holds.
fn played(name: &str, config: GalaxyConfig, seed: u64, steps: &[Step]) -> Galaxy {
    let mut galaxy = Galaxy::create(name, config, seed, 0).unwrap();
    let mut tick = 0;
    for step in steps {
        tick += step.wait;
        let system = galaxy.systems()[step.pick % galaxy.systems().len()];
        let _ = galaxy.build(tick, system.x.into(), system.y.into(), step.structure);
    }
    galaxy.take_unsaved_changes();
    galaxy
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// An archived galaxy decodes to an equal galaxy: name, config, tick, every system's
    /// coordinates, resources, tick, levels and build in flight.
    #[test]
    fn archives_round_trip(name in "\\PC{1,40}", config in config(), seed in any::<u64>(), steps in steps()) {
        let galaxy = played(&name, config, seed, &steps);
        prop_assert_eq!(&archive::decode(&archive::encode(&galaxy)).unwrap(), &galaxy);
        prop_assert_eq!(&archive::from_file(&archive::to_file(&galaxy)).unwrap(), &galaxy);
    }

    /// Damaged archives (bytes changed, then perhaps cut short) are refused with an error
    /// or decode to the same galaxy; never a panic.
    #[test]
    fn damaged_archives_are_refused(config in config(), seed in any::<u64>(), steps in steps(), damage in prop::collection::vec((any::<usize>(), 1u8..=255), 1..4), cut in any::<usize>(), shorten in any::<bool>()) {
        let galaxy = played("g", config, seed, &steps);
        let mut file = archive::to_file(&galaxy);
        for (at, flip) in damage {
            let len = file.len();
            file[at % len] ^= flip;
        }
        if shorten {
            file.truncate(cut % file.len());
        }
        if let Ok(decoded) = archive::from_file(&file) {
            prop_assert_eq!(decoded, galaxy);
        }
    }
}

/// A line of TOML-ish text: headers and keys of the config's vocabulary (and a few
/// strangers), values of every kind including hostile numbers.
fn toml_line() -> impl Strategy<Value = String> {
    let header = prop::sample::select(vec![
        "[size]",
        "[systems]",
        "[systems.resources]",
        "[systems.structures.colony]",
        "[systems.structures.colony.cost]",
        "[systems.structures.colony.production]",
        "[systems.structures.colony.storage]",
        "[systems.structures.hatchery]",
        "[systems.structures.castle]",
        "[[systems]]",
        "[size.x]",
    ])
    .prop_map(str::to_owned);
    let key = prop::sample::select(vec![
        "system_count",
        "x",
        "y",
        "metal",
        "crew",
        "water",
        "time",
        "multiplier",
        "starting_level",
        "description",
        "bogus",
    ]);
    let value = prop::sample::select(vec![
        "0",
        "1",
        "-1",
        "7",
        "4294967295",
        "4294967296",
        "9223372036854775807",
        "-9223372036854775808",
        "1.5",
        "0.0",
        "-0.0",
        "1e308",
        "inf",
        "-inf",
        "nan",
        "true",
        "\"text\"",
        "[1, 2]",
        "{ a = 1 }",
        "",
    ]);
    prop_oneof![
        header,
        (key, value).prop_map(|(k, v)| format!("{k} = {v}")),
        "\\PC{0,30}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("GWAR_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000)
    ))]

    /// The config parser and validator never panic, whatever the text; and a config they
    /// accept creates its galaxy.
    #[test]
    fn config_parsing_never_panics(
        valid_start in any::<bool>(),
        lines in prop::collection::vec(toml_line(), 0..30),
    ) {
        // Half the cases start from a valid config, so the validator sees more than
        // parse errors.
        let start = if valid_start { "system_count = 3\n[size]\nx = 2\ny = 2\n" } else { "" };
        let text = format!("{start}{}", lines.join("\n"));
        if let Ok((config, _)) = GalaxyConfig::from_toml(&text) {
            if config.system_count <= 2_000 {
                let galaxy = Galaxy::create("fuzz", config.clone(), 1, 0);
                prop_assert!(galaxy.is_ok());
                let galaxy = galaxy.unwrap();
                prop_assert_eq!(galaxy.systems().len() as u64, config.system_count);
            }
        }
    }

    #[test]
    fn config_parsing_never_panics_on_any_text(text in "\\PC{0,300}") {
        let _ = GalaxyConfig::from_toml(&text);
    }
}
