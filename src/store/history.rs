//! A galaxy's history as both stores keep it (table `galaxy_history`, README, *History*):
//! how a batch's entries become segments ([`segments`]), and how a read pages them back
//! ([`HistoryRead`]), the same on every store; each store runs only the SQL.
//!
//! The read's rule. Segments are read in id order, which is save order. Their entries
//! are not in tick order across segments: a build's completion is saved with its order,
//! at its completion tick, ahead of orders saved later. So a read lists the segments
//! first (their ticks and counts, never their bodies), and after each segment it has read
//! it knows the smallest tick any segment still unread holds (the smallest `first_tick`
//! among them). Every entry found with a tick at or below that one comes before every
//! unread entry in the answer (an unread entry of the same tick was saved later, so it
//! follows). The read stops once it holds `limit` such entries: nothing unread can take
//! their place. No assumption about ticks is needed for that; the ticks only make it
//! cheap: ordered entries' ticks never go back (an order older than its galaxy's tick is
//! refused), so a page near the start of a long history stops after a few segments.

use crate::archive::{decode_history, encode_history, SEGMENT_ENTRIES};
use crate::model::HistoryEntry;

use super::StoreError;

/// The entries a store puts in one segment at most: [`SEGMENT_ENTRIES`], and a handful in
/// the unit tests, so that their small batches are cut into several segments.
pub(crate) const SEGMENT_SIZE: usize = if cfg!(test) { 3 } else { SEGMENT_ENTRIES };

/// The segments a read asks a store for at once, at most: a round trip each time.
const GROUP_SEGMENTS: usize = 32;

/// One segment as a batch inserts it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Segment {
    pub first_tick: u64,
    pub last_tick: u64,
    pub entries: usize,
    pub body: Vec<u8>,
}

/// `entries` (in the order they were made) cut into segments of at most `size` entries,
/// in order, each encoded.
pub(crate) fn segments(
    entries: &[HistoryEntry],
    size: usize,
) -> impl Iterator<Item = Segment> + '_ {
    entries.chunks(size.max(1)).map(|chunk| Segment {
        first_tick: chunk.iter().map(|e| e.tick).min().unwrap_or(0),
        last_tick: chunk.iter().map(|e| e.tick).max().unwrap_or(0),
        entries: chunk.len(),
        body: encode_history(chunk),
    })
}

/// A stored segment without its body, as a read lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegmentInfo {
    pub id: i64,
    pub first_tick: i64,
    pub last_tick: i64,
    pub entries: i64,
}

/// The entries of the stored segment `info` of galaxy `galaxy`, checked against its row
/// (count and ticks): a body that does not decode, or does not match the row a read
/// relies on, is [`StoreError::HistoryDamaged`].
pub(crate) fn decode_segment(
    galaxy: &str,
    info: &SegmentInfo,
    body: &[u8],
) -> Result<Vec<HistoryEntry>, StoreError> {
    let damaged = |details: String| StoreError::HistoryDamaged {
        galaxy: galaxy.to_owned(),
        segment: info.id,
        details,
    };
    let entries = decode_history(body).map_err(|error| damaged(error.to_string()))?;
    let ticks = |f: fn(u64, u64) -> u64| entries.iter().map(|e| e.tick).reduce(f);
    let (first, last) = (ticks(u64::min), ticks(u64::max));
    let as_stored = |tick: Option<u64>| tick.map(super::stored_int);
    if i64::try_from(entries.len()).ok() != Some(info.entries)
        || (!entries.is_empty()
            && (as_stored(first) != Some(info.first_tick)
                || as_stored(last) != Some(info.last_tick)))
    {
        return Err(damaged(format!(
            "it holds {} entries from tick {} to {}, its row says {} from {} to {}",
            entries.len(),
            first.unwrap_or(0),
            last.unwrap_or(0),
            info.entries,
            info.first_tick,
            info.last_tick
        )));
    }
    Ok(entries)
}

/// Galaxy `galaxy`'s history from `since_tick` on, at most `limit` entries
/// ([`super::ReadStore::history`]): `listed` is every segment of the galaxy with
/// `last_tick >= since_tick`, in id order; `fetch` gives the bodies of the segments whose
/// ids it is handed (in id order; one gone since it was listed is left out). Stops early
/// by the rule at the top of this file.
pub(crate) fn read_history(
    galaxy: &str,
    since_tick: u64,
    limit: usize,
    listed: Vec<SegmentInfo>,
    mut fetch: impl FnMut(&[i64]) -> Result<Vec<(i64, Vec<u8>)>, StoreError>,
) -> Result<Vec<HistoryEntry>, StoreError> {
    let mut read = HistoryRead::new(since_tick, limit, listed);
    loop {
        let group = read.next_group();
        if group.is_empty() {
            return Ok(read.found);
        }
        let ids: Vec<i64> = read.listed[group.clone()]
            .iter()
            .map(|info| info.id)
            .collect();
        let mut bodies = fetch(&ids)?;
        bodies.sort_unstable_by_key(|(id, _)| *id);
        for (id, body) in bodies {
            let Some(at) = group.clone().find(|&at| read.listed[at].id == id) else {
                continue;
            };
            let entries = decode_segment(galaxy, &read.listed[at], &body)?;
            read.take(entries);
        }
        read.next = group.end;
    }
}

/// One read of a galaxy's history in progress (see [`read_history`]).
struct HistoryRead {
    since_tick: u64,
    limit: usize,
    listed: Vec<SegmentInfo>,
    /// `lowest[i]`: the smallest `first_tick` of `listed[i..]` (`i64::MAX` past the end).
    lowest: Vec<i64>,
    /// The segments read so far: `listed[..next]`.
    next: usize,
    /// The answer so far: by tick, entries of one tick in save order, at most `limit`.
    found: Vec<HistoryEntry>,
}

impl HistoryRead {
    fn new(since_tick: u64, limit: usize, listed: Vec<SegmentInfo>) -> HistoryRead {
        let mut lowest = vec![i64::MAX; listed.len() + 1];
        for at in (0..listed.len()).rev() {
            lowest[at] = lowest[at + 1].min(listed[at].first_tick);
        }
        HistoryRead {
            since_tick,
            limit,
            listed,
            lowest,
            next: 0,
            found: Vec::new(),
        }
    }

    /// Whether nothing unread can change the answer.
    fn done(&self) -> bool {
        if self.next >= self.listed.len() {
            return true;
        }
        self.found.len() >= self.limit
            && self
                .found
                .last()
                .is_none_or(|last| super::stored_int(last.tick) <= self.lowest[self.next])
    }

    /// The segments to read next, as a range of `listed` (empty: the read is over): as
    /// many as should give the entries still missing, from one to [`GROUP_SEGMENTS`].
    fn next_group(&self) -> std::ops::Range<usize> {
        if self.done() {
            return self.next..self.next;
        }
        let missing = self.limit.saturating_sub(self.found.len()) as u64;
        let mut entries = 0u64;
        let mut end = self.next;
        for info in self.listed[self.next..].iter().take(GROUP_SEGMENTS) {
            end += 1;
            entries += u64::try_from(info.entries).unwrap_or(0);
            if entries >= missing {
                break;
            }
        }
        self.next..end
    }

    /// One segment's entries, read in id order.
    fn take(&mut self, entries: Vec<HistoryEntry>) {
        let since = self.since_tick;
        self.found
            .extend(entries.into_iter().filter(|entry| entry.tick >= since));
        // Stable: of one tick, those found earlier (saved earlier) stay first. An entry
        // past `limit` now stays past it, whatever is read later.
        self.found.sort_by_key(|entry| entry.tick);
        self.found.truncate(self.limit);
    }
}

/// Histories the stores' tests save and read back.
#[cfg(test)]
pub(crate) mod samples {
    use crate::model::{HistoryEntry, HistoryKind, StructureKind};

    pub(crate) fn entry(tick: u64, x: u32, kind: HistoryKind) -> HistoryEntry {
        HistoryEntry {
            tick,
            x,
            y: 7,
            kind,
            structure: StructureKind::Hatchery,
            level: 2,
        }
    }

    /// The first batch's history: orders at ticks 10 and 12, their completions ahead of
    /// them (one at 110, far past the next batch's orders).
    pub(crate) fn first_history() -> Vec<HistoryEntry> {
        use HistoryKind::{Completed, Ordered};
        vec![
            entry(10, 1, Ordered),
            entry(110, 1, Completed),
            entry(10, 2, Ordered),
            entry(15, 2, Completed),
            entry(12, 3, Ordered),
            entry(20, 3, Completed),
            entry(12, 4, Ordered),
        ]
    }

    pub(crate) fn second_history() -> Vec<HistoryEntry> {
        vec![
            entry(50, 5, HistoryKind::Ordered),
            entry(60, 5, HistoryKind::Completed),
        ]
    }

    /// The `x` of each entry, which tells them apart in these tests, and their ticks.
    pub(crate) fn ticks_and_x(entries: &[HistoryEntry]) -> Vec<(u64, u32)> {
        entries.iter().map(|e| (e.tick, e.x)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{HistoryKind, StructureKind};

    fn entry(tick: u64, x: u32) -> HistoryEntry {
        HistoryEntry {
            tick,
            x,
            y: 0,
            kind: HistoryKind::Ordered,
            structure: StructureKind::Colony,
            level: 1,
        }
    }

    /// Reads `stored` (segments in save order) as a store does; also how many bodies
    /// it fetched.
    fn read(stored: &[Vec<HistoryEntry>], since: u64, limit: usize) -> (Vec<HistoryEntry>, usize) {
        let mut bodies = Vec::new();
        let mut listed = Vec::new();
        for (id, entries) in stored.iter().enumerate() {
            let segment = segments(entries, usize::MAX).next().unwrap();
            if segment.last_tick >= since {
                listed.push(SegmentInfo {
                    id: id as i64,
                    first_tick: segment.first_tick as i64,
                    last_tick: segment.last_tick as i64,
                    entries: segment.entries as i64,
                });
            }
            bodies.push(segment.body);
        }
        let mut fetched = 0;
        let found = read_history("g", since, limit, listed, |ids| {
            fetched += ids.len();
            Ok(ids
                .iter()
                .map(|&id| (id, bodies[id as usize].clone()))
                .collect())
        })
        .unwrap();
        (found, fetched)
    }

    /// What a read must answer: every entry, stably sorted, filtered, cut.
    fn expected(stored: &[Vec<HistoryEntry>], since: u64, limit: usize) -> Vec<HistoryEntry> {
        let mut all: Vec<HistoryEntry> = stored.iter().flatten().copied().collect();
        all.retain(|e| e.tick >= since);
        all.sort_by_key(|e| e.tick);
        all.truncate(limit);
        all
    }

    #[test]
    fn a_read_answers_as_sorting_everything_would_and_stops_early() {
        // A completion far ahead in the first segment, orders after it in later ones.
        let stored = vec![
            vec![entry(10, 1), entry(500, 1)],
            vec![entry(11, 2), entry(11, 3)],
            vec![entry(12, 4), entry(500, 4)],
            vec![entry(500, 5), entry(501, 6)],
            vec![entry(600, 7)],
        ];
        for since in [0, 11, 12, 500, 501, 601] {
            for limit in 0..12 {
                let (got, _) = read(&stored, since, limit);
                assert_eq!(
                    got,
                    expected(&stored, since, limit),
                    "since {since} limit {limit}"
                );
            }
        }
        // Two entries from tick 0 are in the first two segments, nothing after can
        // come before them.
        assert_eq!(read(&stored, 0, 2).1, 2);
        // Entries of one tick come back in save order.
        let (got, _) = read(&stored, 500, 4);
        assert_eq!(got.iter().map(|e| e.x).collect::<Vec<_>>(), [1, 4, 5, 6]);
    }

    #[test]
    fn random_histories_read_back_as_sorting_everything_would() {
        let mut rng = crate::model::rng::SplitMix64::new(7);
        for _ in 0..200 {
            let mut tick = 0;
            let stored: Vec<Vec<HistoryEntry>> = (0..1 + rng.inclusive(8))
                .map(|_| {
                    (0..1 + rng.inclusive(5))
                        .map(|_| {
                            tick += rng.inclusive(2);
                            let ahead = if rng.inclusive(1) == 0 {
                                rng.inclusive(6)
                            } else {
                                0
                            };
                            entry(tick + ahead, rng.inclusive(1000) as u32)
                        })
                        .collect()
                })
                .collect();
            let since = rng.inclusive(tick);
            let limit = rng.inclusive(20) as usize;
            assert_eq!(
                read(&stored, since, limit).0,
                expected(&stored, since, limit)
            );
        }
    }

    #[test]
    fn a_batch_is_cut_into_segments_in_order() {
        let entries: Vec<HistoryEntry> = (0..7).map(|i| entry(20 - i, i as u32)).collect();
        let cut: Vec<Segment> = segments(&entries, 3).collect();
        assert_eq!(cut.iter().map(|s| s.entries).collect::<Vec<_>>(), [3, 3, 1]);
        assert_eq!((cut[0].first_tick, cut[0].last_tick), (18, 20));
        assert_eq!((cut[2].first_tick, cut[2].last_tick), (14, 14));
        let back: Vec<HistoryEntry> = cut
            .iter()
            .flat_map(|s| decode_history(&s.body).unwrap())
            .collect();
        assert_eq!(back, entries);
    }

    #[test]
    fn a_segment_unlike_its_row_is_damaged() {
        let segment = segments(&[entry(5, 1), entry(9, 2)], 10).next().unwrap();
        let info = SegmentInfo {
            id: 4,
            first_tick: 5,
            last_tick: 9,
            entries: 2,
        };
        assert!(decode_segment("g", &info, &segment.body).is_ok());
        for wrong in [
            SegmentInfo { entries: 3, ..info },
            SegmentInfo {
                first_tick: 6,
                ..info
            },
        ] {
            let err = decode_segment("g", &wrong, &segment.body).unwrap_err();
            assert_eq!(err.kind(), super::super::FailureKind::Corrupt);
            assert!(err.to_string().contains("galaxy 'g'"), "{err}");
        }
        let err = decode_segment("g", &info, &segment.body[..3]).unwrap_err();
        assert!(err.to_string().contains("segment 4"), "{err}");
    }
}
