//! What the ACME tests share besides the testkit's Pebble harness: names, requests, chain
//! and file-mode checks.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use base64::Engine as _;
use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;
use x509_parser::pem::Pem;
use zonecert_server::issuance::{IssueRequest, KeyType};
use zonecert_server::model::Hostname;

pub fn hostnames(list: &[&str]) -> Vec<Hostname> {
    list.iter().map(|h| Hostname::parse(h).unwrap()).collect()
}

pub fn request(hosts: &[&str]) -> IssueRequest {
    let now = OffsetDateTime::now_utc();
    IssueRequest {
        hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
        not_before: now,
        not_after: now + time::Duration::days(90),
        key_type: KeyType::EcdsaP256,
    }
}

pub fn base64_url(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap()
}

/// Every certificate of `chain_pem` is signed by the next one, the last by `root_pem`,
/// and the leaf's DNS names are `hosts`.
pub fn assert_chain(chain_pem: &str, root_pem: &str, hosts: &[&str]) {
    let chain: Vec<Pem> = Pem::iter_from_buffer(chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let root: Vec<Pem> = Pem::iter_from_buffer(root_pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(chain.len() >= 2, "a leaf and its intermediate");
    let mut certs: Vec<_> = chain.iter().map(|p| p.parse_x509().unwrap()).collect();
    certs.push(root[0].parse_x509().unwrap());
    for pair in certs.windows(2) {
        assert_eq!(pair[0].issuer(), pair[1].subject());
        pair[0]
            .verify_signature(Some(pair[1].public_key()))
            .expect("signed by the next certificate");
    }
    let root = certs.last().unwrap();
    root.verify_signature(None)
        .expect("the root is self-signed");
    let san = certs[0].subject_alternative_name().unwrap().unwrap();
    let mut names: Vec<String> = san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some((*d).to_owned()),
            _ => None,
        })
        .collect();
    let mut want: Vec<String> = hosts.iter().map(|h| (*h).to_owned()).collect();
    names.sort();
    want.sort();
    assert_eq!(names, want);
}

pub fn assert_mode_0600(path: &Path) {
    let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", path.display());
}
