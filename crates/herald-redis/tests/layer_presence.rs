//! Presence records in Redis: shared by every instance, lapsing without refresh.

use std::time::Duration;

use herald_core::presence::Presence;
use herald_redis::{RedisChannelLayer, RedisLayerConfig};
use herald_test_support::RedisServer;

const TIMEOUT: Duration = Duration::from_secs(10);

fn layer(urls: &[String]) -> RedisChannelLayer {
    RedisChannelLayer::new(RedisLayerConfig::default().with_hosts(urls.to_vec())).unwrap()
}

fn e<'a>(u: &'a str, c: &'a str) -> (&'a str, &'a str) {
    (u, c)
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
    let (live, ttl) = raw_count_and_ttl(&server, "asgi:presence:user:amadmin", 0.0, None).await;
    assert_eq!(live, 1);
    assert!((1..=60).contains(&ttl), "{ttl}");
}

/// With a plain Redis client: how many members of `key` score between now + `from` and now +
/// `to` seconds (`None`: no upper bound), and the key's TTL.
async fn raw_count_and_ttl(
    server: &RedisServer,
    key: &str,
    from: f64,
    to: Option<f64>,
) -> (i64, i64) {
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = t(client.get_multiplexed_async_connection()).await.unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let max = to.map_or_else(|| "+inf".to_owned(), |to| (now + to).to_string());
    let count: i64 = t(redis::cmd("ZCOUNT")
        .arg(key)
        .arg(now + from)
        .arg(max)
        .query_async(&mut conn))
    .await
    .unwrap();
    let ttl: i64 = t(redis::cmd("TTL").arg(key).query_async(&mut conn))
        .await
        .unwrap();
    (count, ttl)
}

#[tokio::test]
async fn details_are_listed_fleet_wide_across_shards() {
    use herald_core::presence::ConnectionInfo;
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    let (one, two) = (layer(&urls), layer(&urls));
    let info = |u: &str, c: &str, i: &str| {
        ConnectionInfo::new(u, c)
            .with_instance(i)
            .with_address(Some("127.0.0.1:4000".into()))
            .with_since(1_700_000_000.5)
            .with_groups(vec![format!("user_{u}")])
    };
    let ttl = Duration::from_secs(30);
    t(one.record(
        &[info("alice", "c1", "one"), info("bob", "c2", "one")],
        ttl,
        false,
    ))
    .await
    .unwrap();
    t(two.record(&[info("alice", "c3", "two")], ttl, false))
        .await
        .unwrap();
    // A plain touch keeps the details; a record replaces them.
    t(two.touch(&[e("alice", "c3")], ttl)).await.unwrap();
    let mut moved = info("alice", "c3", "two");
    moved.groups.push("task_7".into());
    t(two.record(std::slice::from_ref(&moved), ttl, false))
        .await
        .unwrap();
    let alice = t(one.connection_infos(Some("alice"))).await.unwrap();
    assert_eq!(alice, [info("alice", "c1", "one"), moved.clone()]);
    let all = t(two.connection_infos(None)).await.unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[2], info("bob", "c2", "one"));
    // A removed connection goes with its details.
    t(one.remove("alice", "c1")).await.unwrap();
    assert_eq!(
        t(one.connection_infos(Some("alice"))).await.unwrap(),
        [moved]
    );
}

#[tokio::test]
async fn racing_instances_announce_each_transition_once() {
    let servers: Vec<RedisServer> = (0..2).map(|_| RedisServer::start()).collect();
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    let (one, two) = (layer(&urls), layer(&urls));
    let ttl = Duration::from_secs(30);
    let debounce = Duration::from_millis(300);
    for round in 0..20 {
        let user = format!("u{round}");
        // Both instances record a first socket of the same user at once: one "online".
        let (first, second) = ([e(&user, "c1")], [e(&user, "c2")]);
        let (a, b) = t(async {
            tokio::join!(
                one.touch_announcing(&first, ttl),
                two.touch_announcing(&second, ttl)
            )
        })
        .await;
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a.len() + b.len(), 1, "{user}: {a:?} {b:?}");
        // One of two sockets closes: nothing falls due.
        t(one.remove_announcing(&user, "c1", debounce))
            .await
            .unwrap();
        // The last one closes; after the debounce both sweep at once: one "offline".
        t(two.remove_announcing(&user, "c2", debounce))
            .await
            .unwrap();
    }
    tokio::time::sleep(debounce + Duration::from_millis(100)).await;
    let (a, b) = t(async { tokio::join!(one.take_offline(), two.take_offline()) }).await;
    let mut all = [a.unwrap(), b.unwrap()].concat();
    all.sort();
    let mut want: Vec<String> = (0..20).map(|r| format!("u{r}")).collect();
    want.sort();
    assert_eq!(all, want);
    assert!(t(one.take_offline()).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_reload_within_the_debounce_and_a_lapse_are_told_apart() {
    let server = RedisServer::start();
    let urls = vec![server.url()];
    let live = layer(&urls);
    let debounce = Duration::from_millis(500);
    let ttl = Duration::from_secs(30);
    assert_eq!(
        t(live.touch_announcing(&[e("alice", "c1")], ttl))
            .await
            .unwrap(),
        ["alice"]
    );
    // A reload: closed, and back on another socket before the debounce ends.
    t(live.remove_announcing("alice", "c1", debounce))
        .await
        .unwrap();
    assert!(
        t(live.touch_announcing(&[e("alice", "c2")], ttl))
            .await
            .unwrap()
            .is_empty()
    );
    tokio::time::sleep(debounce + Duration::from_millis(100)).await;
    assert!(t(live.take_offline()).await.unwrap().is_empty());
    {
        // A crashed instance: its one record lapses after its TTL, which counts as closed.
        let crashed = layer(&urls);
        assert_eq!(
            t(crashed.touch_announcing(&[e("ghost", "c9")], Duration::from_secs(1)))
                .await
                .unwrap(),
            ["ghost"]
        );
    }
    assert!(t(live.take_offline()).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(t(live.take_offline()).await.unwrap(), ["ghost"]);
}

#[tokio::test]
async fn a_refresh_of_thousands_of_users_indexes_every_one_of_them() {
    // More users than one write of the users index takes: every one is indexed with the
    // record's deadline, and the index key gets its TTL once the last slice is written.
    let server = RedisServer::start();
    let layer = layer(&[server.url()]);
    let names: Vec<(String, String)> = (0..2_345)
        .map(|i| (format!("user{i:05}"), format!("specific.c!{i}")))
        .collect();
    let entries: Vec<(&str, &str)> = names.iter().map(|(u, c)| e(u, c)).collect();
    t(layer.touch(&entries, Duration::from_secs(30)))
        .await
        .unwrap();
    let online = t(layer.online_users()).await.unwrap();
    let mut expected: Vec<String> = names.iter().map(|(u, _)| u.clone()).collect();
    expected.sort();
    assert_eq!(online, expected);
    assert_eq!(t(layer.connections("user02344")).await.unwrap(), 1);

    let (fresh, ttl) = raw_count_and_ttl(&server, "asgi:presence:users", 20.0, Some(40.0)).await;
    assert_eq!(fresh, 2_345);
    assert!((1..=60).contains(&ttl), "{ttl}");
}
