//! Nodes and pots in SQLite: registrations, states, and the pots each node reported.

use super::*;

#[async_trait]
impl FleetStore for SqliteStore {
    async fn register_node(&self, registration: NodeRegistrationRecord) -> Result<(), StoreError> {
        self.with_writer(move |connection| {
            let at = micros(registration.at);
            connection.execute(
                "INSERT INTO nodes (node_id, name, address, port, kind, remote_address, state, connected, session_id, first_seen, last_seen)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?9, ?8, ?8)
                 ON CONFLICT (node_id) DO UPDATE SET
                    name = excluded.name, address = excluded.address, port = excluded.port,
                    kind = excluded.kind, remote_address = excluded.remote_address,
                    state = excluded.state, connected = 1, session_id = excluded.session_id,
                    last_seen = excluded.last_seen",
                params![
                    node_id_to_sql(registration.node_id),
                    registration.name,
                    registration.address,
                    registration.port,
                    registration.kind.as_str(),
                    registration.remote_address,
                    NodeState::Connected.as_str(),
                    at,
                    registration.session_id as i64,
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn update_node_state(
        &self,
        node_id: u64,
        state: NodeState,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.with_writer(move |connection| {
            connection.execute(
                "UPDATE nodes SET state = ?2, last_seen = MAX(last_seen, ?3) WHERE node_id = ?1",
                params![node_id_to_sql(node_id), state.as_str(), micros(at)],
            )?;
            Ok(())
        })
        .await
    }

    async fn touch_node(&self, node_id: u64, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.with_writer(move |connection| {
            connection.execute(
                "UPDATE nodes SET last_seen = MAX(last_seen, ?2) WHERE node_id = ?1",
                params![node_id_to_sql(node_id), micros(at)],
            )?;
            Ok(())
        })
        .await
    }

    async fn disconnect_node(
        &self,
        node_id: u64,
        session_id: u64,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.with_writer(move |connection| {
            connection.execute(
                "UPDATE nodes SET connected = 0, last_seen = MAX(last_seen, ?2)
                 WHERE node_id = ?1 AND session_id = ?3",
                params![node_id_to_sql(node_id), micros(at), session_id as i64],
            )?;
            Ok(())
        })
        .await
    }

    async fn disconnect_all_nodes(&self) -> Result<(), StoreError> {
        self.with_writer(|connection| {
            connection.execute("UPDATE nodes SET connected = 0 WHERE connected = 1", [])?;
            Ok(())
        })
        .await
    }

    async fn upsert_pot(&self, pot: PotRecord) -> Result<(), StoreError> {
        self.with_writer(move |connection| {
            connection.execute(
                "INSERT INTO pots (node_id, pot_id, pot_type, state, message, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (node_id, pot_id) DO UPDATE SET
                    pot_type = excluded.pot_type, state = excluded.state,
                    message = excluded.message, updated_at = excluded.updated_at",
                params![
                    node_id_to_sql(pot.node_id),
                    pot.pot_id,
                    pot.pot_type,
                    pot.state.as_str(),
                    pot.message,
                    micros(pot.updated_at),
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn delete_pot(&self, node_id: u64, pot_id: String) -> Result<(), StoreError> {
        self.with_writer(move |connection| {
            connection.execute(
                "DELETE FROM pots WHERE node_id = ?1 AND pot_id = ?2",
                params![node_id_to_sql(node_id), pot_id],
            )?;
            Ok(())
        })
        .await
    }

    async fn list_nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        self.with_reader(|connection| {
            let mut statement = connection.prepare_cached(&format!(
                "SELECT {NODE_COLUMNS} FROM nodes ORDER BY node_id"
            ))?;
            collect_rows(&mut statement, [], node_from_row)
        })
        .await
    }

    async fn get_node(&self, node_id: u64) -> Result<Option<NodeRecord>, StoreError> {
        self.with_reader(move |connection| {
            let mut statement = connection.prepare_cached(&format!(
                "SELECT {NODE_COLUMNS} FROM nodes WHERE node_id = ?1"
            ))?;
            let row = statement
                .query_row([node_id_to_sql(node_id)], |row| Ok(node_from_row(row)))
                .optional()?;
            row.transpose()
        })
        .await
    }

    async fn list_pots(&self, node_id: Option<u64>) -> Result<Vec<PotRecord>, StoreError> {
        self.with_reader(move |connection| {
            let mut statement = connection.prepare_cached(
                "SELECT node_id, pot_id, pot_type, state, message, updated_at FROM pots
                 WHERE ?1 IS NULL OR node_id = ?1 ORDER BY node_id, pot_id",
            )?;
            collect_rows(&mut statement, [node_id.map(node_id_to_sql)], pot_from_row)
        })
        .await
    }
}
