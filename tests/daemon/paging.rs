//! `GET /galaxies/{name}` and `GET /galaxies` answer a page at a time
//! (`?offset=N&limit=N`), say the total, and refuse a bad page with a 400 JSON error.

use serde_json::Value;

use crate::util::Daemon;

fn coordinates(page: &Value) -> Vec<(u64, u64)> {
    page["systems"]
        .as_array()
        .expect("a page of systems")
        .iter()
        .map(|s| (s["x"].as_u64().unwrap(), s["y"].as_u64().unwrap()))
        .collect()
}

fn names(page: &Value) -> Vec<String> {
    page["galaxies"]
        .as_array()
        .expect("a page of galaxies")
        .iter()
        .map(|g| g["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn pages_cover_every_system_and_galaxy_once() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    let config = "system_count = 2500\n[size]\nx = 99\ny = 99\n[systems.structures.colony.cost]\nmetal = 5\n";
    let created = daemon.request("POST", "/galaxies/wide", config);
    assert_eq!(created.status, 201, "{}", created.body);
    for name in ["b", "a"] {
        assert_eq!(daemon.post(&format!("/galaxies/{name}?seed=1")).status, 201);
    }

    // A blitz galaxy fits the default page whole.
    let whole = daemon.get("/galaxies/a").json();
    assert_eq!(whole["system_count"], 200);
    assert_eq!(coordinates(&whole).len(), 200);
    assert_eq!(
        (whole["offset"].as_u64(), whole["limit"].as_u64()),
        (Some(0), Some(1000))
    );
    let slice = daemon.get("/galaxies/a?offset=10&limit=5").json();
    assert_eq!(coordinates(&slice), coordinates(&whole)[10..15]);
    assert_eq!(slice["system_count"], 200, "the total, whatever the page");

    // A larger one, walked page by page: every system once, in order.
    let first = daemon.get("/galaxies/wide").json();
    assert_eq!(first["system_count"], 2500);
    assert_eq!(coordinates(&first).len(), 1000, "the default page");
    let mut walked = Vec::new();
    let mut offset = 0;
    loop {
        let page = daemon.get(&format!("/galaxies/wide?limit=700&offset={offset}"));
        assert_eq!(page.status, 200, "{}", page.body);
        let systems = coordinates(&page.json());
        if systems.is_empty() {
            break;
        }
        offset += systems.len();
        walked.extend(systems);
    }
    assert_eq!(walked.len(), 2500);
    assert!(walked.windows(2).all(|w| w[0] < w[1]), "sorted, no repeats");
    assert_eq!(coordinates(&first), walked[..1000]);
    let whole = daemon.get("/galaxies/wide?limit=10000").json();
    assert_eq!(
        coordinates(&whole),
        walked,
        "the largest page holds them all"
    );

    // The list of galaxies.
    let list = daemon.get("/galaxies").json();
    assert_eq!(names(&list), ["a", "b", "wide"]);
    assert_eq!(
        (
            list["total"].as_u64(),
            list["offset"].as_u64(),
            list["limit"].as_u64()
        ),
        (Some(3), Some(0), Some(100))
    );
    let list = daemon.get("/galaxies?offset=1&limit=1").json();
    assert_eq!(names(&list), ["b"]);
    assert_eq!(list["total"], 3);
    let list = daemon.get("/galaxies?offset=3&limit=1000").json();
    assert!(names(&list).is_empty());
    assert_eq!(list["total"], 3);
}

#[test]
fn a_bad_page_is_a_400_json_error() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    assert_eq!(daemon.post("/galaxies/g?seed=1").status, 201);
    for query in [
        "limit=0",
        "limit=-1",
        "limit=ten",
        "limit=",
        "limit",
        "offset=-1",
        "offset=1.5",
        "offset=99999999999999999999999",
        "offset=1&offset=1",
        "limit=5&limit=6",
        "page=2",
        "offset=1&preset=blitz",
    ] {
        for path in ["/galaxies/g", "/galaxies"] {
            let reply = daemon.get(&format!("{path}?{query}"));
            assert_eq!(reply.status, 400, "{path}?{query}: {}", reply.body);
            assert_eq!(reply.header("content-type"), Some("application/json"));
            let error = reply.json()["error"].as_str().unwrap_or("").to_owned();
            assert!(!error.is_empty(), "{path}?{query}");
        }
    }
    // Over each list's maximum.
    assert_eq!(daemon.get("/galaxies/g?limit=10001").status, 400);
    assert_eq!(daemon.get("/galaxies?limit=1001").status, 400);
    assert_eq!(daemon.get("/galaxies?limit=1000").status, 200);
    // A page past the end is empty, not an error; an unknown galaxy is still a 404.
    let past = daemon.get("/galaxies/g?offset=1000000");
    assert_eq!(past.status, 200);
    assert_eq!(past.json()["systems"].as_array().map(Vec::len), Some(0));
    assert_eq!(daemon.get("/galaxies/nope?limit=5").status, 404);
    assert_eq!(daemon.get("/healthz").status, 200);
}
