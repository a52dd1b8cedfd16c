//! Plans: the declared state compared with the store, field by field.
//!
//! [`plan`] is pure: it takes the file, what the store holds
//! ([`OrgView`]), the last inventory and the settings, and answers the
//! field-level changes, the operations that make them, the users a lowered
//! limit would block at once, and whether a guard refuses the whole plan.
//! Emails and model patterns are normalised on both sides (the file's by
//! the parser, the store's when written), so a difference in letter case is
//! no change. Drift is the same comparison made against the file last
//! applied instead of the newest one.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::domain::{Organization, Role, User};
use crate::gitops::manifest::{DeclaredUser, Manifest};
use crate::gitops::settings::GitopsSettings;
use crate::gitops::state::Inventory;
use crate::rate::RateLimits;

/// What the store holds for an organization, as far as Git owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgView {
    /// The organization.
    pub org: Organization,
    /// Its allowed model patterns, sorted.
    pub models: Vec<String>,
    /// Its rate limits.
    pub rate_limits: RateLimits,
    /// Its users, members or removed, by email.
    pub users: Vec<ViewUser>,
    /// Tokens the organization used in the current period.
    pub used: i64,
}

/// One user of an [`OrgView`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewUser {
    /// The user.
    pub user: User,
    /// The user's rate limits.
    pub rate_limits: RateLimits,
    /// Tokens the user used in the current period.
    pub used: i64,
}

impl ViewUser {
    fn is_member(&self) -> bool {
        self.user.removed_at.is_none()
    }
}

/// Whether a field is added, changed or removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ChangeOp {
    /// Something new: a user or an allowed model.
    Add,
    /// A value that differs.
    Change,
    /// Something that goes: a user's membership or an allowed model.
    Remove,
}

/// One field-level difference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FieldChange {
    /// Add, change or remove.
    pub op: ChangeOp,
    /// `org:SLUG`, `user:EMAIL` or `model:PATTERN`.
    pub target: String,
    /// The field (`monthly_token_limit`, `role`, `rate_limits.rpm`, `membership`, …).
    pub field: String,
    /// The value the store holds (`null` when absent).
    pub before: Value,
    /// The declared value (`null` when removed).
    pub after: Value,
}

impl fmt::Display for FieldChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = match self.op {
            ChangeOp::Add => '+',
            ChangeOp::Change => '~',
            ChangeOp::Remove => '-',
        };
        write!(
            f,
            "{sign} {} {}: {} -> {}",
            self.target, self.field, self.before, self.after
        )
    }
}

/// A user a lowered limit would block at once: already over it this period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BlockedUser {
    /// `org:SLUG` when the org budget is lowered below its use, else `user:EMAIL`.
    pub target: String,
    /// Tokens used this period.
    pub used: i64,
    /// The new limit.
    pub limit: i64,
}

/// Why a guard refuses a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "guard", rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum GuardRefusal {
    /// More users would be removed than the removal guard allows.
    MassRemoval {
        /// Users the plan removes.
        removing: usize,
        /// Members before the apply.
        members: usize,
        /// The guard, in percent.
        max_percent: u8,
    },
    /// The organization would be left with no user.
    NoUser,
    /// The organization would be left with no org admin.
    NoOrgAdmin,
    /// The file changes or removes a system admin.
    SystemAdmin {
        /// The system admin's email.
        email: String,
    },
}

impl fmt::Display for GuardRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuardRefusal::MassRemoval {
                removing,
                members,
                max_percent,
            } => write!(
                f,
                "the file removes {removing} of {members} users, more than the removal guard \
                 of {max_percent}% allows; raise it with `--max-removal` if this is meant"
            ),
            GuardRefusal::NoUser => f.write_str(
                "the file would leave the organization with no user; enable with \
                 `--allow-empty` if this is meant",
            ),
            GuardRefusal::NoOrgAdmin => f.write_str(
                "the file would leave the organization with no org_admin; enable with \
                 `--allow-empty` if this is meant",
            ),
            GuardRefusal::SystemAdmin { email } => write!(
                f,
                "the file changes `{email}`, a system_admin; system admins are managed with \
                 `ias-admin` only: leave them out of the file"
            ),
        }
    }
}

/// One change the store makes, inside the apply's transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ApplyOp {
    /// Sets the organization's budget and its time zone.
    SetBudget {
        /// Tokens per month.
        monthly_tokens: i64,
        /// The budget's time zone.
        #[cfg_attr(feature = "openapi", schema(value_type = String))]
        timezone: Tz,
    },
    /// Sets the organization's rate limits.
    SetOrgRateLimits {
        /// The limits.
        limits: RateLimits,
    },
    /// Adds an allowed model pattern.
    AllowModel {
        /// The normalised pattern.
        pattern: String,
    },
    /// Removes an allowed model pattern.
    DenyModel {
        /// The normalised pattern.
        pattern: String,
    },
    /// Creates a user in the organization, or gives a removed one its membership back.
    AddUser {
        /// The declared user.
        user: DeclaredUser,
    },
    /// Sets a member's role and monthly limit, and marks its fields Git-owned.
    UpdateUser {
        /// The declared user.
        user: DeclaredUser,
    },
    /// Sets a user's rate limits.
    SetUserRateLimits {
        /// The user's email.
        email: String,
        /// The limits.
        limits: RateLimits,
    },
    /// Gives a member the file no longer declares back to the API (its
    /// fields are no longer Git-owned); its membership stays.
    ReleaseUser {
        /// The user's email.
        email: String,
    },
    /// Ends a user's membership: its keys stop working; the user, its keys
    /// and its usage stay for the record.
    RemoveUser {
        /// The user's email.
        email: String,
    },
}

/// The declared state compared with the store.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Plan {
    /// Every field-level difference.
    pub changes: Vec<FieldChange>,
    /// The store operations that make them, in order.
    pub ops: Vec<ApplyOp>,
    /// Members absent from the file that stay: Git did not add them, or prune is off.
    pub kept: Vec<String>,
    /// Who a lowered limit would block at once.
    pub blocked: Vec<BlockedUser>,
    /// Why a guard refuses the plan, if one does.
    pub refused: Option<GuardRefusal>,
    /// Users whose membership Git creates (to add to the inventory).
    pub added_users: Vec<String>,
}

impl Plan {
    /// Whether the plan changes nothing.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.ops.is_empty()
    }
}

/// Compares `desired` with what the store holds (`view`).
///
/// `inventory` is what Git applied before (its added users are the only
/// ones prune may remove). With `guards` false (drift checks) no guard is
/// applied. `now` is not used for decisions; plans are pure.
pub fn plan(
    desired: &Manifest,
    view: &OrgView,
    inventory: Option<&Inventory>,
    settings: &GitopsSettings,
    guards: bool,
) -> Plan {
    let mut plan = Plan::default();
    plan_org(desired, view, &mut plan);
    plan_models(desired, view, &mut plan);
    plan_users(desired, view, inventory, settings, &mut plan);
    if guards {
        plan.refused = guard(desired, view, &plan, settings);
    }
    plan
}

fn plan_org(desired: &Manifest, view: &OrgView, plan: &mut Plan) {
    let target = format!("org:{}", view.org.slug);
    let budget = &desired.budget;
    let org = &view.org;
    let mut budget_changed = false;
    if budget.monthly_tokens != org.monthly_token_budget {
        budget_changed = true;
        plan.changes.push(change(
            &target,
            "budget.monthly_tokens",
            json!(org.monthly_token_budget),
            json!(budget.monthly_tokens),
        ));
        let used = view.used;
        if used >= budget.monthly_tokens && budget.monthly_tokens < org.monthly_token_budget {
            plan.blocked.push(BlockedUser {
                target: target.clone(),
                used,
                limit: budget.monthly_tokens,
            });
        }
    }
    if budget.timezone != org.timezone {
        budget_changed = true;
        plan.changes.push(change(
            &target,
            "budget.timezone",
            json!(org.timezone.name()),
            json!(budget.timezone.name()),
        ));
    }
    if budget_changed {
        plan.ops.push(ApplyOp::SetBudget {
            monthly_tokens: budget.monthly_tokens,
            timezone: budget.timezone,
        });
    }
    if rate_changes(&target, view.rate_limits, desired.rate_limits, plan) {
        plan.ops.push(ApplyOp::SetOrgRateLimits {
            limits: desired.rate_limits,
        });
    }
}

fn plan_models(desired: &Manifest, view: &OrgView, plan: &mut Plan) {
    let have: BTreeSet<&str> = view.models.iter().map(String::as_str).collect();
    let want: BTreeSet<&str> = desired.allowed_models.iter().map(String::as_str).collect();
    for pattern in want.difference(&have) {
        plan.changes.push(FieldChange {
            op: ChangeOp::Add,
            target: format!("model:{pattern}"),
            field: "allowed".to_owned(),
            before: Value::Null,
            after: json!(true),
        });
        plan.ops.push(ApplyOp::AllowModel {
            pattern: (*pattern).to_owned(),
        });
    }
    for pattern in have.difference(&want) {
        plan.changes.push(FieldChange {
            op: ChangeOp::Remove,
            target: format!("model:{pattern}"),
            field: "allowed".to_owned(),
            before: json!(true),
            after: Value::Null,
        });
        plan.ops.push(ApplyOp::DenyModel {
            pattern: (*pattern).to_owned(),
        });
    }
}

fn plan_users(
    desired: &Manifest,
    view: &OrgView,
    inventory: Option<&Inventory>,
    settings: &GitopsSettings,
    plan: &mut Plan,
) {
    let stored: BTreeMap<&str, &ViewUser> = view
        .users
        .iter()
        .map(|u| (u.user.email.as_str(), u))
        .collect();
    let declared: BTreeSet<&str> = desired.users.iter().map(|u| u.email.as_str()).collect();
    for user in &desired.users {
        match stored.get(user.email.as_str()) {
            Some(have) if have.is_member() => plan_member(user, have, plan),
            _ => plan_new_user(user, plan),
        }
    }
    let added: BTreeSet<&str> = inventory
        .map(|inv| inv.added_users.iter().map(String::as_str).collect())
        .unwrap_or_default();
    for have in view.users.iter().filter(|u| u.is_member()) {
        let email = have.user.email.as_str();
        if declared.contains(email) {
            continue;
        }
        if settings.prune && added.contains(email) {
            plan.changes.push(FieldChange {
                op: ChangeOp::Remove,
                target: format!("user:{email}"),
                field: "membership".to_owned(),
                before: json!(have.user.role.as_str()),
                after: Value::Null,
            });
            plan.ops.push(ApplyOp::RemoveUser {
                email: email.to_owned(),
            });
        } else {
            plan.kept.push(email.to_owned());
            if have.user.managed_by == crate::domain::ManagedBy::Gitops {
                // No longer declared: its fields go back to the API. It stays
                // in the inventory when Git added it, so prune may remove it later.
                plan.changes.push(change(
                    &format!("user:{email}"),
                    "managed_by",
                    json!("gitops"),
                    json!("api"),
                ));
                plan.ops.push(ApplyOp::ReleaseUser {
                    email: email.to_owned(),
                });
            }
        }
    }
    let members: BTreeSet<&str> = view
        .users
        .iter()
        .filter(|u| u.is_member())
        .map(|u| u.user.email.as_str())
        .collect();
    let removed: BTreeSet<&str> = plan
        .ops
        .iter()
        .filter_map(|op| match op {
            ApplyOp::RemoveUser { email } => Some(email.as_str()),
            _ => None,
        })
        .collect();
    plan.added_users = added
        .iter()
        .filter(|email| members.contains(**email) && !removed.contains(**email))
        .map(|email| (*email).to_owned())
        .chain(plan.ops.iter().filter_map(|op| match op {
            ApplyOp::AddUser { user } => Some(user.email.clone()),
            _ => None,
        }))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
}

fn plan_new_user(user: &DeclaredUser, plan: &mut Plan) {
    plan.changes.push(FieldChange {
        op: ChangeOp::Add,
        target: format!("user:{}", user.email),
        field: "membership".to_owned(),
        before: Value::Null,
        after: json!({
            "role": user.role.as_str(),
            "monthly_token_limit": user.monthly_token_limit,
            "rate_limits": user.rate_limits,
        }),
    });
    plan.ops.push(ApplyOp::AddUser { user: user.clone() });
    if !user.rate_limits.is_none() {
        plan.ops.push(ApplyOp::SetUserRateLimits {
            email: user.email.clone(),
            limits: user.rate_limits,
        });
    }
}

fn plan_member(user: &DeclaredUser, have: &ViewUser, plan: &mut Plan) {
    let target = format!("user:{}", user.email);
    let stored = &have.user;
    let mut update = false;
    if user.role != stored.role {
        update = true;
        plan.changes.push(change(
            &target,
            "role",
            json!(stored.role.as_str()),
            json!(user.role.as_str()),
        ));
    }
    if user.monthly_token_limit != stored.monthly_token_limit {
        update = true;
        plan.changes.push(change(
            &target,
            "monthly_token_limit",
            json!(stored.monthly_token_limit),
            json!(user.monthly_token_limit),
        ));
        if let Some(limit) = user.monthly_token_limit {
            let lowered = stored.monthly_token_limit.is_none_or(|old| limit < old);
            if lowered && have.used >= limit {
                plan.blocked.push(BlockedUser {
                    target: target.clone(),
                    used: have.used,
                    limit,
                });
            }
        }
    }
    if stored.managed_by != crate::domain::ManagedBy::Gitops {
        update = true;
        plan.changes.push(change(
            &target,
            "managed_by",
            json!(stored.managed_by.as_str()),
            json!("gitops"),
        ));
    }
    if update {
        plan.ops.push(ApplyOp::UpdateUser { user: user.clone() });
    }
    if rate_changes(&target, have.rate_limits, user.rate_limits, plan) {
        plan.ops.push(ApplyOp::SetUserRateLimits {
            email: user.email.clone(),
            limits: user.rate_limits,
        });
    }
}

fn rate_changes(target: &str, have: RateLimits, want: RateLimits, plan: &mut Plan) -> bool {
    let mut changed = false;
    for (field, old, new) in [
        ("rate_limits.rpm", have.rpm, want.rpm),
        ("rate_limits.tpm", have.tpm, want.tpm),
    ] {
        if old != new {
            changed = true;
            plan.changes
                .push(change(target, field, json!(old), json!(new)));
        }
    }
    changed
}

fn change(target: &str, field: &str, before: Value, after: Value) -> FieldChange {
    FieldChange {
        op: ChangeOp::Change,
        target: target.to_owned(),
        field: field.to_owned(),
        before,
        after,
    }
}

/// A system admin the plan would change or remove: system admins are managed with `ias-admin` only.
fn touched_system_admin(view: &OrgView, plan: &Plan) -> Option<String> {
    let admins: BTreeSet<&str> = view
        .users
        .iter()
        .filter(|u| u.is_member() && u.user.role == Role::SystemAdmin)
        .map(|u| u.user.email.as_str())
        .collect();
    plan.ops.iter().find_map(|op| {
        let email = match op {
            ApplyOp::UpdateUser { user } | ApplyOp::AddUser { user } => user.email.as_str(),
            ApplyOp::SetUserRateLimits { email, .. }
            | ApplyOp::ReleaseUser { email }
            | ApplyOp::RemoveUser { email } => email.as_str(),
            _ => return None,
        };
        admins.contains(email).then(|| email.to_owned())
    })
}

fn guard(
    desired: &Manifest,
    view: &OrgView,
    plan: &Plan,
    settings: &GitopsSettings,
) -> Option<GuardRefusal> {
    if let Some(email) = touched_system_admin(view, plan) {
        return Some(GuardRefusal::SystemAdmin { email });
    }
    let members = view.users.iter().filter(|u| u.is_member()).count();
    let removing = plan
        .ops
        .iter()
        .filter(|op| matches!(op, ApplyOp::RemoveUser { .. }))
        .count();
    if removing > 0 && removing * 100 > members * usize::from(settings.max_removal_percent) {
        return Some(GuardRefusal::MassRemoval {
            removing,
            members,
            max_percent: settings.max_removal_percent,
        });
    }
    if settings.allow_empty {
        return None;
    }
    let kept_roles = view
        .users
        .iter()
        .filter(|u| u.is_member() && plan.kept.contains(&u.user.email))
        .map(|u| u.user.role);
    let roles: Vec<Role> = desired
        .users
        .iter()
        .map(|u| u.role)
        .chain(kept_roles)
        .collect();
    if roles.is_empty() {
        return Some(GuardRefusal::NoUser);
    }
    if !roles
        .iter()
        .any(|r| matches!(r, Role::OrgAdmin | Role::SystemAdmin))
    {
        return Some(GuardRefusal::NoOrgAdmin);
    }
    None
}

/// When a plan was made, and from which commit: what `gitops plan` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanReport {
    /// The organization's slug.
    pub org: String,
    /// The commit the file came from.
    pub commit: String,
    /// When the plan was made.
    pub at: DateTime<Utc>,
    /// The plan.
    pub plan: Plan,
}
