//! What is asked of a CA and what it hands back.

use std::fmt;

use time::OffsetDateTime;

use super::IssuanceError;

/// The key algorithm of the certificate's own key pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KeyType {
    /// ECDSA on P-256, signed with ECDSA-SHA256.
    #[default]
    EcdsaP256,
    /// RSA 2048, signed with RSA PKCS#1 v1.5 SHA-256.
    Rsa2048,
}

impl KeyType {
    /// The `signature` word of the wire format that certificates of this key type carry.
    pub fn signature_name(self) -> &'static str {
        match self {
            KeyType::EcdsaP256 => SIGNATURE_ECDSA_SHA256,
            KeyType::Rsa2048 => SIGNATURE_RSA_SHA256,
        }
    }
}

pub(crate) const SIGNATURE_ECDSA_SHA256: &str = "ECDSAWithSHA256";
pub(crate) const SIGNATURE_RSA_SHA256: &str = "SHA256WithRSA";

/// A request to sign a server certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueRequest {
    /// Every host becomes a DNS subject alternative name, in this order; the first one is also
    /// the subject's common name when it fits (64 characters). `*.example.com` is allowed.
    pub hosts: Vec<String>,
    /// Start of validity; sub-second precision is dropped.
    pub not_before: OffsetDateTime,
    /// End of validity; sub-second precision is dropped.
    pub not_after: OffsetDateTime,
    /// The key algorithm of the new key pair.
    pub key_type: KeyType,
}

/// A PEM-encoded private key. It has no `Display` and its `Debug` prints nothing of the key,
/// so it cannot end up in a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKeyPem(String);

impl PrivateKeyPem {
    pub(crate) fn new(pem: String) -> Self {
        PrivateKeyPem(pem)
    }

    /// The PEM text (PKCS#8, "PRIVATE KEY"), for writing to a protected file.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PrivateKeyPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKeyPem([redacted])")
    }
}

/// A signed certificate with its chain and key. Every field except `key_pem` and `hosts` is
/// read back from the encoded certificate, so it describes what was really issued.
#[derive(Clone)]
pub struct IssuedLeaf {
    /// Serial number, lowercase hex without separators.
    pub serial_hex: String,
    /// The hosts of the certificate (its DNS SANs), in request order.
    pub hosts: Vec<String>,
    /// The leaf certificate, PEM.
    pub leaf_pem: String,
    /// The leaf followed by every CA certificate up to and including the root, PEM.
    pub chain_pem: String,
    /// The leaf's private key.
    pub key_pem: PrivateKeyPem,
    /// Start of validity as encoded.
    pub not_before: OffsetDateTime,
    /// End of validity as encoded.
    pub not_after: OffsetDateTime,
    /// The certificate's signature algorithm in the wire's words: "ECDSAWithSHA256" or
    /// "SHA256WithRSA".
    pub signature: &'static str,
    /// The common name of the CA that signed the leaf.
    pub issuer: String,
}

impl fmt::Debug for IssuedLeaf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedLeaf")
            .field("serial_hex", &self.serial_hex)
            .field("hosts", &self.hosts)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("signature", &self.signature)
            .field("issuer", &self.issuer)
            .field("key_pem", &self.key_pem)
            .finish_non_exhaustive()
    }
}

/// Checks that `hosts` is a non-empty list of distinct DNS names a certificate may carry.
pub(crate) fn check_hosts(hosts: &[String]) -> Result<(), IssuanceError> {
    if hosts.is_empty() {
        return Err(IssuanceError::InvalidRequest(
            "at least one host is required".to_owned(),
        ));
    }
    for (i, host) in hosts.iter().enumerate() {
        check_host(host)?;
        if hosts[..i].iter().any(|h| h.eq_ignore_ascii_case(host)) {
            return Err(IssuanceError::InvalidRequest(format!(
                "host {host:?} is listed twice"
            )));
        }
    }
    Ok(())
}

fn check_host(host: &str) -> Result<(), IssuanceError> {
    let invalid = |why: &str| IssuanceError::InvalidRequest(format!("host {host:?} {why}"));
    if host.len() > 253 {
        return Err(invalid("is longer than 253 characters"));
    }
    if !host.is_ascii() {
        return Err(invalid(
            "is not ASCII: give internationalised names in their xn-- form",
        ));
    }
    let name = host.strip_prefix("*.").unwrap_or(host);
    if name.is_empty() {
        return Err(invalid("has no name after the wildcard"));
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(invalid("has an empty label or a label over 63 characters"));
        }
        if label == "*" || label.contains('*') {
            return Err(invalid(
                "has a wildcard that is not the whole leftmost label",
            ));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(invalid("has characters other than letters, digits and '-'"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(invalid("has a label starting or ending with '-'"));
        }
    }
    // The CA signs only names a public CA could: no IP address (`DNS:127.0.0.1`), public
    // suffix or invalid IDNA label, whatever its caller checked.
    if let Ok(parsed) = crate::model::Hostname::parse(host) {
        parsed
            .check_issuable()
            .map_err(|e| IssuanceError::InvalidRequest(e.0))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(list: &[&str]) -> Vec<String> {
        list.iter().map(|h| (*h).to_owned()).collect()
    }

    #[test]
    fn accepts_names_and_leftmost_wildcards() {
        assert!(
            check_hosts(&hosts(&[
                "example.com",
                "*.example.com",
                "a-b.xn--bcher-kva.example"
            ]))
            .is_ok()
        );
    }

    #[test]
    fn rejects_malformed_hosts() {
        for bad in [
            "",
            "*.",
            "a..b",
            "a.*.b",
            "foo*.b",
            "-a.b",
            "a_b.c",
            "exämple.com",
            "a b.c",
        ] {
            assert!(check_hosts(&hosts(&[bad])).is_err(), "{bad:?} was accepted");
        }
        assert!(check_hosts(&[]).is_err());
        assert!(check_hosts(&hosts(&["a.example", "A.example"])).is_err());
        let long_label = "a".repeat(64) + ".com";
        assert!(check_hosts(&[long_label]).is_err());
    }

    #[test]
    fn debug_of_a_key_shows_nothing_of_it() {
        let key = PrivateKeyPem::new("-----BEGIN PRIVATE KEY-----\nSECRETBYTES\n".to_owned());
        let shown = format!("{key:?}");
        assert!(!shown.contains("SECRETBYTES"));
        assert!(!shown.contains("BEGIN"));
    }
}
