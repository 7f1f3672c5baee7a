//! Runnable examples for Herald's WebSocket server; the code lives in `examples/`:
//!
//! * `echo` — the smallest consumer: echoes every frame.
//! * `chat` — a custom route with its own consumer and layer message types, the way a Channels
//!   user writes a chat consumer.
//! * `tasks` — the user guide's `/ws/tasks/` server with a sender pushing guide messages.
//! * `idle_memory` — measures the server's resident memory per idle WebSocket.
//!
//! Each opens with the command that runs it, e.g. `cargo run -p examples --example echo`.
