//! `zonecert db copy`'s source side: every copied table's rows, in one snapshot.

use super::{SqliteStore, read_snapshot};
use crate::store::StoreError;
use crate::store::copy::{Column, Kind, TableRows, Value};

impl SqliteStore {
    /// The rows of each table (with the columns PostgreSQL has for it), all read in one
    /// read transaction.
    pub(in crate::store) fn copy_rows(
        &self,
        tables: &[(String, Vec<Column>)],
    ) -> Result<Vec<TableRows>, StoreError> {
        self.with_conn(|conn| {
            read_snapshot(conn, |conn| {
                tables
                    .iter()
                    .map(|(table, columns)| Ok((table.clone(), table_rows(conn, table, columns)?)))
                    .collect()
            })
        })
    }
}

fn table_rows(
    conn: &rusqlite::Connection,
    table: &str,
    columns: &[Column],
) -> Result<Vec<Vec<Value>>, StoreError> {
    let names: Vec<String> = columns.iter().map(|c| format!("\"{}\"", c.name)).collect();
    let sql = format!("SELECT {} FROM \"{table}\"", names.join(", "));
    let mut stmt = conn.prepare(&sql).map_err(|e| {
        StoreError::Unsupported(format!(
            "db copy: the SQLite database has no {table} with the columns PostgreSQL has ({e})"
        ))
    })?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let mut values = Vec::with_capacity(columns.len());
        for (i, column) in columns.iter().enumerate() {
            let value = match column.kind {
                Kind::Int8 | Kind::Int4 => row.get::<_, Option<i64>>(i)?.map(Value::Int),
                Kind::Bool => row.get::<_, Option<i64>>(i)?.map(|n| Value::Bool(n != 0)),
                Kind::Text => row.get::<_, Option<String>>(i)?.map(Value::Text),
                Kind::Bytes => row.get::<_, Option<Vec<u8>>>(i)?.map(Value::Bytes),
            };
            values.push(value.unwrap_or(Value::Null));
        }
        out.push(values);
    }
    Ok(out)
}
