//! The audit log: list entries and verify the hash chain.

use chrono::{DateTime, FixedOffset, Utc};
use ias_core::{Admin, AuditFilter, Result};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use serde_json::Value;

use crate::governor::Governor;
use crate::page::{self, Paged};
use crate::runtime::{awaitable, block_on};

/// One entry of the append-only, hash-chained audit log.
#[pyclass(frozen, module = "ias")]
pub struct AuditEntry {
    entry: ias_core::AuditEntry,
}

#[pymethods]
impl AuditEntry {
    /// Position in the chain, from 1.
    #[getter]
    fn id(&self) -> i64 {
        self.entry.id
    }

    /// When the action happened.
    #[getter]
    fn at(&self) -> DateTime<Utc> {
        self.entry.record.at
    }

    /// Who acted: `operator:<name>` or `user:<email>`.
    #[getter]
    fn actor(&self) -> &str {
        &self.entry.record.actor
    }

    /// Where the action came from: `cli`, `api`, `gitops` or `library`.
    #[getter]
    fn source(&self) -> &'static str {
        self.entry.record.source.as_str()
    }

    /// What was done, such as `key.create` or `key.create.denied`.
    #[getter]
    fn action(&self) -> &str {
        &self.entry.record.action
    }

    /// The organization concerned, if any.
    #[getter]
    fn org_id(&self) -> Option<i64> {
        self.entry.record.org_id.map(|id| id.0)
    }

    /// What was acted on, such as `org:team-alpha`.
    #[getter]
    fn target(&self) -> &str {
        &self.entry.record.target
    }

    /// The id of the row the action created, when it created one.
    #[getter]
    fn target_id(&self) -> Option<i64> {
        self.entry.target_id
    }

    /// The changed fields as `{"field": {"before": ..., "after": ...}}`.
    #[getter]
    fn changes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json_to_py(py, &self.entry.record.changes)
    }

    /// The previous entry's hash.
    #[getter]
    fn prev_hash(&self) -> &str {
        &self.entry.prev_hash
    }

    /// This entry's hash.
    #[getter]
    fn hash(&self) -> &str {
        &self.entry.hash
    }

    fn __repr__(&self) -> String {
        format!(
            "AuditEntry(id={}, actor={:?}, action={:?}, target={:?})",
            self.entry.id,
            self.entry.record.actor,
            self.entry.record.action,
            self.entry.record.target
        )
    }
}

/// Converts JSON into the equivalent Python value.
pub(crate) fn json_to_py<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => b.into_pyobject(py)?.to_owned().into_any(),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.into_pyobject(py)?.into_any(),
            (None, Some(f)) => f.into_pyobject(py)?.into_any(),
            (None, None) => n.to_string().into_pyobject(py)?.into_any(),
        },
        Value::String(s) => s.into_pyobject(py)?.into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(json_to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(fields) => {
            let dict = PyDict::new(py);
            for (key, item) in fields {
                dict.set_item(key, json_to_py(py, item)?)?;
            }
            dict.into_any()
        }
    })
}

/// An entry's id and hash: the newest entry verified, or an anchor noted earlier.
#[pyclass(frozen, get_all, module = "ias")]
#[derive(Clone)]
pub struct AuditHead {
    /// The entry's id.
    id: i64,
    /// The entry's hash.
    hash: String,
}

#[pymethods]
impl AuditHead {
    #[new]
    fn new(id: i64, hash: String) -> Self {
        AuditHead { id, hash }
    }

    fn __repr__(&self) -> String {
        format!("AuditHead(id={}, hash={:?})", self.id, self.hash)
    }
}

/// The first entry found changed or removed.
#[pyclass(frozen, get_all, module = "ias")]
#[derive(Clone)]
pub struct ChainBreak {
    /// The entry's id.
    id: i64,
    /// `changed` or `removed`.
    kind: String,
    /// How it shows.
    reason: String,
}

#[pymethods]
impl ChainBreak {
    fn __repr__(&self) -> String {
        format!(
            "ChainBreak(id={}, kind={:?}, reason={:?})",
            self.id, self.kind, self.reason
        )
    }
}

/// The outcome of verifying the audit chain: a value, whether intact or not.
#[pyclass(frozen, get_all, module = "ias")]
pub struct AuditVerification {
    /// Entries checked and found intact before the first break, if any.
    checked: u64,
    /// The newest intact entry; note it to anchor a later verification.
    head: Option<AuditHead>,
    /// The first entry changed or removed; `None` when the chain is intact.
    broken: Option<ChainBreak>,
}

#[pymethods]
impl AuditVerification {
    /// Whether no change or removal was found.
    #[getter]
    fn intact(&self) -> bool {
        self.broken.is_none()
    }

    fn __repr__(&self) -> String {
        format!(
            "AuditVerification(checked={}, intact={})",
            self.checked,
            if self.broken.is_none() {
                "True"
            } else {
                "False"
            }
        )
    }
}

impl From<ias_core::AuditVerification> for AuditVerification {
    fn from(outcome: ias_core::AuditVerification) -> Self {
        let broken = outcome.broken.map(|b| ChainBreak {
            id: b.id,
            kind: match b.kind {
                ias_core::audit::BreakKind::Changed => "changed",
                ias_core::audit::BreakKind::Removed => "removed",
            }
            .to_owned(),
            reason: b.reason,
        });
        AuditVerification {
            checked: outcome.checked,
            head: outcome.head.map(|h| AuditHead {
                id: h.id,
                hash: h.hash,
            }),
            broken,
        }
    }
}

async fn audit_log(
    admin: Admin,
    org: Option<String>,
    filter: AuditFilter,
    (limit, after): (i64, Option<String>),
) -> Result<Paged<AuditEntry>> {
    let page = page::request(limit, after)?;
    let entries = admin.audit_log(org.as_deref(), &filter, &page).await?;
    Ok(Paged::of(entries, |entry| AuditEntry { entry }))
}

async fn verify_audit(admin: Admin, anchor: Option<AuditHead>) -> Result<AuditVerification> {
    let anchor = anchor.map(|a| ias_core::AuditHead {
        id: a.id,
        hash: a.hash,
    });
    Ok(admin.verify_audit(anchor).await?.into())
}

fn filter(since: Option<DateTime<FixedOffset>>, action: Option<String>) -> AuditFilter {
    AuditFilter {
        since: since.map(|at| at.with_timezone(&Utc)),
        action,
    }
}

#[pymethods]
impl Governor {
    /// A page of audit entries, of one organization or of all, newest
    /// first: the next page holds older entries.
    ///
    /// `since` is a time-zone-aware `datetime`; `action` such as `key.create`.
    #[pyo3(signature = (org = None, *, since = None, action = None, limit = 100, after = None))]
    fn audit_log(
        &self,
        py: Python<'_>,
        org: Option<String>,
        since: Option<DateTime<FixedOffset>>,
        action: Option<String>,
        limit: i64,
        after: Option<String>,
    ) -> PyResult<Paged<AuditEntry>> {
        let filter = filter(since, action);
        block_on(py, audit_log(self.admin()?, org, filter, (limit, after)))
    }

    /// `audit_log` as an awaitable.
    #[pyo3(signature = (org = None, *, since = None, action = None, limit = 100, after = None))]
    fn audit_log_async<'py>(
        &self,
        py: Python<'py>,
        org: Option<String>,
        since: Option<DateTime<FixedOffset>>,
        action: Option<String>,
        limit: i64,
        after: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let filter = filter(since, action);
        awaitable(py, audit_log(self.admin()?, org, filter, (limit, after)))
    }

    /// Walks the whole audit chain and names the first entry changed or removed.
    ///
    /// With `anchor` (a head noted from an earlier verification), that entry
    /// must still be there, unchanged.
    #[pyo3(signature = (anchor = None))]
    fn verify_audit(
        &self,
        py: Python<'_>,
        anchor: Option<AuditHead>,
    ) -> PyResult<AuditVerification> {
        block_on(py, verify_audit(self.admin()?, anchor))
    }

    /// `verify_audit` as an awaitable.
    #[pyo3(signature = (anchor = None))]
    fn verify_audit_async<'py>(
        &self,
        py: Python<'py>,
        anchor: Option<AuditHead>,
    ) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, verify_audit(self.admin()?, anchor))
    }
}
