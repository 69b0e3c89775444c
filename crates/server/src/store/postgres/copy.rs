//! `zonecert db copy`'s target side: the copied tables' columns as PostgreSQL has them,
//! and the rows written with `COPY ... FROM STDIN BINARY` in one transaction, read back
//! and checksummed before it commits.

use super::PgStore;
use crate::store::StoreError;
use crate::store::copy::{Checksum, Column, Kind, SEQUENCES, TABLES, TableCopy, TableRows, Value};
use bytes::BytesMut;
use std::collections::BTreeMap;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

/// The table that records the schema's versions: written by the migrations, not copied.
const VERSIONS: &str = "zonecert_schema_versions";

impl PgStore {
    /// The columns of each copied table, in [`TABLES`]' order; an error when the
    /// database has a table the copy does not know or lacks one it does.
    pub(in crate::store) async fn copy_columns(
        &self,
    ) -> Result<Vec<(String, Vec<Column>)>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT table_name::text, column_name::text, data_type::text \
                 FROM information_schema.columns WHERE table_schema = current_schema() \
                 ORDER BY table_name, ordinal_position",
                &[],
            )
            .await?;
        let mut by_table: BTreeMap<String, Vec<Column>> = BTreeMap::new();
        for row in &rows {
            let (table, name, data_type): (String, String, String) =
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            if table == VERSIONS {
                continue;
            }
            if !TABLES.contains(&table.as_str()) {
                return Err(StoreError::Unsupported(format!(
                    "db copy does not know the table {table} of the target database"
                )));
            }
            let kind = Kind::from_pg(&table, &name, &data_type)?;
            by_table
                .entry(table)
                .or_default()
                .push(Column { name, kind });
        }
        TABLES
            .iter()
            .map(|table| {
                by_table
                    .remove(*table)
                    .map(|columns| ((*table).to_owned(), columns))
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!("the target database has no {table} table"))
                    })
            })
            .collect()
    }

    /// Writes every table's rows, moves the sequences past them, and reads each table
    /// back: its count and checksum must be `expected`'s, or nothing is committed.
    pub(in crate::store) async fn copy_in(
        &self,
        columns: &[(String, Vec<Column>)],
        tables: Vec<TableRows>,
        expected: &[TableCopy],
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        for ((table, cols), (_, rows)) in columns.iter().zip(tables) {
            let names: Vec<String> = cols.iter().map(|c| format!("\"{}\"", c.name)).collect();
            let sink = tx
                .copy_in(&format!(
                    "COPY \"{table}\" ({}) FROM STDIN BINARY",
                    names.join(", ")
                ))
                .await?;
            let types: Vec<Type> = cols.iter().map(|c| pg_type(c.kind)).collect();
            let writer = BinaryCopyInWriter::new(sink, &types);
            let mut writer = std::pin::pin!(writer);
            for row in &rows {
                let cells: Vec<Cell<'_>> = row
                    .iter()
                    .zip(cols)
                    .map(|(value, c)| Cell(value, c.kind))
                    .collect();
                let refs: Vec<&(dyn ToSql + Sync)> =
                    cells.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
                writer.as_mut().write(&refs).await?;
            }
            writer.finish().await?;
        }
        for (table, column) in SEQUENCES {
            tx.execute(
                &format!(
                    "SELECT setval(pg_get_serial_sequence('{table}', '{column}'), \
                     COALESCE(MAX({column}), 0) + 1, false) FROM {table}"
                ),
                &[],
            )
            .await?;
        }
        for ((table, cols), want) in columns.iter().zip(expected) {
            let names: Vec<String> = cols.iter().map(|c| format!("\"{}\"", c.name)).collect();
            let rows = tx
                .query(
                    &format!("SELECT {} FROM \"{table}\"", names.join(", ")),
                    &[],
                )
                .await?;
            let mut sum = Checksum::default();
            for row in &rows {
                let mut values = Vec::with_capacity(cols.len());
                for (i, c) in cols.iter().enumerate() {
                    let value = match c.kind {
                        Kind::Int8 => row.try_get::<_, Option<i64>>(i)?.map(Value::Int),
                        Kind::Int4 => row
                            .try_get::<_, Option<i32>>(i)?
                            .map(|n| Value::Int(i64::from(n))),
                        Kind::Bool => row.try_get::<_, Option<bool>>(i)?.map(Value::Bool),
                        Kind::Text => row.try_get::<_, Option<String>>(i)?.map(Value::Text),
                        Kind::Bytes => row.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Bytes),
                    };
                    values.push(value.unwrap_or(Value::Null));
                }
                sum.add(&values);
            }
            let (rows, checksum) = (sum.count(), sum.finish());
            if rows != want.rows || checksum != want.checksum {
                return Err(StoreError::Corrupt(format!(
                    "db copy: {table} in PostgreSQL ({rows} rows, {checksum}) differs from \
                     SQLite ({} rows, {}); nothing was committed",
                    want.rows, want.checksum
                )));
            }
        }
        tx.commit().await?;
        // Statistics for the planner at once, as PostgreSQL advises after a bulk load:
        // autovacuum would gather them only a minute or more later, and until then a
        // zone's view is planned as a scan of every pack's hosts (milliseconds instead of
        // microseconds, for every zone a node reads first).
        let names: Vec<&str> = columns.iter().map(|(table, _)| table.as_str()).collect();
        client
            .batch_execute(&format!("ANALYZE {}", names.join(", ")))
            .await?;
        Ok(())
    }
}

fn pg_type(kind: Kind) -> Type {
    match kind {
        Kind::Int8 => Type::INT8,
        Kind::Int4 => Type::INT4,
        Kind::Bool => Type::BOOL,
        Kind::Text => Type::TEXT,
        Kind::Bytes => Type::BYTEA,
    }
}

/// A value written as its column's type.
#[derive(Debug)]
struct Cell<'a>(&'a Value, Kind);

impl ToSql for Cell<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match (self.0, self.1) {
            (Value::Null, _) => Ok(IsNull::Yes),
            (Value::Int(n), Kind::Int4) => i32::try_from(*n)?.to_sql(ty, out),
            (Value::Int(n), _) => n.to_sql(ty, out),
            (Value::Bool(b), _) => b.to_sql(ty, out),
            (Value::Text(s), _) => s.as_str().to_sql(ty, out),
            (Value::Bytes(b), _) => b.as_slice().to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}
