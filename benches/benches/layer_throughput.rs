//! Macro benchmarks against a real redis-server (started here unless
//! `HERALD_BENCH_REDIS_URL` points at one, e.g. to share it with
//! `benches/python/channel_layer_bench.py`):
//!
//! * `receive_drain`: 20 000 messages for 1 000 local channels are already in the process key;
//!   time until the reader has routed all of them into the channels' buffers.
//! * `group_send_1_member`: `group_send` to a group with one (local, drained) member,
//!   sequentially and 64 at a time.
//! * `per_user_1000`: one message to each of 1,000 user groups (one local, drained member
//!   each, as in the per-user fan-out scenario): 1,000 `group_send`s 64 at a time against one
//!   `group_send_many` (pipelined).

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_util::FutureExt as _;
use herald_benches::sample_message;
use herald_core::{ChannelLayer, Message};
use herald_redis::internals::Target;
use herald_redis::{RedisChannelLayer, RedisLayerConfig};
use herald_test_support::RedisServer;

const DRAIN_MESSAGES: usize = 20_000;
const DRAIN_CHANNELS: usize = 1_000;

fn redis_url() -> (Option<RedisServer>, String) {
    match std::env::var("HERALD_BENCH_REDIS_URL") {
        Ok(url) => (None, url),
        Err(_) => {
            let server = RedisServer::start();
            let url = server.url();
            (Some(server), url)
        }
    }
}

/// The runtime of the sending benchmarks: two workers, as on the benchmark machine's 2 CPUs.
fn two_worker_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn layer(url: &str) -> RedisChannelLayer {
    RedisChannelLayer::new(
        RedisLayerConfig::default()
            .with_hosts([url])
            .with_prefix("benchrs")
            .with_brpop_timeout(Duration::from_secs(1)),
    )
    .unwrap()
}

async fn drain_once(url: &str) -> Duration {
    let layer = layer(url);
    let names: Vec<String> = (0..DRAIN_CHANNELS)
        .map(|i| format!("bench.{}!c{i}", layer.client_prefix()))
        .collect();
    let key = layer.keys().channel_key(&names[0]);
    // Fill the key like a Python sender would, before any reader exists.
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let msg = sample_message();
    let base = 1.0e9;
    for chunk in (0..DRAIN_MESSAGES).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for &i in chunk {
            let member = layer
                .codec()
                .encode_routed(msg.map(), Target::One(&names[i % DRAIN_CHANNELS]))
                .unwrap();
            pipe.cmd("ZADD")
                .arg(&key)
                .arg(base + i as f64)
                .arg(member)
                .ignore();
        }
        pipe.query_async::<()>(&mut conn).await.unwrap();
    }
    // Register every channel (a pending receive registers its buffer and starts the reader;
    // dropping it is cancel-safe). On this current-thread runtime the reader cannot run before
    // the clock starts.
    for name in &names {
        assert!(layer.receive(name).now_or_never().is_none());
    }
    let start = Instant::now();
    while (layer.stats().delivered as usize) < DRAIN_MESSAGES {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let elapsed = start.elapsed();
    assert_eq!(layer.stats().buffer_drops, 0);
    elapsed
}

fn receive_drain(c: &mut Criterion) {
    let (_server, url) = redis_url();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("layer");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(DRAIN_MESSAGES as u64));
    group.bench_function("receive_drain", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                total += rt.block_on(drain_once(&url));
            }
            total
        })
    });
    group.finish();
}

fn group_send(c: &mut Criterion) {
    let (_server, url) = redis_url();
    let rt = two_worker_runtime();
    let layer = layer(&url);
    rt.block_on(async {
        let ch = layer.new_channel("specific").await.unwrap();
        layer.group_add("bench-group", &ch).await.unwrap();
    });
    let msg: Message = sample_message();
    let mut group = c.benchmark_group("layer");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(1));
    group.bench_function("group_send_1_member/sequential", |b| {
        b.to_async(&rt)
            .iter(|| async { layer.group_send("bench-group", msg.clone()).await.unwrap() })
    });
    group.throughput(Throughput::Elements(64));
    group.bench_function("group_send_1_member/64_concurrent", |b| {
        b.to_async(&rt).iter(|| async {
            let sends = (0..64).map(|_| layer.group_send("bench-group", msg.clone()));
            for r in futures_util::future::join_all(sends).await {
                r.unwrap();
            }
        })
    });
    group.finish();
}

const PER_USER_GROUPS: usize = 1_000;

/// One message to each of [`PER_USER_GROUPS`] user groups whose one member is a channel of
/// a process that is not running (as if its server were busy): what the sender and Redis
/// cost, without a reader. The process key is deleted between iterations, untimed, so every
/// delivery is stored against the same small key.
fn per_user(c: &mut Criterion) {
    use futures_util::StreamExt as _;
    let (_server, url) = redis_url();
    let rt = two_worker_runtime();
    // Every delivery goes to the one process key: its capacity holds an iteration's worth.
    let sender = RedisChannelLayer::new(
        RedisLayerConfig::default()
            .with_hosts([url.as_str()])
            .with_prefix("benchrs")
            .with_capacity(PER_USER_GROUPS),
    )
    .unwrap();
    let groups: Vec<String> = (0..PER_USER_GROUPS)
        .map(|i| format!("user_bench{i:05}"))
        .collect();
    let process = "bench.0123456789abcdef0123456789abcdef!";
    let process_key = sender.keys().channel_key(process);
    let mut conn = rt.block_on(async {
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        for (i, group) in groups.iter().enumerate() {
            let member = format!("{process}c{i}");
            sender.group_add(group, &member).await.unwrap();
        }
        let () = redis::cmd("DEL")
            .arg(&process_key)
            .query_async(&mut conn)
            .await
            .unwrap();
        conn
    });
    let msg: Message = sample_message();
    let mut clear = || {
        rt.block_on(async {
            let () = redis::cmd("DEL")
                .arg(&process_key)
                .query_async(&mut conn)
                .await
                .unwrap();
        })
    };
    let mut bench = c.benchmark_group("layer");
    bench.sample_size(10);
    bench.measurement_time(Duration::from_secs(10));
    bench.throughput(Throughput::Elements(PER_USER_GROUPS as u64));
    let stored = |report: herald_core::GroupSendReport| assert_eq!(report.over_capacity, 0);
    bench.bench_function("per_user_1000/group_send_64_concurrent", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let started = Instant::now();
                rt.block_on(
                    futures_util::stream::iter(&groups)
                        .map(|g| sender.group_send(g, msg.clone()))
                        .buffer_unordered(64)
                        .for_each(|r| async move { stored(r.unwrap()) }),
                );
                total += started.elapsed();
                clear();
            }
            total
        })
    });
    bench.bench_function("per_user_1000/group_send_many", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let sends = groups.iter().map(|g| (g.clone(), msg.clone())).collect();
                let started = Instant::now();
                for r in rt.block_on(sender.group_send_many(sends)) {
                    stored(r.unwrap());
                }
                total += started.elapsed();
                clear();
            }
            total
        })
    });
    bench.finish();
}

/// The same sequential group_send on a current-thread runtime (one worker: fewer cross-thread
/// wake-ups per round trip, as in a single-core deployment).
fn group_send_current_thread(c: &mut Criterion) {
    let (_server, url) = redis_url();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let layer = rt.block_on(async {
        let layer = layer(&url);
        let ch = layer.new_channel("specific").await.unwrap();
        layer.group_add("bench-group-ct", &ch).await.unwrap();
        layer
    });
    let msg: Message = sample_message();
    let mut group = c.benchmark_group("layer");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(1));
    group.bench_function("group_send_1_member/sequential_current_thread", |b| {
        b.to_async(&rt).iter(|| async {
            layer
                .group_send("bench-group-ct", msg.clone())
                .await
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    receive_drain,
    group_send,
    group_send_current_thread,
    per_user
);
criterion_main!(benches);
