//! Role-based access control through a permissions table.
//!
//! A role is a set of `(permission, scope)` grants stored in
//! `role_permissions`. The three built-in roles are seeded by the first
//! migration from [`builtin_grants`]; a custom role later is only new rows.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::audit::Actor;
use crate::domain::{OrgId, Role, UserId};
use crate::error::{Error, Result};

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
    /// Give a user the `system_admin` role.
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

/// The grants of the three built-in roles, as seeded by the first migration.
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
        [KeyCreate, KeyRead, KeyRevoke, UsageRead, ModelRead]
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
    /// The user acted on, if the operation concerns one user.
    pub user_id: Option<UserId>,
}

/// Whether `actor`, holding `grants`, may perform `permission` on `target`.
///
/// Operators are always allowed (see [`Actor::Operator`]). A user needs a
/// grant for the permission whose scope reaches the target.
pub fn is_permitted(
    actor: &Actor,
    grants: &[Grant],
    permission: Permission,
    target: Target,
) -> bool {
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

    #[test]
    fn member_reaches_only_its_own_user() {
        let g = grants_of(Role::Member);
        let own = Target {
            org_id: Some(OrgId(1)),
            user_id: Some(UserId(10)),
        };
        let other = Target {
            org_id: Some(OrgId(1)),
            user_id: Some(UserId(11)),
        };
        assert!(is_permitted(
            &user(Role::Member),
            &g,
            Permission::KeyCreate,
            own
        ));
        assert!(!is_permitted(
            &user(Role::Member),
            &g,
            Permission::KeyCreate,
            other
        ));
        assert!(!is_permitted(
            &user(Role::Member),
            &g,
            Permission::UserUpdate,
            own
        ));
    }

    #[test]
    fn org_admin_stays_in_its_org() {
        let g = grants_of(Role::OrgAdmin);
        let actor = user(Role::OrgAdmin);
        let in_org = Target {
            org_id: Some(OrgId(1)),
            user_id: Some(UserId(11)),
        };
        let other_org = Target {
            org_id: Some(OrgId(2)),
            user_id: None,
        };
        let global = Target {
            org_id: None,
            user_id: None,
        };
        assert!(is_permitted(&actor, &g, Permission::UserUpdate, in_org));
        assert!(!is_permitted(&actor, &g, Permission::UserUpdate, other_org));
        assert!(!is_permitted(&actor, &g, Permission::OrgCreate, global));
        assert!(!is_permitted(
            &actor,
            &g,
            Permission::RoleGrantSystemAdmin,
            in_org
        ));
    }

    #[test]
    fn system_admin_reaches_everything() {
        let g = grants_of(Role::SystemAdmin);
        let other_org = Target {
            org_id: Some(OrgId(2)),
            user_id: None,
        };
        for p in Permission::ALL {
            assert!(is_permitted(&user(Role::SystemAdmin), &g, p, other_org));
        }
    }
}
