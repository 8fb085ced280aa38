-- A galaxy's history: the same table, rules and meaning as
-- sql/sqlite/0005_galaxy_history.sql (read its comment). A batch inserts its segments
-- inside its fenced transaction, before the fence: a batch fenced out writes no history
-- either. Ids come from an identity, which never goes back, so id order is save order
-- (a sequence's values may commit out of order between two daemons, but a galaxy is
-- written by one daemon at a time, and its batches one after the other).
--
-- body keeps the default storage, as galaxy_archives' does (it is zstd already; see
-- sql/postgres/0005_galaxy_archives.sql for why not `SET STORAGE EXTERNAL`).
CREATE TABLE galaxy_history (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    galaxy_name TEXT NOT NULL,
    first_tick BIGINT NOT NULL,
    last_tick BIGINT NOT NULL,
    entries INTEGER NOT NULL,
    body BYTEA NOT NULL,
    saved_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX galaxy_history_galaxy_tick ON galaxy_history (galaxy_name, last_tick);
CREATE INDEX galaxy_history_saved ON galaxy_history (saved_at);
