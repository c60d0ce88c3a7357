//! TLS settings: the funnel's certificate and key towards clients, and how
//! it checks mysqld's certificate, read from the files the configuration
//! names and turned into rustls configurations (aws-lc-rs as the crypto
//! provider). Built when the configuration is read, so that a bad file is
//! refused at start-up (exit code 2) or by a reload (which then keeps the
//! running configuration), never found later by a client's handshake.
//!
//! No socket here: the connections themselves are the I/O layer's
//! (`server::tls_io`).

use std::fmt;
use std::io;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{
    verify_tls12_signature, verify_tls13_signature, CryptoProvider, WebPkiSupportedAlgorithms,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

/// The crypto provider of every TLS configuration of the funnel, with
/// its cipher suites in its own order (AES-GCM first; the client's
/// preference decides). ChaCha20-Poly1305 first would save no memory (an
/// idle client keeps raw keys only, `tls_record`; aws-lc's AEAD context is
/// as large for both), and with AES instructions AES-GCM costs no more CPU.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The funnel's identity towards clients (`[funnel] tls_cert`, `tls_key`).
#[derive(Clone)]
pub struct ServerTls {
    pub cert_path: String,
    pub key_path: String,
    /// SHA-256 of the certificate chain and the key as read: tells a
    /// reload whether the files changed.
    digest: [u8; 32],
    /// The leaf certificate's SHA-256 (for logs: which certificate is in use).
    pub fingerprint: String,
    pub config: Arc<rustls::ServerConfig>,
}

impl PartialEq for ServerTls {
    fn eq(&self, other: &Self) -> bool {
        self.cert_path == other.cert_path
            && self.key_path == other.key_path
            && self.digest == other.digest
    }
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

fn read_file(path: &str, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read the {what} {path:?}: {e}"))
}

/// A PEM file of certificates (`what`, for errors): its bytes, and the
/// certificates in order (at least one).
fn read_certificates(
    path: &str,
    what: &str,
) -> Result<(Vec<u8>, Vec<CertificateDer<'static>>), String> {
    let pem = read_file(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{path:?} is not a valid PEM certificate file: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "{path:?} holds no PEM certificate (BEGIN CERTIFICATE)"
        ));
    }
    Ok((pem, certs))
}

/// Read and check the certificate chain and key: both must parse, and the
/// key must be the certificate's.
pub fn load_server(cert_path: &str, key_path: &str) -> Result<ServerTls, String> {
    let (cert_pem, certs) = read_certificates(cert_path, "certificate file")?;
    let key_pem = read_file(key_path, "key file")?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        format!("{key_path:?} holds no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}")
    })?;
    let digest: [u8; 32] = Sha256::new()
        .chain_update(&cert_pem)
        .chain_update(&key_pem)
        .finalize()
        .into();
    let fingerprint = Sha256::digest(certs[0].as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up failed: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            format!("the key {key_path:?} does not go with the certificate {cert_path:?}: {e}")
        })?;
    // No session tickets and no session cache: clients of a database
    // connect rarely and stay, and a ticket would be one more thing kept
    // per connection.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    // After the handshake the records are the funnel's (`tls_record`),
    // which needs the traffic keys.
    config.enable_secret_extraction = true;
    Ok(ServerTls {
        cert_path: cert_path.to_string(),
        key_path: key_path.to_string(),
        digest,
        fingerprint,
        config: Arc::new(config),
    })
}

/// `[backend] tls`: as the MySQL clients' `--ssl-mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendTlsMode {
    /// Never.
    Off,
    /// When mysqld offers it, without checking its certificate.
    Prefer,
    /// Always (mysqld must offer it), without checking its certificate.
    Require,
    /// Always, with a certificate signed by `tls_ca`.
    VerifyCa,
    /// Always, with a certificate signed by `tls_ca` for the server's name.
    VerifyIdentity,
}

impl BackendTlsMode {
    pub const NAMES: &'static str = "off, prefer, require, verify_ca or verify_identity";

    pub fn parse(text: &str) -> Option<BackendTlsMode> {
        Some(match text {
            "off" => BackendTlsMode::Off,
            "prefer" => BackendTlsMode::Prefer,
            "require" => BackendTlsMode::Require,
            "verify_ca" => BackendTlsMode::VerifyCa,
            "verify_identity" => BackendTlsMode::VerifyIdentity,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            BackendTlsMode::Off => "off",
            BackendTlsMode::Prefer => "prefer",
            BackendTlsMode::Require => "require",
            BackendTlsMode::VerifyCa => "verify_ca",
            BackendTlsMode::VerifyIdentity => "verify_identity",
        }
    }

    /// A connection without TLS is refused.
    pub fn required(self) -> bool {
        !matches!(self, BackendTlsMode::Off | BackendTlsMode::Prefer)
    }

    pub fn verifies(self) -> bool {
        matches!(
            self,
            BackendTlsMode::VerifyCa | BackendTlsMode::VerifyIdentity
        )
    }
}

/// How the funnel speaks TLS to mysqld (`[backend] tls`, `tls_ca`,
/// `tls_server_name`).
#[derive(Clone)]
pub struct BackendTls {
    pub mode: BackendTlsMode,
    pub ca_path: String,
    /// The name the certificate must be for (verify_identity), and the SNI.
    pub server_name: ServerName<'static>,
    /// SHA-256 of the CA file as read (a reload that changes it counts).
    digest: [u8; 32],
    /// None with `off`.
    pub config: Option<Arc<rustls::ClientConfig>>,
}

impl PartialEq for BackendTls {
    fn eq(&self, other: &Self) -> bool {
        self.mode == other.mode
            && self.ca_path == other.ca_path
            && self.server_name == other.server_name
            && self.digest == other.digest
    }
}

impl fmt::Debug for BackendTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendTls")
            .field("mode", &self.mode)
            .field("ca_path", &self.ca_path)
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl BackendTls {
    pub fn off() -> BackendTls {
        BackendTls {
            mode: BackendTlsMode::Off,
            ca_path: String::new(),
            server_name: ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
            digest: [0; 32],
            config: None,
        }
    }
}

/// Build the backend side: `ca_path` is needed (and read) by the verifying
/// modes only; `server_name` is a DNS name or an IP address.
pub fn load_backend(
    mode: BackendTlsMode,
    ca_path: &str,
    server_name: &str,
) -> Result<BackendTls, String> {
    let name = ServerName::try_from(server_name.to_string())
        .map_err(|_| format!("{server_name:?} is neither a DNS name nor an IP address"))?;
    if mode == BackendTlsMode::Off {
        return Ok(BackendTls {
            server_name: name,
            ca_path: ca_path.to_string(),
            ..BackendTls::off()
        });
    }
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up failed: {e}"))?;
    let mut digest = [0; 32];
    let verifier: Arc<dyn ServerCertVerifier> = if mode.verifies() {
        if ca_path.is_empty() {
            return Err(format!(
                "tls = {} needs tls_ca, the CA certificate(s) mysqld's certificate is signed by",
                mode.name()
            ));
        }
        let (pem, certs) = read_certificates(ca_path, "CA file")?;
        digest = Sha256::digest(&pem).into();
        let mut roots = RootCertStore::empty();
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("{ca_path:?}: not a usable CA certificate: {e}"))?;
        }
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| format!("{ca_path:?}: {e}"))?;
        if mode == BackendTlsMode::VerifyIdentity {
            webpki
        } else {
            Arc::new(NameUnchecked {
                chain: Some(webpki),
                algorithms: provider.signature_verification_algorithms,
            })
        }
    } else {
        Arc::new(NameUnchecked {
            chain: None,
            algorithms: provider.signature_verification_algorithms,
        })
    };
    let mut config = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    // One connection per handshake, kept for long: nothing to resume.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(BackendTls {
        mode,
        ca_path: ca_path.to_string(),
        server_name: name,
        digest,
        config: Some(Arc::new(config)),
    })
}

/// verify_ca: the chain must lead to the CA, the name is not checked (as
/// MySQL's `--ssl-mode=VERIFY_CA`); prefer, require: the certificate is
/// not checked at all (as `PREFERRED` and `REQUIRED`). Either way the
/// handshake's signatures are checked against the certificate presented.
#[derive(Debug)]
struct NameUnchecked {
    /// The CA's verifier (verify_ca); None: no check.
    chain: Option<Arc<WebPkiServerVerifier>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for NameUnchecked {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(Error::InvalidCertificate(
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
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A TLS failure as an I/O error whose message says it was TLS.
pub fn io_error(e: Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}"))
}

/// For tests: a CA (`ca.crt`, `ca.key`) and a certificate for 127.0.0.1
/// signed by it (`s.crt`, `s.key`), made in `dir` with the openssl CLI.
#[cfg(test)]
pub(crate) fn test_pki(dir: &std::path::Path) {
    use std::process::Command;
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-subj",
        "/CN=s",
        "-keyout",
        "s.key",
        "-out",
        "s.csr",
    ]);
    std::fs::write(dir.join("ext"), "subjectAltName = IP:127.0.0.1\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "s.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-set_serial",
        "1",
        "-days",
        "2",
        "-extfile",
        "ext",
        "-out",
        "s.crt",
    ]);
}
