//! GitOps hybrid mode: an organization declared in a file in Git.
//!
//! An org admin declares the organization's budget, rate limits, allowed
//! models and users in a YAML file ([`manifest`]); the reconciler (in the
//! `ias-gitops` crate, which owns the Git transport) fetches it, and this
//! module decides what to do with it: [`plan`] compares the file with the
//! store field by field and applies the safety guards, [`crate::Admin`]'s `gitops_*` operations
//! enables and disables GitOps per organization, applies a plan in one
//! store transaction and keeps each organization's sync state.
//!
//! API keys, usage and the audit log are never declared in Git: they stay
//! managed through the API, and no apply touches them.

pub mod manifest;
pub mod plan;
pub mod reconcile;
pub mod settings;
pub mod state;
mod yaml;

pub use manifest::{DeclaredBudget, DeclaredUser, Manifest};
pub use plan::{
    ApplyOp, BlockedUser, ChangeOp, FieldChange, GuardRefusal, OrgView, Plan, ViewUser,
};
pub use reconcile::{FetchedFile, ManifestSource, OrgOutcome, Reconciler, ReconcilerConfig};
pub use settings::{DriftPolicy, GitopsSettings, NewGitopsSettings};
pub use state::{GitopsApply, GitopsState, GitopsStatus, Inventory, SyncStatus};
