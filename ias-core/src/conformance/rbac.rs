//! Role permissions, checked through `Admin` against the grants the store seeds.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::audit::{AuditEntry, AuditFilter, DENIED_SUFFIX};
use crate::domain::{Role, User};
use crate::error::{Error, Result};
use crate::page::PageRequest;
use crate::{Actor, Admin, Source, Store};

/// Every operation, for each role acting from organization `home`, on:
/// `home` (its own organization), `away` (another organization, or a user
/// of it), `self` (its own user) and `peer` (another user of `home`, a
/// member). `Y`: allowed; `n`: denied and audited; `-`: does not apply.
///
/// `org.list` leaves out what the role may not read instead of refusing;
/// its `n` means "not listed". `usage.read`, `usage.daily` and the
/// `limits.*` rows act on the whole organization on `home`/`away`, and on
/// one user on `self`/`peer` (so a member may not raise its own rate limit).
pub const MATRIX: &str = "
operation                | system_admin        | org_admin           | member
                         | home away self peer | home away self peer | home away self peer
org.create               |  -    Y    -    -   |  -    n    -    -   |  -    n    -    -
org.read                 |  Y    Y    -    -   |  Y    n    -    -   |  n    n    -    -
org.list                 |  Y    Y    -    -   |  Y    n    -    -   |  n    n    -    -
user.create              |  Y    Y    -    -   |  Y    n    -    -   |  n    n    -    -
user.create.system_admin |  Y    Y    -    -   |  n    n    -    -   |  n    n    -    -
user.read                |  -    Y    Y    Y   |  -    n    Y    Y   |  -    n    n    n
user.list                |  Y    Y    -    -   |  Y    n    -    -   |  n    n    -    -
user.set_limit           |  -    Y    Y    Y   |  -    n    Y    Y   |  -    n    n    n
user.reset_password      |  -    Y    Y    Y   |  -    n    n    n   |  -    n    n    n
key.create               |  -    Y    Y    Y   |  -    n    Y    Y   |  -    n    Y    n
key.list                 |  -    Y    Y    Y   |  -    n    Y    Y   |  -    n    Y    n
key.revoke               |  -    Y    Y    Y   |  -    n    Y    Y   |  -    n    Y    n
model.allow              |  Y    Y    -    -   |  Y    n    -    -   |  n    n    -    -
model.deny               |  Y    Y    -    -   |  Y    n    -    -   |  n    n    -    -
model.list               |  Y    Y    -    -   |  Y    n    -    -   |  n    n    -    -
usage.read               |  Y    Y    Y    Y   |  Y    n    Y    Y   |  n    n    Y    n
usage.daily              |  Y    Y    Y    Y   |  Y    n    Y    Y   |  n    n    Y    n
limits.set               |  Y    Y    Y    Y   |  Y    n    Y    Y   |  n    n    n    n
limits.read              |  Y    Y    Y    Y   |  Y    n    Y    Y   |  n    n    n    n
audit.list               |  Y    Y    -    -   |  Y    n    -    -   |  n    n    -    -
audit.list.all           |  -    Y    -    -   |  -    n    -    -   |  -    n    -    -
audit.verify             |  -    Y    -    -   |  -    n    -    -   |  -    n    -    -
";

/// What an operation acts on, relative to the actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum On {
    Home,
    Away,
    Own,
    Peer,
}

const COLUMNS: [On; 4] = [On::Home, On::Away, On::Own, On::Peer];
const ROLES: [Role; 3] = [Role::SystemAdmin, Role::OrgAdmin, Role::Member];

/// A password that follows every rule.
pub(super) const STRONG_PASSWORD: &str = "Vivid-Orbit-Lantern-42";

/// One cell of the matrix: operation, role, target, expected answer.
#[derive(Debug, Clone)]
struct Cell {
    operation: String,
    role: Role,
    on: On,
    allowed: bool,
}

fn cells() -> Vec<Cell> {
    MATRIX
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with(' '))
        .skip(1)
        .flat_map(row_cells)
        .collect()
}

fn row_cells(line: &str) -> Vec<Cell> {
    let mut parts = line.split('|');
    let operation = parts.next().unwrap().trim().to_owned();
    let mut cells = Vec::new();
    for (role, part) in ROLES.into_iter().zip(parts) {
        let marks: Vec<&str> = part.split_whitespace().collect();
        assert_eq!(marks.len(), 4, "{operation}: {part:?}");
        for (on, mark) in COLUMNS.into_iter().zip(marks) {
            let allowed = match mark {
                "Y" => true,
                "n" => false,
                "-" => continue,
                other => panic!("{operation}: unknown mark {other:?}"),
            };
            cells.push(Cell {
                operation: operation.clone(),
                role,
                on,
                allowed,
            });
        }
    }
    cells
}

/// Organizations `home` and `away`, a user of each role in `home`, a peer and a user away.
pub(super) struct World {
    pub(super) store: Arc<dyn Store>,
    pub(super) operator: Admin,
    fresh: AtomicUsize,
}

impl World {
    pub(super) async fn new(store: Arc<dyn Store>) -> World {
        let operator = super::admin(&store);
        for slug in ["home", "away"] {
            operator.create_org(slug, 1_000_000, "UTC").await.unwrap();
            operator.allow_model(slug, "gpt-4o-mini").await.unwrap();
        }
        for role in ROLES {
            let email = email_of(role);
            operator
                .create_user("home", &email, role, None)
                .await
                .unwrap();
        }
        let member = Role::Member;
        operator
            .create_user("home", "peer@home.io", member, None)
            .await
            .unwrap();
        operator
            .create_user("away", "user@away.io", member, None)
            .await
            .unwrap();
        World {
            store,
            operator,
            fresh: AtomicUsize::new(0),
        }
    }

    /// Admin operations by the user of `home` with `role`, from the API.
    pub(super) async fn actor(&self, role: Role) -> Admin {
        self.actor_for(&email_of(role)).await
    }

    pub(super) async fn actor_for(&self, email: &str) -> Admin {
        let user = self.user(email).await;
        Admin::new(self.store.clone(), Actor::user(&user), Source::Api)
    }

    pub(super) async fn user(&self, email: &str) -> User {
        self.store.user_by_email(email).await.unwrap().unwrap()
    }

    fn fresh(&self, kind: &str) -> String {
        format!("{kind}{}", self.fresh.fetch_add(1, Ordering::Relaxed))
    }

    /// The newest audit entry's id.
    pub(super) async fn last_audit_id(&self) -> i64 {
        let newest = self.store.list_audit(None, 1).await.unwrap();
        newest.first().map_or(0, |e| e.id)
    }

    /// Entries appended after entry `after`, oldest first.
    pub(super) async fn audit_since(&self, after: i64) -> Vec<AuditEntry> {
        let filter = AuditFilter::default();
        let search = self.store.search_audit(None, &filter, None, 10_000);
        let mut entries = search.await.unwrap();
        entries.retain(|e| e.id > after);
        entries.reverse();
        entries
    }
}

fn email_of(role: Role) -> String {
    format!("{}@home.io", role.as_str().replace('_', "-"))
}

fn slug(on: On) -> &'static str {
    match on {
        On::Home => "home",
        On::Away => "away",
        other => panic!("an organization operation has no {other:?} column"),
    }
}

fn email(on: On, actor: Role) -> String {
    match on {
        On::Own => email_of(actor),
        On::Peer => "peer@home.io".into(),
        On::Away => "user@away.io".into(),
        On::Home => panic!("a user operation has no home column"),
    }
}

/// Runs one operation; `Ok(())` if it was allowed.
async fn run(world: &World, actor: &Admin, cell: &Cell) -> Result<()> {
    let (on, role) = (cell.on, cell.role);
    match cell.operation.as_str() {
        "org.create" => actor
            .create_org(&world.fresh("new-"), 10, "UTC")
            .await
            .map(drop),
        "org.read" => actor.org(slug(on)).await.map(drop),
        "org.list" => listed(actor, slug(on)).await,
        "user.create" => create_user(world, actor, on, Role::Member).await,
        "user.create.system_admin" => create_user(world, actor, on, Role::SystemAdmin).await,
        "user.read" => actor.user(&email(on, role)).await.map(drop),
        "user.list" => actor
            .list_users(slug(on), &PageRequest::default())
            .await
            .map(drop),
        "user.set_limit" => actor
            .set_user_limit(&email(on, role), Some(1_000))
            .await
            .map(drop),
        "user.reset_password" => reset(actor, &email(on, role)).await,
        "key.create" => actor.create_key(&email(on, role), None).await.map(drop),
        "key.list" => actor
            .list_keys(&email(on, role), &PageRequest::default())
            .await
            .map(drop),
        "key.revoke" => revoke(world, actor, &email(on, role)).await,
        "model.allow" => allow(world, actor, slug(on)).await,
        "model.deny" => deny(world, actor, slug(on)).await,
        "model.list" => actor
            .list_models(slug(on), &PageRequest::default())
            .await
            .map(drop),
        "usage.read" => usage(actor, on, role).await,
        "usage.daily" => daily_usage(actor, on, role).await,
        "limits.set" => {
            let limits = crate::RateLimits {
                rpm: Some(1_000),
                tpm: None,
            };
            let (org, target) = limit_target(on, role);
            actor.set_rate_limits(org, target, limits).await.map(drop)
        }
        "limits.read" => {
            let (org, target) = limit_target(on, role);
            actor.rate_limits(org, target).await.map(drop)
        }
        "audit.list" => audit_list(actor, Some(slug(on))).await,
        "audit.list.all" => audit_list(actor, None).await,
        "audit.verify" => actor.verify_audit(None).await.map(drop),
        other => panic!("the matrix names an unknown operation {other:?}"),
    }
}

/// The audit action of an operation, or `None` if it filters instead of refusing.
fn action(operation: &str) -> Option<&str> {
    match operation {
        "org.list" => None,
        "user.create.system_admin" => Some("user.create"),
        "audit.list.all" => Some("audit.list"),
        "usage.daily" => Some("usage.read"),
        other => Some(other),
    }
}

async fn listed(actor: &Admin, slug: &str) -> Result<()> {
    let orgs = actor.list_orgs(&PageRequest::default()).await?.items;
    if orgs.iter().any(|o| o.slug == slug) {
        Ok(())
    } else {
        Err(Error::PermissionDenied {
            actor: "-".into(),
            permission: "org.read".into(),
            target: slug.into(),
        })
    }
}

async fn create_user(world: &World, actor: &Admin, on: On, role: Role) -> Result<()> {
    let email = format!("{}@{}.io", world.fresh("u"), slug(on));
    actor
        .create_user(slug(on), &email, role, None)
        .await
        .map(drop)
}

async fn reset(actor: &Admin, email: &str) -> Result<()> {
    actor.reset_password(email, STRONG_PASSWORD).await.map(drop)
}

async fn revoke(world: &World, actor: &Admin, email: &str) -> Result<()> {
    let key = world.operator.create_key(email, None).await.unwrap();
    actor.revoke_key(key.key.id).await.map(drop)
}

async fn allow(world: &World, actor: &Admin, slug: &str) -> Result<()> {
    let model = world.fresh("model-");
    actor.allow_model(slug, &model).await.map(drop)
}

async fn deny(world: &World, actor: &Admin, slug: &str) -> Result<()> {
    let model = world.fresh("model-");
    world.operator.allow_model(slug, &model).await.unwrap();
    actor.deny_model(slug, &model).await.map(drop)
}

async fn usage(actor: &Admin, on: On, role: Role) -> Result<()> {
    match on {
        On::Home | On::Away => actor
            .usage(slug(on), None, &PageRequest::default())
            .await
            .map(drop),
        On::Own | On::Peer => actor
            .usage(
                "home",
                Some(email(on, role).into()),
                &PageRequest::default(),
            )
            .await
            .map(drop),
    }
}

async fn daily_usage(actor: &Admin, on: On, role: Role) -> Result<()> {
    let daily = match on {
        On::Home | On::Away => {
            actor
                .daily_usage(slug(on), None, None, None, &PageRequest::default())
                .await
        }
        On::Own | On::Peer => {
            let email = email(on, role);
            actor
                .daily_usage(
                    "home",
                    Some(email.into()),
                    None,
                    None,
                    &PageRequest::default(),
                )
                .await
        }
    };
    daily.map(drop)
}

/// The organization and the target of a `limits.*` cell.
fn limit_target(on: On, role: Role) -> (&'static str, crate::LimitTarget) {
    match on {
        On::Home | On::Away => (slug(on), crate::LimitTarget::Org),
        On::Own | On::Peer => ("home", crate::LimitTarget::User(email(on, role).into())),
    }
}

async fn audit_list(actor: &Admin, slug: Option<&str>) -> Result<()> {
    let filter = AuditFilter::default();
    actor
        .audit_log(slug, &filter, &PageRequest::default())
        .await
        .map(drop)
}

/// Runs one cell and checks its answer and, when denied, its audit entry.
async fn check_cell(world: &World, cell: &Cell) -> Option<String> {
    let actor = world.actor(cell.role).await;
    let before = world.last_audit_id().await;
    let answer = run(world, &actor, cell).await;
    let denied = match answer {
        Ok(()) => false,
        Err(Error::PermissionDenied { .. }) => true,
        Err(other) => return Some(format!("{cell:?} failed: {other}")),
    };
    if denied == cell.allowed {
        return Some(format!(
            "{cell:?} was {}",
            if denied { "denied" } else { "allowed" }
        ));
    }
    let appended = world.audit_since(before).await;
    denial_audited(cell, &appended).err()
}

/// A denial appends exactly one `<action>.denied` entry by the actor; an allowed call none.
fn denial_audited(cell: &Cell, appended: &[AuditEntry]) -> std::result::Result<(), String> {
    let denials: Vec<&AuditEntry> = appended
        .iter()
        .filter(|e| e.record.action.ends_with(DENIED_SUFFIX))
        .collect();
    let Some(action) = action(&cell.operation) else {
        return Ok(());
    };
    let expected = if cell.allowed { 0 } else { 1 };
    if denials.len() != expected {
        return Err(format!(
            "{cell:?}: {} denial entries: {denials:?}",
            denials.len()
        ));
    }
    let wanted = format!("{action}{DENIED_SUFFIX}");
    let actor = format!("user:{}", email_of(cell.role));
    match denials.first() {
        Some(e) if e.record.action != wanted || e.record.actor != actor => {
            Err(format!("{cell:?}: unexpected denial entry {e:?}"))
        }
        _ => Ok(()),
    }
}

/// Every operation × role × target answers as [`MATRIX`] says; denials are audited.
pub async fn permission_matrix_holds(store: Arc<dyn Store>) {
    let world = World::new(store).await;
    let cells = cells();
    assert!(cells.len() > 100, "the matrix has {} cells", cells.len());
    let mut failures = Vec::new();
    for cell in &cells {
        if let Some(failure) = check_cell(&world, cell).await {
            failures.push(failure);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The newest `.denied` entry is `action` by `actor`, naming the missing permission.
async fn assert_denied_and_audited(
    world: &World,
    result: Result<impl std::fmt::Debug>,
    action: &str,
    permission: &str,
) {
    match result {
        Err(Error::PermissionDenied { permission: p, .. }) => assert_eq!(p, permission),
        other => panic!("{action}: expected a denial, got {other:?}"),
    }
    let entry = world.store.list_audit(None, 1).await.unwrap().remove(0);
    assert_eq!(entry.record.action, format!("{action}{DENIED_SUFFIX}"));
    assert_eq!(entry.record.changes["permission"], permission);
    assert_eq!(entry.record.source, Source::Api);
}

/// Escalation attempts are denied, change nothing and leave an audit entry saying so.
pub async fn escalations_are_denied_and_audited(store: Arc<dyn Store>) {
    let world = World::new(store).await;
    let member = world.actor(Role::Member).await;
    let org_admin = world.actor(Role::OrgAdmin).await;
    let peer = world.user("peer@home.io").await;

    let minted = member.create_key("peer@home.io", None).await;
    assert_denied_and_audited(&world, minted, "key.create", "key.create").await;
    assert!(
        world
            .store
            .list_keys(peer.id, None, 10)
            .await
            .unwrap()
            .is_empty()
    );

    let raised = member
        .set_user_limit(&email_of(Role::Member), Some(10_000_000))
        .await;
    assert_denied_and_audited(&world, raised, "user.set_limit", "user.update").await;
    let me = world.user(&email_of(Role::Member)).await;
    assert_eq!(me.monthly_token_limit, None);

    let promoted = org_admin
        .create_user("home", "boss@home.io", Role::SystemAdmin, None)
        .await;
    assert_denied_and_audited(&world, promoted, "user.create", "role.grant_system_admin").await;
    assert!(
        world
            .store
            .user_by_email("boss@home.io")
            .await
            .unwrap()
            .is_none()
    );

    let over_boss = org_admin
        .create_key(&email_of(Role::SystemAdmin), None)
        .await;
    assert_denied_and_audited(&world, over_boss, "key.create", "role.grant_system_admin").await;

    let elsewhere = org_admin.allow_model("away", "gpt-4o").await;
    assert_denied_and_audited(&world, elsewhere, "model.allow", "model.manage").await;
    let away = world.store.org_by_slug("away").await.unwrap().unwrap();
    assert_eq!(
        world.store.allowed_models(away.id, None, 10).await.unwrap(),
        ["gpt-4o-mini"]
    );

    let foreign_key = org_admin.create_key("user@away.io", None).await;
    assert_denied_and_audited(&world, foreign_key, "key.create", "key.create").await;
    let entry = world.store.list_audit(None, 1).await.unwrap().remove(0);
    assert_eq!(
        entry.record.actor,
        format!("user:{}", email_of(Role::OrgAdmin))
    );
    assert_eq!(entry.record.target, "user:user@away.io");
    assert_eq!(
        entry.record.changes["attempted"]["owner"]["after"],
        "user@away.io"
    );
}
