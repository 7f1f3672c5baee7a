//! PostgreSQL over TLS, as managed databases require: each test starts its own PostgreSQL
//! cluster (initdb + pg_ctl, `herald_test_support::PostgresServer`) with `ssl = on`, a
//! certificate for `localhost` signed by a CA made here, and a `pg_hba.conf` that accepts TCP
//! only over TLS (`hostssl`). The machine's own cluster is never touched.

use std::time::Duration;

use herald_django::{DjangoAuth, DjangoAuthConfig, ErrorKind};
use herald_test_support::PostgresServer;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

const TIMEOUT: Duration = Duration::from_secs(20);
const HOSTSSL_ONLY: &str = "hostssl all all 127.0.0.1/32 trust";

/// A CA (its PEM) and a server certificate + key for `localhost` signed by it.
struct Pki {
    ca_pem: String,
    server_chain_pem: String,
    server_key_pem: String,
}

fn ca(name: &str) -> (CertificateParams, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    (params, key)
}

fn pki() -> Pki {
    let (ca_params, ca_key) = ca("herald test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let server = params.signed_by(&server_key, &issuer).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        server_chain_pem: server.pem(),
        server_key_pem: server_key.serialize_pem(),
    }
}

/// A private cluster with TLS, the session and user tables Django would have, and the CA's PEM
/// written to a file (plus a second, unrelated CA's).
struct Site {
    server: PostgresServer,
    dir: tempfile::TempDir,
}

impl Site {
    async fn start() -> Option<Site> {
        let pki = pki();
        let server =
            PostgresServer::start_tls(&pki.server_chain_pem, &pki.server_key_pem, HOSTSSL_ONLY)?;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), &pki.ca_pem).unwrap();
        let (other_params, other_key) = ca("some other CA");
        let other = other_params.self_signed(&other_key).unwrap();
        std::fs::write(dir.path().join("other-ca.pem"), other.pem()).unwrap();
        // Set up over the unix socket, where the hostssl rule does not apply.
        let admin = format!(
            "host={} port={} user=postgres dbname=postgres",
            server.socket_dir().display(),
            server.port()
        );
        let (client, connection) = tokio::time::timeout(
            TIMEOUT,
            tokio_postgres::connect(&admin, tokio_postgres::NoTls),
        )
        .await
        .unwrap()
        .unwrap();
        tokio::spawn(connection);
        tokio::time::timeout(
            TIMEOUT,
            client.batch_execute(
                "CREATE TABLE django_session (session_key varchar(40) PRIMARY KEY, \
                 session_data text NOT NULL, expire_date timestamptz NOT NULL); \
                 CREATE TABLE auth_user (id serial PRIMARY KEY, username varchar(150), \
                 password varchar(128), is_active boolean);",
            ),
        )
        .await
        .unwrap()
        .unwrap();
        Some(Site { server, dir })
    }

    fn ca(&self, file: &str) -> String {
        self.dir.path().join(file).display().to_string()
    }

    /// `postgres://postgres@HOST:PORT/postgres?QUERY`.
    fn url(&self, host: &str, query: &str) -> String {
        format!(
            "postgres://postgres@{host}:{}/postgres?connect_timeout=5&{query}",
            self.server.port()
        )
    }

    /// Connects (and prepares Django's queries) with `url`.
    async fn ping(&self, url: &str) -> Result<(), herald_django::Error> {
        let auth = DjangoAuth::new(
            DjangoAuthConfig::default()
                .with_secret_key("django-insecure-tls")
                .with_database_url(url)
                .with_database_timeout(Duration::from_secs(10)),
        )?;
        tokio::time::timeout(TIMEOUT, auth.ping()).await.unwrap()
    }
}

/// What an operator reads in the log (`warn!(error = %err)`): it must name the cause.
fn chain(err: &herald_django::Error) -> String {
    err.to_string()
}

#[tokio::test]
async fn require_encrypts_without_checking_the_certificate() {
    let Some(site) = Site::start().await else {
        return;
    };
    // 127.0.0.1 is not a name in the certificate and the CA is unknown: require does not care.
    site.ping(&site.url("127.0.0.1", "sslmode=require"))
        .await
        .unwrap();
    // No sslmode at all is libpq's `prefer`: TLS when offered, which this server demands.
    site.ping(&site.url("127.0.0.1", "")).await.unwrap();
}

#[tokio::test]
async fn verify_full_with_the_right_ca_and_host_connects() {
    let Some(site) = Site::start().await else {
        return;
    };
    let ca = format!("sslrootcert={}", site.ca("ca.pem"));
    site.ping(&site.url("localhost", &format!("sslmode=verify-full&{ca}")))
        .await
        .unwrap();
    // verify-ca checks the chain only, so the IP address is fine there.
    site.ping(&site.url("127.0.0.1", &format!("sslmode=verify-ca&{ca}")))
        .await
        .unwrap();
}

#[tokio::test]
async fn verify_full_with_a_wrong_ca_or_host_is_a_clear_error() {
    let Some(site) = Site::start().await else {
        return;
    };
    let other = format!("sslrootcert={}", site.ca("other-ca.pem"));
    let err = site
        .ping(&site.url("localhost", &format!("sslmode=verify-full&{other}")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Database, "{err:?}");
    let text = chain(&err);
    assert!(
        text.contains("certificate") && text.contains("UnknownIssuer"),
        "{text}"
    );
    // require with a root file checks the chain too, like libpq.
    let err = site
        .ping(&site.url("127.0.0.1", &format!("sslmode=require&{other}")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Database, "{err:?}");

    let ca = format!("sslrootcert={}", site.ca("ca.pem"));
    let err = site
        .ping(&site.url("127.0.0.1", &format!("sslmode=verify-full&{ca}")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Database, "{err:?}");
    let text = chain(&err);
    assert!(text.contains("not valid for name"), "{text}");

    // A CA file that does not exist is caught at startup, not per handshake.
    let missing = format!("sslmode=verify-full&sslrootcert={}", site.ca("missing.pem"));
    let err = site
        .ping(&site.url("localhost", &missing))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err:?}");
}

#[tokio::test]
async fn plain_connection_is_refused_by_a_hostssl_only_server() {
    let Some(site) = Site::start().await else {
        return;
    };
    let err = site
        .ping(&site.url("127.0.0.1", "sslmode=disable"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Database, "{err:?}");
    let text = chain(&err);
    assert!(text.contains("no encryption"), "{text}");
}
