//! Rate leases: per-minute limits shared through the store, exactly.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use crate::admin::LimitTarget;
use crate::budget::LimitScope;
use crate::domain::OrgId;
use crate::lease::{LeaseSync, RateCharge, RateEntry, RateScope, RateState};
use crate::rate::{RateKind, RateLimits};
use crate::{Decision, DenyReason, Governor, GovernorConfig, LimitKind, ManualClock, Store};

fn scope(org: OrgId, kind: RateKind) -> RateScope {
    RateScope {
        scope: LimitScope::Org,
        scope_id: org.0,
        kind,
    }
}

fn ask(rate: RateScope, want: i64, need: i64) -> RateEntry {
    RateEntry {
        rate,
        charges: Vec::new(),
        give_back: 0,
        want,
        need,
    }
}

fn report(rate: RateScope, charges: &[(DateTime<Utc>, i64)]) -> RateEntry {
    let mut entry = ask(rate, 0, 0);
    entry.charges = charges
        .iter()
        .map(|(at, amount)| RateCharge {
            at_ms: at.timestamp_millis(),
            amount: *amount,
        })
        .collect();
    entry
}

fn sync_at(holder: &str, now: DateTime<Utc>, rates: Vec<RateEntry>) -> LeaseSync {
    LeaseSync {
        holder: holder.into(),
        seq: super::next_seq(),
        now,
        lease_expires_at: now + Duration::seconds(30),
        entries: Vec::new(),
        events: Vec::new(),
        rates,
    }
}

async fn call(
    store: &Arc<dyn Store>,
    holder: &str,
    now: DateTime<Utc>,
    entry: RateEntry,
) -> RateState {
    let synced = store
        .sync_leases(&sync_at(holder, now, vec![entry]))
        .await
        .unwrap();
    synced.rates[0]
}

/// Org `acme` with these rate limits of its own.
async fn limited(store: &Arc<dyn Store>, limits: RateLimits) -> OrgId {
    let f = super::fixture(store, 1_000_000, None).await;
    super::admin(store)
        .set_rate_limits("acme", LimitTarget::Org, limits)
        .await
        .unwrap();
    f.org
}

/// A rate lease grants what a request needs whole or not at all, never
/// past the limit; a holder that found too few puts the scope under
/// demand, and gets exactly what it needs once the others gave back.
pub async fn rate_leases_grant_at_most_what_is_left(store: Arc<dyn Store>) {
    let org = limited(&store, RateLimits::requests(10)).await;
    let requests = scope(org, RateKind::Requests);
    let t = super::now();
    let a = call(&store, "a", t, ask(requests, 6, 6)).await;
    assert_eq!(
        (a.limit, a.granted, a.lease, a.held, a.used),
        (Some(10), 6, 6, 6, 0)
    );
    let b = call(&store, "b", t, ask(requests, 6, 6)).await;
    assert_eq!((b.granted, b.lease, b.held), (0, 0, 6));
    assert_eq!(
        b.wait_ms, None,
        "a lease, not the window, stands in the way"
    );
    assert!(b.recall);
    // `a` reports two grants; recalled, it gives back the four it does not use.
    let a = call(&store, "a", t, report(requests, &[(t, 2)])).await;
    assert_eq!((a.used, a.lease, a.held, a.recall), (2, 4, 4, true));
    let mut back = ask(requests, 0, 0);
    back.give_back = 4;
    let a = call(&store, "a", t, back).await;
    assert_eq!((a.lease, a.held), (0, 0));
    // Under demand, `b` gets what it needs and no spare.
    let b = call(&store, "b", t, ask(requests, 8, 6)).await;
    assert_eq!((b.granted, b.lease, b.held, b.used), (6, 6, 6, 2));
    // A kind without a limit grants what is asked.
    let tokens = call(&store, "a", t, ask(scope(org, RateKind::Tokens), 5, 5)).await;
    assert_eq!((tokens.limit, tokens.granted), (None, 5));
}

/// A reported grant counts for 60 seconds from when it was made; a probe
/// (want 0) grants nothing and says how long until a need fits.
pub async fn rate_grants_leave_the_window_after_a_minute(store: Arc<dyn Store>) {
    let org = limited(&store, RateLimits::tokens(100)).await;
    let tokens = scope(org, RateKind::Tokens);
    let t = super::now();
    let s = |secs| t + Duration::seconds(secs);
    assert_eq!(call(&store, "a", t, ask(tokens, 100, 100)).await.lease, 100);
    let grants = [(s(0), 40), (s(10), 40), (s(20), 20)];
    let a = call(&store, "a", s(20), report(tokens, &grants)).await;
    assert_eq!((a.used, a.lease, a.held), (100, 0, 0));
    let probe = call(&store, "b", s(30), ask(tokens, 0, 1)).await;
    assert_eq!((probe.granted, probe.wait_ms), (0, Some(30_000)));
    assert!(!probe.recall, "a probe puts nothing under demand");
    // 50 tokens need the first two grants gone: at 70 s.
    let probe = call(&store, "b", s(30), ask(tokens, 0, 50)).await;
    assert_eq!(probe.wait_ms, Some(40_000));
    let early = s(60) - Duration::milliseconds(1);
    let b = call(&store, "b", early, ask(tokens, 1, 1)).await;
    assert_eq!((b.granted, b.wait_ms), (0, Some(1)));
    // At 60 s the first grant has left: a probe for 20 fits now.
    let probe = call(&store, "c", s(60), ask(tokens, 0, 20)).await;
    assert_eq!((probe.granted, probe.wait_ms), (0, Some(0)));
    let b = call(&store, "b", s(60), ask(tokens, 40, 40)).await;
    assert_eq!((b.granted, b.used), (40, 60));
}

/// A correction of a reported grant moves credits from the window back to
/// the holder's lease, never more than the grant held, and not once the
/// grant has left the window.
pub async fn corrections_return_credits_to_the_lease(store: Arc<dyn Store>) {
    let org = limited(&store, RateLimits::tokens(100)).await;
    let tokens = scope(org, RateKind::Tokens);
    let t = super::now();
    call(&store, "a", t, ask(tokens, 100, 100)).await;
    let a = call(&store, "a", t, report(tokens, &[(t, 100)])).await;
    assert_eq!((a.used, a.lease, a.held), (100, 0, 0));
    let a = call(&store, "a", t, report(tokens, &[(t, -70)])).await;
    assert_eq!((a.used, a.lease, a.held), (30, 70, 70));
    let a = call(&store, "a", t, report(tokens, &[(t, -50)])).await;
    assert_eq!((a.used, a.lease, a.held), (0, 100, 100));
    // A grant and its correction in one call (a sync retried after a failure).
    let s = t + Duration::seconds(1);
    let a = call(&store, "a", s, report(tokens, &[(s, 60), (s, -45)])).await;
    assert_eq!((a.used, a.lease, a.held), (15, 85, 85));
    let later = t + Duration::seconds(60);
    let a = call(&store, "a", later, report(tokens, &[(s, -5)])).await;
    assert_eq!((a.used, a.lease), (10, 90));
    // At 61 s the grant made at 1 s has left the window: its correction does nothing.
    let gone = t + Duration::seconds(61);
    let a = call(&store, "a", gone, report(tokens, &[(s, -5)])).await;
    assert_eq!((a.used, a.lease), (0, 90));
}

/// A stopped holder's rate lease is taken back only a minute after it
/// expired: grants it made but never reported may count until then.
pub async fn stopped_holders_rate_leases_return_a_minute_late(store: Arc<dyn Store>) {
    let org = limited(&store, RateLimits::requests(10)).await;
    let requests = scope(org, RateKind::Requests);
    let t = super::now();
    let mut stale = sync_at("dead", t, vec![ask(requests, 10, 10)]);
    stale.lease_expires_at = t - Duration::seconds(1);
    assert_eq!(
        store.sync_leases(&stale).await.unwrap().rates[0].granted,
        10
    );
    let live = call(&store, "live", t, ask(requests, 1, 1)).await;
    assert_eq!(live.granted, 0);
    let almost = t + Duration::seconds(59) - Duration::milliseconds(1);
    assert_eq!(
        call(&store, "live", almost, ask(requests, 1, 1))
            .await
            .granted,
        0
    );
    let live = call(
        &store,
        "live",
        t + Duration::seconds(59),
        ask(requests, 1, 1),
    )
    .await;
    assert_eq!((live.granted, live.held), (1, 1));
}

/// A holder learns that its lease on a scope under demand is recalled,
/// even when its call says nothing about that scope.
pub async fn a_recall_reaches_leases_outside_the_call(store: Arc<dyn Store>) {
    let org = limited(&store, RateLimits::requests(10)).await;
    let requests = scope(org, RateKind::Requests);
    let t = super::now();
    call(&store, "a", t, ask(requests, 10, 10)).await;
    let quiet = store
        .sync_leases(&sync_at("a", t, Vec::new()))
        .await
        .unwrap();
    assert!(quiet.recalled.is_empty());
    assert_eq!(call(&store, "b", t, ask(requests, 1, 1)).await.granted, 0);
    let recalled = store
        .sync_leases(&sync_at("a", t, Vec::new()))
        .await
        .unwrap();
    assert_eq!(recalled.recalled, [requests]);
    let b_alone = store
        .sync_leases(&sync_at("b", t, Vec::new()))
        .await
        .unwrap();
    assert!(b_alone.recalled.is_empty(), "b holds no lease");
}

/// Three governors on one store grant a rate limit of N exactly: N
/// requests spread over them all pass, the next is refused by each with
/// the real wait, and a minute after the grants the limit is free again.
pub async fn governors_share_a_rate_limit_exactly(store: Arc<dyn Store>) {
    let key = super::acme_with_key(&store, 1_000_000, None).await;
    let key = key.secret.expose().to_owned();
    super::admin(&store)
        .set_rate_limits("acme", LimitTarget::Org, RateLimits::requests(12))
        .await
        .unwrap();
    let clock = Arc::new(ManualClock::new(super::now()));
    let config = GovernorConfig {
        flush_interval: std::time::Duration::from_millis(50),
        ..GovernorConfig::default()
    };
    let mut governors = Vec::new();
    let mut maintenance = Vec::new();
    for _ in 0..3 {
        let governor = Governor::builder(store.clone())
            .clock(clock.clone())
            .config(config)
            .open()
            .await
            .unwrap();
        maintenance.push(governor.spawn_maintenance());
        governors.push(governor);
    }
    for i in 0..12 {
        let governor = &governors[i % 3];
        let decision = governor.authorize(&key, "gpt-4o-mini", 1).await.unwrap();
        let Decision::Allowed(allowed) = decision else {
            panic!("request {i} of 12 was refused: {decision:?}");
        };
        governor
            .settle(&allowed.reservation.unwrap(), 1)
            .await
            .unwrap();
    }
    clock.advance(Duration::seconds(10));
    for governor in &governors {
        let denied = super::denied(governor.authorize(&key, "gpt-4o-mini", 1).await.unwrap());
        assert_eq!(denied.reason, DenyReason::RateLimited);
        let limit = denied.limit.clone().unwrap();
        assert_eq!(
            (limit.kind, limit.limit, limit.used),
            (LimitKind::RequestsPerMinute, 12, 12)
        );
        assert_eq!(denied.retry_after_secs(), Some(50), "{}", denied.message());
    }
    clock.advance(Duration::seconds(50));
    for governor in &governors {
        let decision = governor.authorize(&key, "gpt-4o-mini", 1).await.unwrap();
        let reservation = decision.reservation().unwrap().clone();
        governor.settle(&reservation, 1).await.unwrap();
    }
    for m in maintenance {
        m.shutdown().await.unwrap();
    }
}
