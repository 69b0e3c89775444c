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

/// instant-acme's HTTP for a test's own ACME requests: reqwest, trusting `root_pem`
/// (Pebble's TLS root).
struct TestHttp(reqwest::Client);

impl instant_acme::HttpClient for TestHttp {
    fn request(
        &self,
        req: http::Request<instant_acme::BodyWrapper<bytes::Bytes>>,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<
                    Output = Result<instant_acme::BytesResponse, instant_acme::Error>,
                > + Send,
        >,
    > {
        use http_body_util::BodyExt;
        let client = self.0.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            let req = reqwest::Request::try_from(http::Request::from_parts(parts, body)).unwrap();
            let rsp = client
                .execute(req)
                .await
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            let rsp: http::Response<reqwest::Body> = rsp.into();
            let (parts, body) = rsp.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            Ok(instant_acme::BytesResponse::from(
                http::Response::from_parts(parts, http_body_util::Full::new(body)),
            ))
        })
    }
}

/// Deactivates, at the CA, the ACME account whose credentials zonecert keeps in
/// `account_file` (RFC 8555 section 7.3.6: a POST of `{"status": "deactivated"}` to the
/// account's URL, signed with its key); returns the account's URL.
pub async fn deactivate_account(account_file: &Path, ca_tls_root_pem: &str) -> String {
    let credentials: instant_acme::AccountCredentials =
        serde_json::from_slice(&std::fs::read(account_file).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_tls_root_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let account = instant_acme::Account::builder_with_http(Box::new(TestHttp(client)))
        .from_credentials(credentials)
        .await
        .unwrap();
    let id = account.id().to_owned();
    account.deactivate().await.unwrap();
    id
}
