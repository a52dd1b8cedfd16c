//! The statements of the store's hot lookups and paged lists, exactly as it
//! runs them, for the query-plan test (`tests/plans.rs`), which checks that
//! each is read through an index. Not a stable interface.

pub use crate::audit::{LAST_ENTRY, search_sql as audit_search_sql};
pub use crate::cache::{CHANGE_SEQ, CHANGES_SINCE, key_page_sql, user_page_sql};
pub use crate::gitops::list_states_sql;
pub use crate::key::{by_id_sql as key_by_id_sql, list_sql as list_keys_sql};
pub use crate::org::{LIST_MODELS, by_slug_sql as org_by_slug_sql, list_sql as list_orgs_sql};
pub use crate::usage::{
    COUNTER, MODEL_USAGE, ORG_DAYS, USER_DAYS, USER_LIMIT, USER_MODEL_USAGE, one_user_usage_sql,
    users_usage_sql,
};
pub use crate::user::{
    by_email_sql as user_by_email_sql, by_id_sql as user_by_id_sql, list_sql as list_users_sql,
};
