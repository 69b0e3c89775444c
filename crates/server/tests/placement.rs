//! The library places no thread: CPU placement and priorities are the binary's policy
//! (`zonecert serve` installs `zonecert_server::sched`), so a program that embeds the
//! server keeps its own. A file of its own: the test reads its process's threads.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use zonecert_server::App;
use zonecert_server::clock::SystemClock;
use zonecert_server::config::{Config, LifecycleCpus};

/// The CPUs a thread may run on, from `/proc/self/task/TID/status`.
fn allowed_cpus(task: &std::path::Path) -> String {
    let status = std::fs::read_to_string(task.join("status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|v| v.trim().to_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_server_leaves_its_threads_where_they_are() {
    let ours = allowed_cpus(std::path::Path::new("/proc/thread-self"));
    let cpus = zonecert_server::sched::process_cpus().unwrap();
    if cpus.len() < 2 {
        eprintln!("one CPU ({ours}): nothing to keep apart");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path());
    config.lifecycle = true;
    // Nothing is checked (no pack), and nothing would leave the loopback.
    config.dcv_resolvers = vec!["127.0.0.1:9".parse().unwrap()];
    config.lifecycle_cpus = LifecycleCpus::List(vec![*cpus.last().unwrap()]);
    let app = App::open(config, Arc::new(SystemClock)).await.unwrap();
    let lifecycle = app.start_lifecycle().unwrap();
    let threads: Vec<(String, String)> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(Result::ok)
        .map(|t| {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            (comm.trim().to_owned(), allowed_cpus(&t.path()))
        })
        .collect();
    lifecycle.stop().await.unwrap();
    assert!(
        threads
            .iter()
            .any(|(name, _)| name.starts_with("zonecert-l")),
        "the lifecycle's threads run: {threads:?}"
    );
    for (name, allowed) in &threads {
        assert_eq!(allowed, &ours, "thread {name} was moved: {threads:?}");
    }
}
