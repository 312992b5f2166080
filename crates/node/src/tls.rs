//! TLS 1.3 to the Core: the connector built from the `tls:` section. The Core is verified
//! against a CA file, or against a pinned SHA-256 fingerprint of its CA certificate;
//! `insecure_skip_verify` accepts anything and is warned about at every start.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};
use tokio_rustls::TlsConnector;

use crate::config::TlsSection;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The connector for `tls`, or `None` when TLS is off.
pub(crate) fn connector(tls: &TlsSection) -> Result<Option<TlsConnector>, String> {
    if !tls.enabled {
        return Ok(None);
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|error| error.to_string())?;
    let config = if let Some(ca_file) = &tls.ca_file {
        let mut roots = RootCertStore::empty();
        let certificates = CertificateDer::pem_file_iter(ca_file)
            .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
            .map_err(|error| format!("reading tls.ca_file {}: {error}", ca_file.display()))?;
        for certificate in certificates {
            roots
                .add(certificate)
                .map_err(|error| format!("using tls.ca_file {}: {error}", ca_file.display()))?;
        }
        with_client_certificate(builder.with_root_certificates(roots), tls)?
    } else {
        let pinned_ca = tls.ca_fingerprint.as_deref().map(normalise_fingerprint);
        if pinned_ca.is_none() {
            tracing::warn!("tls.insecure_skip_verify is on: the node trusts any server as its core; use tls.ca_file or tls.ca_fingerprint");
        }
        with_client_certificate(
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(CoreVerifier { pinned_ca })),
            tls,
        )?
    };
    Ok(Some(TlsConnector::from(Arc::new(config))))
}

/// Presents `tls.cert_file` / `tls.key_file` to a Core that asks for client certificates
/// (mutual TLS); without them the node presents none.
fn with_client_certificate(
    builder: rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>,
    tls: &TlsSection,
) -> Result<rustls::ClientConfig, String> {
    let (Some(cert_file), Some(key_file)) = (&tls.cert_file, &tls.key_file) else {
        return Ok(builder.with_no_client_auth());
    };
    let chain = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
        .map_err(|error| format!("reading tls.cert_file {}: {error}", cert_file.display()))?;
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|error| format!("reading tls.key_file {}: {error}", key_file.display()))?;
    builder.with_client_auth_cert(chain, key).map_err(|error| {
        format!(
            "using tls.cert_file {} with tls.key_file {}: {error}",
            cert_file.display(),
            key_file.display()
        )
    })
}

/// The name the Core's certificate must carry: `tls.server_name`, else the host of
/// `server.address`.
pub(crate) fn server_name(tls: &TlsSection, address: &str) -> Result<ServerName<'static>, String> {
    let host = match &tls.server_name {
        Some(name) => name.clone(),
        None => address
            .rsplit_once(':')
            .map_or(address, |(host, _)| host)
            .trim_matches(|c| c == '[' || c == ']')
            .to_owned(),
    };
    ServerName::try_from(host.clone()).map_err(|_| format!("invalid TLS server name {host:?}"))
}

/// Lowercase hex without separators, so `AB:CD…` and `abcd…` pin the same certificate.
pub(crate) fn normalise_fingerprint(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_hexdigit())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Verifies the Core without a CA file: with `pinned_ca`, trusts the chain whose CA has that
/// fingerprint and then checks the server certificate against that CA like any CA file;
/// without (`insecure_skip_verify`), trusts any certificate. Handshake signatures are always
/// checked.
#[derive(Debug)]
struct CoreVerifier {
    pinned_ca: Option<String>,
}

impl ServerCertVerifier for CoreVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(pin) = &self.pinned_ca else {
            return Ok(ServerCertVerified::assertion());
        };
        let pinned = intermediates.iter().find(|certificate| {
            let digest: String = Sha256::digest(certificate.as_ref())
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect();
            &digest == pin
        });
        let Some(ca) = pinned else {
            return Err(rustls::Error::General(format!(
                "the core's certificate chain has no CA with the pinned fingerprint {pin} (tls.ca_fingerprint)"
            )));
        };
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|error| rustls::Error::General(error.to_string()))?;
        verifier.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            certificate,
            signature,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            certificate,
            signature,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_compare_whatever_their_spelling() {
        assert_eq!(normalise_fingerprint("AB:cd:01"), "abcd01");
    }

    #[test]
    fn the_server_name_defaults_to_the_core_host() {
        let tls = TlsSection::default();
        assert_eq!(
            server_name(&tls, "core.example.org:9001").unwrap().to_str(),
            "core.example.org"
        );
        assert_eq!(
            server_name(&tls, "127.0.0.1:9001").unwrap().to_str(),
            "127.0.0.1"
        );
    }
}
