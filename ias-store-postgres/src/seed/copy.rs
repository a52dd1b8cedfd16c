//! Rows in `COPY`'s text format, sent a table at a time.

use std::fmt::Write as _;

use ias_core::{Error, Result};
use sqlx::PgConnection;
use sqlx::postgres::PgDatabaseError;

use crate::error::from_sqlx;

/// One value of a `COPY` row.
pub(super) enum Field<'a> {
    Int(i64),
    Text(&'a str),
    Bytes(&'a [u8]),
    Null,
}

impl From<i64> for Field<'_> {
    fn from(value: i64) -> Self {
        Field::Int(value)
    }
}

impl From<Option<i64>> for Field<'_> {
    fn from(value: Option<i64>) -> Self {
        value.map_or(Field::Null, Field::Int)
    }
}

impl<'a> From<&'a str> for Field<'a> {
    fn from(value: &'a str) -> Self {
        Field::Text(value)
    }
}

/// Rows in `COPY`'s text format, sent a table at a time.
#[derive(Default)]
pub(super) struct CopyData {
    text: String,
}

impl CopyData {
    pub(super) fn row(&mut self, fields: &[Field<'_>]) {
        for (i, field) in fields.iter().enumerate() {
            if i > 0 {
                self.text.push('\t');
            }
            match field {
                Field::Int(n) => {
                    let _ = write!(self.text, "{n}");
                }
                Field::Text(text) => escape_into(&mut self.text, text),
                Field::Bytes(bytes) => {
                    // `\x` then hex: bytea's input form, its backslash escaped for COPY.
                    self.text.push_str("\\\\x");
                    for byte in *bytes {
                        let _ = write!(self.text, "{byte:02x}");
                    }
                }
                Field::Null => self.text.push_str("\\N"),
            }
        }
        self.text.push('\n');
    }

    /// Sends the rows gathered into `table`, then starts afresh.
    ///
    /// A unique violation becomes a conflict on `entity` and the value the
    /// server names.
    pub(super) async fn copy(
        &mut self,
        conn: &mut PgConnection,
        table: &str,
        columns: &str,
        entity: &'static str,
    ) -> Result<()> {
        if self.text.is_empty() {
            return Ok(());
        }
        let data = std::mem::take(&mut self.text).into_bytes();
        let statement = format!("COPY {table} ({columns}) FROM STDIN");
        let mut copy = conn.copy_in_raw(&statement).await.map_err(from_sqlx)?;
        copy.send(data).await.map_err(from_sqlx)?;
        copy.finish().await.map_err(|e| conflict_or(e, entity))?;
        Ok(())
    }
}

/// `text` with the characters `COPY`'s text format treats specially escaped.
fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

/// A unique violation as a conflict on `entity` and the value in the
/// server's detail (`Key (slug)=(acme-labs) already exists.`).
fn conflict_or(err: sqlx::Error, entity: &'static str) -> Error {
    let detail = err.as_database_error().and_then(|db| {
        db.is_unique_violation()
            .then(|| db.try_downcast_ref::<PgDatabaseError>())
            .flatten()
            .and_then(PgDatabaseError::detail)
            .map(str::to_owned)
    });
    let Some(detail) = detail else {
        return from_sqlx(err);
    };
    let value = detail
        .split_once(")=(")
        .and_then(|(_, rest)| rest.rsplit_once(')'))
        .map_or(detail.as_str(), |(value, _)| value);
    Error::conflict(entity, value, "already exists")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_use_copy_text_format() {
        let mut data = CopyData::default();
        data.row(&[
            7_i64.into(),
            "a\tb\\c\nd".into(),
            None::<i64>.into(),
            Field::Bytes(&[0, 171]),
        ]);
        assert_eq!(data.text, "7\ta\\tb\\\\c\\nd\t\\N\t\\\\x00ab\n");
    }
}
