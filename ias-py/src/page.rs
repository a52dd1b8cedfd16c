//! Pages of lists: every list call reads one page, by key.

use ias_core::{Error, PageRequest, Result};
use pyo3::IntoPyObjectExt;
use pyo3::prelude::*;
use pyo3::types::{PyIterator, PyList};

/// One page of a list, and where the next one starts.
///
/// Reads like a list of its items (`len`, iteration, indexing, `==` with a
/// list), so code written for lists keeps working. Pass `next_after` as
/// `after=` to the same call for the next page; it is `None` on the last.
#[pyclass(frozen, sequence, generic, module = "ias")]
pub struct Page {
    items: Vec<Py<PyAny>>,
    next_after: Option<String>,
}

#[pymethods]
impl Page {
    /// The items of this page, in the list's order (a new list on each read).
    #[getter]
    fn items<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.items.iter().map(|item| item.bind(py)))
    }

    /// Where the next page starts (give it as `after=`); `None` on the last page.
    #[getter]
    fn next_after(&self) -> Option<&str> {
        self.next_after.as_deref()
    }

    fn __len__(&self) -> usize {
        self.items.len()
    }

    fn __getitem__<'py>(
        &self,
        py: Python<'py>,
        index: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.items(py)?.as_any().get_item(index)
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyIterator>> {
        self.items(py)?.as_any().try_iter()
    }

    /// Equal to a page with the same items and cursor, or to a list of the same items.
    fn __eq__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<bool> {
        match other.cast::<Page>() {
            Ok(page) => {
                let page = page.get();
                Ok(page.next_after == self.next_after && self.items(py)?.eq(page.items(py)?)?)
            }
            Err(_) => self.items(py)?.eq(other),
        }
    }

    #[classattr]
    const __hash__: Option<Py<PyAny>> = None;

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let next = self.next_after.as_deref().into_pyobject(py)?.repr()?;
        Ok(format!(
            "Page(items={}, next_after={next})",
            self.items(py)?.repr()?
        ))
    }
}

/// A page read from the core, turned into a [`Page`] once it reaches Python.
pub struct Paged<T> {
    items: Vec<T>,
    next_after: Option<String>,
}

impl<T> Paged<T> {
    /// `page` with each item converted by `convert`.
    pub fn of<U>(page: ias_core::Page<U>, convert: impl FnMut(U) -> T) -> Self {
        Paged {
            items: page.items.into_iter().map(convert).collect(),
            next_after: page.next_after,
        }
    }
}

impl<'py, T> IntoPyObject<'py> for Paged<T>
where
    T: IntoPyObject<'py>,
{
    type Target = Page;
    type Output = Bound<'py, Page>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, Page>> {
        let items = self
            .items
            .into_iter()
            .map(|item| item.into_bound_py_any(py).map(Bound::unbind))
            .collect::<PyResult<Vec<_>>>()?;
        Bound::new(
            py,
            Page {
                items,
                next_after: self.next_after,
            },
        )
    }
}

/// The page that `limit=` and `after=` ask for.
///
/// A limit that is not 1 to 1000 is refused here as `InvalidInputError`
/// naming `limit`, like every other bad value, rather than by Python's
/// integer conversion.
pub fn request(limit: i64, after: Option<String>) -> Result<PageRequest> {
    let limit = u32::try_from(limit).map_err(|_| {
        Error::invalid(
            "limit",
            limit.to_string(),
            "must be a whole number from 1 to 1000",
        )
    })?;
    let page = PageRequest::new(limit, after);
    page.checked_limit()?;
    Ok(page)
}
