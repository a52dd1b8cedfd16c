//! Python bindings for ias: the module `ias`.
//!
//! This crate will let a Python gateway (FastAPI, LiteLLM) govern requests
//! in-process: `ias.open(url)` returning a governor with `authorize`,
//! `settle` and `check`, the admin calls, and one exception class per core
//! error. This release exposes only the package version and the key
//! format check, so the build and packaging are in place.

use pyo3::prelude::*;

/// Whether `key` has the shape of an ias API key (checked without any lookup).
#[pyfunction]
fn is_well_formed_key(key: &str) -> bool {
    ias_core::key::is_well_formed(key)
}

/// The `ias` Python module.
#[pymodule]
fn ias(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(is_well_formed_key, m)?)?;
    Ok(())
}
