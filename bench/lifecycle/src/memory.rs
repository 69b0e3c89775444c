//! Phase 4 of the lifecycle benchmark: the server's peak memory with many packs stored.

use super::*;

/// Phase 4: peak RSS with many packs stored, under a GET load; workers off, then on
/// (their records absent, so every check fails and is rescheduled).
pub(super) async fn memory_phase(
    args: &Args,
    bin: &Path,
    work: &Path,
    dns: &Arc<DnsServer>,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let data = work.join("stored");
    let store = Store::open_sqlite(&data)?;
    let config = Config::new(&data);
    let now = SystemClock.now();
    let zone_count = args.stored_packs.div_ceil(PACKS_PER_STORED_ZONE);
    eprintln!(
        "== storing {} packs in {zone_count} zones (directly in the database)",
        args.stored_packs
    );
    let t = Instant::now();
    let mut zones = Vec::with_capacity(zone_count);
    let mut left = args.stored_packs;
    for i in 0..zone_count {
        let apex = format!("m{i:05}.bench.test");
        let zone = admin::create_zone(&store, &apex, None, true, now).await?;
        let hosts = vec![
            Hostname::parse(&apex)?,
            Hostname::parse(&format!("*.{apex}"))?,
        ];
        for _ in 0..left.min(PACKS_PER_STORED_ZONE) {
            let pack = Pack::order(
                zone.id.clone(),
                hosts.clone(),
                DcvMethod::Txt,
                90,
                CaChoice::LetsEncrypt,
                false,
                &config.dcv_suffix(&zone.id),
                now,
            );
            store
                .insert_pack(&pack, PACKS_PER_STORED_ZONE as u64)
                .await?;
        }
        left = left.saturating_sub(PACKS_PER_STORED_ZONE);
        zones.push(zone.id.to_string());
    }
    let token = admin::create_token(
        &store,
        "bench",
        &["SSL and Certificates Read".into()],
        &[],
        now,
    )
    .await?
    .secret;
    drop(store);
    eprintln!("== stored in {:.1} s", t.elapsed().as_secs_f64());
    let zones = Arc::new(zones);
    let db_mb = std::fs::metadata(data.join("zonecert.db"))
        .map(|m| m.len() as f64 / 1e6)
        .unwrap_or_default();

    for lifecycle in [false, true] {
        let mut flags = vec![
            "--lifecycle".to_owned(),
            lifecycle.to_string(),
            "--dcv-resolvers".into(),
            dns.addr().to_string(),
            "--check-concurrency".into(),
            args.check_concurrency.to_string(),
        ];
        flags.extend(args.server_flags.split_whitespace().map(str::to_owned));
        let srv = Server::start(&Launch {
            bin: bin.to_owned(),
            cpu: args.server_cpu.clone(),
            data_dir: data.clone(),
            flags,
            log: work.join(format!("server-stored-{lifecycle}.log")),
        })
        .await?;
        let queries_before = dns.query_count();
        eprintln!(
            "== {} packs stored, workers {}: GET load {} s",
            args.stored_packs,
            if lifecycle { "on" } else { "off" },
            args.stored_secs
        );
        let load = sampler::sample_for(
            &srv.api,
            &token,
            zones.clone(),
            args.stored_rate,
            Duration::from_secs(args.stored_secs),
        )
        .await?;
        let rss = srv.peak_rss_kib()?;
        let queries = dns.query_count() - queries_before;
        srv.stop().await?;
        let label = if lifecycle {
            "peak RSS, packs stored, workers on (records absent)"
        } else {
            "peak RSS, packs stored, workers off"
        };
        rows.push(row(
            label,
            format!(
                "{:.1} MB ({} packs, db {db_mb:.0} MB)",
                mb(rss),
                args.stored_packs
            ),
            "<= 200 MB",
            Some(mb(rss) <= MAX_STORED_RSS_MB),
        ));
        rows.push(latency_row(
            "  GET verification meanwhile (100 packs a zone)",
            &load,
        ));
        if lifecycle {
            rows.push(row(
                "  DNS queries answered meanwhile (failing checks)",
                format!(
                    "{queries} ({:.0}/s)",
                    queries as f64 / args.stored_secs as f64
                ),
                "",
                None,
            ));
        }
    }
    Ok(())
}
