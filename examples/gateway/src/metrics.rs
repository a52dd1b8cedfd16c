//! `GET /metrics`: the gateway's series in the Prometheus (OpenMetrics) text format.
//!
//! | series | kind | labels | what |
//! |---|---|---|---|
//! | `ias_gateway_decisions_total` | counter | `route`, `outcome`, `reason` | governed requests by outcome (`allowed`, `denied`, `failed`) and reason (a deny reason, `missing_api_key`, or the error code; empty when allowed) |
//! | `ias_gateway_authorize_duration_seconds` | histogram | — | time spent in `Governor::authorize`, the hot path |
//! | `ias_gateway_tokens_charged_total` | counter | `route` | tokens charged |
//! | `ias_gateway_open_reservations` | gauge | — | reservations neither settled nor released |
//! | `ias_gateway_requests_in_flight` | gauge | — | governed requests not yet charged (open streams included) |
//! | `ias_gateway_gitops_sync_status` | gauge | `org`, `status` | 1 for each GitOps organization's current status (`synced`, `out_of_sync`, `error`, `suspended`), 0 for the others |
//!
//! `route` is the API (`chat_completions`, `completions`, `embeddings`,
//! `responses`, `generic`) or `models`. The gauges are read when scraped:
//! the reconcile status from the store (bounded by [`STORE_TIMEOUT`]; if
//! the store does not answer, the last values read stay).

use std::sync::Arc;
use std::time::Duration;

use ias_core::gitops::{GitopsState, SyncStatus};
use ias_core::page::MAX_PAGE_LIMIT;
use ias_core::{Governor, Store};
use ias_tower::{Api, Decided, Drain, Observer};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing::warn;

/// The content type of the answer.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How long a scrape waits for the store's GitOps states.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(2);

const STATUSES: [SyncStatus; 4] = [
    SyncStatus::Synced,
    SyncStatus::OutOfSync,
    SyncStatus::Error,
    SyncStatus::Suspended,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    route: &'static str,
    outcome: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GitopsLabels {
    org: String,
    status: &'static str,
}

/// The gateway's metrics; also the Layer's [`Observer`].
pub struct Metrics {
    registry: Registry,
    decisions: Family<DecisionLabels, Counter>,
    authorize_seconds: Histogram,
    tokens: Family<RouteLabels, Counter>,
    open_reservations: Gauge,
    in_flight: Gauge,
    gitops: Family<GitopsLabels, Gauge>,
    /// One scrape at a time: each rewrites the gauges.
    scrape: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every series, registered and at zero.
    pub fn new() -> Self {
        let mut metrics = Metrics {
            registry: Registry::default(),
            decisions: Family::default(),
            // 10 µs to about 1.3 s.
            authorize_seconds: Histogram::new(exponential_buckets(0.000_01, 2.0, 18)),
            tokens: Family::default(),
            open_reservations: Gauge::default(),
            in_flight: Gauge::default(),
            gitops: Family::default(),
            scrape: tokio::sync::Mutex::new(()),
        };
        let registry = &mut metrics.registry;
        registry.register(
            "ias_gateway_decisions",
            "Governed requests by route, outcome and reason",
            metrics.decisions.clone(),
        );
        registry.register(
            "ias_gateway_authorize_duration_seconds",
            "Time spent deciding a request (Governor::authorize)",
            metrics.authorize_seconds.clone(),
        );
        registry.register(
            "ias_gateway_tokens_charged",
            "Tokens charged, by route",
            metrics.tokens.clone(),
        );
        registry.register(
            "ias_gateway_open_reservations",
            "Reservations neither settled nor released",
            metrics.open_reservations.clone(),
        );
        registry.register(
            "ias_gateway_requests_in_flight",
            "Governed requests not yet charged, open streams included",
            metrics.in_flight.clone(),
        );
        registry.register(
            "ias_gateway_gitops_sync_status",
            "1 for the current GitOps reconcile status of each organization",
            metrics.gitops.clone(),
        );
        metrics
    }

    /// Reads the gauges and encodes every series.
    pub async fn render(&self, governor: &Governor, drain: &Drain) -> String {
        let _one_at_a_time = self.scrape.lock().await;
        let stats = governor.stats();
        self.open_reservations.set(to_i64(stats.open_reservations));
        self.in_flight.set(to_i64(drain.in_flight()));
        self.read_gitops(governor.store()).await;
        let mut text = String::new();
        if let Err(err) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            warn!(error = %err, "could not encode the metrics");
        }
        text
    }

    async fn read_gitops(&self, store: &Arc<dyn Store>) {
        let read = tokio::time::timeout(STORE_TIMEOUT, all_gitops_states(store));
        let states = match read.await {
            Ok(Ok(states)) => states,
            Ok(Err(err)) => {
                warn!(error = %err, "could not read the GitOps states for the metrics");
                return;
            }
            Err(_) => {
                warn!("the store did not answer in time; GitOps metrics are not updated");
                return;
            }
        };
        self.gitops.clear();
        for state in states {
            for status in STATUSES {
                let labels = GitopsLabels {
                    org: state.settings.org_slug.clone(),
                    status: status.as_str(),
                };
                let current = i64::from(state.status.status == status);
                self.gitops.get_or_create(&labels).set(current);
            }
        }
    }
}

/// Every organization's GitOps state, read a page at a time.
async fn all_gitops_states(store: &Arc<dyn Store>) -> ias_core::Result<Vec<GitopsState>> {
    let mut states: Vec<GitopsState> = Vec::new();
    loop {
        let after = states.last().map(|s| s.settings.org_id);
        let page = store.gitops_states(after, MAX_PAGE_LIMIT).await?;
        let last = page.len() < MAX_PAGE_LIMIT as usize;
        states.extend(page);
        if last {
            return Ok(states);
        }
    }
}

impl Observer for Metrics {
    fn decided(&self, decided: &Decided) {
        let labels = DecisionLabels {
            route: route(decided.api),
            outcome: decided.outcome.as_str(),
            reason: decided.reason.unwrap_or(""),
        };
        self.decisions.get_or_create(&labels).inc();
        if let Some(took) = decided.authorize_time {
            self.authorize_seconds.observe(took.as_secs_f64());
        }
    }

    fn charged(&self, api: Api, tokens: i64) {
        let labels = RouteLabels {
            route: route(Some(api)),
        };
        let tokens = u64::try_from(tokens).unwrap_or(0);
        self.tokens.get_or_create(&labels).inc_by(tokens);
    }
}

fn route(api: Option<Api>) -> &'static str {
    api.map_or("models", Api::as_str)
}

fn to_i64(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
