-- How many systems each stored galaxy has, for GWAR_MAX_TOTAL_SYSTEMS (README,
-- *Configuration*): summing this table is cheap where counting the systems table is not
-- (millions of rows). One row per galaxy row, written in the creation's first transaction
-- (so a creation in progress counts in full), removed with the galaxy row (so a deletion
-- counts until its rows are purged). The seed's tables are left as they were.
CREATE TABLE galaxy_sizes (
    name TEXT PRIMARY KEY REFERENCES galaxies(name) ON DELETE CASCADE,
    systems INTEGER NOT NULL
);

-- Galaxies stored before this migration: counted once, here.
INSERT INTO galaxy_sizes (name, systems)
SELECT g.name, (SELECT count(*) FROM systems s WHERE s.galaxy_name = g.name) FROM galaxies g;
