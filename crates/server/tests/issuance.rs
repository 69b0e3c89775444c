//! Issuance against a real built-in CA in a temporary data directory, verified with an
//! independent X.509 parser, and deployment to a real directory with real hook processes.

// Tests fail loudly on any unexpected error: that is what unwrap is for here.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{OID_PKCS1_SHA256WITHRSA, OID_SIG_ECDSA_WITH_SHA256};
use x509_parser::pem::Pem;
use x509_parser::public_key::PublicKey;
use zonecert_server::issuance::{
    BuiltinCa, HookCommand, IssuanceError, IssueRequest, IssuedLeaf, Issuer, KeyType, deploy,
};
use zonecert_server::model::{DcvMethod, DcvRecord, Hostname};

fn hosts(list: &[&str]) -> Vec<String> {
    list.iter().map(|h| (*h).to_owned()).collect()
}

/// A request starting now (with a sub-second part, to check it is dropped) for 90 days.
fn request(host_list: &[&str], key_type: KeyType) -> IssueRequest {
    let not_before = OffsetDateTime::now_utc()
        .replace_nanosecond(987_654_321)
        .unwrap();
    IssueRequest {
        hosts: hosts(host_list),
        not_before,
        not_after: not_before + time::Duration::days(90),
        key_type,
    }
}

fn pems(text: &str) -> Vec<Pem> {
    Pem::iter_from_buffer(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

fn dns_sans(cert: &X509Certificate<'_>) -> Vec<String> {
    let san = cert.subject_alternative_name().unwrap().unwrap();
    san.value
        .general_names
        .iter()
        .map(|name| match name {
            GeneralName::DNSName(dns) => (*dns).to_owned(),
            other => panic!("unexpected SAN {other:?}"),
        })
        .collect()
}

fn key_ids(cert: &X509Certificate<'_>) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let (mut aki, mut ski) = (None, None);
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(a) => {
                aki = a.key_identifier.as_ref().map(|k| k.0.to_vec());
            }
            ParsedExtension::SubjectKeyIdentifier(k) => ski = Some(k.0.to_vec()),
            _ => {}
        }
    }
    (aki, ski)
}

fn public_key_of(key_pem: &str) -> Vec<u8> {
    rcgen::KeyPair::from_pem(key_pem)
        .unwrap()
        .public_key_raw()
        .to_vec()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn ecdsa_leaf_chains_to_the_ca_and_carries_every_host() {
    let data = tempfile::tempdir().unwrap();
    let ca = BuiltinCa::load_or_create(data.path()).unwrap();
    let req = request(
        &["example.com", "*.example.com", "www.example.com"],
        KeyType::EcdsaP256,
    );
    let leaf = ca.issue(&req).unwrap();

    let chain = pems(&leaf.chain_pem);
    assert_eq!(chain.len(), 2, "ECDSA chain is leaf + root");
    assert_eq!(chain[0].contents, pems(&leaf.leaf_pem)[0].contents);
    let root_pem = &pems(ca.certificate_pem())[0];
    assert_eq!(chain[1].contents, root_pem.contents);

    let cert = chain[0].parse_x509().unwrap();
    let root = root_pem.parse_x509().unwrap();
    cert.verify_signature(Some(root.public_key())).unwrap();
    assert_eq!(cert.issuer().as_raw(), root.subject().as_raw());
    assert!(root.is_ca());
    assert!(!cert.is_ca());

    assert_eq!(dns_sans(&cert), req.hosts);
    let cn = cert.subject().iter_common_name().next().unwrap();
    assert_eq!(cn.as_str().unwrap(), "example.com");

    let whole_nb = req.not_before.replace_nanosecond(0).unwrap();
    let whole_na = req.not_after.replace_nanosecond(0).unwrap();
    assert_eq!(cert.validity().not_before.to_datetime(), whole_nb);
    assert_eq!(cert.validity().not_after.to_datetime(), whole_na);
    assert_eq!((leaf.not_before, leaf.not_after), (whole_nb, whole_na));

    assert_eq!(
        cert.signature_algorithm.algorithm,
        OID_SIG_ECDSA_WITH_SHA256
    );
    assert_eq!(leaf.signature, "ECDSAWithSHA256");
    assert_eq!(leaf.issuer, ca.name());
    assert!(ca.name().starts_with("zonecert built-in CA ("));

    assert_eq!(leaf.serial_hex, hex(cert.raw_serial()));
    assert!(leaf.serial_hex.len() >= 16, "serial has at least 64 bits");

    let (aki, _) = key_ids(&cert);
    let (_, root_ski) = key_ids(&root);
    assert!(aki.is_some());
    assert_eq!(aki, root_ski);

    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth);
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && !ku.key_encipherment() && !ku.key_cert_sign());

    assert_eq!(
        public_key_of(leaf.key_pem.expose_secret()),
        cert.public_key().subject_public_key.data.as_ref()
    );
    assert!(matches!(
        cert.public_key().parsed().unwrap(),
        PublicKey::EC(_)
    ));
}

#[test]
fn rsa_leaf_is_signed_by_the_rsa_issuer_under_the_root() {
    let data = tempfile::tempdir().unwrap();
    let ca = BuiltinCa::load_or_create(data.path()).unwrap();
    let req = request(&["rsa.example.net", "*.rsa.example.net"], KeyType::Rsa2048);
    let leaf = ca.issue(&req).unwrap();

    let chain = pems(&leaf.chain_pem);
    assert_eq!(chain.len(), 3, "RSA chain is leaf + RSA issuer + root");
    assert_eq!(chain[1].contents, pems(ca.rsa_issuer_pem())[0].contents);
    assert_eq!(chain[2].contents, pems(ca.certificate_pem())[0].contents);
    let cert = chain[0].parse_x509().unwrap();
    let rsa_issuer = chain[1].parse_x509().unwrap();
    let root = chain[2].parse_x509().unwrap();
    cert.verify_signature(Some(rsa_issuer.public_key()))
        .unwrap();
    rsa_issuer
        .verify_signature(Some(root.public_key()))
        .unwrap();
    assert!(cert.verify_signature(Some(root.public_key())).is_err());
    assert!(rsa_issuer.is_ca());

    assert_eq!(cert.signature_algorithm.algorithm, OID_PKCS1_SHA256WITHRSA);
    assert_eq!(leaf.signature, "SHA256WithRSA");
    assert_eq!(leaf.signature, KeyType::Rsa2048.signature_name());
    assert_eq!(dns_sans(&cert), req.hosts);
    assert_eq!(
        leaf.issuer,
        "zonecert built-in RSA issuer".to_owned() + &ca.name()["zonecert built-in CA".len()..]
    );
    match cert.public_key().parsed().unwrap() {
        PublicKey::RSA(rsa) => assert_eq!(rsa.key_size(), 2048),
        other => panic!("expected an RSA key, got {other:?}"),
    }
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && ku.key_encipherment());
    assert_eq!(
        public_key_of(leaf.key_pem.expose_secret()),
        cert.public_key().subject_public_key.data.as_ref()
    );
    let (aki, _) = key_ids(&cert);
    assert_eq!(aki, key_ids(&rsa_issuer).1);
}

#[test]
fn serials_and_keys_differ_between_issuances() {
    let data = tempfile::tempdir().unwrap();
    let ca = BuiltinCa::load_or_create(data.path()).unwrap();
    let req = request(&["same.example"], KeyType::EcdsaP256);
    let a = ca.issue(&req).unwrap();
    let b = ca.issue(&req).unwrap();
    assert_ne!(a.serial_hex, b.serial_hex);
    assert_ne!(a.key_pem, b.key_pem);
}

#[test]
fn the_ca_persists_across_loads_with_private_files() {
    let data = tempfile::tempdir().unwrap();
    let first = BuiltinCa::load_or_create(data.path()).unwrap();
    let second = BuiltinCa::load_or_create(data.path()).unwrap();
    assert_eq!(first.certificate_pem(), second.certificate_pem());
    assert_eq!(first.rsa_issuer_pem(), second.rsa_issuer_pem());
    assert_eq!(first.name(), second.name());

    let dir = data.path().join("ca");
    assert_eq!(first.dir(), dir);
    assert_eq!(
        std::fs::read_to_string(dir.join("ca.pem")).unwrap(),
        first.certificate_pem()
    );
    assert_eq!(mode(&dir.join("ca-key.pem")), 0o600);
    assert_eq!(mode(&dir.join("rsa-issuer-key.pem")), 0o600);
    assert_eq!(mode(&dir), 0o700);

    // A leaf from the reloaded CA verifies against the first instance's root.
    let leaf = second
        .issue(&request(&["reload.example"], KeyType::EcdsaP256))
        .unwrap();
    let root = pems(first.certificate_pem())[0].contents.clone();
    let (_, root) = x509_parser::parse_x509_certificate(&root).unwrap();
    let leaf_der = pems(&leaf.leaf_pem)[0].contents.clone();
    let (_, leaf_cert) = x509_parser::parse_x509_certificate(&leaf_der).unwrap();
    leaf_cert.verify_signature(Some(root.public_key())).unwrap();

    let validity = root.validity();
    let lifetime = validity.not_after.to_datetime() - validity.not_before.to_datetime();
    assert!(lifetime > time::Duration::days(3650) && lifetime < time::Duration::days(3660));
    let ku = root.key_usage().unwrap().unwrap().value;
    assert!(ku.key_cert_sign() && ku.crl_sign());
}

#[test]
fn concurrent_first_starts_agree_on_one_ca() {
    let data = tempfile::tempdir().unwrap();
    let starters = 4;
    let barrier = Arc::new(Barrier::new(starters));
    let handles: Vec<_> = (0..starters)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            let dir: PathBuf = data.path().to_path_buf();
            std::thread::spawn(move || {
                barrier.wait();
                let ca = BuiltinCa::load_or_create(&dir).unwrap();
                (
                    ca.certificate_pem().to_owned(),
                    ca.rsa_issuer_pem().to_owned(),
                )
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for r in &results[1..] {
        assert_eq!(r, &results[0]);
    }
    let on_disk = std::fs::read_to_string(data.path().join("ca/ca.pem")).unwrap();
    assert_eq!(on_disk, results[0].0);
    let leftovers: Vec<_> = std::fs::read_dir(data.path().join("ca"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn a_damaged_ca_is_reported_not_replaced() {
    let data = tempfile::tempdir().unwrap();
    let ca = BuiltinCa::load_or_create(data.path()).unwrap();
    let dir = data.path().join("ca");

    // A key that belongs to another certificate.
    std::fs::copy(dir.join("rsa-issuer-key.pem"), dir.join("ca-key.pem")).unwrap();
    let err = BuiltinCa::load_or_create(data.path()).unwrap_err();
    assert!(matches!(err, IssuanceError::CaUnusable { .. }), "{err}");
    assert!(err.to_string().contains("does not belong"), "{err}");

    std::fs::remove_file(dir.join("ca-key.pem")).unwrap();
    let err = BuiltinCa::load_or_create(data.path()).unwrap_err();
    assert!(err.to_string().contains("ca-key.pem is missing"), "{err}");
    // The published root was left alone.
    assert_eq!(
        std::fs::read_to_string(dir.join("ca.pem")).unwrap(),
        ca.certificate_pem()
    );
}

#[test]
fn invalid_requests_are_refused_with_reasons() {
    let data = tempfile::tempdir().unwrap();
    let ca = BuiltinCa::load_or_create(data.path()).unwrap();

    let mut backwards = request(&["a.example"], KeyType::EcdsaP256);
    backwards.not_after = backwards.not_before;
    let err = ca.issue(&backwards).unwrap_err();
    assert!(err.to_string().contains("must be later"), "{err}");

    let mut too_long = request(&["a.example"], KeyType::EcdsaP256);
    too_long.not_after = ca.not_after() + time::Duration::days(1);
    let err = ca.issue(&too_long).unwrap_err();
    assert!(err.to_string().contains("past the expiry"), "{err}");

    for bad in [&[][..], &["bad host.example"][..], &["a.*.example"][..]] {
        let err = ca.issue(&request(bad, KeyType::EcdsaP256)).unwrap_err();
        assert!(matches!(err, IssuanceError::InvalidRequest(_)), "{err}");
    }
}

#[test]
fn debug_output_never_shows_the_key() {
    let data = tempfile::tempdir().unwrap();
    let ca = BuiltinCa::load_or_create(data.path()).unwrap();
    let leaf = ca
        .issue(&request(&["debug.example"], KeyType::EcdsaP256))
        .unwrap();
    let shown = format!("{leaf:?} {ca:?}");
    let key_body: String = leaf
        .key_pem
        .expose_secret()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(!key_body.is_empty());
    assert!(!shown.contains(&key_body[..20]), "{shown}");
    assert!(!shown.contains("PRIVATE KEY"));
    assert!(shown.contains(&leaf.serial_hex));
}

fn issued(ca: &BuiltinCa, host: &str) -> IssuedLeaf {
    ca.issue(&request(&[host, &format!("*.{host}")], KeyType::EcdsaP256))
        .unwrap()
}

const PACK: &str = "3b8a5e4c-8a2f-4bf4-9d4a-0c1f7e2b9a10";

#[tokio::test]
async fn deploy_writes_private_key_and_replaces_files_atomically() {
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let ca = BuiltinCa::load_or_create(data.path()).unwrap();
    let first = issued(&ca, "deploy.example");
    let paths = deploy(out.path(), PACK, &first, None).await.unwrap();
    assert_eq!(paths.dir, out.path().join(PACK));
    assert_eq!(
        std::fs::read_to_string(&paths.fullchain).unwrap(),
        first.chain_pem
    );
    assert_eq!(
        std::fs::read_to_string(&paths.privkey).unwrap(),
        first.key_pem.expose_secret()
    );
    assert_eq!(mode(&paths.privkey), 0o600);

    // Hold the old files open: an atomic replacement leaves their content untouched.
    let old_chain = std::fs::File::open(&paths.fullchain).unwrap();
    let old_key_inode = std::fs::metadata(&paths.privkey).unwrap().ino();
    let second = issued(&ca, "deploy.example");
    let again = deploy(out.path(), PACK, &second, None).await.unwrap();
    assert_eq!(again, paths);
    assert_eq!(
        std::fs::read_to_string(&paths.fullchain).unwrap(),
        second.chain_pem
    );
    assert_eq!(
        std::fs::read_to_string(&paths.privkey).unwrap(),
        second.key_pem.expose_secret()
    );
    assert_eq!(mode(&paths.privkey), 0o600);
    assert_ne!(
        std::fs::metadata(&paths.privkey).unwrap().ino(),
        old_key_inode
    );
    let still_old = std::io::read_to_string(old_chain).unwrap();
    assert_eq!(still_old, first.chain_pem);

    let mut names: Vec<_> = std::fs::read_dir(&paths.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, [".deploy.lock", "fullchain.pem", "privkey.pem"]);

    let err = deploy(out.path(), "../escape", &second, None)
        .await
        .unwrap_err();
    assert!(matches!(err, IssuanceError::InvalidPackId(_)), "{err}");
}

fn sh(script: &str, extra: &[&str], timeout: Duration) -> HookCommand {
    let mut args = vec!["-c".to_owned(), script.to_owned(), "hook".to_owned()];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    HookCommand {
        program: PathBuf::from("/bin/sh"),
        args,
        timeout,
    }
}

#[tokio::test]
async fn the_hook_runs_after_the_files_with_the_documented_environment() {
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let ca = BuiltinCa::load_or_create(data.path()).unwrap();
    let leaf = issued(&ca, "hook.example");
    let report = out.path().join("hook-env.txt");
    let copy = out.path().join("hook-saw-chain.pem");
    let hook = sh(
        r#"printf '%s\n%s\n%s\n%s\n' "$ZONECERT_PACK_ID" "$ZONECERT_CERT_PATH" "$ZONECERT_KEY_PATH" "$ZONECERT_HOSTS" > "$1" && cat "$ZONECERT_CERT_PATH" > "$2""#,
        &[report.to_str().unwrap(), copy.to_str().unwrap()],
        Duration::from_secs(10),
    );
    let paths = deploy(out.path(), PACK, &leaf, Some(&hook)).await.unwrap();
    let env = std::fs::read_to_string(&report).unwrap();
    let lines: Vec<&str> = env.lines().collect();
    assert_eq!(
        lines,
        [
            PACK,
            paths.fullchain.to_str().unwrap(),
            paths.privkey.to_str().unwrap(),
            "hook.example *.hook.example",
        ]
    );
    assert_eq!(std::fs::read_to_string(&copy).unwrap(), leaf.chain_pem);
}

#[tokio::test]
async fn a_failing_hook_reports_its_status_and_stderr() {
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let ca = BuiltinCa::load_or_create(data.path()).unwrap();
    let leaf = issued(&ca, "fail.example");
    let hook = sh(
        "echo starting >&2; echo 'nginx: configuration test failed' >&2; exit 3",
        &[],
        Duration::from_secs(10),
    );
    let err = deploy(out.path(), PACK, &leaf, Some(&hook))
        .await
        .unwrap_err();
    match &err {
        IssuanceError::HookFailed {
            status,
            stderr_tail,
            ..
        } => {
            assert_eq!(status.code(), Some(3));
            assert!(
                stderr_tail.ends_with("nginx: configuration test failed"),
                "{stderr_tail}"
            );
        }
        other => panic!("expected HookFailed, got {other}"),
    }
    assert!(
        err.to_string().contains("configuration test failed"),
        "{err}"
    );
    // The files were deployed before the hook ran.
    assert_eq!(
        std::fs::read_to_string(out.path().join(PACK).join("fullchain.pem")).unwrap(),
        leaf.chain_pem
    );
}

/// Every 16-character run of `secret` (after removing whitespace) that occurs in `text`.
fn shared_runs(text: &str, secret: &str) -> Vec<String> {
    let secret: String = secret.chars().filter(|c| !c.is_whitespace()).collect();
    let text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    secret
        .as_bytes()
        .windows(16)
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .filter(|w| text.contains(w.as_str()))
        .collect()
}

#[tokio::test]
async fn a_failing_hook_that_prints_its_key_leaks_none_of_it() {
    let data = tempfile::tempdir().unwrap();
    let ca = BuiltinCa::load_or_create(data.path()).unwrap();
    for (key_type, host) in [
        (KeyType::EcdsaP256, "leak-ec.example"),
        (KeyType::Rsa2048, "leak-rsa.example"),
    ] {
        let leaf = ca
            .issue(&IssueRequest {
                hosts: vec![host.to_owned()],
                key_type,
                not_before: OffsetDateTime::now_utc(),
                not_after: OffsetDateTime::now_utc() + time::Duration::days(30),
            })
            .unwrap();
        let key = leaf.key_pem.expose_secret().to_owned();
        let body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
        let der_hex: String = {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(&body)
                .unwrap()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        };
        // The key whole, its base64 lines alone, as one line, in part, and in hex dumps.
        for leak in [
            r#"cat "$ZONECERT_KEY_PATH" >&2"#,
            r#"grep -v PRIVATE "$ZONECERT_KEY_PATH" >&2"#,
            r#"grep -v PRIVATE "$ZONECERT_KEY_PATH" | tr -d '
' >&2"#,
            r#"grep -v PRIVATE "$ZONECERT_KEY_PATH" | cut -c 5-40 >&2"#,
            r#"grep -v PRIVATE "$ZONECERT_KEY_PATH" | base64 -d | od -An -tx1 >&2"#,
            r#"grep -v PRIVATE "$ZONECERT_KEY_PATH" | base64 -d | od -Ax -tx1 -w8 >&2"#,
        ] {
            let out = tempfile::tempdir().unwrap();
            let hook = sh(
                &format!(
                    "echo 'reloading nginx' >&2; {leak}; echo >&2; echo 'nginx: configuration test failed' >&2; exit 4"
                ),
                &[],
                Duration::from_secs(10),
            );
            let err = deploy(out.path(), PACK, &leaf, Some(&hook))
                .await
                .unwrap_err();
            let text = err.to_string();
            let debug = format!("{err:?}");
            for shown in [&text, &debug] {
                assert!(!shown.contains("PRIVATE KEY"), "{leak}: {shown}");
                assert_eq!(
                    shared_runs(shown, &body),
                    Vec::<String>::new(),
                    "{leak}: {shown}"
                );
                assert_eq!(
                    shared_runs(&shown.replace([' ', ':'], ""), &der_hex),
                    Vec::<String>::new(),
                    "{leak}: {shown}"
                );
            }
            assert!(text.contains("exit status: 4"), "{leak}: {text}");
            assert!(
                text.contains("nginx: configuration test failed"),
                "{leak}: {text}"
            );
            assert!(text.contains("withheld"), "{leak}: {text}");
        }
    }
}

#[tokio::test]
async fn a_hook_past_its_timeout_is_killed() {
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let ca = BuiltinCa::load_or_create(data.path()).unwrap();
    let leaf = issued(&ca, "slow.example");
    let hook = HookCommand {
        program: PathBuf::from("sleep"),
        args: vec!["30".to_owned()],
        timeout: Duration::from_millis(300),
    };
    let started = Instant::now();
    let err = deploy(out.path(), PACK, &leaf, Some(&hook))
        .await
        .unwrap_err();
    assert!(matches!(err, IssuanceError::HookTimeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));

    let missing = HookCommand {
        program: out.path().join("no-such-hook"),
        args: vec![],
        timeout: Duration::from_secs(1),
    };
    let err = deploy(out.path(), PACK, &leaf, Some(&missing))
        .await
        .unwrap_err();
    assert!(matches!(err, IssuanceError::HookSpawn { .. }), "{err}");
}

fn hostnames(list: &[&str]) -> Vec<Hostname> {
    list.iter().map(|h| Hostname::parse(h).unwrap()).collect()
}

fn is_token(s: &str) -> bool {
    s.len() == 43
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[tokio::test]
async fn builtin_issuer_mints_model_records_then_issues_for_the_order() {
    let data = tempfile::tempdir().unwrap();
    let ca = Arc::new(BuiltinCa::load_or_create(data.path()).unwrap());
    let issuer = Issuer::Builtin(Arc::clone(&ca));
    let order_hosts = hostnames(&["example.org", "*.example.org"]);
    let suffix = "z1.dcv.zonecert.test";

    let order = issuer
        .begin(&order_hosts, DcvMethod::Txt, suffix, None)
        .await
        .unwrap();
    assert_eq!(order.challenges.len(), 2);
    assert_eq!(order.tokens_expire, None);
    let mut values = Vec::new();
    for (challenge, host) in order.challenges.iter().zip(&order_hosts) {
        assert_eq!(&challenge.host, host);
        match &challenge.record {
            DcvRecord::Txt { name, value } => {
                assert_eq!(name, "_acme-challenge.example.org");
                assert!(is_token(value), "{value}");
                values.push(value.clone());
            }
            other => panic!("expected a TXT record, got {other:?}"),
        }
    }
    assert_ne!(values[0], values[1]);

    let http = issuer
        .begin(
            &hostnames(&["www.example.org"]),
            DcvMethod::Http,
            suffix,
            None,
        )
        .await
        .unwrap();
    match &http.challenges[0].record {
        DcvRecord::Http { url, body } => {
            let token = url
                .strip_prefix("http://www.example.org/.well-known/acme-challenge/")
                .unwrap();
            assert!(is_token(token), "{url}");
            assert!(body.starts_with(&format!("{token}.")), "{body}");
        }
        other => panic!("expected an HTTP record, got {other:?}"),
    }

    let cname = issuer
        .begin(&order_hosts, DcvMethod::Cname, suffix, None)
        .await
        .unwrap();
    assert_eq!(
        cname.challenges[1].record,
        DcvRecord::Cname {
            name: "_acme-challenge.example.org".to_owned(),
            target: format!("example.org.{suffix}"),
        }
    );

    let err = issuer
        .begin(&order_hosts, DcvMethod::Http, suffix, None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, IssuanceError::UnsupportedValidation { .. }),
        "{err}"
    );
    let err = issuer
        .begin(&order_hosts, DcvMethod::Email, suffix, None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, IssuanceError::UnsupportedValidation { .. }),
        "{err}"
    );
    let err = issuer
        .begin(
            &hostnames(&["a.example.org", "a.example.org"]),
            DcvMethod::Txt,
            suffix,
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, IssuanceError::InvalidRequest(_)), "{err}");

    // The hosts of the request may come in another order; the certificate is the CA's.
    let req = request(&["*.example.org", "example.org"], KeyType::Rsa2048);
    let leaf = issuer.finish(&order.order_ref, &req).await.unwrap();
    assert_eq!(leaf.hosts, req.hosts);
    assert_eq!(leaf.signature, "SHA256WithRSA");
    assert!(leaf.chain_pem.ends_with(ca.certificate_pem()));

    let other = request(&["example.org", "extra.example.org"], KeyType::EcdsaP256);
    let err = issuer.finish(&order.order_ref, &other).await.unwrap_err();
    assert!(matches!(err, IssuanceError::OrderMismatch(_)), "{err}");
    let err = issuer
        .finish("{\"issuer\":\"acme\"}", &req)
        .await
        .unwrap_err();
    assert!(matches!(err, IssuanceError::OrderMismatch(_)), "{err}");
}

#[tokio::test]
async fn a_local_order_names_the_hosts_minted_without_begin() {
    let data = tempfile::tempdir().unwrap();
    let ca = Arc::new(BuiltinCa::load_or_create(data.path()).unwrap());
    let issuer = Issuer::Builtin(Arc::clone(&ca));
    let order_ref = issuer
        .local_order(&hostnames(&["example.org", "www.example.org"]))
        .unwrap();

    let req = request(&["www.example.org", "example.org"], KeyType::EcdsaP256);
    let leaf = issuer.finish(&order_ref, &req).await.unwrap();
    assert_eq!(leaf.hosts, req.hosts);
    assert_eq!(leaf.signature, "ECDSAWithSHA256");
    assert!(leaf.chain_pem.ends_with(ca.certificate_pem()));

    let other = request(&["example.org"], KeyType::EcdsaP256);
    let err = issuer.finish(&order_ref, &other).await.unwrap_err();
    assert!(matches!(err, IssuanceError::OrderMismatch(_)), "{err}");
}
