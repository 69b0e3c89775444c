//! TLS to PostgreSQL as libpq's `sslmode` has it, through rustls (tokio-postgres-rustls,
//! on the workspace's aws-lc-rs provider).
//!
//! The URL's `sslmode` and `sslrootcert` are read here and taken out before the rest goes
//! to tokio-postgres, which knows `disable`, `prefer` and `require` only:
//!
//! - `disable`: never TLS.
//! - `prefer` (the default, as libpq's): TLS when the server offers it, else plain.
//! - `require`: TLS or no connection.
//! - `verify-ca`: TLS, the server's certificate chained to a root of `sslrootcert`.
//! - `verify-full`: as `verify-ca`, and the certificate names the host connected to.
//!
//! Roots: `sslrootcert=FILE` (PEM, one or more certificates), or `system` (the operating
//! system's trusted roots, which, as in libpq, needs `verify-full` and makes it the
//! default), else `~/.postgresql/root.crt` when it exists (libpq's default). As in
//! libpq, `prefer` and `require` verify the chain when a root file is there (given or
//! the default one), never the name; the `verify-` modes without one are refused.

use crate::store::StoreError;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::WebPkiSupportedAlgorithms;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl Mode {
    fn parse(value: &str) -> Result<Mode, StoreError> {
        Ok(match value {
            "disable" => Mode::Disable,
            "prefer" => Mode::Prefer,
            "require" => Mode::Require,
            "verify-ca" => Mode::VerifyCa,
            "verify-full" => Mode::VerifyFull,
            // libpq's `allow` (plain first, TLS if refused) has no counterpart in the
            // driver.
            other => {
                return Err(StoreError::Unsupported(format!(
                    "the PostgreSQL URL's sslmode={other} is not one of disable, prefer, \
                     require, verify-ca, verify-full"
                )));
            }
        })
    }

    fn name(self) -> &'static str {
        match self {
            Mode::Disable => "disable",
            Mode::Prefer => "prefer",
            Mode::Require => "require",
            Mode::VerifyCa => "verify-ca",
            Mode::VerifyFull => "verify-full",
        }
    }
}

/// Where the roots come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Roots {
    /// None: the certificate is not checked (`prefer`, `require` without a root file).
    None,
    File(PathBuf),
    System,
}

/// A database URL made ready to connect: the driver's configuration and the TLS it uses.
pub(super) struct Connect {
    pub config: tokio_postgres::Config,
    pub tls: MakeRustlsConnect,
    /// How TLS is set up, for errors: `sslmode=verify-full, sslrootcert=/path`.
    pub described: String,
}

impl Connect {
    /// Reads `url` (`postgres://...?sslmode=...&sslrootcert=...`). The URL holds the
    /// password: errors never repeat it.
    pub fn parse(url: &str) -> Result<Connect, StoreError> {
        let (rest, mode, root) = take_tls_params(url)?;
        let mut config: tokio_postgres::Config = rest.parse().map_err(|e| {
            StoreError::Unsupported(format!("the PostgreSQL URL is not valid: {e}"))
        })?;
        let system = root.as_deref() == Some("system");
        let mode = match mode {
            Some(mode) => mode,
            None if system => Mode::VerifyFull,
            None => Mode::Prefer,
        };
        if system && mode != Mode::VerifyFull {
            return Err(StoreError::Unsupported(format!(
                "sslrootcert=system needs sslmode=verify-full (as libpq), not sslmode={}",
                mode.name()
            )));
        }
        let roots = match root {
            Some(r) if r == "system" => Roots::System,
            Some(file) => Roots::File(PathBuf::from(file)),
            None => match default_root_file() {
                Some(file) if file.exists() => Roots::File(file),
                Some(file) if matches!(mode, Mode::VerifyCa | Mode::VerifyFull) => {
                    return Err(StoreError::Unsupported(format!(
                        "sslmode={} needs the CA's certificate: give it as sslrootcert=FILE \
                         in the PostgreSQL URL (or put it in {}), or sslrootcert=system for \
                         the system's trusted roots",
                        mode.name(),
                        file.display()
                    )));
                }
                _ if matches!(mode, Mode::VerifyCa | Mode::VerifyFull) => {
                    return Err(StoreError::Unsupported(format!(
                        "sslmode={} needs the CA's certificate: give it as sslrootcert=FILE \
                         in the PostgreSQL URL, or sslrootcert=system",
                        mode.name()
                    )));
                }
                _ => Roots::None,
            },
        };
        config.ssl_mode(match mode {
            Mode::Disable => SslMode::Disable,
            Mode::Prefer => SslMode::Prefer,
            Mode::Require | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
        });
        let mut described = format!("sslmode={}", mode.name());
        match &roots {
            Roots::None => {}
            Roots::File(file) => described.push_str(&format!(", sslrootcert={}", file.display())),
            Roots::System => described.push_str(", sslrootcert=system"),
        }
        let tls = if mode == Mode::Disable {
            // Never used; the driver wants one all the same.
            connector(Roots::None, false)?
        } else {
            connector(roots, mode == Mode::VerifyFull)?
        };
        Ok(Connect {
            config,
            tls,
            described,
        })
    }
}

/// libpq's default root file, `~/.postgresql/root.crt`.
fn default_root_file() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".postgresql/root.crt"))
}

/// Takes `sslmode` and `sslrootcert` out of the URL's query: the URL without them, and
/// their (percent-decoded) values.
fn take_tls_params(url: &str) -> Result<(String, Option<Mode>, Option<String>), StoreError> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), None, None));
    };
    let (mut mode, mut root, mut kept) = (None, None, Vec::new());
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sslmode" => mode = Some(Mode::parse(&percent_decode(value, "sslmode")?)?),
            "sslrootcert" => root = Some(percent_decode(value, "sslrootcert")?),
            _ => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, mode, root))
}

/// `%XX` escapes decoded (a URL query's value), as UTF-8.
fn percent_decode(value: &str, key: &str) -> Result<String, StoreError> {
    let invalid = || StoreError::Unsupported(format!("the PostgreSQL URL's {key} is not valid"));
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = value.get(i + 1..i + 3).ok_or_else(invalid)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| invalid())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| invalid())
}

/// The rustls client for `roots`, checking the server's name when `full`.
fn connector(roots: Roots, full: bool) -> Result<MakeRustlsConnect, StoreError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let setup = |e: String| StoreError::Unsupported(format!("TLS to PostgreSQL: {e}"));
    let mut store = rustls::RootCertStore::empty();
    match &roots {
        Roots::None => {}
        Roots::File(file) => {
            let pem = std::fs::read(file)
                .map_err(|e| setup(format!("reading sslrootcert {}: {e}", file.display())))?;
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<_, _>>()
                .map_err(|e| setup(format!("sslrootcert {} is not PEM: {e}", file.display())))?;
            let (added, _) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err(setup(format!(
                    "sslrootcert {} holds no certificate",
                    file.display()
                )));
            }
        }
        Roots::System => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(setup("the system holds no trusted root certificate".into()));
            }
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| setup(e.to_string()))?;
    let verifier: Arc<dyn ServerCertVerifier> = if roots == Roots::None {
        Arc::new(AnyCertificate {
            algorithms: provider.signature_verification_algorithms,
        })
    } else {
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider)
            .build()
            .map_err(|e| setup(e.to_string()))?;
        if full {
            webpki
        } else {
            Arc::new(AnyName { webpki })
        }
    };
    let config = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// `prefer` and `require` without roots: the session is encrypted and its handshake's
/// signatures checked, whoever's certificate it is (libpq's behaviour).
#[derive(Debug)]
struct AnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// `verify-ca` (and `prefer`/`require` with a root file): the chain must lead to a root,
/// whatever name the certificate is for. WebPKI checks the chain before the name, so a
/// name error means the chain passed.
#[derive(Debug)]
struct AnyName {
    webpki: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
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
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_are_taken_out_of_the_url() {
        let (rest, mode, root) = take_tls_params(
            "postgres://u:p@h:5/db?application_name=x&sslmode=verify-full&sslrootcert=%2Ftmp%2Fca.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u:p@h:5/db?application_name=x");
        assert_eq!(mode, Some(Mode::VerifyFull));
        assert_eq!(root.as_deref(), Some("/tmp/ca.pem"));
        let (rest, mode, root) = take_tls_params("postgres://h/db?sslmode=disable").unwrap();
        assert_eq!(
            (rest.as_str(), mode, root),
            ("postgres://h/db", Some(Mode::Disable), None)
        );
        assert_eq!(
            take_tls_params("postgres://h/db").unwrap(),
            ("postgres://h/db".to_owned(), None, None)
        );
    }

    #[test]
    fn odd_modes_and_roots_are_refused_with_the_reason() {
        let err = |url: &str| match Connect::parse(url) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{url} accepted"),
        };
        assert!(err("postgres://h/db?sslmode=allow").contains("sslmode=allow is not one of"));
        assert!(err("postgres://h/db?sslmode=%zz").contains("sslmode is not valid"));
        assert!(
            err("postgres://h/db?sslmode=require&sslrootcert=system")
                .contains("sslrootcert=system needs sslmode=verify-full")
        );
        assert!(
            err("postgres://h/db?sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem")
                .contains("reading sslrootcert /nonexistent/ca.pem")
        );
        // No password in any of it.
        let e = err("postgres://u:secret@h/db?sslmode=verify-full&sslrootcert=/nonexistent");
        assert!(!e.contains("secret"), "{e}");
    }

    #[test]
    fn the_driver_gets_the_mode_it_knows() {
        let mode = |url: &str| Connect::parse(url).unwrap().config.get_ssl_mode();
        assert_eq!(mode("postgres://h/db?sslmode=disable"), SslMode::Disable);
        assert_eq!(mode("postgres://h/db?sslmode=require"), SslMode::Require);
        // The default is libpq's.
        assert_eq!(mode("postgres://h/db"), SslMode::Prefer);
    }
}
