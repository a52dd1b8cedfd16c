//! The governor's hot path: authorize+settle with 1k, 100k and 1M keys
//! loaded from SQLite, on one and on two threads, next to a baseline that
//! only hashes the key (SHA-256, [`KeyHash::of`]) and looks it up in a
//! `HashMap` of the same keys.
//!
//! `cargo bench -p ias-core` runs this and then the `memory` benchmark,
//! which prints the whole summary (this one's figures plus bytes per key)
//! at the very end.
//!
//! How it measures:
//! - Each request picks a key at random (SplitMix64) from every known
//!   secret of the size, so lookups are not cache-friendly; the baseline
//!   picks its keys the same way.
//! - Before measuring, one 10^10-token request per user grows every org's
//!   lease (a meter's slice follows its largest request), so with budgets of
//!   10^14 no lease runs short while measuring; the in-line store syncs are
//!   counted and printed to show it.
//! - Settled usage is queued in memory; every org may queue at most 100,000
//!   events before a settle writes them itself. So `Governor::flush()` is
//!   called *outside* the timed sections, before any chunk that would take
//!   the queue past `CHUNK` events in total; no background maintenance runs.
//! - Criterion's figure is the median over samples of the mean time per call
//!   within a sample. Per-call percentiles come from separate loops that time
//!   every call with `Instant` (which adds about 20-30 ns to each figure).
//! - Two threads: the bench's main thread and one spawned OS thread call
//!   authorize+settle concurrently on the same governor, each with its own
//!   random key sequence from the same pool (so usually different orgs at
//!   100k and 1M keys, often the same org at 1k keys, which has 10 orgs).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput};
use ias_core::{Governor, KeyHash};
use ias_store_sqlite::SqliteStore;
use tokio::runtime::Handle;

use common::{ACTUAL, ESTIMATE, HANDOFF, MODEL, Pool, Rng, Size, authorize_settle};

/// Most usage events queued between two flushes (each org's cap is 100,000).
const CHUNK: usize = 20_000;
/// Calls made before measuring, so leases, meters and maps are grown.
const WARMUP_CALLS: usize = 100_000;
/// Calls timed one by one for the percentiles.
const PERCENTILE_CALLS: usize = 200_000;
/// Criterion samples per benchmark.
const SAMPLES: usize = 20;

/// The baseline: hash the presented key and look it up.
#[inline(never)]
fn hash_and_lookup(map: &HashMap<KeyHash, u32>, key: &str) -> u32 {
    *map.get(&KeyHash::of(key)).unwrap()
}

fn governor_calls(
    handle: &Handle,
    governor: &Governor,
    pool: &Pool,
    n: usize,
    seed: u64,
) -> Duration {
    let mut rng = Rng::new(seed);
    handle.block_on(async {
        let start = Instant::now();
        for _ in 0..n {
            let key = pool.get(rng.below(pool.len()));
            authorize_settle(governor, black_box(key), ESTIMATE).await;
        }
        start.elapsed()
    })
}

fn governor_timed(
    handle: &Handle,
    governor: &Governor,
    pool: &Pool,
    n: usize,
    seed: u64,
    out: &mut Vec<u64>,
) {
    let mut rng = Rng::new(seed);
    handle.block_on(async {
        for _ in 0..n {
            let key = pool.get(rng.below(pool.len()));
            let start = Instant::now();
            authorize_settle(governor, black_box(key), ESTIMATE).await;
            out.push(start.elapsed().as_nanos() as u64);
        }
    });
}

fn baseline_calls(map: &HashMap<KeyHash, u32>, pool: &Pool, n: usize, seed: u64) -> Duration {
    let mut rng = Rng::new(seed);
    let start = Instant::now();
    for _ in 0..n {
        let key = pool.get(rng.below(pool.len()));
        black_box(hash_and_lookup(map, black_box(key)));
    }
    start.elapsed()
}

fn baseline_timed(map: &HashMap<KeyHash, u32>, pool: &Pool, n: usize, seed: u64) -> Vec<u64> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let key = pool.get(rng.below(pool.len()));
        let start = Instant::now();
        black_box(hash_and_lookup(map, black_box(key)));
        out.push(start.elapsed().as_nanos() as u64);
    }
    out
}

/// One size's governor, key pool and baseline map.
struct Setup {
    handle: Handle,
    governor: Governor,
    pool: Pool,
    map: HashMap<KeyHash, u32>,
    since_flush: Cell<usize>,
    seed: Cell<u64>,
    flushes: Cell<u64>,
    flushes_ever: Cell<u64>,
    flush_time: Cell<Duration>,
}

impl Setup {
    fn next_seed(&self) -> u64 {
        self.seed.set(self.seed.get() + 1);
        Rng::new(self.seed.get()).next_u64()
    }

    /// Flushes (untimed) if `n` more settles could take the queue past `CHUNK`.
    fn make_room(&self, n: usize) {
        if self.since_flush.get() + n > CHUNK {
            self.flush();
        }
        self.since_flush.set(self.since_flush.get() + n);
    }

    /// Store syncs made by the governor itself (lease renewals, full queues), not by `flush`.
    fn inline_syncs(&self) -> u64 {
        self.governor.stats().syncs - self.flushes_ever.get()
    }

    fn flush(&self) {
        let start = Instant::now();
        self.handle.block_on(self.governor.flush()).unwrap();
        self.flush_time.set(self.flush_time.get() + start.elapsed());
        self.flushes.set(self.flushes.get() + 1);
        self.flushes_ever.set(self.flushes_ever.get() + 1);
        self.since_flush.set(0);
    }

    fn chunks(total: usize) -> impl Iterator<Item = usize> {
        (0..total.div_ceil(CHUNK)).map(move |i| CHUNK.min(total - i * CHUNK))
    }

    fn governor_1t(&self, iters: u64) -> Duration {
        let mut total = Duration::ZERO;
        for n in Self::chunks(iters as usize) {
            self.make_room(n);
            total += governor_calls(
                &self.handle,
                &self.governor,
                &self.pool,
                n,
                self.next_seed(),
            );
        }
        total
    }

    fn governor_2t(&self, iters: u64) -> Duration {
        let (handle, governor, pool) = (&self.handle, &self.governor, &self.pool);
        let mut total = Duration::ZERO;
        for n in Self::chunks(iters as usize) {
            self.make_room(n);
            let (a, b) = (n / 2, n - n / 2);
            let (seed_a, seed_b) = (self.next_seed(), self.next_seed());
            let start = Instant::now();
            std::thread::scope(|s| {
                let other = s.spawn(move || governor_calls(handle, governor, pool, a, seed_a));
                governor_calls(handle, governor, pool, b, seed_b);
                other.join().unwrap();
            });
            total += start.elapsed();
        }
        total
    }

    fn baseline_1t(&self, iters: u64) -> Duration {
        baseline_calls(&self.map, &self.pool, iters as usize, self.next_seed())
    }

    fn baseline_2t(&self, iters: u64) -> Duration {
        let (map, pool) = (&self.map, &self.pool);
        let n = iters as usize;
        let (seed_a, seed_b) = (self.next_seed(), self.next_seed());
        let start = Instant::now();
        std::thread::scope(|s| {
            let other = s.spawn(move || baseline_calls(map, pool, n / 2, seed_a));
            baseline_calls(map, pool, n - n / 2, seed_b);
            other.join().unwrap();
        });
        start.elapsed()
    }

    fn governor_latencies_1t(&self, calls: usize) -> Vec<u64> {
        let mut out = Vec::with_capacity(calls);
        for n in Self::chunks(calls) {
            self.make_room(n);
            let seed = self.next_seed();
            governor_timed(&self.handle, &self.governor, &self.pool, n, seed, &mut out);
        }
        out
    }

    /// Per-call latencies of both threads, and the wall time of the timed chunks.
    fn governor_latencies_2t(&self, calls: usize) -> (Vec<u64>, Duration) {
        let (handle, governor, pool) = (&self.handle, &self.governor, &self.pool);
        let mut all = Vec::with_capacity(calls);
        let mut wall = Duration::ZERO;
        for n in Self::chunks(calls) {
            self.make_room(n);
            let (a, b) = (n / 2, n - n / 2);
            let (seed_a, seed_b) = (self.next_seed(), self.next_seed());
            let mut mine = Vec::with_capacity(b);
            let start = Instant::now();
            let theirs = std::thread::scope(|s| {
                let other = s.spawn(move || {
                    let mut out = Vec::with_capacity(a);
                    governor_timed(handle, governor, pool, a, seed_a, &mut out);
                    out
                });
                governor_timed(handle, governor, pool, b, seed_b, &mut mine);
                other.join().unwrap()
            });
            wall += start.elapsed();
            all.extend(mine);
            all.extend(theirs);
        }
        (all, wall)
    }
}

/// Percentiles of a latency sample, in ns.
#[derive(Debug, Clone, Copy, Default)]
struct Percentiles {
    mean: f64,
    p50: f64,
    p99: f64,
    p999: f64,
}

impl Percentiles {
    fn of(mut ns: Vec<u64>) -> Self {
        ns.sort_unstable();
        let at = |p: f64| {
            let rank = (ns.len() as f64 * p).ceil() as usize;
            ns[rank.clamp(1, ns.len()) - 1] as f64
        };
        Percentiles {
            mean: ns.iter().sum::<u64>() as f64 / ns.len().max(1) as f64,
            p50: at(0.50),
            p99: at(0.99),
            p999: at(0.999),
        }
    }
}

/// Everything measured for one size.
#[derive(Debug, Default)]
struct Row {
    label: &'static str,
    keys: usize,
    orgs: usize,
    users: usize,
    seeded_in: Option<Duration>,
    store_open: Duration,
    load: Duration,
    /// Criterion medians, ns per call (two threads: wall time per call).
    governor_1t: Option<f64>,
    baseline_1t: Option<f64>,
    governor_2t: Option<f64>,
    baseline_2t: Option<f64>,
    governor_pct_1t: Percentiles,
    baseline_pct_1t: Percentiles,
    governor_pct_2t: Percentiles,
    /// Calls per second in the two-thread percentile loop.
    governor_2t_rate: f64,
    flushes: u64,
    flush_time: Duration,
    /// Store syncs made inside authorize/settle: warm-up, criterion, percentile loops (1, 2 threads).
    inline_syncs: [u64; 4],
}

/// Runs one criterion benchmark and returns the median of its samples' mean ns per call.
fn measure(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    mut routine: impl FnMut(u64) -> Duration,
) -> Option<f64> {
    let mut samples: Vec<f64> = Vec::new();
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let elapsed = routine(iters);
            samples.push(elapsed.as_nanos() as f64 / iters.max(1) as f64);
            elapsed
        });
    });
    // Warm-up calls come first; the last SAMPLES calls are the measurement.
    let from = samples.len().saturating_sub(SAMPLES);
    let tail = &mut samples[from..];
    if tail.is_empty() {
        return None;
    }
    tail.sort_by(f64::total_cmp);
    let mid = tail.len() / 2;
    Some(if tail.len().is_multiple_of(2) {
        (tail[mid - 1] + tail[mid]) / 2.0
    } else {
        tail[mid]
    })
}

fn bench_size(criterion: &mut Criterion, handle: &Handle, dir: &Path, size: Size) -> Row {
    eprintln!("[ias bench] preparing {} keys ...", size.label);
    let (seeded, seeded_in) = handle.block_on(common::seeded_file(size));
    if let Some(took) = seeded_in {
        eprintln!(
            "[ias bench] seeded {} in {took:.1?} (cached for later runs)",
            seeded.display()
        );
    }
    let copy = common::working_copy(&seeded, dir, size);

    let start = Instant::now();
    let store = handle.block_on(SqliteStore::open(&copy)).unwrap();
    let store_open = start.elapsed();
    let start = Instant::now();
    let governor = handle.block_on(Governor::open(store)).unwrap();
    let load = start.elapsed();
    let stats = governor.stats();
    assert_eq!(stats.keys, size.keys, "keys loaded");
    assert_eq!(stats.users, size.users(), "users loaded");
    assert_eq!(stats.orgs, size.orgs, "orgs loaded");
    eprintln!(
        "[ias bench] Governor::open loaded {} keys in {load:.2?}",
        stats.keys
    );

    let pool = Pool::new(size);
    let map: HashMap<KeyHash, u32> = (0..pool.len())
        .map(|i| (KeyHash::of(pool.get(i)), i as u32))
        .collect();
    let setup = Setup {
        handle: handle.clone(),
        governor,
        pool,
        map,
        since_flush: Cell::new(0),
        seed: Cell::new(size.keys as u64),
        flushes: Cell::new(0),
        flushes_ever: Cell::new(0),
        flush_time: Cell::new(Duration::ZERO),
    };
    handle.block_on(common::grow_leases(&setup.governor, &setup.pool, size));
    setup.flushes_ever.set(setup.flushes_ever.get() + 1);
    let mut syncs = setup.inline_syncs();
    let mut syncs_since = || {
        let now = setup.inline_syncs();
        std::mem::replace(&mut syncs, now).abs_diff(now)
    };
    setup.governor_1t(WARMUP_CALLS as u64);
    setup.flush();
    let warmup_syncs = syncs_since();
    setup.flushes.set(0);
    setup.flush_time.set(Duration::ZERO);

    let mut row = Row {
        label: size.label,
        keys: size.keys,
        orgs: size.orgs,
        users: size.users(),
        seeded_in,
        store_open,
        load,
        ..Row::default()
    };
    let mut group = criterion.benchmark_group(format!("authorize_settle_{}_keys", size.label));
    group.throughput(Throughput::Elements(1));
    row.governor_1t = measure(&mut group, "governor_1_thread", |i| setup.governor_1t(i));
    row.baseline_1t = measure(&mut group, "baseline_1_thread", |i| setup.baseline_1t(i));
    row.governor_2t = measure(&mut group, "governor_2_threads", |i| setup.governor_2t(i));
    row.baseline_2t = measure(&mut group, "baseline_2_threads", |i| setup.baseline_2t(i));
    group.finish();
    row.inline_syncs[0] = warmup_syncs;
    row.inline_syncs[1] = syncs_since();

    eprintln!("[ias bench] timing {PERCENTILE_CALLS} single calls for percentiles ...");
    setup.flush();
    row.governor_pct_1t = Percentiles::of(setup.governor_latencies_1t(PERCENTILE_CALLS));
    row.inline_syncs[2] = syncs_since();
    let seed = setup.next_seed();
    row.baseline_pct_1t = Percentiles::of(baseline_timed(
        &setup.map,
        &setup.pool,
        PERCENTILE_CALLS,
        seed,
    ));
    setup.flush();
    let (latencies, wall) = setup.governor_latencies_2t(PERCENTILE_CALLS);
    row.governor_2t_rate = latencies.len() as f64 / wall.as_secs_f64();
    row.governor_pct_2t = Percentiles::of(latencies);
    row.inline_syncs[3] = syncs_since();
    row.flushes = setup.flushes.get();
    row.flush_time = setup.flush_time.get();

    handle.block_on(setup.governor.shutdown()).unwrap();
    row
}

fn us(ns: f64) -> String {
    format!("{:.3} µs", ns / 1_000.0)
}

fn opt_us(ns: Option<f64>) -> String {
    ns.map_or_else(|| "n/a".to_owned(), us)
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "n/a".to_owned(),
    }
}

fn rate(ns_per_call: Option<f64>) -> String {
    ns_per_call.map_or_else(|| "n/a".to_owned(), |ns| format!("{:.2} M/s", 1_000.0 / ns))
}

fn verdict(ok: bool) -> &'static str {
    if ok { "MET" } else { "MISSED" }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "n/a".to_owned())
}

fn render(rows: &[Row], load_before: &str) -> String {
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(w, "machine: {}", common::machine_line());
    let _ = writeln!(
        w,
        "load average (1/5/15 min): {load_before} before, {} after",
        loadavg()
    );
    let _ = writeln!(
        w,
        "method: random key per call from all known secrets; model `{MODEL}` (exact match); \
         authorize {ESTIMATE} tokens, settle {ACTUAL}; org budgets 10^14, leases grown once \
         before measuring (one 10^10-token request per user) so none runs short; \
         write-behind usage flushed outside the timed sections every <= {CHUNK} calls; no \
         background maintenance; two threads = main thread + 1 spawned OS thread on one \
         governor, random keys (orgs mostly differ at 100k/1M, often shared at 1k); baseline = \
         SHA-256 of the key + std HashMap lookup over the same keys; percentiles time each \
         call with Instant (~20-30 ns included)."
    );
    let _ = writeln!(w);
    let _ = writeln!(w, "### Single thread (authorize + settle)");
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "| keys | criterion median | baseline median | ratio | mean | p50 | p99 | p99.9 | baseline p50 | baseline p99 | baseline p99.9 | p50 ratio | p99 ratio |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let (g, b) = (r.governor_pct_1t, r.baseline_pct_1t);
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.label,
            opt_us(r.governor_1t),
            opt_us(r.baseline_1t),
            ratio(r.governor_1t, r.baseline_1t),
            us(g.mean),
            us(g.p50),
            us(g.p99),
            us(g.p999),
            us(b.p50),
            us(b.p99),
            us(b.p999),
            ratio(Some(g.p50), Some(b.p50)),
            ratio(Some(g.p99), Some(b.p99)),
        );
    }
    let _ = writeln!(w);
    let _ = writeln!(w, "### Two threads, one governor (authorize + settle)");
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "| keys | throughput (criterion) | baseline throughput | ratio (baseline / governor) | wall time per call | per-call mean | p50 | p99 | p99.9 | throughput (percentile loop) |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let p = r.governor_pct_2t;
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} M/s |",
            r.label,
            rate(r.governor_2t),
            rate(r.baseline_2t),
            ratio(r.governor_2t, r.baseline_2t),
            opt_us(r.governor_2t),
            us(p.mean),
            us(p.p50),
            us(p.p99),
            us(p.p999),
            r.governor_2t_rate / 1e6,
        );
    }
    let _ = writeln!(w);
    let _ = writeln!(w, "### Loading from SQLite");
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "| keys | orgs × users | Governor::open (load) | SqliteStore::open | untimed flushes (count, total) | in-line store syncs (warm-up / criterion / p-loop 1t / 2t) |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|");
    for r in rows {
        let _ = writeln!(
            w,
            "| {} | {} × {} | {:.3} s | {:.1} ms | {}, {:.2} s | {} / {} / {} / {} |",
            r.label,
            r.orgs,
            r.users / r.orgs.max(1),
            r.load.as_secs_f64(),
            r.store_open.as_secs_f64() * 1e3,
            r.flushes,
            r.flush_time.as_secs_f64(),
            r.inline_syncs[0],
            r.inline_syncs[1],
            r.inline_syncs[2],
            r.inline_syncs[3],
        );
    }
    if rows.iter().any(|r| r.seeded_in.is_some()) {
        let seeded: Vec<String> = rows
            .iter()
            .filter_map(|r| {
                r.seeded_in
                    .map(|d| format!("{}: {:.1} s", r.label, d.as_secs_f64()))
            })
            .collect();
        let _ = writeln!(w, "\n(seeded this run: {})", seeded.join(", "));
    }

    let _ = writeln!(w);
    let _ = writeln!(w, "### Targets (hot path)");
    let _ = writeln!(w);
    let worst = |f: &dyn Fn(&Row) -> f64| rows.iter().map(f).fold(0.0_f64, f64::max);
    let p50 = worst(&|r| r.governor_pct_1t.p50);
    let p99 = worst(&|r| r.governor_pct_1t.p99);
    let times = worst(&|r| match (r.governor_1t, r.baseline_1t) {
        (Some(g), Some(b)) if b > 0.0 => g / b,
        _ => 0.0,
    });
    let load = rows
        .iter()
        .find(|r| r.keys == 1_000_000)
        .map(|r| r.load.as_secs_f64());
    let _ = writeln!(
        w,
        "- p50 <= 2 µs (single thread, worst size): {} -> {}",
        us(p50),
        verdict(p50 <= 2_000.0)
    );
    let _ = writeln!(
        w,
        "- p99 <= 10 µs (single thread, worst size): {} -> {}",
        us(p99),
        verdict(p99 <= 10_000.0)
    );
    let _ = writeln!(
        w,
        "- <= 3× baseline (criterion median, single thread, worst size): {times:.2}× -> {}",
        verdict(times <= 3.0)
    );
    match load {
        Some(load) => {
            let _ = writeln!(
                w,
                "- 1M keys loaded in <= 3 s: {load:.3} s -> {}",
                verdict(load <= 3.0)
            );
        }
        None => {
            let _ = writeln!(w, "- 1M keys loaded in <= 3 s: not measured");
        }
    }
    s
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let handle = runtime.handle().clone();
    let dir = tempfile::tempdir().unwrap();
    let load_before = loadavg();
    let mut criterion = Criterion::default()
        .sample_size(SAMPLES)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();

    let rows: Vec<Row> = common::sizes()
        .iter()
        .map(|size| bench_size(&mut criterion, &handle, dir.path(), *size))
        .collect();
    criterion.final_summary();

    let summary = render(&rows, &load_before);
    println!("\n==================== ias-core hot path ====================\n");
    println!("{summary}");
    std::fs::write(HANDOFF, &summary).unwrap();
    eprintln!("[ias bench] summary also written to {HANDOFF}");
}
