//! The `herald` package's own pytest suite (python/tests): herald.layers next to the real
//! channels_redis on one real Redis, in both directions, from async and sync code; and the
//! `herald.django` app (static browser client, the guide's helpers) in a Django project.

mod common;

use std::time::Duration;

use common::pytest;
use herald_test_support::{RedisServer, herald_package_python, workspace_root};

#[test]
fn package_tests_pass() {
    let Some(python) = herald_package_python() else {
        return;
    };
    let redis = RedisServer::start();
    let run = pytest(
        &python,
        &workspace_root().join("python"),
        &[],
        &[("HERALD_TEST_REDIS_URL", redis.url())],
        Duration::from_secs(300),
    );
    run.assert_green();
    assert!(run.count("passed") >= 23, "{}", run.output);
}
