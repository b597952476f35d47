//! The cached-credential path without HTTP: token → pod UID → hash → cache hit → body.
//! `cargo bench -p podiam-agent --bench agent`

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "bench code")]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use podiam_agent::testing::{StaticSource, pod_token};
use podiam_agent::{AgentClock, CacheConfig, CredentialCache};

fn cached_lookup(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let clock = AgentClock::system();
    let cache = CredentialCache::new(
        StaticSource::new(clock),
        CacheConfig::new("bench"),
        clock,
        Arc::default(),
    );
    // 2,000 pods cached (upstream's default cache size); look one up.
    let exp = 4_000_000_000;
    for i in 0..2_000 {
        rt.block_on(cache.pod_credentials(&pod_token(&format!("uid-{i}"), exp)))
            .unwrap();
    }
    let token = pod_token("uid-1000", exp);
    println!("token: {} bytes", token.len());
    c.bench_function("cached pod_credentials (2,000 pods)", |b| {
        b.iter(|| {
            let e = rt
                .block_on(cache.pod_credentials(black_box(&token)))
                .unwrap();
            black_box(e.body().len())
        });
    });
    c.bench_function("token_hash", |b| {
        b.iter(|| podiam_agent::token::token_hash(black_box(&token)));
    });
    c.bench_function("read_unverified", |b| {
        b.iter(|| podiam_agent::token::read_unverified(black_box(&token), 0).unwrap());
    });
}

criterion_group!(benches, cached_lookup);
criterion_main!(benches);
