//! TLS with rustls: building the server configuration from the `--ssl-*` options, and
//! the facts about a finished handshake that the ASGI `tls` scope extension carries.
//!
//! The master builds the configuration once at startup only to fail fast with one clear
//! line (a wrong password, a missing file); each worker builds its own to serve.

use crate::config::{Config, HttpMode, TlsVersion};
use base64::Engine;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};
use std::sync::Arc;

/// Everything that can go wrong loading the TLS material, as the one line we log.
pub type TlsError = String;

pub fn server_config(config: &Config) -> Result<Option<Arc<ServerConfig>>, TlsError> {
    let Some(cert_path) = &config.ssl_certfile else {
        if config.ssl_keyfile.is_some() {
            return Err("--ssl-keyfile needs --ssl-certfile".into());
        }
        return Ok(None);
    };
    let key_path = config
        .ssl_keyfile
        .as_ref()
        .ok_or("--ssl-certfile needs --ssl-keyfile")?;
    let certs = load_certs(cert_path)?;
    let key = load_key(key_path, config.ssl_keyfile_password.as_deref())?;

    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(spec) = &config.cli.ssl_ciphers {
        // As OpenSSL's cipher list: TLS 1.2 suites only; TLS 1.3's stay.
        let tls12 = crate::cli::tls12_suites(spec)?;
        provider.cipher_suites.retain(|s| {
            s.version() == &rustls::version::TLS13 || tls12.iter().any(|t| t.suite() == s.suite())
        });
    }
    let provider = Arc::new(provider);
    // --ssl-version 5 is Python's PROTOCOL_TLSv1_2: TLS 1.2 alone (src/cli/review.rs
    // refuses the numbers rustls can't serve).
    let versions: &[&rustls::SupportedProtocolVersion] =
        match (config.ssl_min_version, config.cli.ssl_version) {
            (TlsVersion::Tls12, 5) => &[&rustls::version::TLS12],
            (TlsVersion::Tls12, _) => &[&rustls::version::TLS13, &rustls::version::TLS12],
            (TlsVersion::Tls13, _) => &[&rustls::version::TLS13],
        };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| format!("TLS setup failed: {e}"))?;
    let builder = if config.ssl_cert_reqs == 0 {
        builder.with_no_client_auth()
    } else {
        let ca_path = config
            .ssl_ca_certs
            .as_ref()
            .ok_or("--ssl-cert-reqs 1 or 2 needs --ssl-ca-certs")?;
        let mut roots = RootCertStore::empty();
        for cert in load_certs(ca_path)? {
            roots
                .add(cert)
                .map_err(|e| format!("Invalid CA certificate in {ca_path}: {e}"))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
        let verifier = if config.ssl_cert_reqs == 1 {
            verifier.allow_unauthenticated()
        } else {
            verifier
        };
        builder.with_client_cert_verifier(
            verifier
                .build()
                .map_err(|e| format!("Invalid --ssl-ca-certs {ca_path}: {e}"))?,
        )
    };
    let mut server = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("TLS certificate {cert_path} and key {key_path} don't fit: {e}"))?;
    server.alpn_protocols = match config.http {
        HttpMode::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        HttpMode::Http1 => vec![b"http/1.1".to_vec()],
        HttpMode::Http2 => vec![b"h2".to_vec()],
    };
    Ok(Some(Arc::new(server)))
}

fn read(path: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| format!("Cannot read {path}: {e}"))
}

fn load_certs(path: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("Invalid PEM in {path}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("No certificate found in {path}"));
    }
    Ok(certs)
}

fn load_key(path: &str, password: Option<&str>) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    let text = String::from_utf8_lossy(&pem);
    if let Some(block) = pem_block(&text, "ENCRYPTED PRIVATE KEY") {
        let password = password
            .ok_or_else(|| format!("The key {path} is encrypted: give --ssl-keyfile-password"))?;
        let (_, doc) = pkcs8::SecretDocument::from_pem(block)
            .map_err(|e| format!("Invalid encrypted key in {path}: {e}"))?;
        let info = pkcs8::EncryptedPrivateKeyInfo::try_from(doc.as_bytes())
            .map_err(|e| format!("Invalid encrypted key in {path}: {e}"))?;
        let plain = info
            .decrypt(password.as_bytes())
            .map_err(|_| format!("Cannot decrypt the key {path}: wrong --ssl-keyfile-password?"))?;
        return Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            plain.as_bytes().to_vec(),
        )));
    }
    if text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(format!(
            "The key {path} is encrypted in the legacy OpenSSL format; convert it to PKCS#8 \
             (openssl pkcs8 -topk8 -in old.pem -out new.pem)"
        ));
    }
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| format!("Invalid PEM in {path}: {e}"))?
        .ok_or_else(|| format!("No private key found in {path}"))
}

/// The first `-----BEGIN {label}-----` ... `-----END {label}-----` block of a PEM text.
fn pem_block<'a>(text: &'a str, label: &str) -> Option<&'a str> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)?;
    let stop = text[start..].find(&end)? + start + end.len();
    Some(&text[start..stop])
}

/// What the ASGI `tls` extension reports about a connection.
#[derive(Debug, Default)]
pub struct TlsInfo {
    pub version: u16,
    pub cipher_suite: u16,
    /// PEM, leaf first.
    pub client_chain: Vec<String>,
    /// The leaf's subject as an RFC 4514 string.
    pub client_name: Option<String>,
    /// The ALPN protocol chosen ("h2" or "http/1.1").
    pub alpn: Option<Vec<u8>>,
}

impl TlsInfo {
    pub fn of(conn: &ServerConnection) -> TlsInfo {
        let chain = conn.peer_certificates().unwrap_or_default();
        TlsInfo {
            version: conn.protocol_version().map_or(0, u16::from),
            cipher_suite: conn
                .negotiated_cipher_suite()
                .map_or(0, |s| u16::from(s.suite())),
            client_chain: chain.iter().map(|c| to_pem(c)).collect(),
            client_name: chain.first().and_then(|leaf| subject_name(leaf)),
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
        }
    }
}

fn to_pem(cert: &CertificateDer<'_>) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

fn subject_name(cert: &CertificateDer<'_>) -> Option<String> {
    use x509_cert::der::Decode;
    let parsed = x509_cert::Certificate::from_der(cert.as_ref()).ok()?;
    Some(parsed.tbs_certificate.subject.to_string())
}
