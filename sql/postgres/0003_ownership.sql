-- Which daemon owns each galaxy (several daemons on one database, PostgreSQL only; SQLite
-- has one daemon per file and no such table). One row per stored galaxy, from its
-- creation's first transaction until its rows are purged (the foreign key removes it with
-- the galaxy).
--
-- epoch: the fencing token, raised by one at every change of owner. Every batch
--   transaction of the owner ends with a statement that matches (galaxy_name, epoch,
--   owner) and renews expires_at; a daemon whose epoch is stale matches nothing and rolls
--   back, so it can never commit after another daemon took the galaxy.
-- owner: the owning process's id (host:boot:pidns:pid:start-ms:token.n), NULL when free.
-- owner_url: where that daemon serves players (GWAR_ADVERTISE_URL), for redirects.
-- expires_at: the end of the owner's lease, on the database's clock; past it, any daemon
--   may take the galaxy.
CREATE TABLE galaxy_owners (
    galaxy_name TEXT PRIMARY KEY REFERENCES galaxies(name) ON DELETE CASCADE,
    epoch BIGINT NOT NULL,
    owner TEXT,
    owner_url TEXT,
    expires_at TIMESTAMPTZ NOT NULL
);

-- Every galaxy stored before this migration starts free, at epoch 0: the first take
-- makes it 1.
INSERT INTO galaxy_owners (galaxy_name, epoch, owner, owner_url, expires_at)
SELECT name, 0, NULL, NULL, now() FROM galaxies;
