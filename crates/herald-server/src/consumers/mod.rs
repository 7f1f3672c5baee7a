//! Ready-made consumers.

pub mod tasks;
