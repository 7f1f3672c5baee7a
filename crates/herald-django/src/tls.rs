//! TLS to PostgreSQL with rustls, read from the URL the way libpq reads `sslmode` and
//! `sslrootcert`, which managed databases (RDS, Cloud SQL, Azure) need.
//!
//! tokio-postgres itself knows only `disable`/`prefer`/`require` and no `sslrootcert`, so both
//! parameters are taken out of the URL here and the rest is handed to tokio-postgres:
//!
//! | `sslmode` | encrypted | server certificate checked |
//! |---|---|---|
//! | `disable` | never | – |
//! | `prefer` (libpq's default) | if the server offers TLS | no |
//! | `require` | always | no; with `sslrootcert`, against it (libpq does the same) |
//! | `verify-ca` | always | chain against the roots |
//! | `verify-full` | always | chain against the roots, and the host name |
//!
//! Roots: `sslrootcert=/path/to/ca.pem` (PEM, one or more certificates), else the system store.
//! Deviation from libpq, which reads `~/.postgresql/root.crt` by default: a service user rarely
//! has a home directory, and managed databases use public CAs or name their CA file anyway.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientConfig, WebPkiServerVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{Error, ErrorKind, Result};

/// libpq's `sslmode` values (`allow` is refused: it only ever matters to servers that demand
/// TLS from some clients, and then `prefer` does the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// The TLS half of a PostgreSQL URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PgTls {
    pub(crate) mode: SslMode,
    pub(crate) root_cert: Option<PathBuf>,
}

impl PgTls {
    /// Takes `sslmode` and `sslrootcert` out of `url`'s query string: returns the URL for
    /// tokio-postgres (with `sslmode` mapped to what it knows) and the TLS settings.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for an unknown `sslmode`.
    pub(crate) fn split_url(url: &str) -> Result<(String, PgTls)> {
        let mut tls = PgTls {
            mode: SslMode::Prefer,
            root_cert: None,
        };
        let Some((base, query)) = url.split_once('?') else {
            return Ok((url.to_owned(), tls));
        };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "sslmode" => {
                    tls.mode = match percent_decode(value).as_str() {
                        "disable" => SslMode::Disable,
                        "prefer" => SslMode::Prefer,
                        "require" => SslMode::Require,
                        "verify-ca" => SslMode::VerifyCa,
                        "verify-full" => SslMode::VerifyFull,
                        other => {
                            return Err(Error::new(
                                ErrorKind::Config,
                                format!(
                                    "database URL: sslmode={other:?} is not one of disable, \
                                     prefer, require, verify-ca, verify-full"
                                ),
                            ));
                        }
                    };
                }
                "sslrootcert" => tls.root_cert = Some(PathBuf::from(percent_decode(value))),
                _ => kept.push(pair),
            }
        }
        // tokio-postgres only decides whether to ask for TLS; the checks are ours.
        kept.push(match tls.mode {
            SslMode::Disable => "sslmode=disable",
            SslMode::Prefer => "sslmode=prefer",
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => "sslmode=require",
        });
        Ok((format!("{base}?{}", kept.join("&")), tls))
    }

    /// What tokio-postgres is told.
    #[cfg(test)]
    fn postgres_mode(&self) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode as PgSslMode;
        match self.mode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            _ => PgSslMode::Require,
        }
    }

    /// The rustls connector, `None` for `disable`. Reads the roots now, so a missing or empty
    /// CA file is a configuration error at startup, not a failure per handshake.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for an unreadable `sslrootcert` or no usable root at all.
    pub(crate) fn connector(&self) -> Result<Option<Connector>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match (self.mode, &self.root_cert) {
            (SslMode::Disable, _) => return Ok(None),
            (SslMode::Prefer, _) | (SslMode::Require, None) => {
                Arc::new(NoCertificateCheck(provider.clone()))
            }
            (SslMode::Require | SslMode::VerifyCa, _) => {
                Arc::new(ChainOnly(self.webpki(&provider)?))
            }
            (SslMode::VerifyFull, _) => self.webpki(&provider)?,
        };
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::with_source(ErrorKind::Config, "rustls", e))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Some(Connector {
            make: MakeRustlsConnect::new(config),
            mode: self.mode,
        }))
    }

    fn webpki(&self, provider: &Arc<CryptoProvider>) -> Result<Arc<WebPkiServerVerifier>> {
        let bad = |what: String| Error::new(ErrorKind::Config, format!("database URL: {what}"));
        let mut roots = RootCertStore::empty();
        match &self.root_cert {
            Some(path) if path.as_os_str() != "system" => {
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
                    .map_err(|e| bad(format!("sslrootcert {}: {e}", path.display())))?;
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(bad(format!(
                        "sslrootcert {} holds no usable certificate",
                        path.display()
                    )));
                }
            }
            _ => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err(bad(
                        "no system CA certificates found for sslmode=verify-*; \
                         name the CA file with sslrootcert=/path/ca.pem"
                            .to_owned(),
                    ));
                }
            }
        }
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| Error::with_source(ErrorKind::Config, "database URL: CA roots", e))
    }
}

/// The rustls connector handed to tokio-postgres for each (re)connect.
#[derive(Clone)]
pub(crate) struct Connector {
    pub(crate) make: MakeRustlsConnect,
    mode: SslMode,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("mode", &self.mode)
            .finish()
    }
}

/// `%XX` escapes in a URL query value (a CA path with spaces or `&`).
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(Some(hi)), Some(Some(lo))) = (
                bytes.get(i + 1).map(|&b| hex(b)),
                bytes.get(i + 2).map(|&b| hex(b)),
            )
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `prefer`/`require` without roots: encrypted, any certificate (libpq does not check it
/// either). Handshake signatures are still verified, so the session key belongs to the
/// certificate the server showed.
#[derive(Debug)]
struct NoCertificateCheck(Arc<CryptoProvider>);

impl ServerCertVerifier for NoCertificateCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a root, the name is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_postgres::config::SslMode as PgSslMode;

    #[test]
    fn sslmode_and_rootcert_leave_the_url() {
        let (url, tls) = PgTls::split_url(
            "postgres://u@h/d?application_name=x&sslmode=verify-full&sslrootcert=%2Fetc%2Fca%20x.pem",
        )
        .unwrap();
        assert_eq!(url, "postgres://u@h/d?application_name=x&sslmode=require");
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(tls.root_cert, Some(PathBuf::from("/etc/ca x.pem")));
        assert_eq!(tls.postgres_mode(), PgSslMode::Require);

        let (url, tls) = PgTls::split_url("postgres://u@h/d").unwrap();
        assert_eq!(url, "postgres://u@h/d");
        assert_eq!(tls.mode, SslMode::Prefer);
        let (_, tls) = PgTls::split_url("postgres://u@h/d?sslmode=disable").unwrap();
        assert_eq!(tls.postgres_mode(), PgSslMode::Disable);
        assert!(tls.connector().unwrap().is_none());
        for mode in ["allow", "verify_full", ""] {
            let err = PgTls::split_url(&format!("postgres://u@h/d?sslmode={mode}")).unwrap_err();
            assert!(err.is_config(), "{mode}");
        }
    }

    #[test]
    fn unreadable_or_empty_ca_files_are_config_errors() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        for path in [dir.path().join("missing.pem"), empty] {
            let tls = PgTls {
                mode: SslMode::VerifyFull,
                root_cert: Some(path),
            };
            assert!(tls.connector().unwrap_err().is_config());
        }
        let require = PgTls {
            mode: SslMode::Require,
            root_cert: None,
        };
        assert!(require.connector().unwrap().is_some());
    }
}
