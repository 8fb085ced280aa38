-- Galaxies whose creation or deletion is not finished: the same table, rules and meaning
-- as sql/sqlite/0002_galaxy_jobs.sql (read its comment). A galaxy with a row here is
-- invisible to loads, listings and existence checks.
CREATE TABLE galaxy_jobs (
    name TEXT PRIMARY KEY REFERENCES galaxies(name) ON DELETE CASCADE,
    job TEXT NOT NULL CHECK (job IN ('creating', 'deleting')),
    started_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP
);
