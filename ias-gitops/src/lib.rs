//! GitOps hybrid mode for ias.
//!
//! This crate will read an organization's declared state (users, roles,
//! monthly limits, budget, rate limits, allowed models) from a YAML file in
//! a Git repository, plan the changes against the store, and reconcile every
//! 30 seconds with sync status and drift, while keys, usage and audit stay
//! API-managed. Nothing of it is implemented in this release; the schema
//! already records which rows GitOps owns (`managed_by`) and the sync state
//! of each organization (`gitops_sync_state`), and ias-core already refuses
//! API writes to fields owned by GitOps.

/// The file read from the repository when none is named.
pub const DEFAULT_FILE: &str = "ias.yaml";

/// How often an enabled organization is reconciled, in seconds.
pub const RECONCILE_INTERVAL_SECS: u64 = 30;
