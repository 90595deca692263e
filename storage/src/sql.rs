//! The SQL a role's store speaks to either backend (DESIGN.md §5, issue 15): one statement
//! text for SQLite and PostgreSQL, run through [`Tx`] inside a transaction of the backend.
//!
//! A statement is written once, in the SQL both backends (and PostgreSQL-compatible
//! distributed SQL: CockroachDB, YugabyteDB) understand: numbered placeholders `?1`, `?2`, …
//! (rewritten to `$1`, `$2`, … for PostgreSQL), `INSERT … ON CONFLICT … DO NOTHING/UPDATE`
//! rather than `INSERT OR IGNORE/REPLACE`, `GREATEST`-free arithmetic, `CAST(… AS BIGINT)`,
//! and integers, text and bytes only (booleans are integers 0/1). Values cross as [`Value`]:
//! what a statement binds and what a row holds, whatever the backend's own types.

use std::borrow::Cow;

/// One value bound to a placeholder or read from a column.
#[derive(Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
}

/// Byte values are not printed: a store holds sealed keys and credential hashes.
impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Null => f.write_str("Null"),
            Self::Int(v) => write!(f, "Int({v})"),
            Self::Text(v) => write!(f, "Text({} chars)", v.chars().count()),
            Self::Bytes(v) => write!(f, "Bytes({} bytes)", v.len()),
        }
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}
impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Self::Int(i64::from(v))
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Self::Int(i64::from(v))
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Self::Text(v.to_owned())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Self::Text(v)
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Self::Text(v.clone())
    }
}
impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Self {
        Self::Bytes(v.to_vec())
    }
}
impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Self::Bytes(v)
    }
}
impl From<&Vec<u8>> for Value {
    fn from(v: &Vec<u8>) -> Self {
        Self::Bytes(v.clone())
    }
}
impl<const N: usize> From<&[u8; N]> for Value {
    fn from(v: &[u8; N]) -> Self {
        Self::Bytes(v.to_vec())
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Self::Null, Into::into)
    }
}

/// The values of a statement's placeholders, in order: `args![a, b, c]`.
#[macro_export]
macro_rules! args {
    ($($v:expr),* $(,)?) => { &[$($crate::sql::Value::from($v)),*][..] };
}

/// A column's value as a Rust type.
pub trait FromValue: Sized {
    fn from_value(v: &Value) -> Option<Self>;
}

impl FromValue for i64 {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
}
impl FromValue for bool {
    fn from_value(v: &Value) -> Option<Self> {
        i64::from_value(v).map(|i| i != 0)
    }
}
impl FromValue for String {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Text(s) => Some(s.clone()),
            _ => None,
        }
    }
}
impl FromValue for Vec<u8> {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Bytes(b) => Some(b.clone()),
            _ => None,
        }
    }
}
impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Null => Some(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// One result row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row(pub Vec<Value>);

impl Row {
    /// Column `i` as `T`; a missing column or one of another type is [`SqlError`] `Type`.
    pub fn get<T: FromValue>(&self, i: usize) -> Result<T, SqlError> {
        self.0.get(i).and_then(T::from_value).ok_or_else(|| SqlError {
            kind: SqlErrorKind::Type,
            detail: format!("column {i}: {:?} is not a {}", self.0.get(i), short_type::<T>()),
        })
    }
}

fn short_type<T>() -> &'static str {
    let name = std::any::type_name::<T>();
    name.rsplit("::").next().unwrap_or(name)
}

/// Which backend a [`Tx`] runs on, for the few statements that differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// The statements of one transaction.
pub trait Tx {
    /// Runs a statement; returns the rows it changed.
    fn execute(&mut self, sql: &str, args: &[Value]) -> Result<u64, SqlError>;
    /// Runs a query; returns every row.
    fn query(&mut self, sql: &str, args: &[Value]) -> Result<Vec<Row>, SqlError>;
    fn dialect(&self) -> Dialect;

    /// The first row of a query, if any.
    fn query_opt(&mut self, sql: &str, args: &[Value]) -> Result<Option<Row>, SqlError> {
        Ok(self.query(sql, args)?.into_iter().next())
    }
    /// The one row a query must return.
    fn query_one(&mut self, sql: &str, args: &[Value]) -> Result<Row, SqlError> {
        self.query_opt(sql, args)?.ok_or_else(|| SqlError {
            kind: SqlErrorKind::NoRow,
            detail: "the query returned no row".into(),
        })
    }
}

/// What went wrong, as far as a caller acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlErrorKind {
    /// A `UNIQUE` or primary-key constraint refused the row.
    Unique,
    /// Another transaction conflicted (serialization failure, deadlock): running the
    /// transaction again may succeed, and the backends' `transaction` does so.
    Conflict,
    /// The database could not be reached or the connection broke.
    Unavailable,
    /// A column did not hold the type asked for.
    Type,
    /// A query that had to return a row returned none.
    NoRow,
    Other,
}

/// A failed statement. The detail is the backend's message: it names tables and
/// constraints, never bound values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct SqlError {
    pub kind: SqlErrorKind,
    pub detail: String,
}

impl SqlError {
    pub fn other(detail: impl Into<String>) -> Self {
        Self { kind: SqlErrorKind::Other, detail: detail.into() }
    }
}

/// `sql` with `?N` placeholders as PostgreSQL's `$N`; string literals and quoted
/// identifiers are left alone.
pub fn to_postgres(sql: &str) -> Cow<'_, str> {
    if !sql.contains('?') {
        return Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len());
    let mut quote: Option<char> = None;
    for c in sql.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '?') => {
                out.push('$');
                continue;
            }
            _ => {}
        }
        out.push(c);
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_dollars_outside_literals() {
        assert_eq!(
            to_postgres("SELECT a FROM t WHERE b = ?1 AND c = '?2' AND \"d?\" = ?3"),
            "SELECT a FROM t WHERE b = $1 AND c = '?2' AND \"d?\" = $3"
        );
        assert!(matches!(to_postgres("SELECT 1"), Cow::Borrowed(_)));
    }

    #[test]
    fn rows_convert_and_refuse_other_types() {
        let row = Row(vec![Value::Int(7), Value::Null, Value::Text("x".into())]);
        assert_eq!(row.get::<i64>(0).unwrap(), 7);
        assert_eq!(row.get::<Option<Vec<u8>>>(1).unwrap(), None);
        assert!(row.get::<bool>(0).unwrap());
        let err = row.get::<Vec<u8>>(2).unwrap_err();
        assert_eq!(err.kind, SqlErrorKind::Type);
        assert!(row.get::<i64>(9).is_err());
    }

    #[test]
    fn bytes_are_not_printed() {
        let v = Value::from(&b"secret"[..]);
        assert_eq!(format!("{v:?}"), "Bytes(6 bytes)");
        assert_eq!(args![1i64, "a", None::<i64>].len(), 3);
    }
}
