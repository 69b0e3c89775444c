//! Pebble, Let's Encrypt's test ACME CA (Debian's `pebble` package, 2.4), run as a real
//! process on loopback for the ACME tests: its TLS certificate is made here (rcgen: a
//! test root and a `localhost`/`127.0.0.1` certificate under it, since the package ships
//! none), its DNS lookups go to the given server (the testkit's [`DnsServer`](crate::DnsServer)),
//! and its http-01 validations connect to the given port (a [`HttpOrigin`](crate::HttpOrigin)).
//! The process is killed when the [`Pebble`] is dropped.
//!
//! With the `server` feature, the rest of what the ACME tests need of it: zonecert
//! configured for it as `lets_encrypt` ([`Pebble::configure`] for an in-process server,
//! [`Pebble::serve_args`] for `zonecert serve`, [`Pebble::acme_settings`] for the issuer
//! alone) and its management API ([`Pebble::issuing_root`], [`Pebble::cert_status`]).

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
use tokio::process::{Child, Command};

/// How to start Pebble.
#[derive(Debug, Clone, Default)]
pub struct PebbleOptions {
    /// Where Pebble's validator resolves names (`-dnsserver`).
    pub dns: Option<SocketAddr>,
    /// The port its http-01 validations connect to (`httpPort`).
    pub http_port: Option<u16>,
    /// `externalAccountBindingRequired` with these key ids and base64url HMAC keys.
    pub eab_keys: Vec<(String, String)>,
    /// `PEBBLE_WFE_NONCEREJECT`: the percentage of good nonces refused (badNonce).
    pub nonce_reject_percent: u8,
    /// Fixed ports (directory, management) instead of free ones: a restarted Pebble must
    /// answer where the first one did.
    pub ports: Option<(u16, u16)>,
    /// Started under `nice -n N` (0: as this process): a benchmark's Pebble stands in for
    /// a CA on other machines, and at the server's priority its bursts take the CPU the
    /// server's requests wake up on.
    pub nice: i8,
    /// Started in the idle scheduling class (`chrt --idle 0`): it runs only on CPU time
    /// no other thread wants, and a thread that wakes up takes the CPU from it at once.
    /// For a benchmark whose server must not share the CPU with the CA it stands in for.
    pub idle_class: bool,
}

/// A running Pebble.
#[derive(Debug)]
pub struct Pebble {
    child: Option<Child>,
    dir: PathBuf,
    options: PebbleOptions,
    /// `https://127.0.0.1:PORT/dir`.
    pub directory: String,
    /// `https://127.0.0.1:PORT` of the management API (`/roots/0`).
    pub management: String,
    /// The directory's and the management API's ports.
    pub ports: (u16, u16),
    /// The PEM file of the root that signed Pebble's own TLS certificate (what an ACME
    /// client must trust to talk to it; not the root of the certificates it issues).
    pub tls_root: PathBuf,
    /// The same root, PEM text.
    pub tls_root_pem: String,
    /// Where Pebble's output goes.
    pub log: PathBuf,
}

/// A free loopback port (bound then released: the caller binds it again at once).
pub fn free_port() -> u16 {
    match try_free_port() {
        Ok(port) => port,
        Err(e) => panic!("no free loopback port: {e}"),
    }
}

fn try_free_port() -> std::io::Result<u16> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
}

impl Pebble {
    /// Starts Pebble in a new folder under `parent`, its validator resolving through
    /// `dns` (what most tests want). Panics when it cannot.
    pub async fn for_dns(parent: &Path, dns: &crate::DnsServer) -> Pebble {
        Pebble::start(
            parent,
            PebbleOptions {
                dns: Some(dns.addr()),
                ..Default::default()
            },
        )
        .await
    }

    /// Whether the `pebble` program is installed.
    pub fn installed() -> bool {
        std::process::Command::new("pebble")
            .arg("-h")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    }

    /// Starts Pebble in a new folder under `parent` and waits until its directory
    /// accepts connections. Panics (it is for tests) when it cannot.
    pub async fn start(parent: &Path, options: PebbleOptions) -> Pebble {
        // Its ports are free ports bound and released: another test's listener may take
        // one before Pebble binds it (Pebble then exits). New ports, then, twice more.
        let attempts = if options.ports.is_some() { 1 } else { 3 };
        let mut failed = Vec::new();
        for _ in 0..attempts {
            match Pebble::try_start(parent, options.clone()).await {
                Ok(pebble) => return pebble,
                Err(e) => failed.push(e),
            }
        }
        panic!("{}", failed.join("\n---\n"))
    }

    /// [`Pebble::start`] that says why it could not start instead of panicking
    /// (`zonecert dev pebble`).
    pub async fn try_start(parent: &Path, options: PebbleOptions) -> Result<Pebble, String> {
        let port = || try_free_port().map_err(|e| format!("no free loopback port: {e}"));
        let dir = parent.join(format!("pebble-{}", port()?));
        let write = |path: PathBuf, text: &str| {
            std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))
        };
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let (root_pem, cert_pem, key_pem) =
            tls_material().map_err(|e| format!("making Pebble's TLS certificate: {e}"))?;
        let tls_root = dir.join("tls-root.pem");
        write(tls_root.clone(), &root_pem)?;
        write(dir.join("cert.pem"), &cert_pem)?;
        write(dir.join("key.pem"), &key_pem)?;
        let (listen, management) = match options.ports {
            Some(ports) => ports,
            None => (port()?, port()?),
        };
        let eab: Vec<String> = options
            .eab_keys
            .iter()
            .map(|(kid, key)| format!("{kid:?}: {key:?}"))
            .collect();
        let config = format!(
            r#"{{"pebble":{{"listenAddress":"127.0.0.1:{listen}","managementListenAddress":"127.0.0.1:{management}","certificate":"{cert}","privateKey":"{key}","httpPort":{http},"tlsPort":{tls},"ocspResponderURL":"","externalAccountBindingRequired":{eab_required},"externalAccountMACKeys":{{{eab}}}}}}}"#,
            cert = dir.join("cert.pem").display(),
            key = dir.join("key.pem").display(),
            http = options.http_port.unwrap_or(5002),
            tls = port()?,
            eab_required = !options.eab_keys.is_empty(),
            eab = eab.join(","),
        );
        write(dir.join("pebble.json"), &config)?;
        let log = dir.join("pebble.log");
        let child = spawn(&dir, &log, &options)?;
        let mut pebble = Pebble {
            child: Some(child),
            dir,
            options,
            directory: format!("https://127.0.0.1:{listen}/dir"),
            management: format!("https://127.0.0.1:{management}"),
            ports: (listen, management),
            tls_root,
            tls_root_pem: root_pem,
            log,
        };
        pebble.wait_listening().await?;
        Ok(pebble)
    }

    async fn wait_listening(&mut self) -> Result<(), String> {
        // Readiness, not timing: Pebble generates its CA keys first, then listens.
        for _ in 0..600 {
            // Exited (a port taken, say): said at once, not after the 30 s.
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!(
                    "pebble exited ({status}) before listening; its log: {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                ));
            }
            let a = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, self.ports.0)).await;
            let b = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, self.ports.1)).await;
            if a.is_ok() && b.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!(
            "pebble did not listen within 30 s; its log: {}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        ))
    }

    /// Stops the process (as a CA that went away), keeping its folder and ports for
    /// [`Pebble::resume`].
    pub async fn pause(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts the process again on the same ports, certificate and configuration. Pebble
    /// keeps nothing between runs: accounts, orders and its issuing root are new.
    pub async fn resume(&mut self) {
        self.pause().await;
        match spawn(&self.dir, &self.log, &self.options) {
            Ok(child) => self.child = Some(child),
            Err(e) => panic!("{e}"),
        }
        if let Err(e) = self.wait_listening().await {
            panic!("{e}");
        }
    }

    /// The running Pebble's process id (its threads are under `/proc/PID/task`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref()?.id()
    }

    /// Pebble's TLS certificate and key (PEM files), for a server standing in front of
    /// it under the same name.
    pub fn tls_files(&self) -> (PathBuf, PathBuf) {
        (self.dir.join("cert.pem"), self.dir.join("key.pem"))
    }

    /// Pebble's output so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops Pebble and waits for it to exit.
    pub async fn stop(mut self) {
        self.pause().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `pebble` on the configuration in `dir`, its output appended to `log`.
fn spawn(dir: &Path, log: &Path, options: &PebbleOptions) -> Result<Child, String> {
    let opened = |e: std::io::Error| format!("opening {}: {e}", log.display());
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(opened)?;
    let err = out.try_clone().map_err(opened)?;
    // `chrt` and `nice` exec what follows: the child's pid stays Pebble's, and every
    // thread the Go runtime starts inherits the class and the value.
    let mut program: Vec<String> = Vec::new();
    if options.idle_class {
        program.extend(["chrt", "--idle", "0"].map(String::from));
    }
    if options.nice != 0 {
        program.extend(["nice".into(), "-n".into(), options.nice.to_string()]);
    }
    program.push("pebble".into());
    let mut command = Command::new(&program[0]);
    command.args(&program[1..]);
    command
        .arg("-config")
        .arg(dir.join("pebble.json"))
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env(
            "PEBBLE_WFE_NONCEREJECT",
            options.nonce_reject_percent.to_string(),
        )
        // Every order gets its own authorizations, so each test sees its own challenges.
        .env("PEBBLE_AUTHZREUSE", "0")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true);
    if let Some(dns) = options.dns {
        command.arg("-dnsserver").arg(dns.to_string());
    }
    command
        .spawn()
        .map_err(|e| format!("starting pebble: {e} (Debian: apt-get install pebble)"))
}

/// A test root and a certificate for `localhost` and `127.0.0.1` under it, PEM:
/// (root, certificate, key).
fn tls_material() -> Result<(String, String, String), rcgen::Error> {
    let root_key = KeyPair::generate()?;
    let mut root = CertificateParams::new(Vec::<String>::new())?;
    root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root.distinguished_name
        .push(rcgen::DnType::CommonName, "zonecert test root for pebble");
    let root_cert = root.self_signed(&root_key)?;
    let issuer = rcgen::Issuer::new(root, root_key);
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec!["localhost".to_owned()])?;
    params
        .subject_alt_names
        .push(SanType::IpAddress(Ipv4Addr::LOCALHOST.into()));
    let cert = params.signed_by(&key, &issuer)?;
    Ok((root_cert.pem(), cert.pem(), key.serialize_pem()))
}

/// The certificate-authority name the tests give Pebble's directory.
#[cfg(feature = "server")]
const CA: zonecert_server::model::CaChoice = zonecert_server::model::CaChoice::LetsEncrypt;

#[cfg(feature = "server")]
impl Pebble {
    /// The issuer's settings for this Pebble as `lets_encrypt` (its TLS root trusted, a
    /// contact, CAA `letsencrypt.org`), for tests of `AcmeIssuer` alone.
    pub fn acme_settings(&self) -> zonecert_server::config::AcmeCaSettings {
        zonecert_server::config::AcmeCaSettings {
            ca: CA,
            directory: self.directory.clone(),
            contact: Some("ops@example.org".into()),
            eab: None,
            root_pem: Some(self.tls_root.clone()),
            profiles: Default::default(),
            caa_domains: vec!["letsencrypt.org".into()],
        }
    }

    /// Configures an in-process server to order `lets_encrypt` packs from this Pebble
    /// (`--acme` and `--acme-root`).
    pub fn configure(&self, config: &mut zonecert_server::config::Config) {
        use zonecert_server::config::Named;
        config.acme.directories = vec![Named {
            ca: CA,
            value: self.directory.clone(),
        }];
        config.acme.roots = vec![Named {
            ca: CA,
            value: self.tls_root.display().to_string(),
        }];
    }

    /// The same for `zonecert serve`: its `--acme` and `--acme-root` flags.
    pub fn serve_args(&self) -> Vec<String> {
        self.serve_args_via(&self.directory)
    }

    /// [`Pebble::serve_args`] with another directory URL in front of Pebble (an
    /// [`crate::ari_front::AriFront`]'s, which shows Pebble's TLS certificate).
    pub fn serve_args_via(&self, directory: &str) -> Vec<String> {
        vec![
            "--acme".into(),
            format!("lets_encrypt={directory}"),
            "--acme-root".into(),
            format!("lets_encrypt={}", self.tls_root.display()),
        ]
    }

    /// A client of the management API (Pebble's TLS root trusted).
    fn management_client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.tls_root_pem.as_bytes())
                    .expect("Pebble's TLS root"),
            )
            .build()
            .expect("an HTTP client")
    }

    /// The root Pebble issues under (management API `/roots/0`), PEM. Pebble makes a new
    /// one at each start.
    pub async fn issuing_root(&self) -> String {
        let rsp = self
            .management_client()
            .get(format!("{}/roots/0", self.management))
            .send()
            .await
            .expect("Pebble's management API answers");
        assert!(rsp.status().is_success(), "/roots/0: {}", rsp.status());
        rsp.text().await.expect("the root")
    }

    /// What Pebble says of the certificate of serial `serial_hex` (management API
    /// `/cert-status-by-serial/`): `Status` (`Valid`, `Revoked`), `Reason`, `Certificate`.
    pub async fn cert_status(&self, serial_hex: &str) -> serde_json::Value {
        let serial = serial_hex.trim_start_matches('0').to_ascii_lowercase();
        let rsp = self
            .management_client()
            .get(format!(
                "{}/cert-status-by-serial/{serial}",
                self.management
            ))
            .send()
            .await
            .expect("Pebble's management API answers");
        assert!(
            rsp.status().is_success(),
            "cert-status {serial}: {}",
            rsp.status()
        );
        rsp.json().await.expect("a JSON answer")
    }
}
