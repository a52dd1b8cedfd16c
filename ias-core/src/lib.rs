//! Governance for LLM API gateways, embedded in the gateway's own process.
//!
//! `ias-core` holds the domain (organizations, users, API keys, allowed
//! models, usage, audit), the rules (model policy, monthly budgets and
//! per-user limits, role permissions, password rules) and the storage traits. It knows no
//! SQL, HTTP or Git: stores such as `ias-store-sqlite` implement [`Store`],
//! and hosts (a gateway, `ias-admin`, Python) call [`Governor`] on every
//! request and [`Admin`] for changes.
//!
//! ```no_run
//! # async fn demo(store: std::sync::Arc<dyn ias_core::Store>) -> ias_core::Result<()> {
//! use ias_core::{Actor, Admin, Decision, Governor, Role, Source};
//!
//! let admin = Admin::new(store.clone(), Actor::local_operator(), Source::Library);
//! admin.create_org("team-alpha", 5_000_000, "Europe/Berlin").await?;
//! admin.allow_model("team-alpha", "gpt-4o-mini").await?;
//! admin.create_user("team-alpha", "bob@example.com", Role::Member, Some(100_000)).await?;
//! let created = admin.create_key("bob@example.com", None).await?;
//!
//! let governor = Governor::open(store).await?;
//! let decision = governor.authorize(created.secret.expose(), "gpt-4o-mini", 500).await?;
//! if let Decision::Allowed(allowed) = decision {
//!     if let Some(reservation) = &allowed.reservation {
//!         governor.settle(reservation, 420).await?;
//!     }
//! }
//! governor.shutdown().await?; // writes the usage still held in memory
//! # Ok(()) }
//! ```

pub mod admin;
pub mod audit;
pub mod budget;
mod cache;
pub mod clock;
pub mod domain;
pub mod error;
pub mod gitops;
pub mod governor;
pub mod key;
pub mod lease;
mod ledger;
pub mod migration;
pub mod page;
pub mod password;
pub mod period;
pub mod policy;
pub mod rate;
pub mod rbac;
pub mod seed;
pub mod snapshot;
pub mod store;
pub mod url;
pub mod usage;
pub mod validate;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use admin::{Admin, CreatedKey, LimitTarget, ModelChange};
pub use audit::{
    Actor, AuditEntry, AuditFilter, AuditHead, AuditRecord, AuditVerification, ChainBreak, Source,
};
pub use budget::{BudgetState, Counter, LimitScope, Settlement};
pub use clock::{Clock, ManualClock, SystemClock};
pub use domain::{
    ApiKey, KeyId, KeyStatus, ManagedBy, NewApiKey, NewOrganization, NewUser, OrgId, Organization,
    ReservationId, Role, User, UserId, UserRef,
};
pub use error::{Error, Result};
pub use governor::{
    Allowed, Decision, Denied, DenyCategory, DenyReason, Durability, Governor, GovernorBuilder,
    GovernorConfig, GovernorStats, KeyModels, LimitDetail, LimitKind, Maintenance, Principal,
    Reservation,
};
pub use key::{KeyHash, KeySecret};
pub use page::{Page, PageRequest};
pub use password::{HashedPassword, verify_password};
pub use period::MonthlyPeriod;
pub use rate::RateLimits;
pub use rbac::{Access, Grant, GrantCache, Permission, Scope, Target};
pub use seed::{SeedPlan, SeedStore};
pub use store::{
    AuditStore, CacheStore, GitopsStore, KeyStore, OrgStore, RateLimitStore, SchemaStore, Store,
    UsageStore, UserStore,
};
pub use url::DatabaseUrl;
pub use usage::UsageReport;
