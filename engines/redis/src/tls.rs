//! TLS for the runner's own connections and `redis-cli`, from the libpq-style settings
//! (`DB_SSL_MODE`, `DB_SSL_ROOT_CERT`, `DB_SSL_CERT`, `DB_SSL_KEY`; `rediss://` means `require`).
//! Redis has no in-band TLS negotiation: `disable`, `allow` and `prefer` connect in plain text.

use std::path::Path;
use std::sync::Arc;

use runner_core::config::TlsConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// How the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// `require` without a root certificate: encrypted, not authenticated (as libpq).
    None,
    /// `verify-ca`, or `require` with a root certificate: the chain, not the host name.
    Chain,
    /// `verify-full`: the chain and the host name.
    Full,
}

/// `None` when the connection is plain text.
pub fn verify_mode(tls: &TlsConfig) -> Option<Verify> {
    match tls.mode.as_deref() {
        None | Some("disable" | "allow" | "prefer") => None,
        Some("require") if tls.root_cert.is_none() => Some(Verify::None),
        Some("require" | "verify-ca") => Some(Verify::Chain),
        Some(_) => Some(Verify::Full),
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// The rustls client config, or `None` for plain text.
pub fn client_config(tls: &TlsConfig) -> Result<Option<Arc<ClientConfig>>, String> {
    let Some(verify) = verify_mode(tls) else {
        return Ok(None);
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = RootCertStore::empty();
    match &tls.root_cert {
        Some(path) => {
            for cert in read_certs(path)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("cannot set up certificate verification: {e}"))?;
    let verifier: Arc<dyn ServerCertVerifier> = Arc::new(Verifier {
        inner: webpki,
        verify,
    });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("cannot read the private key {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(read_certs(cert)?, key)
                .map_err(|e| format!("the client certificate and key do not fit: {e}"))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err("DB_SSL_CERT and DB_SSL_KEY must be given together".into()),
    };
    Ok(Some(Arc::new(config)))
}

/// The server's certificate checked as `verify` says; signatures always checked.
#[derive(Debug)]
struct Verifier {
    inner: Arc<WebPkiServerVerifier>,
    verify: Verify,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::CertificateError::{NotValidForName, NotValidForNameContext};
        match self.verify {
            Verify::None => Ok(ServerCertVerified::assertion()),
            Verify::Full => {
                self.inner
                    .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            }
            Verify::Chain => match self.inner.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp,
                now,
            ) {
                Err(rustls::Error::InvalidCertificate(
                    NotValidForName | NotValidForNameContext { .. },
                )) => Ok(ServerCertVerified::assertion()),
                other => other,
            },
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `redis-cli`'s options for the same settings.
pub fn cli_args(tls: &TlsConfig) -> Vec<String> {
    let Some(verify) = verify_mode(tls) else {
        return Vec::new();
    };
    let mut args = vec!["--tls".to_string()];
    if verify == Verify::None {
        args.push("--insecure".into());
    }
    for (flag, path) in [
        ("--cacert", &tls.root_cert),
        ("--cert", &tls.cert),
        ("--key", &tls.key),
    ] {
        if let Some(p) = path {
            args.push(flag.into());
            args.push(p.display().to_string());
        }
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(mode: Option<&str>, root: Option<&str>) -> TlsConfig {
        TlsConfig {
            mode: mode.map(str::to_string),
            root_cert: root.map(Into::into),
            ..TlsConfig::default()
        }
    }

    #[test]
    fn modes_map_to_verification() {
        assert_eq!(verify_mode(&tls(None, None)), None);
        assert_eq!(verify_mode(&tls(Some("prefer"), None)), None);
        assert_eq!(verify_mode(&tls(Some("require"), None)), Some(Verify::None));
        assert_eq!(
            verify_mode(&tls(Some("require"), Some("/ca.pem"))),
            Some(Verify::Chain)
        );
        assert_eq!(
            verify_mode(&tls(Some("verify-ca"), None)),
            Some(Verify::Chain)
        );
        assert_eq!(
            verify_mode(&tls(Some("verify-full"), None)),
            Some(Verify::Full)
        );
    }

    #[test]
    fn cli_options() {
        assert!(cli_args(&tls(Some("disable"), None)).is_empty());
        assert_eq!(
            cli_args(&tls(Some("require"), None)),
            ["--tls", "--insecure"]
        );
        assert_eq!(
            cli_args(&tls(Some("verify-full"), Some("/ca.pem"))),
            ["--tls", "--cacert", "/ca.pem"]
        );
        assert!(client_config(&tls(Some("require"), None))
            .unwrap()
            .is_some());
        assert!(client_config(&tls(Some("verify-ca"), Some("/nonexistent.pem"))).is_err());
    }
}
