//! The one tokio runtime of the module, and the two ways Python waits on it.
//!
//! A blocking call releases the GIL and runs its future on the calling
//! thread with [`block_on`]; an `_async` twin hands the same future to the
//! runtime and returns an asyncio awaitable ([`awaitable`]). Both run on the
//! runtime built the first time either is needed, shared by every governor
//! of the process, so background maintenance and both kinds of call see the
//! same timers and the same blocking pool.

use std::future::Future;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};

use pyo3::prelude::*;
use tokio::runtime::{Builder, Runtime};

use crate::errors;

/// Worker threads: enough for maintenance and async callers, no more.
const WORKER_THREADS: usize = 2;

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The shared runtime, built on first use.
pub(crate) fn runtime() -> PyResult<&'static Runtime> {
    if let Some(runtime) = RUNTIME.get() {
        return Ok(runtime);
    }
    let built = Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .thread_name("ias-runtime")
        .enable_all()
        .build()
        .map_err(|err| errors::host(format!("cannot start the async runtime: {err}")))?;
    // Another thread may have won the race; its runtime is the one kept.
    let runtime = RUNTIME.get_or_init(|| built);
    // Err only means it was already given this same runtime.
    let _ = pyo3_async_runtimes::tokio::init_with_runtime(runtime);
    Ok(runtime)
}

/// Runs `work` to completion with the GIL released, on the calling thread.
///
/// Other Python threads run meanwhile. Called from inside the runtime (a
/// Python callback run by one of its threads), it refuses instead of
/// blocking the runtime on itself.
pub(crate) fn block_on<T, F>(py: Python<'_>, work: F) -> PyResult<T>
where
    F: Future<Output = ias_core::Result<T>> + Send,
    T: Send,
{
    let runtime = runtime()?;
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(errors::host(
            "a blocking ias call was made from the ias runtime; use the `_async` method".into(),
        ));
    }
    py.detach(|| ready_or_block(runtime, work))
        .map_err(|err| errors::to_py(py, err))
}

/// Polls `work` once inside the runtime's context and, if it is not done,
/// blocks on it: most hot-path calls finish on their first poll, and this
/// skips parking machinery they would never use.
fn ready_or_block<F: Future>(runtime: &Runtime, work: F) -> F::Output {
    let mut work = std::pin::pin!(work);
    {
        let _context = runtime.enter();
        let mut cx = Context::from_waker(Waker::noop());
        if let Poll::Ready(output) = work.as_mut().poll(&mut cx) {
            return output;
        }
    }
    runtime.block_on(work)
}

/// An asyncio awaitable that runs `work` on the shared runtime.
///
/// Must be called with a running event loop (inside a coroutine); the
/// awaitable's result is set on that loop.
pub(crate) fn awaitable<'py, T, F>(py: Python<'py>, work: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = ias_core::Result<T>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    runtime()?;
    pyo3_async_runtimes::tokio::future_into_py(py, async move {
        work.await
            .map_err(|err| Python::attach(|py| errors::to_py(py, err)))
    })
}
