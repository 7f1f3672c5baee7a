//! Benchmarks for Herald; the code lives in `benches/`. Run with
//! `cargo bench -p herald-benches`; results are recorded in `docs/benchmarks.md`.
//!
//! This library only holds the sample messages the benches share.

use herald_core::{Message, Value};

/// A message shaped like the guide's `user.message` (a few strings, an int, a nested map).
pub fn sample_message() -> Message {
    let mut meta = herald_core::Map::new();
    meta.insert("sender".to_owned(), Value::from("amadmin"));
    meta.insert("priority".to_owned(), Value::Int(2));
    Message::with_type("user.message")
        .with("message", "Your report is ready: quarterly-sales.pdf")
        .with("id", 123_456_i64)
        .with("ratio", 0.75)
        .with("meta", Value::Map(meta))
}
