//! [`Tx`] over an SQLite connection (rusqlite): the statements of `sql` as SQLite runs them.
//! The caller owns the transaction (`BEGIN IMMEDIATE`, savepoints, commit); this only runs
//! statements inside it.

use rusqlite::types::{Value as SqliteValue, ValueRef};
use rusqlite::{Connection, ErrorCode};

use crate::sql::{Dialect, Row, SqlError, SqlErrorKind, Tx, Value};

/// The statements of a transaction open on `conn`.
pub struct SqliteTx<'a>(pub &'a Connection);

impl Tx for SqliteTx<'_> {
    fn execute(&mut self, sql: &str, args: &[Value]) -> Result<u64, SqlError> {
        let mut stmt = self.0.prepare_cached(sql).map_err(sql_error)?;
        let changed = stmt.execute(rusqlite::params_from_iter(args.iter().map(to_sqlite)));
        Ok(changed.map_err(sql_error)? as u64)
    }

    fn query(&mut self, sql: &str, args: &[Value]) -> Result<Vec<Row>, SqlError> {
        let mut stmt = self.0.prepare_cached(sql).map_err(sql_error)?;
        let columns = stmt.column_count();
        let mut rows = stmt
            .query(rusqlite::params_from_iter(args.iter().map(to_sqlite)))
            .map_err(sql_error)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(sql_error)? {
            let mut values = Vec::with_capacity(columns);
            for i in 0..columns {
                values.push(from_sqlite(row.get_ref(i).map_err(sql_error)?)?);
            }
            out.push(Row(values));
        }
        Ok(out)
    }

    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }
}

fn to_sqlite(v: &Value) -> SqliteValue {
    match v {
        Value::Null => SqliteValue::Null,
        Value::Int(i) => SqliteValue::Integer(*i),
        Value::Text(s) => SqliteValue::Text(s.clone()),
        Value::Bytes(b) => SqliteValue::Blob(b.clone()),
    }
}

fn from_sqlite(v: ValueRef<'_>) -> Result<Value, SqlError> {
    Ok(match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Int(i),
        ValueRef::Text(t) => Value::Text(
            String::from_utf8(t.to_vec()).map_err(|_| SqlError::other("text column not UTF-8"))?,
        ),
        ValueRef::Blob(b) => Value::Bytes(b.to_vec()),
        ValueRef::Real(_) => {
            return Err(SqlError { kind: SqlErrorKind::Type, detail: "a REAL column".into() });
        }
    })
}

/// A rusqlite error as a [`SqlError`] of the kind a caller acts on.
pub fn sql_error(e: rusqlite::Error) -> SqlError {
    let kind = match e.sqlite_error() {
        Some(f) if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE => {
            SqlErrorKind::Unique
        }
        Some(f) if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
            SqlErrorKind::Unique
        }
        Some(f) if matches!(f.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            SqlErrorKind::Conflict
        }
        Some(f) if matches!(f.code, ErrorCode::CannotOpen | ErrorCode::SystemIoFailure) => {
            SqlErrorKind::Unavailable
        }
        _ => match e {
            rusqlite::Error::QueryReturnedNoRows => SqlErrorKind::NoRow,
            _ => SqlErrorKind::Other,
        },
    };
    SqlError { kind, detail: e.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args;

    #[test]
    fn runs_statements_and_reports_unique_violations() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (k TEXT PRIMARY KEY, n INTEGER, b BLOB)").unwrap();
        let mut tx = SqliteTx(&conn);
        assert_eq!(
            tx.execute("INSERT INTO t VALUES (?1, ?2, ?3)", args!["a", 1i64, &[1u8, 2][..]])
                .unwrap(),
            1
        );
        let err = tx.execute("INSERT INTO t VALUES (?1, ?2, NULL)", args!["a", 2i64]).unwrap_err();
        assert_eq!(err.kind, SqlErrorKind::Unique);
        let n = tx.execute(
            "INSERT INTO t VALUES (?1, ?2, NULL) ON CONFLICT DO NOTHING",
            args!["a", 2i64],
        );
        assert_eq!(n.unwrap(), 0);
        let row = tx.query_one("SELECT n, b FROM t WHERE k = ?1", args!["a"]).unwrap();
        assert_eq!((row.get::<i64>(0).unwrap(), row.get::<Vec<u8>>(1).unwrap()), (1, vec![1, 2]));
        assert_eq!(tx.query_opt("SELECT n FROM t WHERE k = ?1", args!["z"]).unwrap(), None);
        assert_eq!(
            tx.query_one("SELECT n FROM t WHERE k = ?1", args!["z"]).unwrap_err().kind,
            SqlErrorKind::NoRow
        );
    }
}
