//! Rate leases: the arguments and answers of `ias_sync_leases()` about
//! rate limits. The rule itself runs in the database (migration 5), as
//! described in `ias_core::lease` ("Rate leases"); the storage
//! conformance suite checks that it answers as the SQLite store does.

use ias_core::LimitScope;
use ias_core::lease::{RateEntry, RateScope, RateState};
use ias_core::rate::RateKind;
use sqlx::Row;
use sqlx::postgres::PgRow;

use crate::store::PgQuery;

/// Binds the rate entries (`r_*`) and their charges (`c_*`), column by column.
pub(crate) fn bind<'q>(query: PgQuery<'q>, rates: &'q [RateEntry]) -> PgQuery<'q> {
    let int = |f: fn(&RateEntry) -> i64| rates.iter().map(f).collect::<Vec<_>>();
    let mut entry = Vec::new();
    let mut at = Vec::new();
    let mut amount = Vec::new();
    for (i, rate) in rates.iter().enumerate() {
        // Entries are numbered from 1, as SQL arrays are.
        let number = i32::try_from(i + 1).unwrap_or(i32::MAX);
        for charge in &rate.charges {
            entry.push(number);
            at.push(charge.at_ms);
            amount.push(charge.amount);
        }
    }
    query
        .bind(
            rates
                .iter()
                .map(|e| e.rate.scope.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(int(|e| e.rate.scope_id))
        .bind(
            rates
                .iter()
                .map(|e| e.rate.kind.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(int(|e| e.give_back))
        .bind(int(|e| e.want))
        .bind(int(|e| e.need))
        .bind(entry)
        .bind(at)
        .bind(amount)
}

/// A `rate` row of the answer.
pub(crate) fn state(row: &PgRow) -> sqlx::Result<RateState> {
    Ok(RateState {
        limit: row.try_get(2)?,
        used: row.try_get(3)?,
        held: row.try_get(4)?,
        lease: row.try_get(5)?,
        granted: row.try_get(6)?,
        wait_ms: row.try_get(7)?,
        recall: row.try_get(8)?,
    })
}

fn scope_of(row: &PgRow) -> sqlx::Result<Option<RateScope>> {
    let scope: String = row.try_get(9)?;
    let kind: String = row.try_get(11)?;
    Ok(match (LimitScope::parse(&scope), RateKind::parse(&kind)) {
        (Some(scope), Some(kind)) => Some(RateScope {
            scope,
            scope_id: row.try_get(10)?,
            kind,
        }),
        _ => None,
    })
}

/// A `recall` row: a lease of the holder on a scope under demand.
pub(crate) fn recalled(row: &PgRow) -> sqlx::Result<Option<RateScope>> {
    scope_of(row)
}

/// A `reclaimed` row: leases of a stopped holder were taken back.
pub(crate) fn log_reclaimed(row: &PgRow) -> sqlx::Result<()> {
    let scope: String = row.try_get(9)?;
    let id: i64 = row.try_get(10)?;
    let kind: String = row.try_get(11)?;
    let taken: i64 = row.try_get(6)?;
    tracing::warn!(
        scope,
        id,
        kind,
        taken,
        "took back expired leases of a governor that stopped"
    );
    Ok(())
}
