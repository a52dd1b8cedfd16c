//! Seeding through [`Admin`]: a generated dataset and its one audit entry.

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::json;

use super::Admin;
use crate::error::{Error, Result};
use crate::rbac::{Permission, Target};
use crate::seed::{Generator, SeedPlan, SeedProgress, SeedWrite, Seeded};

impl Admin {
    /// Generates `plan` and writes it in one transaction, with one audit
    /// entry (`seed.run`) that summarises it; allowed to system admins only.
    ///
    /// Refuses a database that holds an organization, a user or a key
    /// ([`crate::seed::SeedCensus::refusal`]) unless `allow_existing`; then
    /// every slug (and so every email) starts with a prefix of its own run,
    /// such as `s1k9x0q2c3-`, and nothing existing is touched. `progress`
    /// hears the rows written so far after each batch. The audit entry never
    /// holds the seed, which is the key of every seeded secret.
    pub async fn seed(
        &self,
        plan: SeedPlan,
        allow_existing: bool,
        progress: SeedProgress,
    ) -> Result<Seeded> {
        let now = self.clock.now();
        // Whole seconds: every time in the data is a whole number of seconds from it.
        let as_of = plan.as_of().unwrap_or_else(|| now.trunc_subsecs(0));
        if as_of > now {
            let reason = "must not be in the future";
            return Err(Error::invalid("as_of", as_of.to_rfc3339(), reason));
        }
        let attempt = self.attempt("seed.run", None, "seed".to_owned());
        self.require(Permission::OrgCreate, Target::global(), &attempt)
            .await?;
        let census = self.store.seed_census().await?;
        if !census.is_empty() && !allow_existing {
            return Err(census.refusal());
        }
        let prefix = if census.is_empty() {
            String::new()
        } else {
            run_prefix(now)
        };
        let plan = plan.with_as_of(as_of).with_prefix(prefix.clone());
        let record = self.record("seed.run", None, "seed".to_owned(), summary(&plan, as_of));
        let generator = Generator::new(plan);
        let harvest = generator.harvest();
        let write = SeedWrite {
            require_empty: !allow_existing,
            batches: Box::new(generator),
            audit: record.clone(),
            progress,
        };
        let written = self.store.write_seed(write).await;
        let counts = self.applied(&record, written).await?;
        let harvest = std::mem::take(&mut *harvest.lock().unwrap_or_else(|e| e.into_inner()));
        Ok(Seeded {
            counts,
            harvest,
            prefix,
            as_of,
        })
    }
}

/// What the audit entry of a seed records.
fn summary(plan: &SeedPlan, as_of: DateTime<Utc>) -> serde_json::Value {
    json!({
        "organizations": plan.orgs(),
        "users_per_org": plan.users_per_org(),
        "keys_per_user": plan.keys_per_user(),
        "days_of_usage": plan.days_of_usage(),
        "as_of": as_of,
        "slug_prefix": (!plan.prefix().is_empty()).then_some(plan.prefix()),
        "reproducible": plan.is_reproducible(),
    })
}

/// `s` and the time in base 36, then `-`: a slug prefix no other run has.
fn run_prefix(now: DateTime<Utc>) -> String {
    let mut millis = u64::try_from(now.timestamp_millis()).unwrap_or(0);
    let mut digits = Vec::new();
    loop {
        // INVARIANT: `millis % 36` is below 36, a valid base-36 digit.
        digits.push(char::from_digit((millis % 36) as u32, 36).unwrap_or('0'));
        millis /= 36;
        if millis == 0 {
            break;
        }
    }
    let time: String = digits.into_iter().rev().collect();
    format!("s{time}-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_prefixes_are_slug_safe_and_differ_by_the_millisecond() {
        let a = run_prefix("2026-12-04T10:00:00.000Z".parse().unwrap());
        let b = run_prefix("2026-12-04T10:00:00.001Z".parse().unwrap());
        assert_ne!(a, b);
        crate::validate::slug(&format!("{a}acme-labs")).unwrap();
    }
}
