//! Events as earlier releases stored them, in the `events` table of this database: read
//! in id order to be moved into the event store, then dropped with their indexes.

use super::*;

/// An event of the `events` table.
#[derive(Debug, Clone, PartialEq)]
pub struct LegacyEvent {
    pub id: u64,
    pub event: NewEvent,
}

impl SqliteStore {
    /// How many events the `events` table still holds; `None` once it is gone.
    pub fn legacy_event_count(&self) -> Result<Option<u64>, StoreError> {
        let connection = lock_connection(&self.writer);
        let exists: bool = connection.query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'events'",
            [],
            |row| row.get(0),
        )?;
        if !exists {
            return Ok(None);
        }
        let count: i64 =
            connection.query_row("SELECT count(*) FROM events", [], |row| row.get(0))?;
        Ok(Some(count as u64))
    }

    /// Up to `limit` events with ids above `after_id`, ascending.
    pub fn legacy_events_after(
        &self,
        after_id: u64,
        limit: usize,
    ) -> Result<Vec<LegacyEvent>, StoreError> {
        let connection = lock_connection(&self.writer);
        let mut statement = connection.prepare_cached(
            "SELECT id, node_id, pot_id, pot_type, event_type, ts, received_at, src_ip, data, seq
             FROM events WHERE id > ?1 ORDER BY id LIMIT ?2",
        )?;
        collect_rows(
            &mut statement,
            params![after_id as i64, limit as i64],
            |row| {
                Ok(LegacyEvent {
                    id: row.get::<_, i64>(0)? as u64,
                    event: NewEvent {
                        node_id: node_id_from_sql(row.get(1)?),
                        pot_id: row.get(2)?,
                        pot_type: row.get(3)?,
                        event_type: row.get(4)?,
                        timestamp: from_micros(row.get(5)?)?,
                        received_at: from_micros(row.get(6)?)?,
                        fields: EventFields {
                            src_ip: row.get(7)?,
                            ..EventFields::default()
                        },
                        data_json: row.get(8)?,
                        seq: row.get::<_, Option<i64>>(9)?.map(|seq| seq as u64),
                    },
                })
            },
        )
    }

    /// Drops the `events` table, its indexes and bookkeeping, once every event is moved,
    /// and compacts the file (only the small control tables are left to copy).
    pub fn drop_legacy_events(&self) -> Result<(), StoreError> {
        let mut connection = lock_connection(&self.writer);
        let transaction = write_transaction(&mut connection)?;
        let partitions: Vec<String> = {
            let mut statement = transaction.prepare(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'source_index_%'",
            )?;
            collect_rows(&mut statement, [], |row| Ok(row.get(0)?))?
        };
        for table in partitions {
            transaction.execute_batch(&format!("DROP TABLE \"{table}\";"))?;
        }
        transaction.execute_batch(
            "DROP TABLE IF EXISTS source_partitions;
             DROP TABLE IF EXISTS node_sequences;
             DROP TABLE IF EXISTS events;",
        )?;
        transaction.commit()?;
        connection.execute_batch("VACUUM;")?;
        Ok(())
    }
}
