-- A galaxy's history (README, *History*): every order applied and every build completed,
-- kept as segments. A segment is one galaxy's entries of one batch (cut into pieces of at
-- most `crate::archive::SEGMENT_ENTRIES`), encoded by `crate::archive::encode_history`
-- (columns of varints, zstd when smaller), and inserted in the batch's own transaction,
-- so the history and the state it produced are saved together or not at all.
--
-- No foreign key to galaxies: an archived galaxy keeps its history while its live rows
-- are purged. The purge of a galaxy that is not archived deletes its history before the
-- galaxy row; deleting an archive deletes the history of its name in the same
-- transaction. GWAR_HISTORY_KEEP_SECS prunes segments by age (`saved_at`).
--
-- id: AUTOINCREMENT, so ids are never reused and id order is save order, which readers
--     rely on (entries of one tick are given back in the order they were saved).
-- first_tick, last_tick: the smallest and largest tick of the segment's entries (not
--     the first and last: a completion lies at its build's completion tick, ahead of
--     the orders saved after it), so a reader skips segments by tick without decoding.
-- entries: how many entries the body holds.
-- saved_at: when it was saved (UTC, 'YYYY-MM-DD HH:MM:SS').
CREATE TABLE galaxy_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    galaxy_name TEXT NOT NULL,
    first_tick INTEGER NOT NULL,
    last_tick INTEGER NOT NULL,
    entries INTEGER NOT NULL,
    body BLOB NOT NULL,
    saved_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);

-- A galaxy's segments from a tick on (the reads), and all of them (purges).
CREATE INDEX galaxy_history_galaxy_tick ON galaxy_history (galaxy_name, last_tick);
-- The oldest segments first (pruning).
CREATE INDEX galaxy_history_saved ON galaxy_history (saved_at);
