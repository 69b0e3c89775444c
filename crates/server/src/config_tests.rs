use super::*;

#[test]
fn rate_limits_parse() {
    assert_eq!(RateLimit::parse("off").unwrap(), None);
    assert_eq!(
        RateLimit::parse("1200/300").unwrap(),
        Some(RateLimit::CLOUDFLARE)
    );
    assert_eq!(
        RateLimit::parse("1200").unwrap(),
        Some(RateLimit::CLOUDFLARE)
    );
    assert!(RateLimit::parse("x/1").is_err());
    assert!(RateLimit::parse("5/0").is_err());
}

/// Writes `text` to a TOML file and parses `args` with it as the defaults.
fn with_file(text: &str, args: &[&str]) -> Result<(Config, Vec<String>), String> {
    let dir = std::env::temp_dir().join(format!(
        "zonecert-config-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("zonecert.toml");
    std::fs::write(&path, text).unwrap();
    let command = Config::augment_args(Command::new("zonecert")).mut_args(|a| a.env(None::<&str>));
    let outcome = with_file_defaults(command, &path);
    std::fs::remove_dir_all(&dir).unwrap();
    let (command, keys) = outcome?;
    let argv = std::iter::once("zonecert").chain(args.iter().copied());
    let matches = command
        .try_get_matches_from(argv)
        .map_err(|e| e.to_string())?;
    Ok((
        Config::from_arg_matches(&matches).map_err(|e| e.to_string())?,
        keys,
    ))
}

#[test]
fn the_defaults_are_the_declared_ones() {
    let c = Config::new("/tmp/x");
    assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
    assert_eq!(c.rate_limit, Some(RateLimit::CLOUDFLARE));
    assert_eq!(c.quota_advanced, 100);
    assert_eq!(c.verification_form, VerificationForm::PerHost);
    assert_eq!(c.service_domain, "zonecert.localhost");
    assert!(!c.lifecycle, "embedded servers start without workers");
    assert!(c.dcv_resolvers.is_empty());
    assert_eq!(c.dcv_http_port, 80);
    assert_eq!(c.check_concurrency, 64);
    assert_eq!(c.poll_interval, Duration::from_secs(10));
    assert_eq!(c.lease, Duration::from_secs(120));
    assert_eq!(c.issuance_timeout, Duration::from_secs(86_400));
    assert_eq!(c.deploy_hook, None);
    assert_eq!(c.key_type, KeyType::EcdsaP256);
    assert!(c.brand_keywords.is_empty());
    assert_eq!(c.lifecycle_cpus, LifecycleCpus::Auto);
    assert_eq!(c.request_cpus, RequestCpus::All);
    assert_eq!(c.max_body_bytes, 1024 * 1024);
}

#[test]
fn config_files_take_the_flags_names_and_refuse_unknown_keys() {
    let (c, keys) = with_file(
        "quota_advanced = 5\nrate_limit = \"off\"\nlease = \"3s\"\nissuance_timeout = 60\n\
         poll_interval = \"2m\"\ndcv_resolvers = \"127.0.0.1:53, [::1]:5353\"\n\
         brand_keywords = [\"paypal\", \"bank\"]\ndeploy_hook = [\"/bin/echo\", \"done\"]\n\
         dev = true\nlifecycle = false\n",
        &[],
    )
    .unwrap();
    assert_eq!(c.quota_advanced, 5);
    assert_eq!(c.rate_limit, None);
    assert_eq!(c.lease, Duration::from_secs(3));
    assert_eq!(c.issuance_timeout, Duration::from_secs(60), "bare seconds");
    assert_eq!(c.poll_interval, Duration::from_secs(120));
    assert_eq!(c.dcv_resolvers.len(), 2, "a comma string");
    assert_eq!(c.brand_keywords, ["paypal", "bank"], "an array");
    assert_eq!(c.deploy_hook, Some(vec!["/bin/echo".into(), "done".into()]));
    assert!(c.dev);
    assert!(!c.lifecycle);
    assert_eq!(keys.len(), 10);
    // A flag beats the file.
    let (c, _) = with_file("quota_advanced = 5\n", &["--quota-advanced", "9"]).unwrap();
    assert_eq!(c.quota_advanced, 9);
    // Old spellings and typos are refused with the key named.
    for bad in [
        "lease_secs = 3",
        "quota = 5",
        "config = \"x.toml\"",
        "help = true",
    ] {
        let e = with_file(bad, &[]).unwrap_err();
        assert!(e.contains("unknown key"), "{bad}: {e}");
    }
    // Values are checked as a flag's would be.
    let e = with_file("poll_interval = \"soon\"", &[]).unwrap_err();
    assert!(e.contains("soon"), "{e}");
    assert!(with_file("dcv_http_port = 0", &[]).is_err());
    assert!(with_file("check_concurrency = 0", &[]).is_err());
}

#[test]
fn the_readme_example_file_parses() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let (_, after) = readme.split_once("```toml\n").unwrap();
    let (example, _) = after.split_once("```").unwrap();
    // `listen` belongs to `serve`, not to the server's settings.
    let example: String = example
        .lines()
        .filter(|l| !l.starts_with("listen"))
        .map(|l| format!("{l}\n"))
        .collect();
    let (c, _) = with_file(&example, &[]).unwrap();
    assert_eq!(c.rate_limit, None);
    assert_eq!(c.lease, Duration::from_secs(120));
    assert_eq!(c.dcv_resolvers.len(), 2);
    assert_eq!(c.brand_keywords, ["paypal", "bank"]);
    assert_eq!(c.deploy_hook.map(|h| h.len()), Some(3));
}

#[test]
fn acme_settings_come_from_flags_and_tables() {
    let (c, _) = with_file(
        "[acme.lets_encrypt]\ndirectory = \"https://127.0.0.1:14000/dir\"\n\
         contact = \"ops@example.org\"\nprofiles = { 90 = \"tlsserver\" }\n\
         [acme.google]\ndirectory = \"https://dv.acme-v02.api.pki.goog/directory\"\n\
         eab_key_id = \"kid-1\"\neab_hmac_key = \"aGVsbG8\"\ncaa_domains = [\"pki.goog\", \"google.com\"]\n",
        &["--acme-root", "lets_encrypt=/tmp/pebble.pem"],
    )
    .unwrap();
    let cas = c.acme.cas().unwrap();
    assert_eq!(cas.len(), 2);
    let le = cas.iter().find(|c| c.ca == CaChoice::LetsEncrypt).unwrap();
    assert_eq!(le.directory, "https://127.0.0.1:14000/dir");
    assert_eq!(le.contact.as_deref(), Some("ops@example.org"));
    assert_eq!(le.profiles.get(&90).map(String::as_str), Some("tlsserver"));
    assert_eq!(le.root_pem, Some(PathBuf::from("/tmp/pebble.pem")));
    assert_eq!(
        le.caa_domains,
        ["letsencrypt.org"],
        "the default issuer domain"
    );
    let g = cas.iter().find(|c| c.ca == CaChoice::Google).unwrap();
    let eab = g.eab.as_ref().unwrap();
    assert_eq!(
        (eab.key_id.as_str(), eab.hmac_key.as_slice()),
        ("kid-1", &b"hello"[..])
    );
    assert_eq!(g.caa_domains, ["pki.goog", "google.com"]);
    assert!(
        !format!("{eab:?}").contains("hello"),
        "the HMAC key is not shown"
    );
    // No directory: the built-in CA, nothing configured.
    assert!(Config::new("/tmp/x").acme.cas().unwrap().is_empty());
    // An option for a name without a directory is refused, not ignored.
    let (c, _) = with_file("", &["--acme-contact", "google=a@b.c"]).unwrap();
    let e = c.acme.cas().unwrap_err();
    assert!(e.contains("no ACME directory"), "{e}");
    // Unknown names and keys are refused.
    assert!(with_file("", &["--acme", "digicert=https://x/d"]).is_err());
    let e = with_file(
        "[acme.google]\ndirectory = \"https://x/d\"\ncontacts = \"a\"\n",
        &[],
    )
    .unwrap_err();
    assert!(e.contains("acme.google.contacts"), "{e}");
    let (c, _) = with_file(
        "",
        &["--acme", "google=https://x/d", "--acme-eab", "google=k:!!"],
    )
    .unwrap();
    assert!(c.acme.cas().unwrap_err().contains("base64url"));
    // A profile for a validity the name never orders would never be used: refused
    // (`lets_encrypt` packs are 90 days; google's may be 14).
    let le = |profile: &str| {
        let args = [
            "--acme",
            "lets_encrypt=https://x/d",
            "--acme-profile",
            profile,
        ];
        with_file("", &args).unwrap().0.acme.cas()
    };
    let e = le("lets_encrypt=6:shortlived").unwrap_err();
    assert!(
        e.contains("ordered for 90 days") && e.contains("never be used"),
        "{e}"
    );
    assert!(le("lets_encrypt=90:shortlived").is_ok());
    let (c, _) = with_file(
        "",
        &[
            "--acme",
            "google=https://x/d",
            "--acme-profile",
            "google=14:shortlived",
        ],
    )
    .unwrap();
    assert!(c.acme.cas().is_ok());
}

#[test]
fn durations_take_human_forms() {
    assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
    assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
    assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
    assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
    assert!(parse_duration("0s").is_err());
    assert!(parse_duration("ten").is_err());
}

#[test]
fn lifecycle_settings_parse() {
    assert!(parse_resolver(" [::1]:53").is_ok());
    assert!(parse_resolver("127.0.0.1").is_err());
    assert_eq!(parse_key_type("rsa-2048").unwrap(), KeyType::Rsa2048);
    assert!(parse_key_type("dsa").is_err());
    let mut c = Config::new("/tmp/x");
    c.brand_keywords = vec!["PayPal".into()];
    assert_eq!(
        c.brand_keyword(["www.paypal-login.example"]),
        Some("PayPal")
    );
    assert_eq!(c.brand_keyword(["example.com"]), None);
    assert_eq!(c.deploy_dir(), PathBuf::from("/tmp/x/certs"));
}

#[test]
fn the_dns_responder_is_off_unless_an_address_is_given() {
    let (c, _) = with_file("", &[]).unwrap();
    assert_eq!(c.dns_listen, None);
    let (c, _) = with_file("dns_listen = \"127.0.0.1:5353\"\n", &[]).unwrap();
    assert_eq!(c.dns_listen, Some("127.0.0.1:5353".parse().unwrap()));
    let (c, _) = with_file("", &["--dns-listen", "[::1]:53"]).unwrap();
    assert_eq!(c.dns_listen, Some("[::1]:53".parse().unwrap()));
    let e = with_file("", &["--dns-listen", "localhost"]).unwrap_err();
    assert!(e.contains("expected ADDRESS:PORT"), "{e}");
}
