//! The generator: a [`SeedPlan`] turned into batches of rows, one organization at a time.
//!
//! Each organization draws from its own ChaCha20 stream (stream `n + 1` of
//! a key made from the seed and the slug prefix), so what one organization
//! gets does not depend on how the others came out, but for the number
//! that keeps its slug unique; stream 0 draws the sample of live keys.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sha2::{Digest, Sha256};

use super::names::{FIRST_NAMES, LAST_NAMES, MODELS, ORG_KINDS, ORG_WORDS, TIMEZONES};
use super::{
    Harvest, HarvestHandle, KeyTally, RETIRED_KEYS, SAMPLE_KEYS, SampleKey, SeedBatch, SeedCounter,
    SeedDaily, SeedEvent, SeedKey, SeedModel, SeedOrg, SeedPlan, SeedRateLimit, SeedUser,
};
use crate::budget::LimitScope;
use crate::domain::Role;
use crate::key::KeySecret;
use crate::period::start_of_day;
use crate::rate::RateLimits;

/// Keys per batch the generator aims at (a batch holds whole organizations).
const KEYS_PER_BATCH: u64 = 10_000;

const MINUTE: i64 = 60;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

/// Typical tokens per request; each organization has one, requests vary around it.
const REQUEST_SIZES: &[i64] = &[400, 800, 1_500, 3_000, 6_000];

/// Requests per minute of the organizations that have a limit.
const ORG_RPM: &[i64] = &[600, 1_200, 3_000, 6_000, 12_000];
/// Tokens per minute of the organizations that have a limit.
const ORG_TPM: &[i64] = &[500_000, 1_000_000, 2_000_000, 5_000_000];
/// Requests per minute of the users that have a limit.
const USER_RPM: &[i64] = &[60, 120, 300, 600];
/// Tokens per minute of the users that have a limit.
const USER_TPM: &[i64] = &[100_000, 200_000, 500_000];

/// Generates the rows of a [`SeedPlan`], one [`SeedBatch`] of whole organizations at a time.
///
/// Once every batch has been read, the [`Harvest`] (keys by state and a
/// sample of live keys with their secrets) is in the handle from
/// [`Generator::harvest`].
pub struct Generator {
    plan: SeedPlan,
    as_of: DateTime<Utc>,
    key: [u8; 32],
    next_org: u64,
    orgs_per_batch: u64,
    slugs: HashSet<String>,
    tally: KeyTally,
    reservoir: Reservoir,
    retired: Vec<SampleKey>,
    harvest: HarvestHandle,
}

impl std::fmt::Debug for Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator")
            .field("plan", &self.plan)
            .field("next_org", &self.next_org)
            .finish_non_exhaustive()
    }
}

impl Generator {
    /// A generator for `plan`; its history ends at the plan's `as_of`, or now.
    pub fn new(plan: SeedPlan) -> Self {
        let key = match plan.seed {
            Some(seed) => {
                let mut hasher = Sha256::new();
                hasher.update(b"ias seed v1");
                hasher.update(seed.to_le_bytes());
                // A run beside other data draws other secrets than the same seed alone.
                hasher.update(plan.prefix.as_bytes());
                hasher.finalize().into()
            }
            None => rand::random(),
        };
        let per_org = plan.users_per_org * plan.keys_per_user;
        Generator {
            as_of: plan.as_of.unwrap_or_else(Utc::now),
            orgs_per_batch: (KEYS_PER_BATCH / per_org).max(1),
            reservoir: Reservoir::new(stream(&key, 0)),
            plan,
            key,
            next_org: 0,
            slugs: HashSet::new(),
            tally: KeyTally::default(),
            retired: Vec::new(),
            harvest: Arc::new(Mutex::new(Harvest::default())),
        }
    }

    /// Where the harvest will be once every batch has been read.
    pub fn harvest(&self) -> HarvestHandle {
        Arc::clone(&self.harvest)
    }

    fn publish(&mut self) {
        let mut harvest = self.harvest.lock().unwrap_or_else(|e| e.into_inner());
        harvest.keys = self.tally;
        let mut sample = std::mem::take(&mut self.reservoir.keys);
        sample.sort_by_key(|(n, _)| *n);
        harvest.sample = sample.into_iter().map(|(_, key)| key).collect();
        harvest.retired = std::mem::take(&mut self.retired);
    }

    /// Every row of organization `n`, added to `batch`.
    fn org(&mut self, n: u64, batch: &mut SeedBatch) {
        let mut rng = stream(&self.key, n + 1);
        let slug = self.slug(&mut rng);
        let timezone = weighted(&mut rng, TIMEZONES);
        let created_at = self.as_of - seconds(rng.random_range(60 * DAY..=900 * DAY));
        let models = pick_models(&mut rng);
        let org = OrgDraft {
            n,
            domain: format!("{slug}.example"),
            created_at,
            size: pick(&mut rng, REQUEST_SIZES),
            days: history(self.as_of, timezone, self.plan.days_of_usage),
            models,
            slug,
        };
        for model in &org.models {
            batch.models.push(SeedModel {
                org: n,
                model,
                created_at,
            });
        }
        if rng.random_bool(0.3) {
            let limits = rate_limits(&mut rng, ORG_RPM, ORG_TPM);
            batch.rate_limits.push(SeedRateLimit {
                scope: LimitScope::Org,
                n,
                limits,
                updated_at: created_at,
            });
        }
        let usage = self.users(&mut rng, &org, batch);
        let busiest = usage.values().copied().max().unwrap_or(0);
        let factor = rng.random_range(20..=50);
        batch.orgs.push(SeedOrg {
            n,
            slug: org.slug,
            monthly_token_budget: nice_up((busiest * factor / 10).max(1_000_000)),
            timezone,
            created_at,
        });
        batch
            .counters
            .extend(usage.into_iter().map(|(period, used)| SeedCounter {
                scope: LimitScope::Org,
                n,
                period,
                used,
            }));
    }

    /// The organization's users with their keys and usage; answers its usage per period.
    fn users(
        &mut self,
        rng: &mut ChaCha20Rng,
        org: &OrgDraft,
        batch: &mut SeedBatch,
    ) -> BTreeMap<String, i64> {
        let per_org = self.plan.users_per_org;
        let admins = if per_org >= 2 {
            rng.random_range(1..=2)
        } else {
            1
        };
        let mut emails = HashSet::new();
        let mut org_usage = BTreeMap::new();
        for i in 0..per_org {
            let role = if i < admins {
                Role::OrgAdmin
            } else {
                Role::Member
            };
            let email = unique_email(rng, &mut emails, &org.domain);
            let usage = self.user(rng, org, org.n * per_org + i, role, email, batch);
            for (period, tokens) in usage {
                *org_usage.entry(period).or_insert(0) += tokens;
            }
        }
        org_usage
    }

    /// User `n` with its keys, usage, limits; answers its usage per period.
    fn user(
        &mut self,
        rng: &mut ChaCha20Rng,
        org: &OrgDraft,
        n: u64,
        role: Role,
        email: String,
        batch: &mut SeedBatch,
    ) -> BTreeMap<String, i64> {
        // Admins came with the organization; members joined since, up to two days ago.
        let created_at = match role {
            Role::Member => between(rng, org.created_at, self.as_of - seconds(2 * DAY)),
            _ => org.created_at + seconds(rng.random_range(0..=3 * DAY)),
        };
        let keys = self.keys(rng, org, n, created_at, batch);
        let usage = usage(rng, org, n, &keys, batch);
        let busiest = usage.values().copied().max().unwrap_or(0);
        let monthly_token_limit = rng.random_bool(0.2).then(|| {
            let factor = rng.random_range(20..=40);
            nice_up((busiest * factor / 10).max(100_000))
        });
        if rng.random_bool(0.1) {
            batch.rate_limits.push(SeedRateLimit {
                scope: LimitScope::User,
                n,
                limits: rate_limits(rng, USER_RPM, USER_TPM),
                updated_at: created_at,
            });
        }
        batch
            .counters
            .extend(usage.iter().map(|(period, used)| SeedCounter {
                scope: LimitScope::User,
                n,
                period: period.clone(),
                used: *used,
            }));
        batch.users.push(SeedUser {
            n,
            org: org.n,
            email,
            role,
            monthly_token_limit,
            created_at,
        });
        usage
    }

    /// User `user`'s keys; answers when each worked.
    fn keys(
        &mut self,
        rng: &mut ChaCha20Rng,
        org: &OrgDraft,
        user: u64,
        user_created: DateTime<Utc>,
        batch: &mut SeedBatch,
    ) -> Vec<KeyWindow> {
        let per_user = self.plan.keys_per_user;
        let as_of = self.as_of;
        let mut windows = Vec::with_capacity(usize::try_from(per_user).unwrap_or(0));
        for i in 0..per_user {
            let n = user * per_user + i;
            let secret = KeySecret::from_rng(rng);
            let created_at = between(rng, user_created + seconds(HOUR), as_of - seconds(HOUR));
            let (mut expires_at, mut revoked_at) = (None, None);
            match rng.random_range(0..100) {
                0..8 => revoked_at = Some(between(rng, created_at, as_of - seconds(MINUTE))),
                8..14 => {
                    let earliest = created_at + seconds(HOUR);
                    expires_at = Some(between(rng, earliest, as_of - seconds(MINUTE)));
                }
                14..34 => expires_at = Some(as_of + seconds(rng.random_range(7 * DAY..=365 * DAY))),
                _ => {}
            }
            let until = match (revoked_at, expires_at) {
                (Some(r), Some(e)) => Some(r.min(e)),
                (r, e) => r.or(e),
            };
            windows.push(KeyWindow {
                n,
                from: created_at,
                until,
            });
            self.count(n, &secret, org, revoked_at, expires_at);
            batch.keys.push(SeedKey {
                n,
                user,
                org: org.n,
                hash: secret.hash(),
                prefix: secret.display_prefix(),
                created_at,
                expires_at,
                revoked_at,
            });
        }
        windows
    }

    /// Tallies a key by state and offers one that never stops working to the sample.
    fn count(
        &mut self,
        n: u64,
        secret: &KeySecret,
        org: &OrgDraft,
        revoked_at: Option<DateTime<Utc>>,
        expires_at: Option<DateTime<Utc>>,
    ) {
        let model = org.models[usize::try_from(n).unwrap_or(0) % org.models.len()];
        let sample = || SampleKey {
            secret: secret.clone(),
            org: org.slug.clone(),
            model,
        };
        let retired = match (revoked_at, expires_at) {
            (Some(_), _) => {
                self.tally.revoked += 1;
                self.tally.revoked <= RETIRED_KEYS as u64
            }
            (None, Some(at)) if at <= self.as_of => {
                self.tally.expired += 1;
                self.tally.expired <= RETIRED_KEYS as u64
            }
            (None, expires_at) => {
                self.tally.live += 1;
                if expires_at.is_none() {
                    self.reservoir.offer(n, sample);
                }
                false
            }
        };
        if retired {
            self.retired.push(sample());
        }
    }

    /// A slug not given yet in this seed: two words, numbered when taken.
    fn slug(&mut self, rng: &mut ChaCha20Rng) -> String {
        let base = format!(
            "{}{}-{}",
            self.plan.prefix,
            pick(rng, ORG_WORDS),
            pick(rng, ORG_KINDS)
        );
        let slug = (1..)
            .map(|i| match i {
                1 => base.clone(),
                i => format!("{base}-{i}"),
            })
            .find(|slug| !self.slugs.contains(slug))
            .unwrap_or(base);
        self.slugs.insert(slug.clone());
        slug
    }
}

impl Iterator for Generator {
    type Item = SeedBatch;

    fn next(&mut self) -> Option<SeedBatch> {
        if self.next_org >= self.plan.orgs {
            if self.next_org == self.plan.orgs {
                self.publish();
                self.next_org += 1;
            }
            return None;
        }
        let end = (self.next_org + self.orgs_per_batch).min(self.plan.orgs);
        let mut batch = SeedBatch::default();
        for n in self.next_org..end {
            self.org(n, &mut batch);
        }
        self.next_org = end;
        Some(batch)
    }
}

/// What the users of an organization are made from.
struct OrgDraft {
    n: u64,
    slug: String,
    domain: String,
    created_at: DateTime<Utc>,
    models: Vec<&'static str>,
    /// Typical tokens per request.
    size: i64,
    days: Vec<Day>,
}

/// A local day of the history.
struct Day {
    key: String,
    period: String,
    start: DateTime<Utc>,
    /// 86 400, or an hour less or more on a day that changes the clocks.
    seconds: i64,
}

/// When a key worked: from its creation until it was revoked or expired.
struct KeyWindow {
    n: u64,
    from: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
}

impl KeyWindow {
    fn works_at(&self, at: DateTime<Utc>) -> bool {
        self.from <= at && self.until.is_none_or(|until| at < until)
    }
}

/// User `user`'s requests: events and daily roll-ups into `batch`; answers tokens per period.
fn usage(
    rng: &mut ChaCha20Rng,
    org: &OrgDraft,
    user: u64,
    keys: &[KeyWindow],
    batch: &mut SeedBatch,
) -> BTreeMap<String, i64> {
    let mut per_period = BTreeMap::new();
    if org.days.is_empty() {
        return per_period;
    }
    let activity = rng.random_range(0.05..0.7);
    let wanted = rng.random_range(1..=org.models.len().min(2));
    let used = &org.models[..wanted];
    for day in &org.days {
        if !rng.random_bool(activity) {
            continue;
        }
        for model in used {
            let mut daily = SeedDaily {
                org: org.n,
                user,
                day: day.key.clone(),
                model,
                tokens: 0,
                requests: 0,
            };
            for _ in 0..rng.random_range(1..=3) {
                let at = day.start + seconds(rng.random_range(0..day.seconds));
                let Some(key) = pick_key(rng, keys, at) else {
                    continue;
                };
                let tokens = rng.random_range(org.size / 4..=org.size * 2);
                daily.tokens += tokens;
                daily.requests += 1;
                batch.events.push(SeedEvent {
                    org: org.n,
                    user,
                    key,
                    model,
                    period: day.period.clone(),
                    reserved: (tokens + 1_023) / 1_024 * 1_024,
                    tokens,
                    at,
                });
            }
            if daily.requests > 0 {
                *per_period.entry(day.period.clone()).or_insert(0) += daily.tokens;
                batch.daily.push(daily);
            }
        }
    }
    per_period
}

/// One of the keys that worked at `at`, if any did.
fn pick_key(rng: &mut ChaCha20Rng, keys: &[KeyWindow], at: DateTime<Utc>) -> Option<u64> {
    let working = keys.iter().filter(|k| k.works_at(at)).count();
    if working == 0 {
        return None;
    }
    let chosen = rng.random_range(0..working);
    keys.iter()
        .filter(|k| k.works_at(at))
        .nth(chosen)
        .map(|k| k.n)
}

/// The `days` local days before the one `as_of` falls on, oldest first.
fn history(as_of: DateTime<Utc>, tz: Tz, days: u64) -> Vec<Day> {
    let today = as_of.with_timezone(&tz).date_naive();
    (1..=days)
        .rev()
        .filter_map(|back| {
            let day = today - Duration::days(i64::try_from(back).ok()?);
            let start = start_of_day(tz, day);
            let end = start_of_day(tz, day.succ_opt()?);
            Some(Day {
                key: day.format("%Y-%m-%d").to_string(),
                period: day.format("%Y-%m").to_string(),
                start,
                seconds: (end - start).num_seconds().max(1),
            })
        })
        .collect()
}

/// One to five different models, in the order drawn.
fn pick_models(rng: &mut ChaCha20Rng) -> Vec<&'static str> {
    let wanted = rng.random_range(1..=5);
    let mut pool: Vec<&'static str> = MODELS.to_vec();
    for i in 0..wanted {
        let j = rng.random_range(i..pool.len());
        pool.swap(i, j);
    }
    pool.truncate(wanted);
    pool
}

fn rate_limits(rng: &mut ChaCha20Rng, rpm: &[i64], tpm: &[i64]) -> RateLimits {
    RateLimits {
        rpm: Some(pick(rng, rpm)),
        tpm: rng.random_bool(0.5).then(|| pick(rng, tpm)),
    }
}

/// `first.last@domain`, numbered when the organization already has it.
fn unique_email(rng: &mut ChaCha20Rng, taken: &mut HashSet<String>, domain: &str) -> String {
    let local = format!("{}.{}", pick(rng, FIRST_NAMES), pick(rng, LAST_NAMES));
    let email = (1..)
        .map(|i| match i {
            1 => format!("{local}@{domain}"),
            i => format!("{local}{i}@{domain}"),
        })
        .find(|email| !taken.contains(email))
        .unwrap_or_default();
    taken.insert(email.clone());
    email
}

/// The smallest 1, 2 or 5 times a power of ten that is at least `amount`.
fn nice_up(amount: i64) -> i64 {
    let mut power = 1_i64;
    loop {
        for step in [1, 2, 5] {
            let nice = power.saturating_mul(step);
            if nice >= amount || nice == i64::MAX {
                return nice;
            }
        }
        power = power.saturating_mul(10);
    }
}

/// An instant drawn evenly from `from..=to` (`from` when the range is empty).
fn between(rng: &mut ChaCha20Rng, from: DateTime<Utc>, to: DateTime<Utc>) -> DateTime<Utc> {
    let span = (to - from).num_seconds();
    if span <= 0 {
        return from;
    }
    from + seconds(rng.random_range(0..=span))
}

fn seconds(n: i64) -> Duration {
    Duration::seconds(n)
}

fn pick<T: Copy>(rng: &mut ChaCha20Rng, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}

fn weighted<T: Copy>(rng: &mut ChaCha20Rng, items: &[(T, u32)]) -> T {
    let total: u32 = items.iter().map(|(_, w)| w).sum();
    let mut roll = rng.random_range(0..total);
    for (item, weight) in items {
        if roll < *weight {
            return *item;
        }
        roll -= weight;
    }
    items[0].0
}

/// Stream `n` of ChaCha20 keyed by `key`.
fn stream(key: &[u8; 32], n: u64) -> ChaCha20Rng {
    let mut rng = ChaCha20Rng::from_seed(*key);
    rng.set_stream(n);
    rng
}

/// An even sample of up to [`SAMPLE_KEYS`] keys (algorithm R).
struct Reservoir {
    rng: ChaCha20Rng,
    seen: u64,
    keys: Vec<(u64, SampleKey)>,
}

impl Reservoir {
    fn new(rng: ChaCha20Rng) -> Self {
        Reservoir {
            rng,
            seen: 0,
            keys: Vec::new(),
        }
    }

    fn offer(&mut self, n: u64, key: impl FnOnce() -> SampleKey) {
        self.seen += 1;
        if self.keys.len() < SAMPLE_KEYS {
            self.keys.push((n, key()));
            return;
        }
        let slot = self.rng.random_range(0..self.seen);
        if let Some(kept) = usize::try_from(slot)
            .ok()
            .and_then(|slot| self.keys.get_mut(slot))
        {
            *kept = (n, key());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key;
    use crate::period::MonthlyPeriod;

    fn plan() -> SeedPlan {
        SeedPlan::new(3, 4, 2)
            .unwrap()
            .with_seed(42)
            .with_as_of("2026-12-04T10:00:00Z".parse().unwrap())
    }

    fn all(plan: SeedPlan) -> (Vec<SeedBatch>, Harvest) {
        let generator = Generator::new(plan);
        let harvest = generator.harvest();
        let batches: Vec<SeedBatch> = generator.collect();
        let harvest = harvest.lock().unwrap().clone();
        (batches, harvest)
    }

    #[test]
    fn the_same_seed_gives_the_same_rows() {
        let (a, ha) = all(plan());
        let (b, hb) = all(plan());
        assert_eq!(a, b);
        assert_eq!(ha.sample, hb.sample);
        let (c, _) = all(plan().with_seed(43));
        assert_ne!(a, c);
    }

    #[test]
    fn sizes_roles_and_references_hold() {
        let (batches, harvest) = all(plan());
        let users: Vec<&SeedUser> = batches.iter().flat_map(|b| &b.users).collect();
        let keys: Vec<&SeedKey> = batches.iter().flat_map(|b| &b.keys).collect();
        let orgs: Vec<&SeedOrg> = batches.iter().flat_map(|b| &b.orgs).collect();
        assert_eq!((orgs.len(), users.len(), keys.len()), (3, 12, 24));
        for org in &orgs {
            let admins = users
                .iter()
                .filter(|u| u.org == org.n && u.role == Role::OrgAdmin)
                .count();
            assert!((1..=2).contains(&admins), "{admins}");
            crate::validate::slug(&org.slug).unwrap();
        }
        for user in &users {
            assert_eq!(crate::validate::email(&user.email).unwrap(), user.email);
        }
        let tally = harvest.keys;
        assert_eq!(tally.live + tally.expired + tally.revoked, 24);
        for sample in &harvest.sample {
            assert!(key::is_well_formed(sample.secret.expose()));
            let stored = keys
                .iter()
                .find(|k| k.hash == sample.secret.hash())
                .unwrap();
            assert!(stored.revoked_at.is_none() && stored.expires_at.is_none());
            assert_eq!(stored.prefix, sample.secret.display_prefix());
        }
    }

    #[test]
    fn usage_adds_up_and_stays_below_every_budget() {
        let as_of: DateTime<Utc> = "2026-12-04T10:00:00Z".parse().unwrap();
        let (batches, _) = all(SeedPlan::new(4, 20, 2)
            .unwrap()
            .with_seed(7)
            .with_as_of(as_of));
        for batch in &batches {
            for org in &batch.orgs {
                let events: Vec<&SeedEvent> =
                    batch.events.iter().filter(|e| e.org == org.n).collect();
                let counted: i64 = batch
                    .counters
                    .iter()
                    .filter(|c| c.scope == LimitScope::Org && c.n == org.n)
                    .map(|c| {
                        assert!(c.used * 2 <= org.monthly_token_budget);
                        c.used
                    })
                    .sum();
                let daily: i64 = batch
                    .daily
                    .iter()
                    .filter(|d| d.org == org.n)
                    .map(|d| d.tokens)
                    .sum();
                let total: i64 = events.iter().map(|e| e.tokens).sum();
                assert!(total > 0);
                assert_eq!((counted, daily), (total, total));
                for event in events {
                    assert!(event.at < as_of);
                    let period = MonthlyPeriod::containing(event.at, org.timezone);
                    assert_eq!(event.period, period.key);
                    let key = batch.keys.iter().find(|k| k.n == event.key).unwrap();
                    assert_eq!(key.user, event.user);
                    assert!(key.created_at <= event.at);
                }
            }
            for user in &batch.users {
                let Some(limit) = user.monthly_token_limit else {
                    continue;
                };
                for counter in batch
                    .counters
                    .iter()
                    .filter(|c| c.scope == LimitScope::User && c.n == user.n)
                {
                    assert!(counter.used * 2 <= limit);
                }
            }
        }
    }

    #[test]
    fn budgets_are_round_numbers() {
        assert_eq!(nice_up(1), 1);
        assert_eq!(nice_up(1_000_001), 2_000_000);
        assert_eq!(nice_up(2_000_001), 5_000_000);
        assert_eq!(nice_up(5_000_001), 10_000_000);
    }
}
