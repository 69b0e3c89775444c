//! `zonecert db copy`: a single-node installation's SQLite database moved into an empty
//! PostgreSQL database, every table row for row, in one PostgreSQL transaction, each
//! table's rows counted and checksummed on both sides before it commits.
//!
//! What is copied is what the PostgreSQL schema holds (its tables and columns, read from
//! the target): the copy refuses to run when the target has a table it does not know,
//! so a table added later cannot be forgotten silently. SQLite's `meta` (its schema
//! version, its cache counter and the test controls, which PostgreSQL does not offer)
//! stays behind.

use super::{PgStore, SqliteStore, StoreError};
use sha2::{Digest, Sha256};

/// The tables copied, parents before children (foreign keys hold at every row).
pub(super) const TABLES: &[&str] = &[
    "zones",
    "users",
    "tokens",
    "packs",
    "pack_hosts",
    "certificate_keys",
    "webhook_endpoints",
    "webhook_events",
    "webhook_deliveries",
    "revocations",
    "acme_accounts",
];

/// Tables whose key is a generated sequence, moved past the copied rows afterwards.
pub(super) const SEQUENCES: &[(&str, &str)] = &[
    ("packs", "seq"),
    ("webhook_events", "seq"),
    ("revocations", "id"),
];

/// A column's type as PostgreSQL has it (SQLite keeps booleans as integers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// `BIGINT`.
    Int8,
    /// `INTEGER`.
    Int4,
    /// `BOOLEAN`.
    Bool,
    /// `TEXT`.
    Text,
    /// `BYTEA`.
    Bytes,
}

impl Kind {
    /// The kind of a PostgreSQL `information_schema.columns.data_type`.
    pub(super) fn from_pg(table: &str, column: &str, data_type: &str) -> Result<Kind, StoreError> {
        Ok(match data_type {
            "bigint" => Kind::Int8,
            "integer" => Kind::Int4,
            "boolean" => Kind::Bool,
            "text" => Kind::Text,
            "bytea" => Kind::Bytes,
            other => {
                return Err(StoreError::Unsupported(format!(
                    "db copy: {table}.{column} is a PostgreSQL {other}, which it cannot copy"
                )));
            }
        })
    }
}

/// A column of a copied table.
#[derive(Debug, Clone)]
pub(super) struct Column {
    pub(super) name: String,
    pub(super) kind: Kind,
}

/// One value, as both sides agree on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Value {
    Null,
    Int(i64),
    Bool(bool),
    Text(String),
    Bytes(Vec<u8>),
}

/// A table's name and its rows.
pub(super) type TableRows = (String, Vec<Vec<Value>>);

/// What was copied of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCopy {
    /// The table.
    pub table: String,
    /// Its rows (the same number read from SQLite and found in PostgreSQL).
    pub rows: u64,
    /// SHA-256 (hex) over its rows' digests in sorted order: the same on both sides,
    /// whatever order each returns the rows in.
    pub checksum: String,
}

/// Digests rows as [`TableCopy::checksum`] does.
#[derive(Debug, Default)]
pub(super) struct Checksum {
    rows: Vec<[u8; 32]>,
}

impl Checksum {
    pub(super) fn add(&mut self, row: &[Value]) {
        let mut h = Sha256::new();
        for v in row {
            match v {
                Value::Null => h.update([0u8]),
                Value::Int(n) => {
                    h.update([1u8]);
                    h.update(n.to_be_bytes());
                }
                Value::Bool(b) => h.update([2u8, u8::from(*b)]),
                Value::Text(s) => {
                    h.update([3u8]);
                    h.update((s.len() as u64).to_be_bytes());
                    h.update(s.as_bytes());
                }
                Value::Bytes(b) => {
                    h.update([4u8]);
                    h.update((b.len() as u64).to_be_bytes());
                    h.update(b);
                }
            }
        }
        self.rows.push(h.finalize().into());
    }

    pub(super) fn count(&self) -> u64 {
        self.rows.len() as u64
    }

    pub(super) fn finish(mut self) -> String {
        self.rows.sort_unstable();
        let mut h = Sha256::new();
        for row in &self.rows {
            h.update(row);
        }
        h.finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    }
}

/// Copies the SQLite database `source` into the PostgreSQL database `target`, which must
/// hold no zonecert data (and no table of its own). Either every table is copied and
/// matches (counts and checksums read back inside the transaction), or nothing is.
pub async fn copy_sqlite_to_postgres(
    source: &SqliteStore,
    target: &PgStore,
) -> Result<Vec<TableCopy>, StoreError> {
    let columns = target.copy_columns().await?;
    // One snapshot of the source: a server still writing to it cannot tear the copy.
    let tables = source.copy_rows(&columns)?;
    let mut expected = Vec::with_capacity(tables.len());
    for (table, rows) in &tables {
        let mut sum = Checksum::default();
        for row in rows {
            sum.add(row);
        }
        expected.push(TableCopy {
            table: table.clone(),
            rows: sum.count(),
            checksum: sum.finish(),
        });
    }
    target.copy_in(&columns, tables, &expected).await?;
    Ok(expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_ignores_row_order_and_sees_every_value() {
        let rows = [
            vec![Value::Text("a".into()), Value::Int(1), Value::Null],
            vec![
                Value::Text("b".into()),
                Value::Bool(true),
                Value::Bytes(vec![0]),
            ],
        ];
        let sum = |rows: &[Vec<Value>]| {
            let mut s = Checksum::default();
            for r in rows {
                s.add(r);
            }
            s.finish()
        };
        let forward = sum(&rows);
        let mut backward = rows.to_vec();
        backward.reverse();
        assert_eq!(forward, sum(&backward));
        // A value moved between columns, a type changed, a row lost: all differ.
        let mut moved = rows.to_vec();
        moved[0] = vec![Value::Text("a".into()), Value::Null, Value::Int(1)];
        assert_ne!(forward, sum(&moved));
        let mut typed = rows.to_vec();
        typed[1][1] = Value::Int(1);
        assert_ne!(forward, sum(&typed));
        assert_ne!(forward, sum(&rows[..1]));
        // Text and bytes with the same content differ; lengths keep values apart.
        assert_ne!(
            sum(&[vec![Value::Text("ab".into()), Value::Text("c".into())]]),
            sum(&[vec![Value::Text("a".into()), Value::Text("bc".into())]])
        );
    }
}
