//! Events in SQLite: batched inserts skipping what a node resent, the partitioned index of
//! source addresses, and pages of events by filter.

use super::*;

/// The table of one source-address index partition.
fn source_partition_table(partition: i64) -> String {
    format!("source_index_{partition}")
}

/// The partition new events go to, opening the next one when the current is full. Runs
/// inside the insert's transaction, so a partition and its first entries commit together.
/// The table's shape repeats migration 6's first partition: a migration stays as it ran.
fn writable_source_partition(
    transaction: &rusqlite::Transaction<'_>,
    partition_events: u64,
) -> Result<i64, StoreError> {
    let (current, entries): (i64, i64) = transaction.query_row(
        "SELECT partition, entries FROM source_partitions ORDER BY partition DESC LIMIT 1",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    if (entries as u64) < partition_events {
        return Ok(current);
    }
    let next = current + 1;
    transaction.execute_batch(&format!(
        "CREATE TABLE {table} (
             src_ip TEXT NOT NULL,
             ts     INTEGER NOT NULL,
             id     INTEGER NOT NULL,
             PRIMARY KEY (src_ip, ts, id)
         ) WITHOUT ROWID;
         INSERT INTO source_partitions (partition, entries) VALUES ({next}, 0);",
        table = source_partition_table(next)
    ))?;
    Ok(next)
}

/// Adds the events stored since the last addition to the source index, once there are at
/// least `lag_events` of them (`newest_id` is the newest stored). Runs inside the insert's
/// transaction: the entries, their partition's time range and the new progress mark commit
/// with the events. Invariant: an event with a source address and an id up to
/// `source_index_progress.indexed_through` is in exactly one partition; the newer ones are
/// in none, and a query by source scans them.
fn index_sources_if_lagging(
    transaction: &rusqlite::Transaction<'_>,
    newest_id: i64,
    partition_events: u64,
    lag_events: u64,
) -> Result<(), StoreError> {
    let indexed_through: i64 = transaction
        .prepare_cached("SELECT indexed_through FROM source_index_progress")?
        .query_row([], |row| row.get(0))?;
    if ((newest_id - indexed_through) as u64) < lag_events {
        return Ok(());
    }
    let partition = writable_source_partition(transaction, partition_events)?;
    let range = params![indexed_through, newest_id];
    // NOT INDEXED: the rowid range is the way in, never an index over all events.
    let (entries, min_ts, max_ts): (i64, Option<i64>, Option<i64>) = transaction
        .prepare_cached(
            "SELECT count(*), min(ts), max(ts) FROM events NOT INDEXED
             WHERE id > ?1 AND id <= ?2 AND src_ip IS NOT NULL",
        )?
        .query_row(range, |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
    if entries > 0 {
        transaction
            .prepare_cached(&format!(
                "INSERT INTO {} (src_ip, ts, id)
                 SELECT src_ip, ts, id FROM events NOT INDEXED
                 WHERE id > ?1 AND id <= ?2 AND src_ip IS NOT NULL",
                source_partition_table(partition)
            ))?
            .execute(range)?;
        transaction
            .prepare_cached(
                "UPDATE source_partitions SET entries = entries + ?2,
                    min_ts = min(coalesce(min_ts, ?3), ?3), max_ts = max(coalesce(max_ts, ?4), ?4)
                 WHERE partition = ?1",
            )?
            .execute(params![partition, entries, min_ts, max_ts])?;
    }
    transaction
        .prepare_cached("UPDATE source_index_progress SET indexed_through = ?1")?
        .execute([newest_id])?;
    Ok(())
}

/// The highest stored `seq` of each node a batch touches: the store's de-duplication.
///
/// A node's numbered events reach the store in `seq` order — one spool, read in order, and
/// a resend starts after the `acked_seq` the Core reported — so "at or below the node's
/// mark" is exactly "already stored". A mark per node replaced a unique (node, seq) index:
/// that index was one more B-tree entry per event, 11 % of an insert's instructions.
#[derive(Default)]
struct NodeSequences {
    /// node → (its mark, whether this batch moved it).
    marks: HashMap<u64, (i64, bool)>,
}

impl NodeSequences {
    /// Whether `seq` is new for the node; if so it becomes the node's mark.
    fn advance(
        &mut self,
        transaction: &rusqlite::Transaction<'_>,
        node_id: u64,
        seq: u64,
    ) -> Result<bool, StoreError> {
        let mark = match self.marks.entry(node_id) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                let stored: Option<i64> = transaction
                    .prepare_cached("SELECT last_seq FROM node_sequences WHERE node_id = ?1")?
                    .query_row([node_id_to_sql(node_id)], |row| row.get(0))
                    .optional()?;
                entry.insert((stored.unwrap_or(i64::MIN), false))
            }
        };
        let seq = seq as i64;
        if seq <= mark.0 {
            return Ok(false);
        }
        *mark = (seq, true);
        Ok(true)
    }

    /// Writes the marks this batch moved, in the batch's transaction.
    fn save(&self, transaction: &rusqlite::Transaction<'_>) -> Result<(), StoreError> {
        let mut upsert = transaction.prepare_cached(
            "INSERT INTO node_sequences (node_id, last_seq) VALUES (?1, ?2)
             ON CONFLICT (node_id) DO UPDATE SET last_seq = excluded.last_seq",
        )?;
        for (node_id, (last_seq, moved)) in &self.marks {
            if *moved {
                upsert.execute(params![node_id_to_sql(*node_id), last_seq])?;
            }
        }
        Ok(())
    }
}

/// One source partition as the query planner sees it.
pub(super) struct SourcePartition {
    partition: i64,
    min_ts: i64,
    max_ts: i64,
}

/// The WHERE clause of an event query, without its source address, and its values.
/// `events` and `ordered` prefix the columns of the events table and of the table whose
/// (ts, id) order the query follows (the same table, or a source partition).
fn event_conditions(query: &EventQuery, events: &str, ordered: &str) -> (String, Vec<SqlValue>) {
    let mut conditions: Vec<String> = Vec::new();
    let mut values: Vec<SqlValue> = Vec::new();
    if let Some(node_id) = query.node_id {
        conditions.push(format!("{events}node_id = ?"));
        values.push(SqlValue::Integer(node_id_to_sql(node_id)));
    }
    for (column, value) in [("pot_id", &query.pot_id), ("event_type", &query.event_type)] {
        if let Some(value) = value {
            conditions.push(format!("{events}{column} = ?"));
            values.push(SqlValue::Text(value.clone()));
        }
    }
    if let Some(since) = query.since {
        conditions.push(format!("{ordered}ts >= ?"));
        values.push(SqlValue::Integer(micros(since)));
    }
    if let Some(until) = query.until {
        conditions.push(format!("{ordered}ts <= ?"));
        values.push(SqlValue::Integer(micros(until)));
    }
    if let Some(after_id) = query.after_id {
        conditions.push(format!("{ordered}id > ?"));
        values.push(SqlValue::Integer(after_id));
    }
    if let Some(cursor) = query.cursor {
        conditions.push(format!("({ordered}ts, {ordered}id) < (?, ?)"));
        values.push(SqlValue::Integer(cursor.timestamp_micros));
        values.push(SqlValue::Integer(cursor.id));
    }
    let where_clause = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    (where_clause, values)
}

/// Events stored after `after_id`, oldest first by id. The events table's rowid is the
/// arrival order: the single writer commits batches one after another and SQLite numbers a
/// new row above every row there is, so a reader that saw id N has seen every id below it.
/// Filters (the source address too, on the table's own column) apply to the rows walked
/// in id order.
fn query_in_arrival_order(
    connection: &Connection,
    query: &EventQuery,
    limit: usize,
) -> Result<EventPage, StoreError> {
    // Where the page starts: after `after_id`, or after the event a cursor names.
    let position = query
        .after_id
        .unwrap_or(0)
        .max(query.cursor.map_or(0, |cursor| cursor.id));
    let filters = EventQuery {
        cursor: None,
        after_id: None,
        ..query.clone()
    };
    let (where_clause, mut values) = event_conditions(&filters, "", "");
    let mut conditions = vec!["id > ?".to_owned()];
    values.insert(0, SqlValue::Integer(position));
    if let Some(source_ip) = &query.source_ip {
        conditions.push("src_ip = ?".to_owned());
        values.insert(1, SqlValue::Text(source_ip.clone()));
    }
    if let Some(rest) = where_clause.strip_prefix("WHERE ") {
        conditions.push(rest.to_owned());
    }
    values.push(SqlValue::Integer(limit as i64 + 1));
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE {} ORDER BY id ASC LIMIT ?",
        conditions.join(" AND ")
    );
    let mut statement = connection.prepare_cached(&sql)?;
    let events = read_page_rows(
        statement.query(rusqlite::params_from_iter(values))?,
        limit,
        query.max_bytes,
        event_from_row,
    )?;
    Ok(cut_page(events, limit, query.max_bytes))
}

/// The page within `events` (a page and at most the first event beyond it), with a cursor
/// naming its last event when more follow: the same in either order.
fn cut_page(mut events: Vec<StoredEvent>, limit: usize, max_bytes: usize) -> EventPage {
    let page = page_length(&events, limit, max_bytes);
    let next_cursor = if events.len() > page {
        events.truncate(page);
        events.last().map(|last| EventCursor {
            timestamp_micros: micros(last.timestamp),
            id: last.id,
        })
    } else {
        None
    };
    EventPage {
        events,
        next_cursor,
    }
}

/// Newest-first events of one source address, merged from the events not yet indexed and
/// the source partitions. The partitions are read in order of their newest event; once
/// `wanted` events are held and the next partition's newest is older than all of them, no
/// later partition can change the page.
fn query_by_source(
    connection: &Connection,
    query: &EventQuery,
    source_ip: &str,
    limit: usize,
) -> Result<Vec<StoredEvent>, StoreError> {
    let wanted = limit + 1;
    let partitions = {
        let mut statement = connection.prepare_cached(
            "SELECT partition, min_ts, max_ts FROM source_partitions
             WHERE entries > 0 ORDER BY max_ts DESC",
        )?;
        collect_rows(&mut statement, [], |row| {
            Ok(SourcePartition {
                partition: row.get(0)?,
                min_ts: row.get(1)?,
                max_ts: row.get(2)?,
            })
        })?
    };
    let since = query.since.map(micros);
    let upper_ts = match (query.until.map(micros), query.cursor) {
        (Some(until), Some(cursor)) => Some(until.min(cursor.timestamp_micros)),
        (until, cursor) => until.or(cursor.map(|cursor| cursor.timestamp_micros)),
    };
    let (where_clause, mut values) = event_conditions(query, "events.", "source.");
    let source_condition = if where_clause.is_empty() {
        "WHERE source.src_ip = ?".to_string()
    } else {
        format!("{where_clause} AND source.src_ip = ?")
    };
    values.push(SqlValue::Text(source_ip.to_string()));
    values.push(SqlValue::Integer(wanted as i64));
    let mut events = query_unindexed_sources(connection, query, source_ip, limit)?;
    for partition in partitions {
        if since.is_some_and(|since| partition.max_ts < since)
            || upper_ts.is_some_and(|upper| partition.min_ts > upper)
        {
            continue;
        }
        // The page and the first event beyond it are known and newer than anything in
        // this partition (and the older ones).
        if events.len() > page_length(&events, limit, query.max_bytes)
            && events
                .last()
                .is_some_and(|oldest| micros(oldest.timestamp) > partition.max_ts)
        {
            break;
        }
        // CROSS JOIN keeps the partition as the outer loop: its primary key gives the
        // order, the events table is read by id.
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM {table} AS source CROSS JOIN events ON events.id = source.id
             {source_condition} ORDER BY source.ts DESC, source.id DESC LIMIT ?",
            table = source_partition_table(partition.partition)
        );
        let mut statement = connection.prepare_cached(&sql)?;
        events.extend(read_page_rows(
            statement.query(rusqlite::params_from_iter(values.iter()))?,
            limit,
            query.max_bytes,
            event_from_row,
        )?);
        // Each partition gave its own page plus one; merged, the first page (plus one) of
        // the merge is among them: an event a partition did not read is older than the one
        // beyond its own page, which cannot be on the merged page either.
        events.sort_unstable_by_key(|event| std::cmp::Reverse((event.timestamp, event.id)));
        events.truncate(page_length(&events, limit, query.max_bytes) + 1);
    }
    Ok(events)
}

/// The newest events of one source address among those the source index does not hold yet
/// (at most `source_index_lag_events` rows, read by rowid).
fn query_unindexed_sources(
    connection: &Connection,
    query: &EventQuery,
    source_ip: &str,
    limit: usize,
) -> Result<Vec<StoredEvent>, StoreError> {
    let wanted = limit + 1;
    let indexed_through: i64 = connection
        .prepare_cached("SELECT indexed_through FROM source_index_progress")?
        .query_row([], |row| row.get(0))?;
    let (where_clause, conditions) = event_conditions(query, "events.", "events.");
    let more_conditions = where_clause.replacen("WHERE", "AND", 1);
    let mut values = vec![
        SqlValue::Integer(indexed_through),
        SqlValue::Text(source_ip.to_string()),
    ];
    values.extend(conditions);
    values.push(SqlValue::Integer(wanted as i64));
    // NOT INDEXED: the rowid range is the way in, never an index over all events.
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events NOT INDEXED
         WHERE events.id > ? AND events.src_ip = ? {more_conditions}
         ORDER BY events.ts DESC, events.id DESC LIMIT ?"
    );
    let mut statement = connection.prepare_cached(&sql)?;
    let events = read_page_rows(
        statement.query(rusqlite::params_from_iter(values))?,
        limit,
        query.max_bytes,
        event_from_row,
    )?;
    Ok(events)
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn insert_events(&self, batch: Arc<[NewEvent]>) -> Result<u64, StoreError> {
        let partition_events = self.source_partition_events;
        let lag_events = self.source_index_lag_events;
        self.with_writer(move |connection| {
            let transaction = write_transaction(connection)?;
            let mut sequences = NodeSequences::default();
            let mut inserted = 0u64;
            let mut newest_id = None;
            {
                let mut insert = transaction.prepare_cached(
                    "INSERT INTO events (node_id, pot_id, pot_type, event_type, ts, received_at, src_ip, data, seq)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )?;
                for event in batch.iter() {
                    if let Some(seq) = event.seq {
                        if !sequences.advance(&transaction, event.node_id, seq)? {
                            continue;
                        }
                    }
                    insert.execute(params![
                        node_id_to_sql(event.node_id),
                        event.pot_id,
                        event.pot_type,
                        event.event_type,
                        micros(event.timestamp),
                        micros(event.received_at),
                        event.source_ip,
                        event.data_json,
                        event.seq.map(|seq| seq as i64),
                    ])?;
                    inserted += 1;
                    newest_id = Some(transaction.last_insert_rowid());
                }
            }
            sequences.save(&transaction)?;
            if let Some(newest_id) = newest_id {
                index_sources_if_lagging(&transaction, newest_id, partition_events, lag_events)?;
            }
            transaction.commit()?;
            Ok(inserted)
        })
        .await
    }

    async fn last_event_seq(&self, node_id: u64) -> Result<Option<u64>, StoreError> {
        self.with_reader(move |connection| {
            let seq: Option<i64> = connection
                .query_row(
                    "SELECT last_seq FROM node_sequences WHERE node_id = ?1",
                    [node_id_to_sql(node_id)],
                    |row| row.get(0),
                )
                .optional()?;
            Ok(seq.map(|seq| seq as u64))
        })
        .await
    }

    async fn query_events(&self, query: EventQuery) -> Result<EventPage, StoreError> {
        self.event_readers
            .run(move |connection| {
                let limit = query.limit.clamp(1, MAX_EVENT_PAGE) as usize;
                // One row more than the page tells whether another page exists.
                let wanted = limit + 1;
                if query.order == EventOrder::Arrival {
                    return query_in_arrival_order(connection, &query, limit);
                }
                let events = match &query.source_ip {
                    Some(source_ip) => {
                        // One read transaction: the partition list and every partition read
                        // come from the same snapshot, whatever the writer commits meanwhile.
                        let snapshot = connection.transaction()?;
                        let events = query_by_source(&snapshot, &query, source_ip, limit)?;
                        snapshot.commit()?;
                        events
                    }
                    None => {
                        let (where_clause, mut values) = event_conditions(&query, "", "");
                        values.push(SqlValue::Integer(wanted as i64));
                        let sql = format!(
                            "SELECT {EVENT_COLUMNS} FROM events {where_clause}
                         ORDER BY ts DESC, id DESC LIMIT ?"
                        );
                        let mut statement = connection.prepare_cached(&sql)?;
                        let events = read_page_rows(
                            statement.query(rusqlite::params_from_iter(values))?,
                            limit,
                            query.max_bytes,
                            event_from_row,
                        )?;
                        events
                    }
                };
                Ok(cut_page(events, limit, query.max_bytes))
            })
            .await
    }
}
