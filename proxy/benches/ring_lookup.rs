//! How long placing a request on the ring takes, against the cost of
//! hashing its key alone (the floor any placement pays).
//!
//! `cargo bench -p fanout-proxy --bench ring_lookup` prints criterion's
//! timings and then each lookup's ratio to the hash-only reference.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use criterion::Criterion;
use fanout_config::{CacheNodeRef, HostPort};
use fanout_proxy::balance::{self, Loads};
use fanout_proxy::ring::Ring;
use xxhash_rust::xxh3::xxh3_64;

fn nodes(n: usize) -> Vec<CacheNodeRef> {
    (0..n)
        .map(|i| CacheNodeRef {
            id: format!("cache-{i}"),
            address: HostPort {
                host: "127.0.0.1".into(),
                port: 9000 + i as u16,
            },
            weight: 1,
        })
        .collect()
}

fn keys() -> Vec<String> {
    (0..4096)
        .map(|i| format!("live:/live/main/720p/segment-{i}.ts"))
        .collect()
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let keys = keys();
    let mut results = Vec::new();
    for n in [5usize, 50] {
        let ring = Ring::new(&nodes(n), 160);
        let health = fanout_proxy::Health::new(n);
        let loads = Arc::new(Loads::new(n));
        // Some load, so the bound is computed over real counts.
        let _held: Vec<_> = (0..n * 4).map(|i| loads.start(i % n)).collect();
        let mut group = c.benchmark_group(format!("{n} nodes"));
        let mut i = 0usize;
        let mut next = || {
            i = (i + 1) & 4095;
            keys[i].as_bytes()
        };
        group.bench_function("hash only (reference)", |b| {
            b.iter(|| black_box(xxh3_64(black_box(next()))))
        });
        group.bench_function("hash + ring owner", |b| {
            b.iter(|| black_box(ring.owner(xxh3_64(black_box(next())))))
        });
        group.bench_function("hash + bounded-load choice with a fallback", |b| {
            b.iter(|| {
                black_box(balance::choose(
                    &ring,
                    xxh3_64(black_box(next())),
                    &health,
                    &loads,
                    1.25,
                    Instant::now(),
                    2,
                ))
            })
        });
        group.finish();
        // A quick, criterion-independent figure for the ratio line.
        let per = |f: &mut dyn FnMut()| {
            let start = Instant::now();
            for _ in 0..1_000_000 {
                f();
            }
            start.elapsed().as_nanos() as f64 / 1e6
        };
        let mut k = 0usize;
        let hash = per(&mut || {
            k = (k + 1) & 4095;
            black_box(xxh3_64(black_box(keys[k].as_bytes())));
        });
        let owner = per(&mut || {
            k = (k + 1) & 4095;
            black_box(ring.owner(xxh3_64(black_box(keys[k].as_bytes()))));
        });
        let choose = per(&mut || {
            k = (k + 1) & 4095;
            black_box(balance::choose(
                &ring,
                xxh3_64(black_box(keys[k].as_bytes())),
                &health,
                &loads,
                1.25,
                Instant::now(),
                2,
            ));
        });
        results.push((n, hash, owner, choose));
    }
    c.final_summary();
    println!("\nnodes  hash ns  owner ns (× hash)  bounded choice ns (× hash)");
    for (n, hash, owner, choose) in results {
        println!(
            "{n:>5}  {hash:>7.1}  {owner:>8.1} ({:>4.1}×)  {choose:>17.1} ({:>4.1}×)",
            owner / hash,
            choose / hash
        );
    }
}
