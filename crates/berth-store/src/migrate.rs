//! Carries a state database of the per-type schema (one table per kind, before revisions)
//! over to the key layout: the records it holds, as the keys and values they become.

use berth_model::Instance;
use rusqlite::Connection;

use crate::instance::{split, InstanceDesired, InstanceStatus};
use crate::keys;
use crate::records::{encode, Record};
use crate::{StoreError, StoreResult};

/// The tables of the old schema, dropped once their rows are carried over.
pub(crate) const LEGACY_TABLES: [&str; 5] = ["instances", "images", "networks", "volumes", "meta"];

pub(crate) fn has_legacy_tables(conn: &Connection) -> StoreResult<bool> {
    let count: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('instances', 'images', 'networks', 'volumes', 'meta')",
        [],
        |row| row.get(0),
    )?;
    Ok(count > 0)
}

fn table_exists(conn: &Connection, table: &str) -> StoreResult<bool> {
    let count: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [table],
        |row| row.get(0),
    )?;
    Ok(count > 0)
}

fn rows(conn: &Connection, sql: &str) -> StoreResult<Vec<(String, String)>> {
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// The keys and values the old tables' rows become.
pub(crate) fn legacy_records(conn: &Connection) -> StoreResult<Vec<(String, Vec<u8>)>> {
    let mut records = Vec::new();
    if table_exists(conn, "instances")? {
        for (id, doc) in rows(conn, "SELECT id, doc FROM instances")? {
            let instance: Instance = serde_json::from_str(&doc)
                .map_err(|e| StoreError::Corrupt(format!("instance {id} in the old schema: {e}")))?;
            let (desired, status) = split(&instance);
            records.push((InstanceDesired::key_for(&desired.id)?, encode(&desired)?));
            records.push((InstanceStatus::key_for(&status.id)?, encode(&status)?));
            if let Some(name_key) = desired.name_key()? {
                records.push((name_key, desired.id.clone().into_bytes()));
            }
        }
    }
    for (table, prefix, what) in [
        ("images", keys::IMAGES, "image"),
        ("networks", keys::NETWORKS, "network"),
        ("volumes", keys::VOLUMES, "volume"),
    ] {
        if table_exists(conn, table)? {
            let key_column = if table == "images" { "id" } else { "name" };
            for (id, doc) in rows(conn, &format!("SELECT {key_column}, doc FROM {table}"))? {
                records.push((format!("{prefix}{}", keys::component(what, &id)?), doc.into_bytes()));
            }
        }
    }
    if table_exists(conn, "meta")? {
        for (key, value) in rows(conn, "SELECT key, value FROM meta")? {
            records.push((
                format!("{}{}", keys::META, keys::component("meta key", &key)?),
                value.into_bytes(),
            ));
        }
    }
    Ok(records)
}
