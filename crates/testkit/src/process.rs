//! [`ServeCommand`]: the built `zonecert serve` binary as a child process on
//! 127.0.0.1:0, for the tests that need what only a process has (signals, `kill -9`,
//! stdout and stderr, file descriptor limits, the flags and `ZONECERT_*` variables as a
//! user gives them). The test passes the binary's path (`env!("CARGO_BIN_EXE_zonecert")`).
//!
//! The child's environment holds no `ZONECERT_*` variable of the test's own environment,
//! only those the test sets, so a developer's shell cannot change what a test sees.
//!
//! A [`ServeProcess`] is the one way the tests stop and start it again: `kill_9` (SIGKILL,
//! reaped), `restart` / `restart_with` (the same command on the same data directory, after
//! a `kill -9`), and `api` (a request to its API with its dev token, the JSON answer).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;

/// How `zonecert serve` is started: `[PREFIX..] BIN serve --listen 127.0.0.1:0
/// --data-dir DIR [--dev] [--dcv-resolvers ADDR] ARGS..`. Nothing else is added: a test
/// that wants rate limits off says `--rate-limit off`.
#[derive(Debug)]
pub struct ServeCommand {
    program: PathBuf,
    prefix: Vec<OsString>,
    data_dir: Option<PathBuf>,
    dev: bool,
    resolvers: Vec<SocketAddr>,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    stderr: Option<File>,
    stderr_log: Option<PathBuf>,
    keep_stdout: bool,
}

impl ServeCommand {
    /// `program serve ...`, `program` being the built binary.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        ServeCommand {
            program: program.into(),
            prefix: Vec::new(),
            data_dir: None,
            dev: false,
            resolvers: Vec::new(),
            args: Vec::new(),
            env: Vec::new(),
            stderr: None,
            stderr_log: None,
            keep_stdout: false,
        }
    }

    /// The lifecycle tests' server: `program serve --dev` on `data_dir`, DCV through
    /// `resolvers`, rate limits off, a 1 s poll interval, info logs appended to `log`.
    pub fn dev_lifecycle(
        program: impl Into<PathBuf>,
        data_dir: impl Into<PathBuf>,
        resolvers: impl IntoIterator<Item = SocketAddr>,
        log: impl Into<PathBuf>,
    ) -> Self {
        ServeCommand::new(program)
            .dev()
            .data_dir(data_dir)
            .resolvers(resolvers)
            .args(["--rate-limit", "off", "--poll-interval", "1s"])
            .env("ZONECERT_LOG", "info")
            .stderr_log(log)
    }

    /// Runs the binary under another program (`["prlimit", "--nofile=64"]`): the first
    /// word is run with the rest, then the binary and its arguments.
    pub fn prefix<S: AsRef<OsStr>>(mut self, words: impl IntoIterator<Item = S>) -> Self {
        self.prefix = words.into_iter().map(|w| w.as_ref().to_owned()).collect();
        self
    }

    /// Serves this data directory (kept) instead of a temporary one removed with the
    /// process.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// `--dev` (also when given among [`Self::args`]): the server prints its base URL and
    /// dev token, which [`Self::spawn`] reads.
    pub fn dev(mut self) -> Self {
        self.dev = true;
        self
    }

    /// `--dcv-resolvers`: where the DCV checks ask DNS (the testkit's DNS server).
    pub fn resolvers(mut self, resolvers: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.resolvers = resolvers.into_iter().collect();
        self
    }

    /// More arguments after the builder's.
    pub fn args<S: AsRef<OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// An environment variable of the child.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// The child's stderr goes to this file (default: discarded).
    pub fn stderr(mut self, file: File) -> Self {
        self.stderr = Some(file);
        self
    }

    /// The child's stderr is appended to the file at `path`, which is shown if the server
    /// exits before it serves.
    pub fn stderr_log(mut self, path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let file = File::options()
            .create(true)
            .append(true)
            .open(&path)
            .expect("the log file opens");
        self.stderr = Some(file);
        self.stderr_log = Some(path);
        self
    }

    /// Keeps the child's stdout past the ready lines for the test to read
    /// ([`ServeProcess::stdout`]); by default a thread drains it so the child never
    /// blocks on a full pipe.
    pub fn keep_stdout(mut self) -> Self {
        self.keep_stdout = true;
        self
    }

    /// The command as configured with `dir` as its data directory, stdin closed, for a
    /// test that runs it itself (one that expects `serve` to fail, say).
    pub fn command_in(&self, dir: &Path) -> Command {
        let (program, before): (&OsStr, &[OsString]) = match self.prefix.split_first() {
            Some((first, rest)) => (first, rest),
            None => (self.program.as_os_str(), &[]),
        };
        let mut cmd = Command::new(program);
        cmd.args(before);
        if !self.prefix.is_empty() {
            cmd.arg(&self.program);
        }
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir);
        if self.dev {
            cmd.arg("--dev");
        }
        if !self.resolvers.is_empty() {
            let list: Vec<String> = self.resolvers.iter().map(ToString::to_string).collect();
            cmd.arg("--dcv-resolvers").arg(list.join(","));
        }
        cmd.args(&self.args);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ZONECERT_") {
                cmd.env_remove(key);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        cmd
    }

    /// The same command again (its stderr file shared), for a restart.
    fn again(&self) -> ServeCommand {
        ServeCommand {
            program: self.program.clone(),
            prefix: self.prefix.clone(),
            data_dir: self.data_dir.clone(),
            dev: self.dev,
            resolvers: self.resolvers.clone(),
            args: self.args.clone(),
            env: self.env.clone(),
            stderr: self
                .stderr
                .as_ref()
                .map(|f| f.try_clone().expect("the stderr file is shared")),
            stderr_log: self.stderr_log.clone(),
            keep_stdout: self.keep_stdout,
        }
    }

    /// Starts the server and reads its stdout until it serves: the `listening on` line,
    /// and with `--dev` the `export CLOUDFLARE_BASE_URL=.. CLOUDFLARE_API_TOKEN=..` line.
    /// Panics if it exits first (with its stderr when it goes to a file the test can read).
    pub fn spawn(self) -> ServeProcess {
        let (dir, data_dir) = match &self.data_dir {
            Some(path) => (None, path.clone()),
            None => {
                let dir = tempfile::tempdir().expect("a temporary data directory");
                let path = dir.path().to_owned();
                (Some(dir), path)
            }
        };
        let dev = self.dev || self.args.iter().any(|a| a == "--dev");
        let mut again = self.again();
        again.data_dir = Some(data_dir.clone());
        let mut cmd = self.command_in(&data_dir);
        cmd.stdout(Stdio::piped());
        match self.stderr {
            Some(file) => cmd.stderr(file),
            None => cmd.stderr(Stdio::null()),
        };
        let mut child = cmd.spawn().expect("zonecert serve starts");
        let mut stdout = BufReader::new(child.stdout.take().expect("a piped stdout"));
        let mut child = Killed(child);
        let mut addr: Option<SocketAddr> = None;
        let mut dev_env: Option<(String, String)> = None;
        loop {
            let mut line = String::new();
            let n = stdout.read_line(&mut line).unwrap_or(0);
            assert!(
                n > 0,
                "zonecert serve exited before it served (status {:?}){}",
                child.0.try_wait().ok().flatten(),
                self.stderr_log
                    .as_ref()
                    .map(|log| format!(":\n{}", std::fs::read_to_string(log).unwrap_or_default()))
                    .unwrap_or_default()
            );
            let line = line.trim_end();
            if let Some(rest) = line.strip_prefix("listening on http://") {
                addr = Some(rest.parse().expect("a socket address after `listening on`"));
            }
            if let Some(rest) = line.strip_prefix("export CLOUDFLARE_BASE_URL=") {
                let (url, token) = rest
                    .split_once(" CLOUDFLARE_API_TOKEN=")
                    .expect("the token after the base URL");
                dev_env = Some((url.to_owned(), token.to_owned()));
            }
            if addr.is_some() && (!dev || dev_env.is_some()) {
                break;
            }
        }
        let addr = addr.expect("the address was read");
        let stdout = if self.keep_stdout {
            Some(stdout)
        } else {
            std::thread::spawn(move || for _ in stdout.lines() {});
            None
        };
        let (base_url, token) = match dev_env {
            Some((url, token)) => (url, Some(token)),
            None => (format!("http://{addr}/client/v4"), None),
        };
        ServeProcess {
            child,
            addr,
            base_url,
            token,
            stdout,
            data_dir,
            command: again,
            http: reqwest::Client::new(),
            _dir: dir,
        }
    }
}

/// Kills the child when dropped, however the test ends.
#[derive(Debug)]
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `zonecert serve`; SIGKILLed and reaped when dropped.
#[derive(Debug)]
pub struct ServeProcess {
    child: Killed,
    addr: SocketAddr,
    base_url: String,
    token: Option<String>,
    stdout: Option<BufReader<ChildStdout>>,
    data_dir: PathBuf,
    /// How it was started, on its data directory: for [`ServeProcess::restart`].
    command: ServeCommand,
    http: reqwest::Client,
    _dir: Option<tempfile::TempDir>,
}

impl ServeProcess {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL (`http://ADDR/client/v4`; with `--dev`, the one it printed).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The dev token it printed. Panics without `--dev`.
    pub fn token(&self) -> &str {
        self.token
            .as_deref()
            .expect("the server was started with --dev")
    }

    /// The dev token, if it printed one.
    pub fn dev_token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The rest of its stdout. Panics without [`ServeCommand::keep_stdout`].
    pub fn stdout(&mut self) -> &mut BufReader<ChildStdout> {
        self.stdout.as_mut().expect("spawned with keep_stdout")
    }

    /// The child, to signal or wait for.
    pub fn child(&mut self) -> &mut Child {
        &mut self.child.0
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.child.0.id()
    }

    /// `kill -9`: SIGKILL, then reaped (nothing when it was reaped already).
    pub fn kill_9(&mut self) {
        if matches!(self.child.0.try_wait(), Ok(Some(_))) {
            return;
        }
        self.child.0.kill().expect("SIGKILL");
        self.child.0.wait().expect("reaped");
    }

    /// `kill -9`, then the same command again on the same data directory (a temporary
    /// one is kept); returns once the new process serves.
    pub fn restart(self) -> ServeProcess {
        self.restart_with(|command| command)
    }

    /// [`ServeProcess::restart`] with the command changed first (another stderr log,
    /// more arguments).
    pub fn restart_with(
        mut self,
        change: impl FnOnce(ServeCommand) -> ServeCommand,
    ) -> ServeProcess {
        self.kill_9();
        let command = change(self.command.again());
        let mut next = command.spawn();
        next._dir = self._dir.take();
        next
    }

    /// `METHOD <base URL><path>` with its dev token (if it printed one) and `body` as
    /// JSON: the answer's status and JSON body (`null` when it is not JSON).
    pub async fn api(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base_url));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.expect("the server answers");
        let status = response.status().as_u16();
        let text = response.text().await.expect("an answer body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    }

    /// The id of the zone named `name` (the dev seed's `example.com`, say). Panics when
    /// there is none.
    pub async fn zone_id(&self, name: &str) -> String {
        let (_, zones) = self.api("GET", &format!("/zones?name={name}"), None).await;
        zones["result"][0]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no zone {name}: {zones}"))
            .to_owned()
    }

    /// Orders an advanced pack of `hosts` in `zone`, validated by txt, for 90 days from
    /// `ca`; returns its id. Panics when the order is refused.
    pub async fn order_txt(&self, zone: &str, hosts: &[&str], ca: &str) -> String {
        let body = serde_json::json!({"type": "advanced", "hosts": hosts,
            "validation_method": "txt", "validity_days": 90, "certificate_authority": ca});
        let (_, ordered) = self
            .api(
                "POST",
                &format!("/zones/{zone}/ssl/certificate_packs/order"),
                Some(&body),
            )
            .await;
        ordered["result"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("the order was refused: {ordered}"))
            .to_owned()
    }

    /// `GET .../certificate_packs/{pack}` of `zone`: the whole answer (`result`, or the
    /// errors).
    pub async fn pack(&self, zone: &str, pack: &str) -> serde_json::Value {
        self.api(
            "GET",
            &format!("/zones/{zone}/ssl/certificate_packs/{pack}"),
            None,
        )
        .await
        .1
    }

    /// The TXT value the verification view shows for `pack` (an ACME pack's: once the
    /// worker placed the order), waited for up to 60 s.
    pub async fn txt_value(&self, zone: &str, pack: &str) -> String {
        let started = std::time::Instant::now();
        loop {
            let (_, view) = self
                .api("GET", &format!("/zones/{zone}/ssl/verification"), None)
                .await;
            let found = view["result"].as_array().and_then(|items| {
                items
                    .iter()
                    .find(|i| i["cert_pack_uuid"] == pack)
                    .and_then(|i| i["verification_info"]["txt_value"].as_str())
                    .map(str::to_owned)
            });
            if let Some(value) = found {
                return value;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(60),
                "no TXT value for {pack}: {view}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// Reads a child's stdout (piped) on a thread, line by line, so the test can wait for a
/// line with a deadline (`recv_timeout`) instead of blocking on the pipe.
pub fn line_reader(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("a piped stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}
