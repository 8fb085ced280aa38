-- How many systems each stored galaxy has: the same table, rules and meaning as
-- sql/sqlite/0003_galaxy_sizes.sql (read its comment). With several daemons, every
-- daemon's creations count from their first transaction.
CREATE TABLE galaxy_sizes (
    name TEXT PRIMARY KEY REFERENCES galaxies(name) ON DELETE CASCADE,
    systems BIGINT NOT NULL
);

INSERT INTO galaxy_sizes (name, systems)
SELECT g.name, (SELECT count(*) FROM systems s WHERE s.galaxy_name = g.name) FROM galaxies g;
