//! `ias-bench-upstream`: a minimal OpenAI-compatible upstream for benchmarks.
//!
//! Answers every `POST /v1/chat/completions` with the same small chat
//! completion (usage: 8 prompt, 12 completion, 20 total tokens), so
//! `scripts/gateway-bench` can measure what the gateway adds on top of an
//! upstream that costs next to nothing: at once, or after `--delay-ms`, as
//! a model that takes that long to answer would (the CPU stays idle while
//! it waits). Not a model and not a test double: it reads the request body
//! and ignores it.
//!
//! With `--forward-to URL` it is instead a plain, ungoverned proxy that
//! forwards each request to `URL` with the same upstream client as
//! `ias-gateway` ([`HttpUpstream`]), served as `ias-gateway` serves
//! ([`ServingThreads`]): the benchmark's measure of what the extra hop
//! costs without ias.

use std::net::SocketAddr;
use std::process::ExitCode;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt;
use clap::Parser;
use ias_gateway::threads::ServingThreads;
use ias_gateway::upstream::HttpUpstream;

/// The answer to every request.
const ANSWER: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":0,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"This is a fixed reply from the benchmark upstream."},"finish_reason":"stop"}],"usage":{"prompt_tokens":8,"completion_tokens":12,"total_tokens":20}}"#;

/// Answers chat completions with a fixed reply, for benchmarks.
#[derive(Parser)]
#[command(name = "ias-bench-upstream", version, about)]
struct Args {
    /// The address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9000")]
    listen: SocketAddr,

    /// Forward every chat completion to this base URL (ungoverned) instead of answering.
    #[arg(long, value_name = "URL")]
    forward_to: Option<String>,

    /// Wait this many milliseconds before each answer, as a model would.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    delay_ms: u64,
}

async fn chat(State(delay): State<Duration>, _body: Bytes) -> impl IntoResponse {
    if !delay.is_zero() {
        // tokio's timer fires on whole milliseconds, so every answer due in
        // the same millisecond would leave at once, in bursts no model
        // makes. A thread's sleep ends within the kernel's timer slack
        // (50 µs) of its own deadline, so answers leave as they fall due.
        let due = Instant::now() + delay;
        let slept = tokio::task::spawn_blocking(move || {
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        });
        let _ = slept.await;
    }
    ([(header::CONTENT_TYPE, "application/json")], ANSWER)
}

async fn forward(State(upstream): State<Arc<HttpUpstream>>, body: Bytes) -> Response {
    upstream
        .forward(&Method::POST, "chat/completions", None, body)
        .await
}

/// The fixed answer, after `delay`.
fn answering(delay: Duration) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .with_state(delay)
}

/// A plain proxy to `upstream`.
fn forwarding(upstream: HttpUpstream) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(forward))
        .with_state(Arc::new(upstream))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let upstream = match args
        .forward_to
        .as_deref()
        .map(|base| HttpUpstream::new(base, None))
    {
        None => None,
        Some(Ok(upstream)) => Some(upstream),
        Some(Err(err)) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("error: cannot listen on `{}`: {err}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let served = match upstream {
        // Served as ias-gateway serves, so that only ias tells them apart.
        Some(upstream) => proxy(listener, upstream).await,
        None => answer(listener, Duration::from_millis(args.delay_ms)).await,
    };
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: the server failed: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Answers on the runtime's threads until Ctrl-C.
async fn answer(listener: tokio::net::TcpListener, delay: Duration) -> std::io::Result<()> {
    // As ias-gateway does: answers go out at once.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, answering(delay))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}

/// Forwards on serving threads, one per CPU, each with its own upstream connections, until Ctrl-C.
async fn proxy(listener: tokio::net::TcpListener, upstream: HttpUpstream) -> std::io::Result<()> {
    let count = ServingThreads::per_cpu();
    let mut threads = ServingThreads::start(listener, count, || forwarding(upstream.for_thread()))?;
    let _ = tokio::signal::ctrl_c().await;
    threads.stop();
    let served = threads.finished().await;
    threads.release();
    served
}
