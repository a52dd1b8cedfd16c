//! Heap bytes per cached key, and the summary of every ias-core benchmark.
//!
//! A counting global allocator (`stats_alloc`, since the workspace forbids
//! `unsafe` and so a hand-written `GlobalAlloc`) wraps the system allocator;
//! it would slow the timed benchmarks, so it lives in this binary only.
//! The figure is the Rust heap still live after `Governor::open` minus the
//! heap live before it: every governor table (keys by hash, users with their
//! emails, orgs with policies and ledgers) and anything else the load kept.
//! It counts requested bytes, not the allocator's own per-block overhead,
//! and not SQLite's page cache (SQLite allocates through C `malloc`). The
//! RSS growth is printed beside it as a cross-check.
//!
//! Runs after the `hot_path` benchmark in `cargo bench -p ias-core` and
//! prints its summary together with these figures, last.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::alloc::System;
use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime};

use ias_core::Governor;
use ias_store_sqlite::SqliteStore;
use stats_alloc::{INSTRUMENTED_SYSTEM, Stats, StatsAlloc};

use common::{ESTIMATE, HANDOFF, Pool, Rng, Size, authorize_settle};

/// Calls whose allocations are counted, after warming up.
const COUNTED_CALLS: usize = 10_000;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Heap allocations and bytes requested by one authorize+settle, on average.
fn allocations_per_call(
    handle: &tokio::runtime::Handle,
    governor: &Governor,
    size: Size,
) -> (f64, f64) {
    let pool = Pool::new(size);
    handle.block_on(async {
        common::grow_leases(governor, &pool, size).await;
        let mut rng = Rng::new(7);
        for _ in 0..COUNTED_CALLS {
            authorize_settle(governor, pool.get(rng.below(pool.len())), ESTIMATE).await;
        }
        governor.flush().await.unwrap();
        let before = GLOBAL.stats();
        for _ in 0..COUNTED_CALLS {
            authorize_settle(governor, pool.get(rng.below(pool.len())), ESTIMATE).await;
        }
        let after = GLOBAL.stats();
        governor.flush().await.unwrap();
        let calls = COUNTED_CALLS as f64;
        (
            (after.allocations + after.reallocations - before.allocations - before.reallocations)
                as f64
                / calls,
            (after.bytes_allocated - before.bytes_allocated) as f64 / calls,
        )
    })
}

/// Bytes and blocks live on the Rust heap now.
fn live() -> (i64, i64) {
    let s: Stats = GLOBAL.stats();
    (
        s.bytes_allocated as i64 - s.bytes_deallocated as i64,
        s.allocations as i64 - s.deallocations as i64,
    )
}

/// What one size costs in memory.
struct Row {
    label: &'static str,
    keys: usize,
    heap: i64,
    blocks: i64,
    key_table: i64,
    rss: i64,
    load: Duration,
    allocs_per_call: f64,
    bytes_per_call: f64,
}

/// The heap the governor's key table takes: one 64-byte slot (hash and
/// entry) per slot, at least twice as many slots as keys, a power of two.
fn key_table_bytes(keys: usize) -> i64 {
    let slots = (keys * 2).next_power_of_two().max(16);
    (slots * 64) as i64
}

fn measure(handle: &tokio::runtime::Handle, dir: &std::path::Path, size: Size) -> Row {
    let (seeded, seeded_in) = handle.block_on(common::seeded_file(size));
    if let Some(took) = seeded_in {
        eprintln!("[ias bench] seeded {} in {took:.1?}", seeded.display());
    }
    let copy = common::working_copy(&seeded, dir, size);
    let store = handle.block_on(SqliteStore::open(&copy)).unwrap();
    let (heap_before, blocks_before) = live();
    let rss_before = common::rss_bytes();
    let start = Instant::now();
    let governor = handle.block_on(Governor::open(store)).unwrap();
    let load = start.elapsed();
    let (heap_after, blocks_after) = live();
    let rss_after = common::rss_bytes();
    assert_eq!(governor.stats().keys, size.keys);
    let key_table = key_table_bytes(size.keys);
    let (allocs_per_call, bytes_per_call) = allocations_per_call(handle, &governor, size);
    drop(governor);
    Row {
        label: size.label,
        keys: size.keys,
        heap: heap_after - heap_before,
        blocks: blocks_after - blocks_before,
        key_table,
        rss: rss_after as i64 - rss_before as i64,
        load,
        allocs_per_call,
        bytes_per_call,
    }
}

fn mib(bytes: i64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn render(rows: &[Row]) -> String {
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(w, "### Memory per cached key (after Governor::open)");
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "| keys | live heap | bytes / key | live blocks | of which key table (replica) | key table / key | RSS growth / key | load (instrumented) |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|---|---|");
    for r in rows {
        let per = |b: i64| b as f64 / r.keys as f64;
        let _ = writeln!(
            w,
            "| {} | {} | {:.1} B | {} | {} | {:.1} B | {:.1} B | {:.3} s |",
            r.label,
            mib(r.heap),
            per(r.heap),
            r.blocks,
            mib(r.key_table),
            per(r.key_table),
            per(r.rss),
            r.load.as_secs_f64(),
        );
    }
    let _ = writeln!(
        w,
        "\n(live heap: requested bytes live after the load minus before it, all governor tables; \
         excludes malloc's per-block overhead and SQLite's own cache)"
    );
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "### Heap allocations per authorize + settle ({COUNTED_CALLS} calls, warm)"
    );
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "| keys | allocations (incl. reallocations) / call | bytes requested / call |"
    );
    let _ = writeln!(w, "|---|---|---|");
    for r in rows {
        let _ = writeln!(
            w,
            "| {} | {:.1} | {:.0} B |",
            r.label, r.allocs_per_call, r.bytes_per_call
        );
    }
    let _ = writeln!(w);
    let _ = writeln!(w, "### Target (memory)");
    let _ = writeln!(w);
    match rows.iter().max_by_key(|r| r.keys) {
        Some(r) => {
            let per = r.heap as f64 / r.keys as f64;
            let ok = per <= 300.0;
            let _ = writeln!(
                w,
                "- <= 300 bytes per key ({} keys): {per:.1} B -> {}",
                r.label,
                if ok { "MET" } else { "MISSED" }
            );
        }
        None => {
            let _ = writeln!(w, "- <= 300 bytes per key: not measured");
        }
    }
    s
}

fn main() {
    // `cargo bench -- FILTER` passes a filter; a criterion-style run of this
    // binary with `--list` or `--test` has nothing to do.
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<Row> = common::sizes()
        .into_iter()
        .map(|size| measure(runtime.handle(), dir.path(), size))
        .collect();
    let memory = render(&rows);

    println!("\n==================== ias-core benchmark summary ====================\n");
    match (std::fs::read_to_string(HANDOFF), std::fs::metadata(HANDOFF)) {
        (Ok(hot_path), Ok(meta)) => {
            let age = meta
                .modified()
                .ok()
                .and_then(|m| SystemTime::now().duration_since(m).ok())
                .map_or(0, |d| d.as_secs());
            println!("(hot path figures from the `hot_path` run {age} s ago)\n");
            println!("{hot_path}");
        }
        _ => println!(
            "(no hot path figures: run `cargo bench -p ias-core` to run both benchmarks)\n\n\
             machine: {}\n",
            common::machine_line()
        ),
    }
    println!("{memory}");
}
