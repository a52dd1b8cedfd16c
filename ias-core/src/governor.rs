//! The hot path: authorize a request, then settle what it really used.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::budget::{
    self, BudgetState, Exceeded, LimitScope, ReserveOutcome, ReserveRequest, Settlement,
};
use crate::clock::{Clock, SystemClock};
use crate::domain::{KeyContext, KeyId, KeyStatus, OrgId, ReservationId, UserId};
use crate::error::Result;
use crate::key::{self, KeyHash};
use crate::period::MonthlyPeriod;
use crate::policy;
use crate::store::Store;
use crate::validate;

/// How long an unsettled reservation is held by default.
pub const DEFAULT_RESERVATION_TTL: chrono::Duration = chrono::Duration::minutes(15);

/// Decides requests and records their usage.
///
/// ```no_run
/// # async fn demo(store: std::sync::Arc<dyn ias_core::Store>, key: &str) -> ias_core::Result<()> {
/// use ias_core::{Decision, Governor};
///
/// let governor = Governor::new(store);
/// match governor.authorize(key, "gpt-4o-mini", 1_000).await? {
///     Decision::Allowed(allowed) => {
///         // ... call the model, then charge what it really used:
///         if let Some(reservation) = &allowed.reservation {
///             governor.settle(reservation, 812).await?;
///         }
///     }
///     Decision::Denied(denied) => println!("{}", denied.message()),
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Governor {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    reservation_ttl: chrono::Duration,
}

impl Governor {
    /// A governor over `store`, on the system clock.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Governor {
            store,
            clock: Arc::new(SystemClock),
            reservation_ttl: DEFAULT_RESERVATION_TTL,
        }
    }

    /// Uses `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The store this governor reads and writes.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Decides a request and, when it is allowed, reserves `estimated_tokens`.
    ///
    /// The reservation must later be passed to [`Governor::settle`] (or
    /// [`Governor::release`] if the request failed). `Err` means the
    /// decision could not be made (bad input, store unavailable), never that
    /// the request was denied.
    pub async fn authorize(
        &self,
        key: &str,
        model: &str,
        estimated_tokens: i64,
    ) -> Result<Decision> {
        self.decide(key, model, estimated_tokens, true).await
    }

    /// Decides a request like [`Governor::authorize`] without reserving anything.
    pub async fn check(&self, key: &str, model: &str, estimated_tokens: i64) -> Result<Decision> {
        self.decide(key, model, estimated_tokens, false).await
    }

    /// Charges the real usage of an allowed request and frees its reservation.
    ///
    /// `actual_tokens` is charged in full even when it exceeds the estimate;
    /// the next request then sees the budget as spent.
    pub async fn settle(
        &self,
        reservation: &Reservation,
        actual_tokens: i64,
    ) -> Result<Settlement> {
        validate::token_amount("actual_tokens", actual_tokens)?;
        self.store
            .settle(reservation.id, actual_tokens, self.clock.now())
            .await
    }

    /// Frees a reservation without charging, for a request that never reached the model.
    pub async fn release(&self, reservation: &Reservation) -> Result<()> {
        self.store.release(reservation.id).await
    }

    async fn decide(
        &self,
        key: &str,
        model: &str,
        estimated: i64,
        reserve: bool,
    ) -> Result<Decision> {
        let now = self.clock.now();
        // The key is checked first: a caller without a valid key learns
        // nothing else, not even whether its model name would be accepted.
        let ctx = match self.resolve_key(key).await? {
            Ok(ctx) => ctx,
            Err(reason) => {
                let request = Request::unchecked(model, estimated, now);
                return Ok(Decision::Denied(request.deny(reason, None, None)));
            }
        };
        let requested = validate::token_amount("estimated_tokens", estimated)?;
        let model = policy::model_name(model)?;
        let request = Request {
            model,
            requested,
            now,
        };
        let principal = Principal::of(&ctx);
        let period = MonthlyPeriod::containing(now, ctx.org.timezone);

        if let Some(reason) = key_problem(&ctx, now) {
            return Ok(Decision::Denied(request.deny(
                reason,
                Some(principal),
                None,
            )));
        }
        if !policy::is_allowed(&ctx.allowed_models, &request.model) {
            let reason = DenyReason::ModelNotAllowed;
            return Ok(Decision::Denied(request.deny(
                reason,
                Some(principal),
                None,
            )));
        }
        if reserve {
            self.reserve(&ctx, request, principal, period).await
        } else {
            let state = self
                .store
                .budget_state(ctx.org.id, ctx.user.id, &period.key)
                .await?;
            Ok(match budget::first_exceeded(&state, request.requested) {
                Some(exceeded) => Decision::Denied(request.exhausted(exceeded, principal, &period)),
                None => Decision::Allowed(request.allow(principal, None, state, &period)),
            })
        }
    }

    async fn resolve_key(&self, key: &str) -> Result<Result<KeyContext, DenyReason>> {
        if !key::is_well_formed(key) {
            return Ok(Err(DenyReason::InvalidKey));
        }
        let found = self.store.key_context(&KeyHash::of(key)).await?;
        Ok(found.ok_or(DenyReason::InvalidKey))
    }

    async fn reserve(
        &self,
        ctx: &KeyContext,
        request: Request,
        principal: Principal,
        period: MonthlyPeriod,
    ) -> Result<Decision> {
        let expires_at = request.now + self.reservation_ttl;
        let reserve = ReserveRequest {
            org_id: ctx.org.id,
            user_id: ctx.user.id,
            key_id: ctx.key.id,
            model: request.model.clone(),
            period: period.key.clone(),
            tokens: request.requested,
            created_at: request.now,
            expires_at,
        };
        match self.store.reserve(&reserve).await? {
            ReserveOutcome::Exceeded(exceeded) => Ok(Decision::Denied(
                request.exhausted(exceeded, principal, &period),
            )),
            ReserveOutcome::Reserved { id, state } => {
                let reservation = Reservation {
                    id,
                    org_id: ctx.org.id,
                    user_id: ctx.user.id,
                    key_id: ctx.key.id,
                    model: request.model.clone(),
                    period: period.key.clone(),
                    tokens: request.requested,
                    expires_at,
                };
                Ok(Decision::Allowed(request.allow(
                    principal,
                    Some(reservation),
                    state,
                    &period,
                )))
            }
        }
    }
}

fn key_problem(ctx: &KeyContext, now: DateTime<Utc>) -> Option<DenyReason> {
    match ctx.key.status(now) {
        KeyStatus::Active => None,
        KeyStatus::Expired => Some(DenyReason::ExpiredKey),
        KeyStatus::Revoked => Some(DenyReason::RevokedKey),
    }
}

struct Request {
    model: String,
    requested: i64,
    now: DateTime<Utc>,
}

impl Request {
    /// The request as given, for a denial made before its fields are checked.
    fn unchecked(model: &str, estimated: i64, now: DateTime<Utc>) -> Self {
        Request {
            model: crate::error::printable(model.trim()),
            requested: estimated,
            now,
        }
    }

    fn deny(
        &self,
        reason: DenyReason,
        principal: Option<Principal>,
        limit: Option<LimitDetail>,
    ) -> Denied {
        Denied {
            reason,
            principal,
            model: self.model.clone(),
            requested: self.requested,
            limit,
        }
    }

    fn exhausted(
        &self,
        exceeded: Exceeded,
        principal: Principal,
        period: &MonthlyPeriod,
    ) -> Denied {
        let reason = match exceeded.scope {
            LimitScope::Org => DenyReason::OrgBudgetExhausted,
            LimitScope::User => DenyReason::UserLimitExhausted,
        };
        let detail = LimitDetail {
            scope: exceeded.scope,
            limit: exceeded.limit,
            used: exceeded.used,
            reserved: exceeded.reserved,
            period: period.key.clone(),
            resets_at: period.resets_at,
        };
        self.deny(reason, Some(principal), Some(detail))
    }

    fn allow(
        &self,
        principal: Principal,
        reservation: Option<Reservation>,
        state: BudgetState,
        period: &MonthlyPeriod,
    ) -> Allowed {
        Allowed {
            principal,
            model: self.model.clone(),
            requested: self.requested,
            reservation,
            period: period.key.clone(),
            resets_at: period.resets_at,
            budget: state,
        }
    }
}

/// The answer to "may this request go ahead?".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// The request may go ahead.
    Allowed(Allowed),
    /// The request must be refused.
    Denied(Denied),
}

impl Decision {
    /// Whether the request may go ahead.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allowed(_))
    }
}

/// An allowed request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allowed {
    /// Whose key it was.
    pub principal: Principal,
    /// The normalised model name.
    pub model: String,
    /// Tokens estimated for the request.
    pub requested: i64,
    /// The tokens held for it; `None` for a dry-run [`Governor::check`].
    pub reservation: Option<Reservation>,
    /// The budget period key, `YYYY-MM`.
    pub period: String,
    /// When the period ends and the budget and limit reset.
    pub resets_at: DateTime<Utc>,
    /// Limits and counters (after the reservation, when one was made).
    pub budget: BudgetState,
}

/// A refused request, with everything needed to explain it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Denied {
    /// Why.
    pub reason: DenyReason,
    /// Whose key it was; `None` when the key is unknown.
    pub principal: Option<Principal>,
    /// The normalised model name.
    pub model: String,
    /// Tokens estimated for the request.
    pub requested: i64,
    /// The limit that refused it, for budget and limit denials.
    pub limit: Option<LimitDetail>,
}

impl Denied {
    /// A one-line explanation fit for the caller; never contains the key.
    pub fn message(&self) -> String {
        match (&self.reason, &self.limit) {
            (DenyReason::ModelNotAllowed, _) => {
                let org = self.principal.as_ref().map_or("", |p| p.org_slug.as_str());
                format!(
                    "model `{}` is not allowed for organization `{org}`",
                    self.model
                )
            }
            (_, Some(limit)) => {
                let whose = match (&limit.scope, &self.principal) {
                    (LimitScope::Org, Some(p)) => {
                        format!("organization `{}` monthly budget", p.org_slug)
                    }
                    (LimitScope::User, Some(p)) => format!("user `{}` monthly limit", p.email),
                    (_, None) => "monthly budget".to_owned(),
                };
                let counter = crate::budget::Counter {
                    used: limit.used,
                    reserved: limit.reserved,
                };
                let left = counter.left_of(limit.limit);
                let resets = limit
                    .resets_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                let state = format!(
                    "{} used, {} reserved of {}; resets at {resets}",
                    limit.used, limit.reserved, limit.limit
                );
                if left == 0 {
                    format!("{whose} exhausted: {state}")
                } else {
                    format!(
                        "{whose} has {left} tokens left, {} requested (lower the request's \
                         token estimate, such as max_tokens): {state}",
                        self.requested
                    )
                }
            }
            (reason, None) => reason.description().to_owned(),
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DenyReason {
    /// The key is malformed or unknown.
    InvalidKey,
    /// The key's expiry time has passed.
    ExpiredKey,
    /// The key was revoked.
    RevokedKey,
    /// The organization may not call this model.
    ModelNotAllowed,
    /// The organization's monthly budget cannot cover the request.
    OrgBudgetExhausted,
    /// The user's own monthly limit cannot cover the request.
    UserLimitExhausted,
}

impl DenyCategory {
    /// The stable machine-readable name, such as `limit_exceeded`.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyCategory::Unauthenticated => "unauthenticated",
            DenyCategory::Forbidden => "forbidden",
            DenyCategory::LimitExceeded => "limit_exceeded",
        }
    }
}

impl DenyReason {
    /// The stable machine-readable name, such as `org_budget_exhausted`.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::InvalidKey => "invalid_key",
            DenyReason::ExpiredKey => "expired_key",
            DenyReason::RevokedKey => "revoked_key",
            DenyReason::ModelNotAllowed => "model_not_allowed",
            DenyReason::OrgBudgetExhausted => "org_budget_exhausted",
            DenyReason::UserLimitExhausted => "user_limit_exhausted",
        }
    }

    /// What kind of refusal this is, for hosts that map it to a status code.
    pub fn category(self) -> DenyCategory {
        match self {
            DenyReason::InvalidKey | DenyReason::ExpiredKey | DenyReason::RevokedKey => {
                DenyCategory::Unauthenticated
            }
            DenyReason::ModelNotAllowed => DenyCategory::Forbidden,
            DenyReason::OrgBudgetExhausted | DenyReason::UserLimitExhausted => {
                DenyCategory::LimitExceeded
            }
        }
    }

    fn description(self) -> &'static str {
        match self {
            DenyReason::InvalidKey => "invalid API key",
            DenyReason::ExpiredKey => "API key has expired",
            DenyReason::RevokedKey => "API key has been revoked",
            DenyReason::ModelNotAllowed => "model is not allowed",
            DenyReason::OrgBudgetExhausted => "organization monthly budget exhausted",
            DenyReason::UserLimitExhausted => "user monthly limit exhausted",
        }
    }
}

/// The broad kind of a refusal. HTTP hosts usually answer 401, 403 and 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DenyCategory {
    /// The caller is not who a valid key says (HTTP 401).
    Unauthenticated,
    /// The caller may never do this (HTTP 403).
    Forbidden,
    /// The caller may do this again later (HTTP 429).
    LimitExceeded,
}

/// The limit that refused a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitDetail {
    /// Which limit.
    pub scope: LimitScope,
    /// Its size.
    pub limit: i64,
    /// Tokens used in the period.
    pub used: i64,
    /// Tokens held by open reservations.
    pub reserved: i64,
    /// The period key, `YYYY-MM`.
    pub period: String,
    /// When the period ends and the limit resets.
    pub resets_at: DateTime<Utc>,
}

/// Who a key belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// The organization's id.
    pub org_id: OrgId,
    /// The organization's slug.
    pub org_slug: String,
    /// The user's id.
    pub user_id: UserId,
    /// The user's email.
    pub email: String,
    /// The key's id.
    pub key_id: KeyId,
}

impl Principal {
    fn of(ctx: &KeyContext) -> Self {
        Principal {
            org_id: ctx.org.id,
            org_slug: ctx.org.slug.clone(),
            user_id: ctx.user.id,
            email: ctx.user.email.clone(),
            key_id: ctx.key.id,
        }
    }
}

/// Tokens held for an allowed request until it is settled or released.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// The store's id for it.
    pub id: ReservationId,
    /// The organization charged.
    pub org_id: OrgId,
    /// The user charged.
    pub user_id: UserId,
    /// The key presented.
    pub key_id: KeyId,
    /// The normalised model name.
    pub model: String,
    /// The budget period the tokens count in.
    pub period: String,
    /// Tokens held.
    pub tokens: i64,
    /// When the store may release it if it is still open.
    pub expires_at: DateTime<Utc>,
}
