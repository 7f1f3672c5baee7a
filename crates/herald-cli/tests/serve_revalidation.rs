//! Sockets end when the Django session ends: `herald serve --session-revalidation 1` against the
//! real Django test project, on SQLite and PostgreSQL. A user who logs out (session row
//! deleted), whose password changes or who is deactivated is closed with 4401 within the
//! interval; a valid session stays open and keeps receiving; a database that is down closes
//! nothing and is counted as failed rounds, and the check resumes when it is back.

mod support;

use std::time::Duration;

use herald_test_support::ws::{Ws, close_code, recv_json, send_json};
use herald_test_support::{RedisServer, compat_python, eventually};
use support::django::{Django, Fixture, SECRET};
use support::{Herald, http_get, ws_connect_with_cookie};

/// The close code of a session that ended.
const UNAUTHORIZED: u16 = 4401;

fn serve_flags<'a>(db_url: &'a str, redis_url: &'a str) -> Vec<&'a str> {
    vec![
        "--redis",
        redis_url,
        "--secret-key",
        SECRET,
        "--django-db",
        db_url,
        "--session-revalidation",
        "1",
    ]
}

fn session_key(fixture: &Fixture) -> &str {
    fixture.cookie.strip_prefix("sessionid=").unwrap()
}

/// The socket answers a ping frame: it is open and served.
async fn still_served(ws: &mut Ws) {
    send_json(ws, serde_json::json!({"action": "ping"})).await;
    assert_eq!(recv_json(ws).await["type"], "pong");
}

/// A counter's value on `/metrics`.
async fn metric(server: &Herald, name: &str) -> u64 {
    let page = http_get(server.addr, "/metrics").await;
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not on /metrics:\n{page}"))
}

/// Four users connected; alice logs out, bob's password changes, carol is deactivated, dave
/// does nothing: three 4401s within the interval, dave still served and still receiving.
async fn ended_sessions_close_and_valid_ones_stay(
    django: &Django,
    db_url: &str,
    redis: &RedisServer,
) {
    let alice = django.fixture(&["--username", "alice"]).await;
    let bob = django.fixture(&["--username", "bob", "--no-migrate"]).await;
    let carol = django
        .fixture(&["--username", "carol", "--no-migrate"])
        .await;
    let dave = django
        .fixture(&["--username", "dave", "--no-migrate"])
        .await;
    let url = redis.url();
    let server = Herald::start(&serve_flags(db_url, &url)).await;
    let mut sockets = Vec::new();
    for fixture in [&alice, &bob, &carol, &dave] {
        sockets.push(ws_connect_with_cookie(server.addr, &fixture.cookie).await);
    }
    // A round with everyone valid closes nobody.
    eventually(Duration::from_secs(10), "a first round", || async {
        metric(&server, "herald_session_revalidation_checked_total").await >= 4
    })
    .await;
    for ws in &mut sockets {
        still_served(ws).await;
    }

    django
        .shell(&format!(
            "from django.contrib.sessions.models import Session\n\
             from django.contrib.auth import get_user_model\n\
             User = get_user_model()\n\
             Session.objects.filter(session_key='{}').delete()\n\
             bob = User.objects.get(username='bob')\n\
             bob.set_password('a-new-password-456')\n\
             bob.save()\n\
             User.objects.filter(username='carol').update(is_active=False)\n",
            session_key(&alice)
        ))
        .await;
    let mut dave_ws = sockets.pop().unwrap();
    for (ws, who) in
        sockets
            .iter_mut()
            .zip(["alice (logged out)", "bob (password)", "carol (inactive)"])
    {
        assert_eq!(close_code(ws).await, Some(UNAUTHORIZED), "{who}");
    }
    still_served(&mut dave_ws).await;
    django
        .shell("from OptsIO.ws_utils import ws_send_message\nassert ws_send_message('dave', 'still here')\n")
        .await;
    assert_eq!(recv_json(&mut dave_ws).await["message"], "still here");
    assert_eq!(
        metric(&server, "herald_session_revalidation_closed_total").await,
        3
    );
    assert_eq!(
        metric(&server, "herald_session_revalidation_failed_rounds_total").await,
        0
    );
    // The ended sessions cannot come back either.
    for fixture in [&alice, &bob, &carol] {
        let status = support::handshake_status(server.addr, Some(&fixture.cookie), None).await;
        assert_eq!(status, 403, "{}", fixture.username);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_logout_password_change_and_deactivation_close_sockets_with_4401() {
    let Some(python) = compat_python() else {
        return;
    };
    support::django::on_sqlite(python, ended_sessions_close_and_valid_ones_stay).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_logout_password_change_and_deactivation_close_sockets_with_4401() {
    let Some(python) = compat_python() else {
        return;
    };
    support::django::on_postgres(python, ended_sessions_close_and_valid_ones_stay).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_that_is_down_closes_nothing_and_the_check_resumes_when_it_is_back() {
    let Some(python) = compat_python() else {
        return;
    };
    let Some(db) = support::postgres::Database::create().await else {
        return;
    };
    let redis = RedisServer::start();
    let django = Django::new(python, &db.url(), &redis.url());
    let alice = django.fixture(&["--username", "alice"]).await;
    let url = redis.url();
    let db_url = db.url();
    let server = Herald::start(&serve_flags(&db_url, &url)).await;
    let mut ws = ws_connect_with_cookie(server.addr, &alice.cookie).await;
    eventually(Duration::from_secs(10), "a first round", || async {
        metric(&server, "herald_session_revalidation_checked_total").await >= 1
    })
    .await;

    // The database goes away for herald (no new connection, the open ones cut), and alice's
    // session is deleted meanwhile over a connection that was already open: a round now
    // cannot tell a logout from an outage, so it must close nothing.
    let admin = db.connect().await;
    let admin_pid: i32 = admin
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    db.set_reachable(false, admin_pid).await;
    admin
        .execute(
            "DELETE FROM django_session WHERE session_key = $1",
            &[&session_key(&alice)],
        )
        .await
        .unwrap();
    let failed_before = metric(&server, "herald_session_revalidation_failed_rounds_total").await;
    eventually(Duration::from_secs(15), "three failed rounds", || async {
        metric(&server, "herald_session_revalidation_failed_rounds_total").await
            >= failed_before + 3
    })
    .await;
    still_served(&mut ws).await;
    assert_eq!(
        metric(&server, "herald_session_revalidation_closed_total").await,
        0
    );

    // Back: the next round sees the logout.
    db.set_reachable(true, admin_pid).await;
    assert_eq!(close_code(&mut ws).await, Some(UNAUTHORIZED));
    assert_eq!(
        metric(&server, "herald_session_revalidation_closed_total").await,
        1
    );
    drop(admin);
    db.drop().await;
}

/// SQLite's version of an outage: another process holds an exclusive lock (and deletes the
/// session inside it), so every read waits out its busy timeout and fails.
#[tokio::test(flavor = "multi_thread")]
async fn a_locked_sqlite_database_closes_nothing_until_the_logout_commits() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let Some(python) = compat_python() else {
        return;
    };
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite3");
    let db_url = format!("sqlite:///{}", path.display());
    let django = Django::new(python.clone(), &db_url, &redis.url());
    let alice = django.fixture(&["--username", "alice"]).await;
    let url = redis.url();
    let server = Herald::start(&serve_flags(&db_url, &url)).await;
    let mut ws = ws_connect_with_cookie(server.addr, &alice.cookie).await;
    eventually(Duration::from_secs(10), "a first round", || async {
        metric(&server, "herald_session_revalidation_checked_total").await >= 1
    })
    .await;

    let script = "import sqlite3, sys\n\
                  c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
                  c.execute('BEGIN EXCLUSIVE')\n\
                  c.execute('DELETE FROM django_session WHERE session_key = ?', (sys.argv[2],))\n\
                  print('locked', flush=True)\n\
                  sys.stdin.read()\n\
                  c.execute('COMMIT')\n\
                  print('committed', flush=True)\n";
    let mut locker = tokio::process::Command::new(&python)
        .args(["-c", script, path.to_str().unwrap(), session_key(&alice)])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut said = BufReader::new(locker.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(support::TIMEOUT, said.next_line())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(line.as_deref(), Some("locked"));
    let failed_before = metric(&server, "herald_session_revalidation_failed_rounds_total").await;
    eventually(Duration::from_secs(30), "two failed rounds", || async {
        metric(&server, "herald_session_revalidation_failed_rounds_total").await
            >= failed_before + 2
    })
    .await;
    still_served(&mut ws).await;
    assert_eq!(
        metric(&server, "herald_session_revalidation_closed_total").await,
        0
    );

    // The logout commits: the next round that gets through closes the socket.
    let mut stdin = locker.stdin.take().unwrap();
    stdin.shutdown().await.unwrap();
    drop(stdin);
    let line = tokio::time::timeout(support::TIMEOUT, said.next_line())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(line.as_deref(), Some("committed"));
    let code = tokio::time::timeout(Duration::from_secs(20), close_code(&mut ws))
        .await
        .unwrap();
    assert_eq!(code, Some(UNAUTHORIZED));
}

#[tokio::test(flavor = "multi_thread")]
async fn revalidation_off_keeps_a_logged_out_socket_open_as_daphne_does() {
    let Some(python) = compat_python() else {
        return;
    };
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite:///{}", dir.path().join("db.sqlite3").display());
    let django = Django::new(python, &db_url, &redis.url());
    let alice = django.fixture(&["--username", "alice"]).await;
    let url = redis.url();
    let mut flags = serve_flags(&db_url, &url);
    *flags.last_mut().unwrap() = "0";
    let server = Herald::start(&flags).await;
    let mut ws = ws_connect_with_cookie(server.addr, &alice.cookie).await;
    django
        .shell(&format!(
            "from django.contrib.sessions.models import Session\n\
             Session.objects.filter(session_key='{}').delete()\n",
            session_key(&alice)
        ))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    still_served(&mut ws).await;
    assert_eq!(
        metric(&server, "herald_session_revalidation_rounds_total").await,
        0
    );
}
