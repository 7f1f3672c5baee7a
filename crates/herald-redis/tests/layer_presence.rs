//! Presence records in Redis: shared by every instance, lapsing without refresh.

use std::time::Duration;

use herald_core::presence::Presence;
use herald_redis::{RedisChannelLayer, RedisLayerConfig};
use herald_test_support::RedisServer;

const TIMEOUT: Duration = Duration::from_secs(10);

fn layer(urls: &[String]) -> RedisChannelLayer {
    RedisChannelLayer::new(RedisLayerConfig::default().with_hosts(urls.to_vec())).unwrap()
}

fn e(u: &str, c: &str) -> (String, String) {
    (u.to_owned(), c.to_owned())
}

async fn t<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(TIMEOUT, f).await.unwrap()
}

#[tokio::test]
async fn two_instances_see_each_others_connections() {
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    let one = layer(&urls);
    let two = layer(&urls);
    t(one.touch(&[e("alice", "c1"), e("bob", "c2")], Duration::from_secs(30)))
        .await
        .unwrap();
    t(two.touch(&[e("alice", "c3")], Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(t(two.connections("alice")).await.unwrap(), 2);
    assert_eq!(
        t(one.connection_names("alice")).await.unwrap(),
        ["c1", "c3"]
    );
    assert_eq!(t(one.connections("carol")).await.unwrap(), 0);
    assert_eq!(t(two.online_users()).await.unwrap(), ["alice", "bob"]);

    t(one.remove("bob", "c2")).await.unwrap();
    assert_eq!(t(two.online_users()).await.unwrap(), ["alice"]);
    t(one.remove("alice", "c1")).await.unwrap();
    assert_eq!(t(two.connections("alice")).await.unwrap(), 1);
}

#[tokio::test]
async fn records_of_a_dead_instance_lapse_after_the_ttl() {
    let server = RedisServer::start();
    let urls = vec![server.url()];
    let alive = layer(&urls);
    {
        // An instance that touches once and then "crashes" (is dropped without remove).
        let crashed = layer(&urls);
        t(crashed.touch(&[e("ghost", "c1")], Duration::from_secs(1)))
            .await
            .unwrap();
    }
    t(alive.touch(&[e("live", "c2")], Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(t(alive.online_users()).await.unwrap(), ["ghost", "live"]);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(t(alive.connections("ghost")).await.unwrap(), 0);
    assert_eq!(t(alive.online_users()).await.unwrap(), ["live"]);
}

#[tokio::test]
async fn python_can_read_the_documented_layout() {
    let server = RedisServer::start();
    let layer = layer(&[server.url()]);
    t(layer.touch(&[e("amadmin", "specific.x!y")], Duration::from_secs(30)))
        .await
        .unwrap();
    // The documented key and a raw ZCOUNT from "now" — what a Python reader would do.
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = t(client.get_multiplexed_async_connection()).await.unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let live: i64 = t(redis::cmd("ZCOUNT")
        .arg("asgi:presence:user:amadmin")
        .arg(now)
        .arg("+inf")
        .query_async(&mut conn))
    .await
    .unwrap();
    assert_eq!(live, 1);
    let ttl: i64 = t(redis::cmd("TTL")
        .arg("asgi:presence:user:amadmin")
        .query_async(&mut conn))
    .await
    .unwrap();
    assert!((1..=60).contains(&ttl), "{ttl}");
}
