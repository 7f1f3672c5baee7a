//! Runnable examples for Herald's WebSocket server; the code lives in `examples/`:
//!
//! * `echo` — the smallest consumer: echoes every frame.
//! * `chat` — a custom route with its own consumer and layer message types, the way a Channels
//!   user writes a chat consumer.
//! * `broadcast` — the user guide end to end: `/ws/tasks/`, three clients, and the Rust
//!   counterparts of `ws_send_message`, `ws_send_notification`, `ws_send_file`,
//!   `ws_broadcast_message` and task progress events.
//! * `idle_memory` — measures the server's resident memory per idle WebSocket.
//!
//! Each opens with the command that runs it, e.g. `cargo run -p examples --example echo`.
