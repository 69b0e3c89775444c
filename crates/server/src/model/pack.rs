//! Certificate packs, their hosts, DCV records and the lifecycle's states.

use super::ids::{Hostname, PackId, ZoneId};
use super::schedule;
use base64::Engine;
use rand::RngCore;

/// The lifecycle of a pack: the subset of Cloudflare's 21 pack statuses that zonecert
/// enters. The verification view's seven words are derived from it (`wire` module).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PackState {
    /// Order accepted; tokens are being obtained from the CA (ACME issuers).
    Initializing,
    /// DCV records published; waiting until every host validates.
    PendingValidation,
    /// Every host validated; CAA checked; the CA is signing.
    PendingIssuance,
    /// Issued; being written where it is served.
    PendingDeployment,
    /// Deployed.
    Active,
    /// `not_after` passed with no renewed certificate.
    Expired,
    /// Initialisation ran out of time.
    InitializingTimedOut,
    /// The DCV tokens expired before every host validated.
    ValidationTimedOut,
    /// The CA did not sign in time.
    IssuanceTimedOut,
    /// Deployment did not finish in time.
    DeploymentTimedOut,
}

impl PackState {
    /// Every state, for exhaustive tests and parsing.
    pub const ALL: [PackState; 10] = [
        PackState::Initializing,
        PackState::PendingValidation,
        PackState::PendingIssuance,
        PackState::PendingDeployment,
        PackState::Active,
        PackState::Expired,
        PackState::InitializingTimedOut,
        PackState::ValidationTimedOut,
        PackState::IssuanceTimedOut,
        PackState::DeploymentTimedOut,
    ];

    /// Cloudflare's name for the state (also the stored form).
    pub fn as_str(self) -> &'static str {
        match self {
            PackState::Initializing => "initializing",
            PackState::PendingValidation => "pending_validation",
            PackState::PendingIssuance => "pending_issuance",
            PackState::PendingDeployment => "pending_deployment",
            PackState::Active => "active",
            PackState::Expired => "expired",
            PackState::InitializingTimedOut => "initializing_timed_out",
            PackState::ValidationTimedOut => "validation_timed_out",
            PackState::IssuanceTimedOut => "issuance_timed_out",
            PackState::DeploymentTimedOut => "deployment_timed_out",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether a stage ran out of time (the verification view's `timing_out`).
    pub fn is_timed_out(self) -> bool {
        matches!(
            self,
            PackState::InitializingTimedOut
                | PackState::ValidationTimedOut
                | PackState::IssuanceTimedOut
                | PackState::DeploymentTimedOut
        )
    }
}

/// How a pack's hosts prove domain control.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DcvMethod {
    /// TXT record at `_acme-challenge.<host>`.
    Txt,
    /// File under `http://<host>/.well-known/acme-challenge/`.
    Http,
    /// `_acme-challenge.<host>` delegated by CNAME to the service.
    Cname,
    /// E-mail to the domain's administrative addresses.
    Email,
}

impl DcvMethod {
    /// The wire and stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            DcvMethod::Txt => "txt",
            DcvMethod::Http => "http",
            DcvMethod::Cname => "cname",
            DcvMethod::Email => "email",
        }
    }

    /// Parses the wire and stored name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            DcvMethod::Txt,
            DcvMethod::Http,
            DcvMethod::Cname,
            DcvMethod::Email,
        ]
        .into_iter()
        .find(|m| m.as_str() == s)
    }
}

/// The certificate authority a pack was ordered from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CaChoice {
    /// Google Trust Services.
    Google,
    /// Let's Encrypt.
    LetsEncrypt,
    /// SSL.com.
    SslCom,
}

impl CaChoice {
    /// The wire and stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            CaChoice::Google => "google",
            CaChoice::LetsEncrypt => "lets_encrypt",
            CaChoice::SslCom => "ssl_com",
        }
    }

    /// Parses the wire and stored name.
    pub fn parse(s: &str) -> Option<Self> {
        [CaChoice::Google, CaChoice::LetsEncrypt, CaChoice::SslCom]
            .into_iter()
            .find(|c| c.as_str() == s)
    }

    /// How long the CA's DCV tokens live: after that the pack times out.
    pub fn token_lifetime_secs(self) -> i64 {
        match self {
            CaChoice::LetsEncrypt => 7 * 86_400,
            CaChoice::Google | CaChoice::SslCom => 14 * 86_400,
        }
    }

    /// The identity CAA records name to allow this CA (RFC 8659).
    pub fn caa_identity(self) -> &'static str {
        match self {
            CaChoice::Google => "pki.goog",
            CaChoice::LetsEncrypt => "letsencrypt.org",
            CaChoice::SslCom => "ssl.com",
        }
    }

    /// The validity periods the CA sells, in days.
    pub fn allowed_validity_days(self) -> &'static [u32] {
        match self {
            CaChoice::LetsEncrypt => &[90],
            CaChoice::Google | CaChoice::SslCom => &[14, 30, 90, 365],
        }
    }
}

/// What must exist for one host to validate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DcvRecord {
    /// A TXT record `name` holding `value`.
    Txt {
        /// `_acme-challenge.<host>`.
        name: String,
        /// The token.
        value: String,
    },
    /// `url` must answer 200 with `body`.
    Http {
        /// `http://<host>/.well-known/acme-challenge/<token>`.
        url: String,
        /// The expected body.
        body: String,
    },
    /// A CNAME `name` pointing at `target`, where the service publishes the token.
    Cname {
        /// `_acme-challenge.<host>`.
        name: String,
        /// `<host>.<zone-dcv-id>.dcv.<service-domain>`.
        target: String,
    },
    /// Addresses that receive the validation e-mail.
    Email {
        /// `admin@`, `administrator@`, `hostmaster@`, `postmaster@`, `webmaster@` the base domain.
        emails: Vec<String>,
    },
}

impl DcvRecord {
    /// Mints a fresh record of `method` for `host`.
    ///
    /// `dcv_target_suffix` is `<zone-dcv-id>.dcv.<service-domain>`, where delegated
    /// (cname) validations point.
    pub fn mint(method: DcvMethod, host: &Hostname, dcv_target_suffix: &str) -> Self {
        let base = host.base();
        match method {
            DcvMethod::Txt => DcvRecord::Txt {
                name: format!("_acme-challenge.{base}"),
                value: fresh_token(),
            },
            DcvMethod::Http => {
                let token = fresh_token();
                DcvRecord::Http {
                    url: format!("http://{base}/.well-known/acme-challenge/{token}"),
                    body: format!("{token}.{}", fresh_token()),
                }
            }
            DcvMethod::Cname => DcvRecord::Cname {
                name: format!("_acme-challenge.{base}"),
                target: format!("{base}.{dcv_target_suffix}"),
            },
            DcvMethod::Email => DcvRecord::Email {
                emails: [
                    "admin",
                    "administrator",
                    "hostmaster",
                    "postmaster",
                    "webmaster",
                ]
                .iter()
                .map(|local| format!("{local}@{base}"))
                .collect(),
            },
        }
    }

    /// The method this record belongs to.
    pub fn method(&self) -> DcvMethod {
        match self {
            DcvRecord::Txt { .. } => DcvMethod::Txt,
            DcvRecord::Http { .. } => DcvMethod::Http,
            DcvRecord::Cname { .. } => DcvMethod::Cname,
            DcvRecord::Email { .. } => DcvMethod::Email,
        }
    }
}

/// A fresh 43-character base64url token (256 random bits), the shape of an ACME
/// DNS-01 TXT value.
pub fn fresh_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The outcome of the checks of one host so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCheck {
    /// `None` until a check has run; then whether the last one found the record.
    pub verified: Option<bool>,
    /// Unix seconds of the last check.
    pub last_checked_at: Option<i64>,
    /// Why the last check failed (empty reason when it passed).
    pub reason: Option<String>,
    /// Checks run so far; the schedule's `n`.
    pub attempts: u32,
    /// Unix seconds when the next check is due.
    pub next_due_at: i64,
}

impl HostCheck {
    /// A host that has never been checked, due at `now`.
    pub fn fresh(now: i64) -> Self {
        HostCheck {
            verified: None,
            last_checked_at: None,
            reason: None,
            attempts: 0,
            next_due_at: now,
        }
    }

    /// When the check after `attempts` checks is due, after one ran at `at`.
    pub fn next_due_after(attempts: u32, at: i64) -> i64 {
        at + schedule::wait_before_next_check(attempts)
    }
}

/// One host of a pack with its record and check state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackHost {
    /// The host as ordered.
    pub hostname: Hostname,
    /// The record that proves control of it.
    pub record: DcvRecord,
    /// The checks so far.
    pub check: HostCheck,
}

/// An issued certificate of a pack (the private key is never part of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    /// The certificate's id (its serial number, hex).
    pub id: String,
    /// Leaf followed by the chain, PEM.
    pub chain_pem: String,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// The issuer's name.
    pub issuer: String,
    /// `ECDSAWithSHA256` or `SHA256WithRSA`, read from the certificate.
    pub signature: String,
    /// Unix seconds when it was issued.
    pub issued_at: i64,
    /// When its CA suggests renewing it (ACME Renewal Information, RFC 9773: a time
    /// picked in the CA's suggested window), Unix seconds; `None` while the CA has said
    /// nothing, when the renewal window of the certificate's validity applies.
    pub renew_at: Option<i64>,
    /// The ACME directory whose account ordered it (the account that may revoke it, see
    /// `store/revocations.rs`); `None` for the built-in CA's certificates. `Some("")` for
    /// an ACME certificate recorded before schema 9 (SQLite) / 8 (PostgreSQL), whose
    /// directory was not kept.
    pub acme_directory: Option<String>,
}

/// A certificate pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pack {
    /// The pack's id.
    pub id: PackId,
    /// The zone it belongs to.
    pub zone_id: ZoneId,
    /// Where it is in its lifecycle.
    pub state: PackState,
    /// The method the hosts validate with.
    pub method: DcvMethod,
    /// Ordered validity.
    pub validity_days: u32,
    /// Ordered CA.
    pub ca: CaChoice,
    /// Whether a Cloudflare-branded common name was asked for.
    pub cloudflare_branding: bool,
    /// Held for manual review (brand check).
    pub brand_check: bool,
    /// The hosts, in order.
    pub hosts: Vec<PackHost>,
    /// Pack-level errors (CAA, issuance), newest last.
    pub errors: Vec<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
    /// Unix seconds after which the pack's current stage times out: validation (the CA's
    /// token lifetime from the order or restart), then issuance and deployment together
    /// (`Config::issuance_timeout` from validation, or from a renewal's issuance).
    pub stage_deadline: i64,
    /// The issued certificate, once there is one.
    pub certificate: Option<IssuedCertificate>,
    /// The order placed with the pack's CA (`Issuer::begin`'s opaque reference), kept so
    /// that any server resumes the same order; `None` for the built-in CA and before
    /// `begin`.
    pub order_ref: Option<String>,
    /// Optimistic-concurrency version: bumped by every save.
    pub version: i64,
}

impl Pack {
    /// A freshly ordered pack: records minted, every host due now.
    #[allow(clippy::too_many_arguments)]
    pub fn order(
        zone_id: ZoneId,
        hosts: Vec<Hostname>,
        method: DcvMethod,
        validity_days: u32,
        ca: CaChoice,
        cloudflare_branding: bool,
        dcv_target_suffix: &str,
        now: i64,
    ) -> Self {
        let hosts = hosts
            .into_iter()
            .map(|hostname| PackHost {
                record: DcvRecord::mint(method, &hostname, dcv_target_suffix),
                hostname,
                check: HostCheck::fresh(now),
            })
            .collect();
        Pack {
            id: PackId::generate(),
            zone_id,
            state: PackState::PendingValidation,
            method,
            validity_days,
            ca,
            cloudflare_branding,
            brand_check: false,
            hosts,
            errors: Vec::new(),
            created_at: now,
            updated_at: now,
            stage_deadline: now + ca.token_lifetime_secs(),
            certificate: None,
            order_ref: None,
            version: 0,
        }
    }

    /// Makes a pack wait for its CA's order (ACME): `initializing`, no order yet, due
    /// now. Its records until then are placeholders the verification view does not show.
    pub fn await_order(&mut self) {
        self.state = PackState::Initializing;
        self.order_ref = None;
    }

    /// Switches every host to fresh records of `method`, due now. The attempt counters
    /// stay: a method change is not a restart.
    pub fn switch_method(&mut self, method: DcvMethod, dcv_target_suffix: &str, now: i64) {
        self.method = method;
        for host in &mut self.hosts {
            host.record = DcvRecord::mint(method, &host.hostname, dcv_target_suffix);
            host.check.verified = None;
            host.check.reason = None;
            host.check.next_due_at = now;
        }
        self.updated_at = now;
    }

    /// Restarts a timed-out pack: fresh tokens, fresh counters, a new deadline.
    pub fn restart_validation(&mut self, dcv_target_suffix: &str, now: i64) {
        self.state = PackState::PendingValidation;
        for host in &mut self.hosts {
            host.record = DcvRecord::mint(self.method, &host.hostname, dcv_target_suffix);
            host.check = HostCheck::fresh(now);
        }
        self.errors.clear();
        self.stage_deadline = now + self.ca.token_lifetime_secs();
        self.updated_at = now;
    }

    /// When renewal of the current certificate starts: when its CA suggested (ACME
    /// Renewal Information, [`IssuedCertificate::renew_at`]), else 30 days before expiry
    /// for 90- and 365-day certificates, 7 days for 30-day ones, 3 days for 14-day ones.
    pub fn renewal_starts_at(&self) -> Option<i64> {
        let cert = self.certificate.as_ref()?;
        if let Some(at) = cert.renew_at {
            // Never past the point where renewal gives up (a day before expiry).
            return Some(at.min(cert.not_after - 2 * 86_400));
        }
        let window_days = match self.validity_days {
            0..=14 => 3,
            15..=30 => 7,
            _ => 30,
        };
        Some(cert.not_after - window_days * 86_400)
    }

    /// After this, renewal is no longer retried (24 hours before expiry): the
    /// certificate is left to expire.
    pub fn renewal_gives_up_at(&self) -> Option<i64> {
        Some(self.certificate.as_ref()?.not_after - 86_400)
    }

    /// The hosts `retry=true` may make due now: not validated, not due already, and not
    /// checked at or after `checked_since` (the second an earlier retry asked for the
    /// pack's checks, while its coalescing window lasts: a check that recent answered a
    /// retry already and would only be repeated). A check the lifecycle ran on its own
    /// (the order's first one, say, before the client published its record) does not
    /// count: `None` makes every such host recheckable.
    fn recheckable(
        &self,
        now: i64,
        checked_since: Option<i64>,
    ) -> impl Iterator<Item = usize> + '_ {
        self.hosts.iter().enumerate().filter_map(move |(i, h)| {
            let c = &h.check;
            let recent =
                checked_since.is_some_and(|since| c.last_checked_at.is_some_and(|at| at >= since));
            (c.verified != Some(true) && c.next_due_at > now && !recent).then_some(i)
        })
    }

    /// How many hosts [`Pack::recheck_some`] would make due.
    pub fn recheckable_count(&self, now: i64, checked_since: Option<i64>) -> usize {
        self.recheckable(now, checked_since).count()
    }

    /// `retry=true`: makes up to `budget` of the [recheckable](Pack::recheckable_count)
    /// hosts due now, without touching the attempt counters; returns how many.
    pub fn recheck_some(&mut self, now: i64, checked_since: Option<i64>, budget: usize) -> usize {
        let chosen: Vec<usize> = self.recheckable(now, checked_since).take(budget).collect();
        for &i in &chosen {
            if let Some(h) = self.hosts.get_mut(i) {
                h.check.next_due_at = now;
            }
        }
        chosen.len()
    }

    /// Whether every host validated.
    pub fn all_verified(&self) -> bool {
        self.hosts.iter().all(|h| h.check.verified == Some(true))
    }

    /// Whether the pack waits for CAA only: pending validation with every host validated.
    pub fn awaits_caa(&self) -> bool {
        self.state == PackState::PendingValidation && self.all_verified()
    }

    /// Makes every host due at `at`.
    pub fn due_at(&mut self, at: i64) {
        for h in &mut self.hosts {
            h.check.next_due_at = at;
        }
    }

    /// Makes every not-yet-validated host due now (PATCH with the same method), without
    /// touching the attempt counters.
    pub fn recheck_now(&mut self, now: i64) {
        for host in &mut self.hosts {
            if host.check.verified != Some(true) {
                host.check.next_due_at = now;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(method: DcvMethod) -> Pack {
        let zone = ZoneId::parse("023e105f4ecef8ad9ca31a8372d0c353").unwrap();
        let hosts = vec![
            Hostname::parse("example.com").unwrap(),
            Hostname::parse("*.example.com").unwrap(),
        ];
        Pack::order(
            zone,
            hosts,
            method,
            90,
            CaChoice::LetsEncrypt,
            false,
            "x.dcv.test",
            1000,
        )
    }

    #[test]
    fn an_order_mints_records_and_is_due_now() {
        let p = pack(DcvMethod::Txt);
        assert_eq!(p.state, PackState::PendingValidation);
        assert_eq!(p.stage_deadline, 1000 + 7 * 86_400);
        for h in &p.hosts {
            let DcvRecord::Txt { name, value } = &h.record else {
                panic!("not txt")
            };
            assert_eq!(name, "_acme-challenge.example.com");
            assert_eq!(value.len(), 43);
            assert_eq!(h.check.next_due_at, 1000);
            assert_eq!(h.check.verified, None);
        }
        assert_ne!(
            p.hosts[0].record, p.hosts[1].record,
            "tokens are fresh per host"
        );
    }

    #[test]
    fn cname_targets_are_under_the_delegation_suffix() {
        let p = pack(DcvMethod::Cname);
        let DcvRecord::Cname { name, target } = &p.hosts[1].record else {
            panic!()
        };
        assert_eq!(name, "_acme-challenge.example.com");
        assert_eq!(target, "example.com.x.dcv.test");
    }

    #[test]
    fn restart_mints_new_tokens_and_resets_counters() {
        let mut p = pack(DcvMethod::Txt);
        p.hosts[0].check.attempts = 7;
        p.state = PackState::ValidationTimedOut;
        let old = p.hosts[0].record.clone();
        p.restart_validation("x.dcv.test", 5000);
        assert_eq!(p.state, PackState::PendingValidation);
        assert_ne!(p.hosts[0].record, old);
        assert_eq!(p.hosts[0].check.attempts, 0);
        assert_eq!(p.stage_deadline, 5000 + 7 * 86_400);
    }

    #[test]
    fn switching_method_keeps_attempts() {
        let mut p = pack(DcvMethod::Txt);
        p.hosts[0].check.attempts = 3;
        p.switch_method(DcvMethod::Http, "x.dcv.test", 2000);
        assert_eq!(p.hosts[0].record.method(), DcvMethod::Http);
        assert_eq!(p.hosts[0].check.attempts, 3);
        assert_eq!(p.hosts[0].check.next_due_at, 2000);
    }

    #[test]
    fn renewal_windows_follow_the_validity() {
        let mut p = pack(DcvMethod::Txt);
        assert_eq!(p.renewal_starts_at(), None);
        p.certificate = Some(IssuedCertificate {
            id: "01".into(),
            chain_pem: String::new(),
            not_before: 0,
            not_after: 100 * 86_400,
            issuer: String::new(),
            signature: String::new(),
            issued_at: 0,
            renew_at: None,
            acme_directory: None,
        });
        for (validity, days) in [(14, 3), (30, 7), (90, 30), (365, 30)] {
            p.validity_days = validity;
            assert_eq!(p.renewal_starts_at(), Some((100 - days) * 86_400));
        }
        // The CA's advice (ARI) wins, earlier or later, but never past two days before
        // expiry (renewal gives up one day before).
        for (advised, starts) in [(10, 10), (95, 95), (99, 98)] {
            if let Some(cert) = p.certificate.as_mut() {
                cert.renew_at = Some(advised * 86_400);
            }
            assert_eq!(p.renewal_starts_at(), Some(starts * 86_400));
        }
        assert_eq!(p.renewal_gives_up_at(), Some(99 * 86_400));
    }

    #[test]
    fn states_round_trip_through_their_names() {
        for s in PackState::ALL {
            assert_eq!(PackState::parse(s.as_str()), Some(s));
        }
    }
}
