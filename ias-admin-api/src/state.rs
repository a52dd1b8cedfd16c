//! What the handlers share: the governor, the grant cache, and GitOps when it runs.

use std::sync::Arc;

use ias_core::audit::{Actor, Source};
use ias_core::gitops::{NewGitopsSettings, Reconciler};
use ias_core::{Admin, Error, Governor, GrantCache, Result, Store};

/// The admin API's state: build it once and pass it to [`crate::router`].
#[derive(Clone)]
pub struct AdminApi {
    governor: Governor,
    grants: Arc<GrantCache>,
    reconciler: Option<Reconciler>,
    allowed_repos: Option<Arc<[String]>>,
}

impl AdminApi {
    /// Refuses settings the source cannot fetch, or a repository outside the allowed prefixes.
    pub(crate) fn check_settings(
        &self,
        reconciler: &Reconciler,
        settings: &NewGitopsSettings,
    ) -> Result<()> {
        // Field names are the body's: the caller maps the whole result with `body_field`.
        reconciler.source().check(settings)?;
        let Some(prefixes) = &self.allowed_repos else {
            return Ok(());
        };
        let url = settings.repo_url.as_str();
        let lower = url.to_ascii_lowercase();
        // A `..` segment (plain or encoded) could climb out of an allowed prefix.
        let climbs = url.split(['/', '\\']).any(|segment| segment == "..")
            || lower.contains("%2e")
            || lower.contains("%2f")
            || lower.contains("%5c");
        if climbs
            || !prefixes
                .iter()
                .any(|prefix| url.starts_with(prefix.as_str()))
        {
            let allowed = prefixes.join("`, `");
            return Err(Error::invalid(
                "repo_url",
                ias_core::url::without_secrets(url),
                format!("this server accepts only repositories under `{allowed}`"),
            ));
        }
        Ok(())
    }
}

impl AdminApi {
    /// An admin API over `governor`'s store, keeping `governor`'s cache
    /// current after every change it makes.
    pub fn new(governor: Governor) -> Self {
        AdminApi {
            governor,
            grants: Arc::new(GrantCache::default()),
            reconciler: None,
            allowed_repos: None,
        }
    }

    /// Serves GitOps `sync`, `plan` from the repository and `enable`, with
    /// `reconciler`, fetching through its source. Without it those
    /// answer 501 `gitops_unavailable`; status, drift, disable and planning
    /// a given file still work.
    pub fn with_gitops(mut self, reconciler: Reconciler) -> Self {
        self.reconciler = Some(reconciler);
        self
    }

    /// Accepts in GitOps `enable` only repository URLs that start with one
    /// of `prefixes` (end each with `/`), and none with a `..` segment or
    /// an encoded `.`, `/` or `\\`: an org admin then cannot make the server
    /// fetch from anywhere else. Without it, any URL the source can fetch
    /// is accepted (`file://` and credentials stay for system admins).
    pub fn allow_repos(mut self, prefixes: impl IntoIterator<Item = String>) -> Self {
        self.allowed_repos = Some(prefixes.into_iter().collect());
        self
    }

    /// The governor callers' keys are checked against.
    pub fn governor(&self) -> &Governor {
        &self.governor
    }

    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        self.governor.store()
    }

    pub(crate) fn reconciler(&self) -> Option<&Reconciler> {
        self.reconciler.as_ref()
    }

    /// Admin operations by `actor`, audited with source `api`.
    pub(crate) fn admin(&self, actor: Actor, break_glass: bool) -> Admin {
        let admin = Admin::new(self.store().clone(), actor, Source::Api)
            .with_governor(self.governor.clone())
            .with_grant_cache(self.grants.clone());
        match break_glass {
            true => admin.with_break_glass(),
            false => admin,
        }
    }
}

/// An error about GitOps settings, naming the request body's field instead
/// of the command line's or the transport's.
pub(crate) fn body_field(err: Error) -> Error {
    match err {
        Error::InvalidInput {
            field,
            value,
            reason,
        } => {
            let field = match field {
                "git url" | "repo" => "repo_url",
                "git reference" | "ref" => "git_ref",
                "git path" => "path",
                "max_removal" => "max_removal_percent",
                "git credentials" => "credentials",
                other => other,
            };
            Error::InvalidInput {
                field,
                value,
                reason,
            }
        }
        other => other,
    }
}
