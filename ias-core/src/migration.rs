//! Numbered schema migrations: what every store checks before applying one.
//!
//! Stores ship their SQL as a list of [`Migration`]s and keep, per applied
//! version, a checksum of its text. The rules are the same for every store:
//! a migration already applied must not have changed, and a database newer
//! than the build is refused rather than guessed at.

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// One numbered migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Its version, from 1, without gaps.
    pub version: i64,
    /// A short name.
    pub name: &'static str,
    /// The SQL it runs.
    pub sql: &'static str,
}

impl Migration {
    /// The SHA-256 of its text, as hex: what the store records when it applies it.
    pub fn checksum(&self) -> String {
        hex::encode(Sha256::digest(self.sql.as_bytes()))
    }

    /// Whether it must run, given the checksum recorded for its version, if any.
    ///
    /// An error names the migration when the recorded checksum differs.
    pub fn needs_applying(&self, recorded: Option<&str>, backend: &'static str) -> Result<bool> {
        match recorded {
            None => Ok(true),
            Some(stored) if stored == self.checksum() => Ok(false),
            Some(_) => Err(Error::Store {
                backend,
                message: format!(
                    "migration {} `{}` differs from the one applied to this database",
                    self.version, self.name
                ),
            }),
        }
    }
}

/// Refuses a database whose newest applied version is above every one of `known`.
///
/// The error is [`Error::Unsupported`]: the database is sound, but was
/// migrated by a newer ias, and this build must not write to it.
pub fn refuse_newer(newest: i64, known: &[Migration], backend: &'static str) -> Result<()> {
    let known = known.last().map_or(0, |m| m.version);
    if newest > known {
        return Err(Error::Unsupported(format!(
            "{backend} database schema version {newest} is newer than this build of ias \
             supports ({known}); upgrade ias to open it"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: Migration = Migration {
        version: 1,
        name: "initial",
        sql: "CREATE TABLE t (x INTEGER)",
    };

    #[test]
    fn an_applied_migration_must_be_unchanged() {
        assert!(FIRST.needs_applying(None, "test").unwrap());
        assert!(
            !FIRST
                .needs_applying(Some(&FIRST.checksum()), "test")
                .unwrap()
        );
        let err = FIRST.needs_applying(Some("other"), "test").unwrap_err();
        assert!(
            err.to_string().contains("migration 1 `initial` differs"),
            "{err}"
        );
    }

    #[test]
    fn a_newer_database_is_refused() {
        assert!(refuse_newer(1, &[FIRST], "test").is_ok());
        let err = refuse_newer(2, &[FIRST], "test").unwrap_err();
        assert_eq!(err.kind(), "unsupported");
        assert!(err.to_string().contains("version 2 is newer"), "{err}");
    }
}
