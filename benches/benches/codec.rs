//! Micro benchmarks: the stored-message codec and the shard hash. No server needed.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use herald_benches::sample_message;
use herald_redis::SerializerFormat;
use herald_redis::internals::{Codec, Target, consistent_hash};
use std::hint::black_box;
use std::time::Duration;

fn codec(c: &mut Criterion) {
    let msg = sample_message();
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Elements(1));
    for (name, codec) in [
        ("msgpack", Codec::new(SerializerFormat::Msgpack, 12)),
        ("json", Codec::new(SerializerFormat::Json, 12)),
        (
            "msgpack_fernet",
            Codec::new(SerializerFormat::Msgpack, 12).with_encryption_keys(&["bench-key"]),
        ),
    ] {
        let names = vec![
            "specific.0123456789abcdef0123456789abcdef!0123456789abcdef0123456789abcdef".to_owned(),
        ];
        let encoded = codec
            .encode_routed(msg.map(), Target::Many(&names))
            .unwrap();
        group.bench_function(format!("{name}/encode_routed"), |b| {
            b.iter(|| {
                codec
                    .encode_routed(black_box(msg.map()), Target::Many(&names))
                    .unwrap()
            })
        });
        group.bench_function(format!("{name}/decode"), |b| {
            b.iter(|| codec.decode_detailed(black_box(&encoded)).unwrap())
        });
    }
    group.finish();
}

fn hashing(c: &mut Criterion) {
    let name = b"specific.0123456789abcdef0123456789abcdef!";
    c.bench_function("hashing/consistent_hash_10", |b| {
        b.iter(|| consistent_hash(black_box(name), black_box(10)))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    targets = codec, hashing
}
criterion_main!(benches);
