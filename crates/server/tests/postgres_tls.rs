//! TLS to PostgreSQL, as libpq's `sslmode` has it: a cluster the test starts with
//! `ssl=on`, a certificate for `localhost` signed by a CA the test makes (rcgen), and
//! `pg_hba.conf` refusing TCP connections without TLS (testkit's `PgCluster::start_tls`;
//! `ZONECERT_SKIP_POSTGRES=1` skips this explicitly, a failure otherwise).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use std::path::{Path, PathBuf};
use zonecert_server::store::{Store, StoreError};
use zonecert_testkit::PgCluster;

/// A CA's certificate (PEM) and what it signs with.
fn make_ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), Issuer::new(params, key))
}

fn write(dir: &Path, name: &str, pem: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, pem).unwrap();
    path
}

fn open(url: &str) -> Result<Store, StoreError> {
    Store::open_url(url)
}

fn refused(url: &str) -> String {
    match open(url) {
        Ok(_) => panic!("{url} connected"),
        Err(e) => {
            eprintln!("{url}: {e}");
            e.to_string()
        }
    }
}

#[test]
fn sslmode_as_libpq_has_it() {
    let (ca_pem, ca) = make_ca("zonecert test CA");
    let (other_ca_pem, _) = make_ca("another CA");
    let server_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let server_cert = params.signed_by(&server_key, &ca).unwrap();
    let Some(cluster) = PgCluster::for_test_tls(&server_cert.pem(), &server_key.serialize_pem())
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = write(dir.path(), "ca.pem", &ca_pem);
    let wrong_root = write(dir.path(), "other-ca.pem", &other_ca_pem);
    // 127.0.0.1: the address the cluster listens on; its certificate names `localhost`.
    let by_ip = cluster.create_database().unwrap();
    let by_name = by_ip.replace("127.0.0.1", "localhost");
    let database = by_ip.rsplit('/').next().unwrap().to_owned();
    // Every connection of this database, the pool's and the listener's, is encrypted.
    let all_tls = || {
        let rows = cluster
            .query(
                &by_ip,
                &format!(
                    "SELECT a.application_name, s.ssl FROM pg_stat_ssl s \
                     JOIN pg_stat_activity a USING (pid) \
                     WHERE a.datname = '{database}' AND a.pid <> pg_backend_pid()"
                ),
            )
            .unwrap();
        assert!(
            rows.iter().any(|r| r.starts_with("zonecert-listener|")),
            "{rows:?}"
        );
        assert!(rows.iter().all(|r| r.ends_with("|t")), "{rows:?}");
    };

    // require: encrypted, the certificate not checked.
    let store = open(&format!("{by_ip}?sslmode=require")).unwrap();
    all_tls();
    drop(store);
    // prefer (the default): encrypted when the server offers it.
    let store = open(&by_ip).unwrap();
    all_tls();
    drop(store);
    // verify-full with the right root and the name the certificate holds.
    let store = open(&format!(
        "{by_name}?sslmode=verify-full&sslrootcert={}",
        root.display()
    ))
    .unwrap();
    all_tls();
    drop(store);
    // verify-ca checks the chain, not the name.
    drop(
        open(&format!(
            "{by_ip}?sslmode=verify-ca&sslrootcert={}",
            root.display()
        ))
        .unwrap(),
    );

    // verify-full against a certificate signed by another CA.
    let e = refused(&format!(
        "{by_name}?sslmode=verify-full&sslrootcert={}",
        wrong_root.display()
    ));
    assert!(
        e.contains("UnknownIssuer")
            && e.contains("sslmode=verify-full")
            && e.contains("not signed by a CA of sslrootcert"),
        "{e}"
    );
    // verify-ca too.
    let e = refused(&format!(
        "{by_ip}?sslmode=verify-ca&sslrootcert={}",
        wrong_root.display()
    ));
    assert!(e.contains("UnknownIssuer"), "{e}");
    // verify-full to a host the certificate does not name.
    let e = refused(&format!(
        "{by_ip}?sslmode=verify-full&sslrootcert={}",
        root.display()
    ));
    assert!(
        e.contains("not valid for name") && e.contains("127.0.0.1"),
        "{e}"
    );
    // require with a root given checks the chain, as libpq's does.
    let e = refused(&format!(
        "{by_ip}?sslmode=require&sslrootcert={}",
        wrong_root.display()
    ));
    assert!(e.contains("UnknownIssuer"), "{e}");
    // disable against a server that requires TLS: the server's refusal, named.
    let e = refused(&format!("{by_ip}?sslmode=disable"));
    assert!(e.contains("no encryption"), "{e}");
    assert!(e.contains("sslmode=disable"), "{e}");
    // verify-full without a root (and none in libpq's default place): refused before
    // connecting, saying what to give.
    let default_root = std::env::var_os("HOME")
        .map(|h| Path::new(&h).join(".postgresql/root.crt").exists())
        .unwrap_or(false);
    if !default_root {
        let e = refused(&format!("{by_name}?sslmode=verify-full"));
        assert!(e.contains("sslrootcert=FILE"), "{e}");
    }
}
