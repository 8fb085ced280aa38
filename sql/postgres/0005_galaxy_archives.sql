-- Archived galaxies: the same table, rules and meaning as
-- sql/sqlite/0004_galaxy_archives.sql (read its comment). Archiving is fenced by the
-- galaxy's epoch like any write of it; the archive row itself has no owner (the galaxy's
-- ownership row goes with its purged rows), and a restore's last chunk deletes it.
--
-- body keeps the default storage (EXTENDED): it is zstd already, and PostgreSQL's
-- compression of a TOASTed value gives up within its first kilobyte when that finds
-- nothing to compress, which costs little. `SET STORAGE EXTERNAL` would skip even that,
-- but is PostgreSQL's own statement: YugabyteDB refuses it, and the store is written to
-- run on PostgreSQL-compatible distributed databases too.
CREATE TABLE galaxy_archives (
    name TEXT PRIMARY KEY,
    format INTEGER NOT NULL,
    systems BIGINT NOT NULL,
    body BYTEA NOT NULL,
    archived_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP
);
