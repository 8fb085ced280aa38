-- Galaxies whose creation or deletion is not finished. Both are written in bounded chunks,
-- each its own transaction, so that no other galaxy's batch waits behind a large one
-- (README, *Configuration*, the limits). A galaxy with a row here is invisible: loads, listings and
-- existence checks skip it. 'creating': its rows are still being written; the last chunk
-- deletes this row in the same transaction, which is the moment the galaxy exists.
-- 'deleting': the deletion is committed (this row is what makes it durable); the rows
-- are removed chunk by chunk and the galaxy row last, which cascades to this one. A
-- creation interrupted by a crash or a shutdown is turned into a deletion at start-up.
CREATE TABLE galaxy_jobs (
    name TEXT PRIMARY KEY REFERENCES galaxies(name) ON DELETE CASCADE,
    job TEXT NOT NULL CHECK (job IN ('creating', 'deleting')),
    started_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);
