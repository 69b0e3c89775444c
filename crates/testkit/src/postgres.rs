//! A throwaway PostgreSQL cluster for tests: `initdb` in a temporary folder, started on a
//! free loopback port with its socket in that folder, stopped (and the folder removed)
//! when dropped. PostgreSQL refuses to run as root, so as root the cluster runs as the
//! `postgres` user (through `runuser`), which Debian's package creates.
//!
//! The binaries are taken from `ZONECERT_PG_BINDIR`, else the folder `pg_ctl` is found in
//! on `PATH`, else the newest `/usr/lib/postgresql/*/bin` (Debian's layout).
//!
//! Nothing is skipped silently: [`PgCluster::for_test`] panics with the reason when a
//! cluster cannot start, unless `ZONECERT_SKIP_POSTGRES=1` asks to skip PostgreSQL.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// The role the clusters are created with (a superuser, trusted on loopback).
const ROLE: &str = "zc";

/// A running PostgreSQL cluster, stopped when dropped.
#[derive(Debug)]
pub struct PgCluster {
    dir: tempfile::TempDir,
    bindir: PathBuf,
    port: u16,
    /// Run the binaries as this user (`runuser -u`): set when the test runs as root.
    run_as: Option<&'static str>,
    databases: AtomicU32,
    /// Started with `ssl=on` and TCP connections refused without TLS ([`Self::start_tls`]).
    tls: bool,
}

impl PgCluster {
    /// A cluster for a test: `None` only when `ZONECERT_SKIP_POSTGRES=1` is set;
    /// otherwise a started cluster, or a panic that says why there is none.
    pub fn for_test() -> Option<PgCluster> {
        Self::for_test_with(None)
    }

    /// [`Self::for_test`] for a cluster started with [`Self::start_tls`].
    pub fn for_test_tls(cert_pem: &str, key_pem: &str) -> Option<PgCluster> {
        Self::for_test_with(Some((cert_pem, key_pem)))
    }

    fn for_test_with(tls: Option<(&str, &str)>) -> Option<PgCluster> {
        if std::env::var("ZONECERT_SKIP_POSTGRES").as_deref() == Ok("1") {
            eprintln!("ZONECERT_SKIP_POSTGRES=1: the PostgreSQL part of this test is skipped");
            return None;
        }
        match PgCluster::start_with(tls) {
            Ok(cluster) => Some(cluster),
            Err(e) => panic!(
                "cannot start a PostgreSQL cluster for the test: {e}\n(install PostgreSQL, \
                 e.g. `apt-get install postgresql-15`, which scripts/test.sh does as root; or \
                 set ZONECERT_SKIP_POSTGRES=1 to skip the PostgreSQL tests explicitly)"
            ),
        }
    }

    /// Creates and starts a cluster.
    pub fn start() -> Result<PgCluster, String> {
        Self::start_with(None)
    }

    /// Creates and starts a cluster that speaks TLS with the certificate and key given
    /// (PEM) and refuses TCP connections without it (`pg_hba.conf`: `hostssl` only; its
    /// socket stays open to the cluster's own tools).
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> Result<PgCluster, String> {
        Self::start_with(Some((cert_pem, key_pem)))
    }

    fn start_with(tls: Option<(&str, &str)>) -> Result<PgCluster, String> {
        let bindir = find_bindir()?;
        let run_as = running_as_root().then_some("postgres");
        let dir = tempfile::Builder::new()
            .prefix("zonecert-pg-")
            .tempdir()
            .map_err(|e| format!("creating a temporary folder: {e}"))?;
        if let Some(user) = run_as {
            run(Command::new("chown").arg(user).arg(dir.path()))?;
        }
        let mut cluster = PgCluster {
            dir,
            bindir,
            port: 0,
            run_as,
            databases: AtomicU32::new(0),
            tls: tls.is_some(),
        };
        let data = cluster.data_dir();
        run(cluster.command("initdb").arg("-D").arg(&data).args([
            "-A",
            "trust",
            "-U",
            ROLE,
            "--no-sync",
            "--no-locale",
            "-E",
            "UTF8",
        ]))?;
        if let Some((cert, key)) = tls {
            for (name, pem) in [("server.crt", cert), ("server.key", key)] {
                let path = data.join(name);
                std::fs::write(&path, pem).map_err(|e| format!("writing {name}: {e}"))?;
                // PostgreSQL refuses a key others can read.
                run(Command::new("chmod").arg("600").arg(&path))?;
                if let Some(user) = run_as {
                    run(Command::new("chown").arg(user).arg(&path))?;
                }
            }
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
            )
            .map_err(|e| format!("writing pg_hba.conf: {e}"))?;
        }
        // A free port: taken from the kernel, released, then given to PostgreSQL. Another
        // process may take it meanwhile: then try again with another.
        let mut last = String::new();
        for _ in 0..5 {
            cluster.port = free_port()?;
            match cluster.pg_ctl_start() {
                Ok(()) => return Ok(cluster),
                Err(e) => last = e,
            }
        }
        Err(format!("pg_ctl start failed: {last}"))
    }

    /// Starts the cluster again after [`Self::stop`], on the same port and with the same
    /// data (PostgreSQL recovers what was committed).
    pub fn start_again(&self) -> Result<(), String> {
        self.pg_ctl_start()
    }

    fn pg_ctl_start(&self) -> Result<(), String> {
        let mut options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        if self.tls {
            options.push_str(" -c ssl=on");
        }
        run(self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-o", &options, "-l"])
            .arg(self.dir.path().join("postgres.log"))
            .args(["-w", "-t", "60", "start"]))
        .map(drop)
        .map_err(|e| format!("{e}\n{}", self.log()))
    }

    /// The port the cluster listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A new, empty database, as a URL for `--database`.
    pub fn create_database(&self) -> Result<String, String> {
        let name = format!("zc{}", self.databases.fetch_add(1, Ordering::Relaxed));
        run(self
            .command("createdb")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", ROLE])
            .arg(&name))?;
        Ok(self.url(&name))
    }

    /// Runs SQL on the database at `url` with the cluster's `psql`; returns its output.
    pub fn psql(&self, url: &str, sql: &str) -> Result<String, String> {
        let out = run(self
            .command("psql")
            .args([url, "-v", "ON_ERROR_STOP=1", "-c", sql]))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs one query on the database at `url`; returns its rows, each row's columns
    /// joined by `|` (psql's unaligned output without headers).
    pub fn query(&self, url: &str, sql: &str) -> Result<Vec<String>, String> {
        let out =
            run(self
                .command("psql")
                .args([url, "-v", "ON_ERROR_STOP=1", "-A", "-t", "-c", sql]))?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect())
    }

    /// The URL of the database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://{ROLE}@127.0.0.1:{}/{name}", self.port)
    }

    /// Stops the cluster at once (as a crash would: `immediate`).
    pub fn stop(&self) -> Result<(), String> {
        run(self.command("pg_ctl").arg("-D").arg(self.data_dir()).args([
            "-m",
            "immediate",
            "-w",
            "stop",
        ]))
        .map(drop)
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, program: &str) -> Command {
        let program = self.bindir.join(program);
        match self.run_as {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(program);
                command
            }
            None => Command::new(program),
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // Whatever the test did, the server must not outlive it.
        let _ = self.stop();
    }
}

fn run(command: &mut Command) -> Result<Output, String> {
    let shown = format!("{command:?}");
    let out = command
        .output()
        .map_err(|e| format!("running {shown}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{shown} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out)
}

fn free_port() -> Result<u16, String> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| format!("finding a free port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("finding a free port: {e}"))
}

/// Whether this process runs as root (its real user id in `/proc/self/status`).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().next().map(|id| id == "0"))
        })
        .unwrap_or(false)
}

fn find_bindir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("ZONECERT_PG_BINDIR") {
        return Ok(PathBuf::from(dir));
    }
    let has_tools = |dir: &Path| dir.join("initdb").exists() && dir.join("pg_ctl").exists();
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if has_tools(&dir) {
                // Debian links the tools into PATH from their version's folder; the
                // folder itself holds `createdb` too.
                let real = std::fs::canonicalize(dir.join("pg_ctl"))
                    .ok()
                    .and_then(|p| p.parent().map(Path::to_owned))
                    .unwrap_or(dir);
                return Ok(real);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| "no PostgreSQL found: no initdb and pg_ctl on PATH, no /usr/lib/postgresql")?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            has_tools(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| "no PostgreSQL found in /usr/lib/postgresql/*/bin".into())
}
