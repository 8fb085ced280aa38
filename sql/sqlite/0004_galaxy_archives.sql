-- Archived galaxies (README, *Archives and moving a deployment*): a galaxy's whole state as
-- one body (`crate::archive::encode`: a versioned, checksummed, zstd-compressed byte
-- string), kept in place of its live rows. Archiving is one transaction that inserts the
-- row here and marks the galaxy 'deleting' in galaxy_jobs (its rows are then purged in
-- chunks); restoring is a creation whose last chunk deletes the row here in the same
-- transaction. So a galaxy is live or archived, never both and never neither.
--
-- No foreign key to galaxies: an archive outlives its galaxy's row, which is purged.
-- format: the archive format's version (`crate::archive::FORMAT_VERSION`).
-- systems: the galaxy's systems, so listings and limits need not decode the body.
-- archived_at: when it was archived (UTC, 'YYYY-MM-DD HH:MM:SS').
CREATE TABLE galaxy_archives (
    name TEXT PRIMARY KEY,
    format INTEGER NOT NULL,
    systems INTEGER NOT NULL,
    body BLOB NOT NULL,
    archived_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);
