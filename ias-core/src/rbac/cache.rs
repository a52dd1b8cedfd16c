//! A short-lived cache of each role's grants, so checks do not read the store every time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::rbac::Grant;
use crate::store::SchemaStore;

/// Each role's grants as last read from the store, kept for a while.
///
/// Rows added to `role_permissions` (a custom role, a changed grant) take
/// effect within the cache's lifetime, or at once after [`GrantCache::clear`].
/// Share one cache between the [`crate::Admin`]s of a process with
/// [`crate::Admin::with_grant_cache`].
#[derive(Debug)]
pub struct GrantCache {
    ttl: Duration,
    roles: Mutex<HashMap<String, Cached>>,
}

#[derive(Debug)]
struct Cached {
    read_at: Instant,
    grants: Arc<[Grant]>,
}

impl GrantCache {
    /// How long grants are kept unless told otherwise: one minute.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(60);

    /// A cache keeping each role's grants for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        GrantCache {
            ttl,
            roles: Mutex::new(HashMap::new()),
        }
    }

    /// The grants of `role`, read from `store` unless read less than the lifetime ago.
    pub async fn grants<S>(&self, store: &S, role: &str) -> Result<Arc<[Grant]>>
    where
        S: SchemaStore + ?Sized,
    {
        if let Some(grants) = self.fresh(role) {
            return Ok(grants);
        }
        let grants: Arc<[Grant]> = store.role_grants(role).await?.into();
        let cached = Cached {
            read_at: Instant::now(),
            grants: grants.clone(),
        };
        self.lock().insert(role.to_owned(), cached);
        Ok(grants)
    }

    /// Forgets every role, so the next check reads the store.
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn fresh(&self, role: &str) -> Option<Arc<[Grant]>> {
        let roles = self.lock();
        let cached = roles.get(role)?;
        (cached.read_at.elapsed() < self.ttl).then(|| cached.grants.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cached>> {
        // A panic while holding the lock cannot leave the map half-written.
        self.roles.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Default for GrantCache {
    fn default() -> Self {
        GrantCache::new(GrantCache::DEFAULT_TTL)
    }
}
