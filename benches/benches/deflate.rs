//! `permessage-deflate` micro benchmarks: what compressing one of the guide's frames costs
//! (once per message: every socket of a group gets the same compressed bytes) and what a
//! client pays to inflate it. No server needed.
//!
//! Run with `cargo bench -p herald-benches --bench deflate`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use herald_server::deflate;
use std::hint::black_box;
use std::time::Duration;

/// The guide's frames as Herald writes them (Python `json.dumps` layout), about the sizes the
/// fan-out harness's `--shape` messages have.
const FRAMES: [(&str, &str); 4] = [
    (
        "toast",
        r#"{"type": "user_message", "username": "bcast00000", "message": "Your report \"Quarterly sales 42\" is ready to download.", "data": {"seq": 42}, "timestamp": "2026-11-30T13:45:17.123456", "sent_at": 1796046317.123456}"#,
    ),
    (
        "notification",
        r#"{"type": "user_notification", "username": "bcast00000", "notification_type": "success", "title": "Order shipped", "message": "Order #10042 has shipped and will arrive on Thursday.", "data": {"seq": 42, "order_id": 10042, "status": "shipped", "url": "/orders/10042/"}, "timestamp": "2026-11-30T13:45:17.123456", "sent_at": 1796046317.123456}"#,
    ),
    (
        "file",
        r#"{"type": "user_file", "username": "bcast00000", "file_url": "/media/exports/sales-2026-q3-42.xlsx", "file_name": "sales-2026-q3-42.xlsx", "message": "Your export is ready", "file_size": 1482113, "data": {"seq": 42}, "timestamp": "2026-11-30T13:45:17.123456", "sent_at": 1796046317.123456}"#,
    ),
    (
        "task",
        r#"{"type": "task_update", "task_id": "5f0c2a8e-8d3b-4b51-9c1e-2f7d41a9c6b0", "status": "processing", "message": "Processing step 3 of 40...", "progress": 42, "seq": 42, "sent_at": 1796046317.123456}"#,
    ),
];

fn deflate_frames(c: &mut Criterion) {
    let mut group = c.benchmark_group("deflate");
    group.throughput(Throughput::Elements(1));
    for (name, frame) in FRAMES {
        let compressed = deflate::compress(frame.as_bytes()).expect("the guide's frames shrink");
        eprintln!(
            "deflate/{name}: {} bytes -> {} compressed ({:.0} % saved)",
            frame.len(),
            compressed.len(),
            100.0 * (1.0 - compressed.len() as f64 / frame.len() as f64)
        );
        group.bench_function(format!("{name}/compress"), |b| {
            b.iter(|| deflate::compress(black_box(frame.as_bytes())))
        });
        group.bench_function(format!("{name}/inflate"), |b| {
            b.iter(|| deflate::inflate_message(black_box(&compressed), 1 << 20).unwrap())
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = deflate_frames
}
criterion_main!(benches);
