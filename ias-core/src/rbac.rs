//! Role-based access control through a permissions table.
//!
//! A role is a set of `(permission, scope)` grants stored in
//! `role_permissions`. The three built-in roles are seeded by the
//! migrations as [`builtin_grants`] lists them; a custom role is only new
//! rows (see `docs/schema.md`). Every admin operation runs one [`check`]
//! of its actor against its [`Target`], with the role's grants read from
//! the store through a [`GrantCache`].
//!
//! | operation | permission | member | org_admin | system_admin |
//! |---|---|---|---|---|
//! | create an organization | `org.create` | – | – | global |
//! | show or list organizations | `org.read` | – | org | global |
//! | change a budget or time zone (reserved) | `org.update` | – | org | global |
//! | create a user | `user.create` | – | org | global |
//! | show or list users | `user.read` | – | org | global |
//! | set a user's monthly limit | `user.update` | – | org | global |
//! | reset a password | `user.reset_password` | – | – | global |
//! | make or act on a `system_admin` | `role.grant_system_admin` | – | – | global |
//! | create a key for oneself / for others | `key.create` | own | org | global |
//! | list keys | `key.read` | own | org | global |
//! | revoke a key | `key.revoke` | own | org | global |
//! | list allowed models | `model.read` | – | org | global |
//! | allow or deny a model | `model.manage` | – | org | global |
//! | set rate limits (`limits set`) | `limits.manage` | – | org | global |
//! | read usage | `usage.read` | own | org | global |
//! | read the audit log | `audit.read` | – | org | global |
//! | verify the audit chain (every org) | `audit.read` | – | – | global |
//! | manage GitOps (reserved) | `gitops.manage` | – | org | global |
//!
//! "For oneself versus for others" is the scope of one permission: `own`
//! reaches only the actor's own user, `org` every user of its organization.

mod cache;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::audit::Actor;
use crate::domain::{OrgId, Role, User, UserId};
use crate::error::{Error, Result};

pub use cache::GrantCache;

/// One admin operation that can be granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Permission {
    /// Create organizations.
    OrgCreate,
    /// Read organizations and their settings.
    OrgRead,
    /// Change an organization's budget or time zone.
    OrgUpdate,
    /// Create users.
    UserCreate,
    /// Read users.
    UserRead,
    /// Change a user's role or monthly limit.
    UserUpdate,
    /// Reset a user's password.
    UserResetPassword,
    /// Give a user the `system_admin` role, or change a `system_admin`'s account.
    RoleGrantSystemAdmin,
    /// Create API keys.
    KeyCreate,
    /// List API keys (never their secrets).
    KeyRead,
    /// Revoke API keys.
    KeyRevoke,
    /// Read an organization's allowed models.
    ModelRead,
    /// Allow or deny models for an organization.
    ModelManage,
    /// Set rate limits.
    LimitsManage,
    /// Read usage.
    UsageRead,
    /// Read the audit log.
    AuditRead,
    /// Enable, disable and sync GitOps for an organization.
    GitopsManage,
}

impl Permission {
    /// Every permission, in a stable order.
    pub const ALL: [Permission; 17] = [
        Permission::OrgCreate,
        Permission::OrgRead,
        Permission::OrgUpdate,
        Permission::UserCreate,
        Permission::UserRead,
        Permission::UserUpdate,
        Permission::UserResetPassword,
        Permission::RoleGrantSystemAdmin,
        Permission::KeyCreate,
        Permission::KeyRead,
        Permission::KeyRevoke,
        Permission::ModelRead,
        Permission::ModelManage,
        Permission::LimitsManage,
        Permission::UsageRead,
        Permission::AuditRead,
        Permission::GitopsManage,
    ];

    /// The name stored in `permissions`.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::OrgCreate => "org.create",
            Permission::OrgRead => "org.read",
            Permission::OrgUpdate => "org.update",
            Permission::UserCreate => "user.create",
            Permission::UserRead => "user.read",
            Permission::UserUpdate => "user.update",
            Permission::UserResetPassword => "user.reset_password",
            Permission::RoleGrantSystemAdmin => "role.grant_system_admin",
            Permission::KeyCreate => "key.create",
            Permission::KeyRead => "key.read",
            Permission::KeyRevoke => "key.revoke",
            Permission::ModelRead => "model.read",
            Permission::ModelManage => "model.manage",
            Permission::LimitsManage => "limits.manage",
            Permission::UsageRead => "usage.read",
            Permission::AuditRead => "audit.read",
            Permission::GitopsManage => "gitops.manage",
        }
    }
}

impl Permission {
    /// Whether the permission changes a user's account or its keys.
    ///
    /// Doing so to a `system_admin` hands out (or takes away) system-admin
    /// power, so [`check`] also asks for [`Permission::RoleGrantSystemAdmin`].
    pub fn writes_user(self) -> bool {
        matches!(
            self,
            Permission::UserCreate
                | Permission::UserUpdate
                | Permission::UserResetPassword
                | Permission::KeyCreate
                | Permission::KeyRevoke
                | Permission::LimitsManage
        )
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Permission {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Permission::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| Error::invalid("permission", s, "unknown permission"))
    }
}

/// How far a grant reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Only the actor's own user (its own keys, its own usage).
    Own,
    /// Everything in the actor's organization.
    Org,
    /// Everything in every organization.
    Global,
}

impl Scope {
    /// The name stored in `role_permissions`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Own => "own",
            Scope::Org => "org",
            Scope::Global => "global",
        }
    }
}

impl FromStr for Scope {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "own" => Ok(Scope::Own),
            "org" => Ok(Scope::Org),
            "global" => Ok(Scope::Global),
            other => Err(Error::invalid(
                "scope",
                other,
                "expected own, org or global",
            )),
        }
    }
}

/// One row of `role_permissions`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Grant {
    /// The role's name.
    pub role: String,
    /// The permission granted.
    pub permission: Permission,
    /// How far it reaches.
    pub scope: Scope,
}

/// The grants of the three built-in roles, as seeded by the migrations.
pub fn builtin_grants() -> Vec<Grant> {
    use Permission::*;
    let grant = |role: Role, permission, scope| Grant {
        role: role.as_str().to_owned(),
        permission,
        scope,
    };
    let mut grants: Vec<Grant> = Permission::ALL
        .into_iter()
        .map(|p| grant(Role::SystemAdmin, p, Scope::Global))
        .collect();
    grants.extend(
        Permission::ALL
            .into_iter()
            .filter(|p| !matches!(p, OrgCreate | RoleGrantSystemAdmin | UserResetPassword))
            .map(|p| grant(Role::OrgAdmin, p, Scope::Org)),
    );
    grants.extend(
        [KeyCreate, KeyRead, KeyRevoke, UsageRead]
            .into_iter()
            .map(|p| grant(Role::Member, p, Scope::Own)),
    );
    grants
}

/// What an operation acts on, for the scope check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// The organization acted in; `None` for global operations such as creating an org.
    pub org_id: Option<OrgId>,
    /// The user acted on, if the operation concerns one existing user.
    pub user_id: Option<UserId>,
    /// The role of the user acted on, or of the user about to be created.
    pub user_role: Option<Role>,
}

impl Target {
    /// Nothing in particular: every organization, such as creating one.
    pub fn global() -> Self {
        Target {
            org_id: None,
            user_id: None,
            user_role: None,
        }
    }

    /// An organization as a whole.
    pub fn org(org_id: OrgId) -> Self {
        Target {
            org_id: Some(org_id),
            ..Target::global()
        }
    }

    /// One existing user (its account, keys or usage).
    pub fn user(user: &User) -> Self {
        Target {
            org_id: Some(user.org_id),
            user_id: Some(user.id),
            user_role: Some(user.role),
        }
    }

    /// A user about to be created in `org_id` with `role`.
    pub fn new_user(org_id: OrgId, role: Role) -> Self {
        Target {
            user_role: Some(role),
            ..Target::org(org_id)
        }
    }
}

/// The answer of a permission [`check`]: a value, not an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The actor may perform the operation.
    Allowed,
    /// The actor may not; `missing` is the permission it lacks for the target.
    Denied {
        /// The permission whose grant did not reach the target.
        missing: Permission,
    },
}

/// Whether `actor`, holding `grants`, may perform `permission` on `target`.
///
/// Operators are always allowed (see [`Actor::Operator`]); they act as
/// system admins. A user needs a grant for the permission whose scope
/// reaches the target and, for a permission that [writes a
/// user](Permission::writes_user) whose role is `system_admin`, a grant of
/// [`Permission::RoleGrantSystemAdmin`] that reaches it too.
pub fn check(actor: &Actor, grants: &[Grant], permission: Permission, target: Target) -> Access {
    let Actor::User { .. } = actor else {
        return Access::Allowed;
    };
    let needed = [Some(permission), over_system_admin(permission, target)];
    match needed
        .into_iter()
        .flatten()
        .find(|p| !reaches(actor, grants, *p, target))
    {
        Some(missing) => Access::Denied { missing },
        None => Access::Allowed,
    }
}

/// [`check`] as a yes or no.
pub fn is_permitted(
    actor: &Actor,
    grants: &[Grant],
    permission: Permission,
    target: Target,
) -> bool {
    check(actor, grants, permission, target) == Access::Allowed
}

fn over_system_admin(permission: Permission, target: Target) -> Option<Permission> {
    (permission.writes_user() && target.user_role == Some(Role::SystemAdmin))
        .then_some(Permission::RoleGrantSystemAdmin)
}

/// Whether one of `grants` gives `permission` with a scope that reaches `target`.
fn reaches(actor: &Actor, grants: &[Grant], permission: Permission, target: Target) -> bool {
    let Actor::User { id, org_id, .. } = actor else {
        return true;
    };
    grants
        .iter()
        .filter(|g| g.permission == permission)
        .any(|g| match g.scope {
            Scope::Global => true,
            Scope::Org => target.org_id == Some(*org_id),
            Scope::Own => target.org_id == Some(*org_id) && target.user_id == Some(*id),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(role: Role) -> Actor {
        Actor::User {
            id: UserId(10),
            email: "a@example.com".into(),
            role,
            org_id: OrgId(1),
        }
    }

    fn grants_of(role: Role) -> Vec<Grant> {
        builtin_grants()
            .into_iter()
            .filter(|g| g.role == role.as_str())
            .collect()
    }

    fn someone(id: i64, org: i64, role: Role) -> Target {
        Target {
            org_id: Some(OrgId(org)),
            user_id: Some(UserId(id)),
            user_role: Some(role),
        }
    }

    #[test]
    fn member_reaches_only_its_own_user() {
        let g = grants_of(Role::Member);
        let actor = user(Role::Member);
        let own = someone(10, 1, Role::Member);
        let other = someone(11, 1, Role::Member);
        assert!(is_permitted(&actor, &g, Permission::KeyCreate, own));
        assert!(!is_permitted(&actor, &g, Permission::KeyCreate, other));
        assert_eq!(
            check(&actor, &g, Permission::UserUpdate, own),
            Access::Denied {
                missing: Permission::UserUpdate
            }
        );
    }

    #[test]
    fn org_admin_stays_in_its_org() {
        let g = grants_of(Role::OrgAdmin);
        let actor = user(Role::OrgAdmin);
        let in_org = someone(11, 1, Role::Member);
        assert!(is_permitted(&actor, &g, Permission::UserUpdate, in_org));
        let other_org = Target::org(OrgId(2));
        assert!(!is_permitted(&actor, &g, Permission::UserUpdate, other_org));
        let global = Target::global();
        assert!(!is_permitted(&actor, &g, Permission::OrgCreate, global));
        let new_admin = Target::new_user(OrgId(1), Role::SystemAdmin);
        assert_eq!(
            check(&actor, &g, Permission::UserCreate, new_admin),
            Access::Denied {
                missing: Permission::RoleGrantSystemAdmin
            }
        );
    }

    #[test]
    fn org_admin_may_not_act_on_a_system_admin_account() {
        let g = grants_of(Role::OrgAdmin);
        let actor = user(Role::OrgAdmin);
        let boss = someone(12, 1, Role::SystemAdmin);
        for p in Permission::ALL.into_iter().filter(|p| p.writes_user()) {
            assert!(!is_permitted(&actor, &g, p, boss), "{p}");
        }
        assert!(is_permitted(&actor, &g, Permission::KeyRead, boss));
    }

    #[test]
    fn system_admin_reaches_everything() {
        let g = grants_of(Role::SystemAdmin);
        let far = someone(99, 2, Role::SystemAdmin);
        for p in Permission::ALL {
            assert!(is_permitted(&user(Role::SystemAdmin), &g, p, far));
            assert!(is_permitted(
                &user(Role::SystemAdmin),
                &g,
                p,
                Target::global()
            ));
        }
    }

    #[test]
    fn operators_are_not_bound_by_grants() {
        let operator = Actor::Operator {
            name: "root".into(),
        };
        assert!(is_permitted(
            &operator,
            &[],
            Permission::OrgCreate,
            Target::global()
        ));
    }
}
