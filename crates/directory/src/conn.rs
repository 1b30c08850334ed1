//! Connecting to one directory server: TCP (with `TCP_NODELAY`), then TLS
//! for `ldaps://` or StartTLS, all within the connect timeout.
//!
//! TLS verifies the chain against the configured CA (or the system's) *and*
//! the host name; "skip verification" is an explicit choice that is logged.
//! A small verifier wrapper records the server's certificate and the precise
//! verification error so failures can be told in plain words.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, StdStream};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::{DirectoryConfig, Failure};

/// A parsed `ldap://host:port` or `ldaps://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUri {
    pub ldaps: bool,
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for ServerUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        write!(f, "{}://{}:{}", if self.ldaps { "ldaps" } else { "ldap" }, host, self.port)
    }
}

impl ServerUri {
    pub fn parse(s: &str) -> Result<ServerUri, String> {
        let s = s.trim();
        let (ldaps, rest) = if let Some(r) = s.strip_prefix("ldaps://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("ldap://") {
            (false, r)
        } else {
            return Err("must start with ldap:// or ldaps://".into());
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') || rest.contains('?') || rest.contains('@') {
            return Err("must be scheme://host[:port] only".into());
        }
        let (host, port) = if let Some(r) = rest.strip_prefix('[') {
            let (h, after) = r.split_once(']').ok_or("has an unclosed [ in an IPv6 address")?;
            (h.to_string(), after.strip_prefix(':'))
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (rest.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err("has no host".into());
        }
        if !host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_')) {
            return Err(format!("has an invalid host {host:?}"));
        }
        let port = match port {
            None => {
                if ldaps {
                    636
                } else {
                    389
                }
            }
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => return Err(format!("has an invalid port {p:?} (1–65535)")),
            },
        };
        Ok(ServerUri { ldaps, host, port })
    }
}

/// What the TLS step saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    pub not_after: String,
    pub days_left: i64,
}

pub fn parse_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> =
        CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Result<_, _>>().map_err(|e| format!("is not a PEM certificate: {e}"))?;
    if certs.is_empty() {
        return Err("contains no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    for c in &certs {
        x509_parser::parse_x509_certificate(c).map_err(|e| format!("holds an unreadable certificate: {e}"))?;
    }
    Ok(certs)
}

pub fn parse_key(pem: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| format!("is not a PEM private key: {e}"))
}

pub fn cert_info(der: &[u8]) -> Option<CertInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let not_after = cert.validity().not_after;
    let now = x509_parser::time::ASN1Time::now();
    let days_left = (not_after.timestamp() - now.timestamp()) / 86_400;
    Some(CertInfo { subject: cert.subject().to_string(), issuer: cert.issuer().to_string(), not_after: not_after.to_string(), days_left })
}

/// Records the certificate presented and why verification failed.
#[derive(Debug)]
struct Recorder {
    inner: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
    seen: Arc<Mutex<Option<CertificateDer<'static>>>>,
    chain: Arc<Mutex<Vec<CertificateDer<'static>>>>,
    error: Arc<Mutex<Option<rustls::Error>>>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut s) = self.seen.lock() {
            *s = Some(end_entity.clone().into_owned());
        }
        if let Ok(mut c) = self.chain.lock() {
            *c = std::iter::once(end_entity).chain(intermediates).map(|c| c.clone().into_owned()).collect();
        }
        match &self.inner {
            None => Ok(ServerCertVerified::assertion()),
            Some(v) => v.verify_server_cert(end_entity, intermediates, server_name, ocsp, now).inspect_err(|e| {
                if let Ok(mut slot) = self.error.lock() {
                    *slot = Some(e.clone());
                }
            }),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

struct TlsSetup {
    config: Arc<ClientConfig>,
    seen: Arc<Mutex<Option<CertificateDer<'static>>>>,
    chain: Arc<Mutex<Vec<CertificateDer<'static>>>>,
    error: Arc<Mutex<Option<rustls::Error>>>,
}

fn tls_setup(cfg: &DirectoryConfig) -> Result<TlsSetup, Failure> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    if cfg.ca_pem.trim().is_empty() {
        let native = rustls_native_certs::load_native_certs();
        for c in native.certs {
            let _ = roots.add(c);
        }
    } else {
        for c in parse_certs(&cfg.ca_pem).map_err(|e| Failure::unreachable(format!("CA certificate {e}")))? {
            roots.add(c).map_err(|e| Failure::unreachable(format!("CA certificate rejected: {e}")))?;
        }
    }
    let inner = if cfg.skip_verify {
        None
    } else {
        Some(
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| Failure::unreachable(format!("no usable CA certificate: {e}")))?,
        )
    };
    let seen = Arc::new(Mutex::new(None));
    let chain = Arc::new(Mutex::new(Vec::new()));
    let error = Arc::new(Mutex::new(None));
    let recorder = Recorder { inner, provider: provider.clone(), seen: seen.clone(), chain: chain.clone(), error: error.clone() };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Failure::unreachable(format!("TLS setup: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(recorder));
    let config = if cfg.client_cert_pem.trim().is_empty() {
        builder.with_no_client_auth()
    } else {
        let certs = parse_certs(&cfg.client_cert_pem).map_err(|e| Failure::unreachable(format!("client certificate {e}")))?;
        let key = parse_key(cfg.client_key_pem.expose()).map_err(|e| Failure::unreachable(format!("client key {e}")))?;
        builder.with_client_auth_cert(certs, key).map_err(|e| Failure::unreachable(format!("client certificate: {e}")))?
    };
    Ok(TlsSetup { config: Arc::new(config), seen, chain, error })
}

fn tls_words(e: &rustls::Error, host: &str) -> String {
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => "certificate not trusted: it was not issued by the configured CA".into(),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!("certificate is not valid for the host name {host}")
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => "certificate has expired".into(),
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => "certificate is not valid yet".into(),
            CertificateError::Revoked => "certificate has been revoked".into(),
            CertificateError::BadSignature => "certificate signature is invalid".into(),
            other => format!("certificate rejected: {other:?}"),
        },
        other => format!("TLS failed: {other}"),
    }
}

/// Timings and facts of one connection.
#[derive(Debug, Clone, Default)]
pub struct ConnectReport {
    pub tcp: Duration,
    pub tls: Option<Duration>,
    pub cert: Option<CertInfo>,
    /// The certificates the server presented (leaf first), DER.
    pub chain: Vec<CertificateDer<'static>>,
}

/// One certificate of a server's chain, for "Fetch certificate".
pub fn cert_details(der: &[u8]) -> Option<bindery_model::CertificateDetails> {
    use base64::Engine as _;
    use sha2::Digest as _;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let now = x509_parser::time::ASN1Time::now();
    let validity = cert.validity();
    let days_left = (validity.not_after.timestamp() - now.timestamp()) / 86_400;
    let is_ca = cert.basic_constraints().ok().flatten().is_some_and(|b| b.value.ca);
    let digest = sha2::Sha256::digest(der);
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).unwrap_or(""));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    Some(bindery_model::CertificateDetails {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        not_before: validity.not_before.to_string(),
        not_after: validity.not_after.to_string(),
        days_left,
        expiring: days_left < 30,
        is_ca,
        sha256: digest.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":"),
        pem,
    })
}

/// "Fetch certificate": connect (TLS or StartTLS) without trusting
/// anything, and return the chain the server presents, leaf first. Nothing
/// is sent but the handshake (no bind): safe before the CA is trusted.
pub async fn fetch_certificates(server: &ServerUri, cfg: &DirectoryConfig) -> Result<Vec<bindery_model::CertificateDetails>, Failure> {
    if !server.ldaps && !cfg.starttls {
        return Err(Failure::answer(format!("{server} is plain ldap:// without StartTLS: there is no certificate to fetch")));
    }
    let mut probe = cfg.clone();
    probe.skip_verify = true;
    match connect(server, &probe).await {
        Ok((mut ldap, report)) => {
            let _ = ldap.unbind().await;
            Ok(report.chain.iter().filter_map(|c| cert_details(c)).collect())
        }
        Err((_, f, _)) => Err(f),
    }
}

/// Which connect stage failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Tcp,
    Tls,
}

/// Open a connection to `server`: TCP and TLS together within
/// `cfg.connect_timeout`. The connection is driven on a spawned task; the
/// returned handle has `cfg.op_timeout` set for every operation.
pub async fn connect(server: &ServerUri, cfg: &DirectoryConfig) -> Result<(Ldap, ConnectReport), (Stage, Failure, ConnectReport)> {
    let mut report = ConnectReport::default();
    let started = Instant::now();
    let addr = (server.host.as_str(), server.port);
    let tcp = match tokio::time::timeout(cfg.connect_timeout, tokio::net::TcpStream::connect(addr)).await {
        Err(_) => {
            return Err((
                Stage::Tcp,
                Failure::timeout(format!("no answer from {server} within {} s (connect timeout)", cfg.connect_timeout.as_secs())),
                report,
            ))
        }
        Ok(Err(e)) => {
            let why = match e.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused (nothing listens on that port)".to_string(),
                _ if e.to_string().contains("lookup") || e.to_string().contains("resolve") => format!("host {} not found", server.host),
                _ => e.to_string(),
            };
            return Err((Stage::Tcp, Failure::unreachable(format!("{server}: {why}")), report));
        }
        Ok(Ok(s)) => s,
    };
    report.tcp = started.elapsed();
    // ldap3 does not set TCP_NODELAY; without it each exchange can stall on
    // Nagle + delayed ACK (~40 ms per TLS handshake).
    let _ = tcp.set_nodelay(true);
    let std_stream = match tcp.into_std() {
        Ok(s) => s,
        Err(e) => return Err((Stage::Tcp, Failure::unreachable(format!("{server}: {e}")), report)),
    };
    let uses_tls = server.ldaps || cfg.starttls;
    let tls = if uses_tls {
        if cfg.skip_verify {
            tracing::warn!(server = %server, "TLS certificate verification is switched off for this directory");
        }
        Some(tls_setup(cfg).map_err(|f| (Stage::Tls, f, report.clone()))?)
    } else {
        None
    };
    let mut settings = LdapConnSettings::new().set_std_stream(StdStream::Tcp(std_stream)).set_starttls(cfg.starttls && !server.ldaps);
    if let Some(t) = &tls {
        settings = settings.set_config(t.config.clone());
    }
    let remaining = cfg.connect_timeout.saturating_sub(started.elapsed()).max(Duration::from_millis(100));
    let tls_started = Instant::now();
    let url = server.to_string();
    let result = tokio::time::timeout(remaining, LdapConnAsync::with_settings(settings, &url)).await;
    let stage = if uses_tls { Stage::Tls } else { Stage::Tcp };
    let cert = tls.as_ref().and_then(|t| t.seen.lock().ok().and_then(|s| s.clone())).and_then(|c| cert_info(&c));
    report.cert = cert;
    report.chain = tls.as_ref().and_then(|t| t.chain.lock().ok().map(|c| c.clone())).unwrap_or_default();
    match result {
        Err(_) => Err((
            stage,
            Failure::timeout(format!(
                "{server}: {} did not complete within the {} s connect timeout",
                if cfg.starttls { "StartTLS" } else { "TLS handshake" },
                cfg.connect_timeout.as_secs()
            )),
            report,
        )),
        Ok(Err(e)) => {
            let recorded = tls.as_ref().and_then(|t| t.error.lock().ok().and_then(|s| s.clone()));
            let why = match recorded {
                Some(err) => tls_words(&err, &server.host),
                None => match e {
                    ldap3::LdapError::LdapResult { result } => {
                        format!("StartTLS refused: {} (LDAP {})", crate::result_code_words(result.rc), result.rc)
                    }
                    other => format!("TLS failed: {other}"),
                },
            };
            Err((stage, Failure::unreachable(format!("{server}: {why}")), report))
        }
        Ok(Ok((conn, mut ldap))) => {
            if uses_tls {
                report.tls = Some(tls_started.elapsed());
            }
            tokio::spawn(async move {
                if let Err(e) = conn.drive().await {
                    tracing::debug!(error = %e, "LDAP connection ended");
                }
            });
            ldap.with_timeout(cfg.op_timeout);
            Ok((ldap, report))
        }
    }
}

/// Bind as the service account.
pub async fn service_bind(ldap: &mut Ldap, cfg: &DirectoryConfig) -> Result<(), Failure> {
    let r = ldap
        .with_timeout(cfg.op_timeout)
        .simple_bind(&cfg.bind_dn, cfg.bind_password.expose())
        .await
        .map_err(|e| Failure::from_ldap(e, "service bind", cfg.op_timeout))?;
    crate::check(r, "service bind").map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris() {
        assert_eq!(ServerUri::parse("ldap://h").unwrap(), ServerUri { ldaps: false, host: "h".into(), port: 389 });
        assert_eq!(ServerUri::parse("ldaps://h.example.com").unwrap().port, 636);
        assert_eq!(ServerUri::parse("ldap://127.0.0.1:3890/").unwrap().port, 3890);
        assert_eq!(ServerUri::parse("ldaps://[::1]:636").unwrap().to_string(), "ldaps://[::1]:636");
        for bad in ["http://h", "ldap://", "ldap://h:0", "ldap://h:99999", "ldap://h:x", "ldap://h/dc=x", "ldap://u@h", "ldap://h h"] {
            assert!(ServerUri::parse(bad).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod fetch_tests {
    #[test]
    fn details_of_a_certificate() {
        // A real (throwaway) self-signed CA certificate.
        let pem = include_str!("../tests/data/ca.pem");
        let der = super::parse_certs(pem).unwrap().remove(0);
        let d = super::cert_details(&der).unwrap();
        assert!(d.is_ca && d.subject.contains("Bindery Unit Test CA"), "{d:?}");
        assert_eq!(d.sha256.len(), 32 * 3 - 1);
        assert_eq!(super::parse_certs(&d.pem).unwrap()[0].as_ref(), der.as_ref(), "PEM round trip");
    }
}
