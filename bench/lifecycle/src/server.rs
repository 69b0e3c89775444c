//! The measured `zonecert serve`, run as a child process pinned to its own CPU so its
//! memory and CPU time are its own.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How to start a server.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The `zonecert` binary.
    pub bin: PathBuf,
    /// `taskset -c` list for the server.
    pub cpu: String,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Flags after `serve --listen 127.0.0.1:0 --data-dir DIR --rate-limit off`.
    pub flags: Vec<String>,
    /// Where its stderr (logs) goes.
    pub log: PathBuf,
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    child: Child,
    pid: u32,
    /// `http://127.0.0.1:PORT/client/v4`
    pub api: String,
}

impl Server {
    /// Starts the server and waits for its `listening on` line.
    pub async fn start(launch: &Launch) -> anyhow::Result<Server> {
        let log = std::fs::File::create(&launch.log)
            .with_context(|| format!("creating {}", launch.log.display()))?;
        // In the normal class whatever this process's thread runs at (the ACME benchmark
        // runs its stand-ins in the idle class, and a child inherits its parent's class).
        let mut cmd = Command::new("chrt");
        cmd.args(["--other", "0", "taskset", "-c"])
            .arg(&launch.cpu)
            .arg(&launch.bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&launch.data_dir)
            .args(["--rate-limit", "off"])
            .args(&launch.flags)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .context("starting chrt taskset zonecert serve")?;
        let pid = child.id().context("the server exited at once")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let found = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    return Ok::<_, std::io::Error>(Some(addr.trim().to_owned()));
                }
            }
            Ok(None)
        })
        .await;
        let addr = match found {
            Ok(Ok(Some(addr))) => addr,
            _ => bail!(
                "the server did not start; its log:\n{}",
                std::fs::read_to_string(&launch.log).unwrap_or_default()
            ),
        };
        // Keep reading stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Server {
            child,
            pid,
            api: format!("{addr}/client/v4"),
        })
    }

    /// Peak resident memory so far (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> anyhow::Result<u64> {
        status_field(self.pid, "VmHWM:")
    }

    /// The server's CPU time so far (user + system).
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))?;
        // Fields after the command name (which may hold spaces) start after the last ')'.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after ')'.
        let ticks = |i: usize| -> anyhow::Result<u64> {
            Ok(fields.get(i).context("short /proc stat")?.parse()?)
        };
        let total = ticks(11)? + ticks(12)?;
        Ok(Duration::from_secs_f64(
            total as f64 / clock_ticks()? as f64,
        ))
    }

    /// SIGTERM, then waits for a clean exit.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await?;
        if !status.success() {
            bail!("kill -TERM {} failed", self.pid);
        }
        match tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await {
            Ok(status) => {
                let status = status?;
                if !status.success() {
                    bail!("the server exited with {status}");
                }
                Ok(())
            }
            Err(_) => {
                self.child.kill().await?;
                bail!("the server did not stop within 60 s of SIGTERM")
            }
        }
    }
}

fn status_field(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("empty status field")?
        .parse()?)
}

fn clock_ticks() -> anyhow::Result<u64> {
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

/// The `zonecert` binary next to this one (both built with `--release`).
pub fn sibling_binary() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let dir = me.parent().unwrap_or(Path::new("."));
    Ok(dir.join("zonecert"))
}
