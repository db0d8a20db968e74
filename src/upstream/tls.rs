//! Trust roots for `https` upstreams: the bundled webpki roots, or the private CA certificates
//! of [`UpstreamConfig::root_certificates`](super::UpstreamConfig::root_certificates).

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// The certificates of a PEM bundle as a root store. Sections other than `CERTIFICATE` (a
/// private key kept in the same file, say) are ignored.
///
/// # Errors
/// Malformed PEM, no certificate at all, or a certificate that cannot be a trust anchor; the
/// message is a sentence fragment without the file name (the caller adds it).
pub(crate) fn root_store(pem: &[u8]) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    for (i, cert) in CertificateDer::pem_slice_iter(pem).enumerate() {
        let cert = cert.map_err(|e| format!("malformed PEM: {e}"))?;
        store
            .add(cert)
            .map_err(|e| format!("certificate #{} is not a usable CA certificate: {e}", i + 1))?;
    }
    if store.is_empty() {
        return Err(
            "no certificate found (expected PEM with -----BEGIN CERTIFICATE----- blocks)"
                .to_owned(),
        );
    }
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_what_is_not_a_pem_certificate() {
        let err = root_store(b"").expect_err("empty");
        assert!(err.starts_with("no certificate found"), "{err}");
        let err = root_store(b"\x30\x82\x01\x0a garbage DER").expect_err("der");
        assert!(err.starts_with("no certificate found"), "{err}");
        let key_only = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        let err = root_store(key_only).expect_err("key only");
        assert!(err.starts_with("no certificate found"), "{err}");
        let truncated = b"-----BEGIN CERTIFICATE-----\nMIIB\n";
        let err = root_store(truncated).expect_err("truncated");
        assert!(err.starts_with("malformed PEM"), "{err}");
        let not_x509 = b"-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n";
        let err = root_store(not_x509).expect_err("not x509");
        assert!(
            err.starts_with("certificate #1 is not a usable CA certificate"),
            "{err}"
        );
    }
}
