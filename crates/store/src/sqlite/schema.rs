//! The schema and its migrations, applied in order by `PRAGMA user_version`. A migration
//! stays as it ran: later changes are new migrations.

use super::*;

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE nodes (
    node_id        INTEGER PRIMARY KEY,
    name           TEXT NOT NULL,
    address        TEXT NOT NULL,
    port           INTEGER NOT NULL,
    kind           TEXT NOT NULL,
    remote_address TEXT NOT NULL,
    state          TEXT NOT NULL,
    connected      INTEGER NOT NULL,
    session_id     INTEGER NOT NULL,
    first_seen     INTEGER NOT NULL,
    last_seen      INTEGER NOT NULL
);
CREATE TABLE pots (
    node_id    INTEGER NOT NULL,
    pot_id     TEXT NOT NULL,
    pot_type   TEXT NOT NULL,
    state      TEXT NOT NULL,
    message    TEXT,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (node_id, pot_id)
);
CREATE TABLE events (
    id          INTEGER PRIMARY KEY,
    node_id     INTEGER NOT NULL,
    pot_id      TEXT NOT NULL,
    pot_type    TEXT NOT NULL,
    event_type  TEXT NOT NULL,
    ts          INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    src_ip      TEXT,
    data        TEXT NOT NULL
);
CREATE INDEX events_by_time ON events (ts, id);
CREATE INDEX events_by_pot ON events (pot_id, ts, id);
CREATE INDEX events_by_node ON events (node_id, ts, id);
CREATE INDEX events_by_type ON events (event_type, ts, id);
CREATE INDEX events_by_source ON events (src_ip, ts, id) WHERE src_ip IS NOT NULL;
"#,
    r#"
CREATE TABLE api_tokens (
    token_hash TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    role       TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
"#,
    r#"
CREATE TABLE enrollment_tokens (
    id         INTEGER PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL,
    uses_total INTEGER NOT NULL,
    uses_left  INTEGER NOT NULL,
    expires_at INTEGER,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE TABLE node_credentials (
    node_id        INTEGER PRIMARY KEY,
    totp_secret    TEXT NOT NULL,
    last_totp_step INTEGER NOT NULL,
    enrolled_at    INTEGER NOT NULL,
    enrolled_with  INTEGER,
    revoked_at     INTEGER
);
"#,
    r#"
ALTER TABLE events ADD COLUMN seq INTEGER;
CREATE UNIQUE INDEX events_by_node_seq ON events (node_id, seq) WHERE seq IS NOT NULL;
"#,
    r#"
ALTER TABLE node_credentials ADD COLUMN confirmed INTEGER NOT NULL DEFAULT 1;
"#,
    r#"
CREATE TABLE source_partitions (
    partition INTEGER PRIMARY KEY,
    entries   INTEGER NOT NULL,
    min_ts    INTEGER,
    max_ts    INTEGER
);
CREATE TABLE source_index_0 (
    src_ip TEXT NOT NULL,
    ts     INTEGER NOT NULL,
    id     INTEGER NOT NULL,
    PRIMARY KEY (src_ip, ts, id)
) WITHOUT ROWID;
INSERT INTO source_index_0 (src_ip, ts, id)
    SELECT src_ip, ts, id FROM events WHERE src_ip IS NOT NULL;
INSERT INTO source_partitions (partition, entries, min_ts, max_ts)
    SELECT 0, count(*), min(ts), max(ts) FROM source_index_0;
DROP INDEX events_by_source;
"#,
    r#"
CREATE TABLE node_sequences (
    node_id  INTEGER PRIMARY KEY,
    last_seq INTEGER NOT NULL
);
INSERT INTO node_sequences (node_id, last_seq)
    SELECT node_id, max(seq) FROM events WHERE seq IS NOT NULL GROUP BY node_id;
DROP INDEX events_by_node_seq;
"#,
    r#"
CREATE TABLE source_index_progress (
    singleton       INTEGER PRIMARY KEY CHECK (singleton = 0),
    indexed_through INTEGER NOT NULL
);
INSERT INTO source_index_progress (singleton, indexed_through)
    SELECT 0, coalesce(max(id), 0) FROM events;
"#,
];

pub(super) fn migrate(connection: &mut Connection) -> Result<(), StoreError> {
    let applied: usize =
        connection.query_row("PRAGMA user_version", [], |row| row.get::<_, i64>(0))? as usize;
    if applied > MIGRATIONS.len() {
        return Err(StoreError::SchemaTooNew {
            found: applied,
            supported: MIGRATIONS.len(),
        });
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(applied) {
        let transaction = write_transaction(connection)?;
        transaction.execute_batch(migration)?;
        transaction.execute_batch(&format!("PRAGMA user_version = {}", index + 1))?;
        transaction.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An in-memory database as a release with the first `applied` migrations left it,
    /// holding what `rows` inserts.
    fn database_at_migration(applied: usize, rows: &str) -> Connection {
        let connection = Connection::open_in_memory().unwrap();
        for migration in &MIGRATIONS[..applied] {
            connection.execute_batch(migration).unwrap();
        }
        connection
            .execute_batch(&format!("PRAGMA user_version = {applied}; {rows}"))
            .unwrap();
        connection
    }

    /// A database written before the sequence marks keeps de-duplicating: each node's
    /// mark starts at the highest seq it already stored.
    #[test]
    fn the_sequence_marks_start_at_what_each_node_stored() {
        let mut connection = database_at_migration(
            6,
            "INSERT INTO events (node_id, pot_id, pot_type, event_type, ts, received_at, src_ip, data, seq)
             VALUES (1, 'p', 'cowrie', 'login', 1, 0, NULL, '{}', 7),
                    (1, 'p', 'cowrie', 'login', 2, 0, NULL, '{}', 9),
                    (2, 'p', 'cowrie', 'login', 3, 0, NULL, '{}', 4),
                    (3, 'p', 'cowrie', 'login', 4, 0, NULL, '{}', NULL);",
        );
        migrate(&mut connection).unwrap();
        let marks: Vec<(i64, i64)> = connection
            .prepare("SELECT node_id, last_seq FROM node_sequences ORDER BY node_id")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(marks, vec![(1, 9), (2, 4)]);
    }

    /// A database written before the source index was partitioned keeps every indexed
    /// event: the migration moves the old index's entries into the first partition.
    #[test]
    fn the_old_source_index_becomes_the_first_partition() {
        let mut connection = database_at_migration(
            5,
            "INSERT INTO events (node_id, pot_id, pot_type, event_type, ts, received_at, src_ip, data)
             VALUES (1, 'p', 'cowrie', 'login', 30, 0, '203.0.113.7', '{}'),
                    (1, 'p', 'cowrie', 'login', 10, 0, NULL, '{}'),
                    (1, 'p', 'cowrie', 'login', 20, 0, '198.51.100.4', '{}');",
        );
        migrate(&mut connection).unwrap();
        let partition: (i64, i64, i64, i64) = connection
            .query_row(
                "SELECT partition, entries, min_ts, max_ts FROM source_partitions",
                [],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
            )
            .unwrap();
        assert_eq!(partition, (0, 2, 20, 30));
        let indexed: Vec<(String, i64)> = connection
            .prepare("SELECT src_ip, id FROM source_index_0 ORDER BY src_ip")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            indexed,
            vec![("198.51.100.4".into(), 3), ("203.0.113.7".into(), 1)]
        );
        // Every event already stored is indexed: the progress mark starts at the newest.
        let indexed_through: i64 = connection
            .query_row(
                "SELECT indexed_through FROM source_index_progress",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(indexed_through, 3);
    }
}
