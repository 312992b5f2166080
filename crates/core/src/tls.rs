//! TLS 1.3 on the node port (optionally with client certificates) and on the REST API: the
//! Core's certificate chain (a CA and a server certificate it generates on first start when
//! none is configured) and the acceptors built from it. Both ports run their handshakes in
//! their connections' own tasks, under the shared connection limits (`honeybee-accept`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;
use crate::tokens::sha256_hex;
use crate::CoreError;

pub(crate) struct TlsSetup {
    /// For the node port; requires client certificates when `client_ca_file` is set.
    pub node_acceptor: TlsAcceptor,
    /// For the REST API (no client certificates: it has bearer tokens).
    pub api_acceptor: TlsAcceptor,
    /// SHA-256 of the CA certificate, hex: what nodes pin with `tls.ca_fingerprint`.
    pub ca_fingerprint: String,
}

fn tls_error(what: impl std::fmt::Display) -> CoreError {
    CoreError::Tls(what.to_string())
}

/// Loads the configured chain, or the generated one under `<data_dir>/tls/` (generating it
/// on first use).
pub(crate) fn load_or_generate(
    config: &TlsConfig,
    data_dir: &Path,
    host: &str,
) -> Result<TlsSetup, CoreError> {
    let (chain_file, key_file) = match (&config.cert_file, &config.key_file) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone()),
        _ => generate_if_missing(&data_dir.join("tls"), &server_names(config, host))?,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&chain_file)
        .and_then(|certificates| certificates.collect())
        .map_err(|error| {
            tls_error(format!(
                "reading certificates from {}: {error}",
                chain_file.display()
            ))
        })?;
    let key = PrivateKeyDer::from_pem_file(&key_file).map_err(|error| {
        tls_error(format!(
            "reading the private key {}: {error}",
            key_file.display()
        ))
    })?;
    // The last certificate of the chain is the CA nodes verify against.
    let ca = chain
        .last()
        .ok_or_else(|| tls_error(format!("{} holds no certificate", chain_file.display())))?;
    let ca_fingerprint = sha256_hex(ca.as_ref());
    // Next to the chain, for operators to copy into their nodes' tls.ca_fingerprint.
    if let Some(directory) = chain_file.parent() {
        write_file(
            &directory.join("ca.fingerprint"),
            &format!("{ca_fingerprint}\n"),
            0o644,
        )?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = || {
        rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_error)
    };
    let with_certificate =
        |builder: rustls::ConfigBuilder<rustls::ServerConfig, rustls::server::WantsServerCert>| {
            builder
                .with_single_cert(chain.clone(), key.clone_key())
                .map_err(|error| {
                    tls_error(format!(
                        "using {} with {}: {error}",
                        chain_file.display(),
                        key_file.display()
                    ))
                })
        };
    let node_config = match &config.client_ca_file {
        None => with_certificate(builder()?.with_no_client_auth())?,
        Some(client_ca_file) => {
            let verifier = client_verifier(client_ca_file, provider.clone())?;
            with_certificate(builder()?.with_client_cert_verifier(verifier))?
        }
    };
    let mut api_config = with_certificate(builder()?.with_no_client_auth())?;
    api_config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsSetup {
        node_acceptor: TlsAcceptor::from(Arc::new(node_config)),
        api_acceptor: TlsAcceptor::from(Arc::new(api_config)),
        ca_fingerprint,
    })
}

/// Accepts client certificates signed by a CA of `client_ca_file`, and requires one.
fn client_verifier(
    client_ca_file: &Path,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, CoreError> {
    let reading = |error: &dyn std::fmt::Display| {
        tls_error(format!(
            "reading tls.client_ca_file {}: {error}",
            client_ca_file.display()
        ))
    };
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(client_ca_file).map_err(|e| reading(&e))? {
        roots
            .add(certificate.map_err(|e| reading(&e))?)
            .map_err(|e| reading(&e))?;
    }
    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| reading(&e))
}

fn server_names(config: &TlsConfig, host: &str) -> Vec<String> {
    if !config.server_names.is_empty() {
        return config.server_names.clone();
    }
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    if host != "0.0.0.0" && host != "127.0.0.1" && host != "::" {
        names.push(host.to_owned());
    }
    names
}

/// Creates `ca.pem`, `server.pem` (server certificate then CA) and their keys (mode 0600)
/// in `directory` unless they exist; returns the chain and key paths.
fn generate_if_missing(
    directory: &Path,
    names: &[String],
) -> Result<(PathBuf, PathBuf), CoreError> {
    let chain_file = directory.join("server.pem");
    let key_file = directory.join("server.key.pem");
    if chain_file.exists() && key_file.exists() {
        return Ok((chain_file, key_file));
    }
    std::fs::create_dir_all(directory)
        .map_err(|error| tls_error(format!("creating {}: {error}", directory.display())))?;
    let ca_key = rcgen::KeyPair::generate().map_err(tls_error)?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(tls_error)?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "HoneyBee Core CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca = ca_params.self_signed(&ca_key).map_err(tls_error)?;
    let server_key = rcgen::KeyPair::generate().map_err(tls_error)?;
    let mut server_params = rcgen::CertificateParams::new(names.to_vec()).map_err(tls_error)?;
    server_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "HoneyBee Core");
    let server = server_params
        .signed_by(&server_key, &ca, &ca_key)
        .map_err(tls_error)?;
    write_file(&directory.join("ca.pem"), &ca.pem(), 0o644)?;
    write_file(
        &directory.join("ca.key.pem"),
        &ca_key.serialize_pem(),
        0o600,
    )?;
    write_file(&chain_file, &format!("{}{}", server.pem(), ca.pem()), 0o644)?;
    write_file(&key_file, &server_key.serialize_pem(), 0o600)?;
    tracing::info!(directory = %directory.display(), "generated the core's TLS certificate authority and server certificate");
    Ok((chain_file, key_file))
}

/// Generated keys and certificates are written like the admin token: a new file renamed
/// over the path, never through a file or link already there.
fn write_file(path: &Path, content: &str, mode: u32) -> Result<(), CoreError> {
    crate::private_file::write_new_file(path, content.as_bytes(), mode)
        .map_err(|error| tls_error(format!("writing {}: {error}", path.display())))
}
