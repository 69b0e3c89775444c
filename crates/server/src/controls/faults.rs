//! Injected faults: failures the lifecycle meets instead of a real outcome, per host or
//! per zone, for the next N attempts or until cleared.

use crate::model::{DcvRecord, ZoneId};
use std::collections::HashMap;

/// What an injected fault makes fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// A DCV check finds no record (NXDOMAIN).
    Nxdomain,
    /// A DCV check finds a record with another value.
    WrongValue,
    /// A DCV check's DNS lookup answers SERVFAIL.
    Servfail,
    /// A DCV check times out.
    Timeout,
    /// An HTTP DCV check gets a 404.
    Http404,
    /// CAA forbids the pack's CA.
    Caa,
    /// The CA refuses to sign (an ACME problem once an ACME issuer exists; the built-in
    /// CA's refusal today).
    Ca,
    /// The deploy hook fails.
    DeployHook,
}

impl FaultKind {
    /// Every kind, in the order they are documented.
    pub const ALL: [FaultKind; 8] = [
        FaultKind::Nxdomain,
        FaultKind::WrongValue,
        FaultKind::Servfail,
        FaultKind::Timeout,
        FaultKind::Http404,
        FaultKind::Caa,
        FaultKind::Ca,
        FaultKind::DeployHook,
    ];

    /// The API's word.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Nxdomain => "nxdomain",
            FaultKind::WrongValue => "wrong_value",
            FaultKind::Servfail => "servfail",
            FaultKind::Timeout => "timeout",
            FaultKind::Http404 => "http_404",
            FaultKind::Caa => "caa",
            FaultKind::Ca => "ca",
            FaultKind::DeployHook => "deploy_hook",
        }
    }

    /// Parses the API's word.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether it strikes DCV checks (counted per host) rather than a pack's later
    /// steps (counted per pack).
    pub fn is_dcv(self) -> bool {
        matches!(
            self,
            FaultKind::Nxdomain
                | FaultKind::WrongValue
                | FaultKind::Servfail
                | FaultKind::Timeout
                | FaultKind::Http404
        )
    }
}

/// Appended to every injected reason, so a person reading the view knows it came from
/// the test controls and not from their DNS.
pub const INJECTED: &str = "(injected fault)";

/// The default ACME problem type of an injected CA refusal.
pub const DEFAULT_PROBLEM: &str = "urn:ietf:params:acme:error:rejectedIdentifier";

/// One injected fault.
#[derive(Debug, Clone)]
pub struct Fault {
    /// Its id.
    pub id: u64,
    /// What fails.
    pub kind: FaultKind,
    /// Only this zone's packs.
    pub zone: Option<ZoneId>,
    /// Only this host (lower case).
    pub host: Option<String>,
    /// For the next N attempts of each host or pack; `None`: until cleared.
    pub attempts: Option<u32>,
    /// For `Ca`: the ACME problem type.
    pub problem_type: Option<String>,
    /// Replaces the default wording.
    pub detail: Option<String>,
    /// Strikes so far, per host (DCV) or pack (the others).
    struck: HashMap<String, u32>,
}

impl Fault {
    /// A fault of `kind` on every host of every zone, until cleared: narrow it with its
    /// fields before adding it.
    pub fn new(kind: FaultKind) -> Self {
        Fault {
            id: 0,
            kind,
            zone: None,
            host: None,
            attempts: None,
            problem_type: None,
            detail: None,
            struck: HashMap::new(),
        }
    }

    /// How many times it struck, across hosts or packs.
    pub fn struck_total(&self) -> u64 {
        self.struck.values().map(|n| u64::from(*n)).sum()
    }

    /// Whether it applies to `host` of `zone` (or to a pack of `zone` with these hosts).
    fn matches<'a>(&self, zone: &ZoneId, mut hosts: impl Iterator<Item = &'a str>) -> bool {
        self.zone.as_ref().is_none_or(|z| z == zone)
            && self
                .host
                .as_ref()
                .is_none_or(|h| hosts.any(|x| x.eq_ignore_ascii_case(h)))
    }

    /// Takes one strike for `subject` if any are left.
    fn strike(&mut self, subject: &str) -> bool {
        let used = self.struck.entry(subject.to_owned()).or_insert(0);
        if self.attempts.is_some_and(|n| *used >= n) {
            return false;
        }
        *used = used.saturating_add(1);
        true
    }

    /// The reason a DCV check records when this fault strikes `record` of `host`, worded
    /// as the real check words it (`dcv/`), marked as injected.
    pub fn dcv_reason(&self, host: &str, record: &DcvRecord) -> String {
        if let Some(detail) = &self.detail {
            return format!("{detail} {INJECTED}");
        }
        let url = match record {
            DcvRecord::Http { url, .. } => url.clone(),
            _ => format!("http://{host}/.well-known/acme-challenge/"),
        };
        let (rtype, name) = match record {
            DcvRecord::Txt { name, .. } => ("TXT", name.clone()),
            DcvRecord::Cname { name, .. } => ("CNAME", name.clone()),
            DcvRecord::Http { .. } => ("A or AAAA", host.to_owned()),
            DcvRecord::Email { .. } => ("MX", host.to_owned()),
        };
        let reason = match self.kind {
            FaultKind::Nxdomain => format!("no {rtype} record at {name} (NXDOMAIN)"),
            FaultKind::WrongValue => match record {
                DcvRecord::Http { url, .. } => {
                    format!("the body at {url} does not match (found \"wrong-value\")")
                }
                DcvRecord::Cname { name, target } => {
                    format!("CNAME {name} points to wrong-value.invalid, not {target}")
                }
                _ => {
                    format!("TXT {name} has 1 value, which does not match (found \"wrong-value\")")
                }
            },
            FaultKind::Servfail => format!("SERVFAIL looking up {rtype} for {name}"),
            FaultKind::Timeout => format!("timed out after 5s looking up {rtype} for {name}"),
            FaultKind::Http404 => format!("HTTP 404 from {url}"),
            // Not DCV kinds: never asked for a DCV reason.
            FaultKind::Caa | FaultKind::Ca | FaultKind::DeployHook => "injected".to_owned(),
        };
        format!("{reason} {INJECTED}")
    }

    /// The failure a pack's step records when this (CAA, CA or deploy-hook) fault strikes.
    pub fn step_reason(&self) -> String {
        match self.kind {
            FaultKind::Ca => {
                let problem = self.problem_type.as_deref().unwrap_or(DEFAULT_PROBLEM);
                let detail = self
                    .detail
                    .as_deref()
                    .unwrap_or("the CA refused to issue for these identifiers");
                format!("the CA refused the order: {problem}: {detail} {INJECTED}")
            }
            FaultKind::Caa => format!(
                "{} {INJECTED}",
                self.detail
                    .as_deref()
                    .unwrap_or("CAA record forbids issuance by this CA")
            ),
            _ => format!(
                "{} {INJECTED}",
                self.detail
                    .as_deref()
                    .unwrap_or("the deploy hook failed (exit status: 1)")
            ),
        }
    }
}

/// The injected faults of a server.
#[derive(Debug, Default)]
pub struct Faults {
    next_id: u64,
    list: Vec<Fault>,
}

impl Faults {
    /// Adds a fault, giving it an id.
    pub fn add(&mut self, mut fault: Fault) -> Fault {
        self.next_id += 1;
        fault.id = self.next_id;
        self.list.push(fault.clone());
        fault
    }

    /// Every fault, oldest first.
    pub fn list(&self) -> Vec<Fault> {
        self.list.clone()
    }

    /// Removes every fault; returns how many there were.
    pub fn clear(&mut self) -> usize {
        std::mem::take(&mut self.list).len()
    }

    /// Removes one fault; whether it existed.
    pub fn remove(&mut self, id: u64) -> bool {
        let before = self.list.len();
        self.list.retain(|f| f.id != id);
        self.list.len() != before
    }

    /// The first DCV fault for `host` of `zone` with strikes left, taking one.
    pub fn strike_dcv(&mut self, zone: &ZoneId, host: &str, record: &DcvRecord) -> Option<String> {
        let fault = self
            .list
            .iter_mut()
            .filter(|f| f.kind.is_dcv() && f.matches(zone, std::iter::once(host)))
            .find_map(|f| f.strike(host).then_some(f))?;
        Some(fault.dcv_reason(host, record))
    }

    /// The first `kind` fault for pack `pack` (of `zone`, with `hosts`) with strikes left,
    /// taking one; its [`Fault::step_reason`] is the failure.
    pub fn strike_step<'a>(
        &mut self,
        kind: FaultKind,
        zone: &ZoneId,
        pack: &str,
        hosts: impl Iterator<Item = &'a str> + Clone,
    ) -> Option<Fault> {
        self.list
            .iter_mut()
            .filter(|f| f.kind == kind && f.matches(zone, hosts.clone()))
            .find_map(|f| f.strike(pack).then_some(f))
            .map(|f| f.clone())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn zone() -> ZoneId {
        ZoneId::parse("023e105f4ecef8ad9ca31a8372d0c353").unwrap()
    }

    fn fault(kind: FaultKind, host: Option<&str>, attempts: Option<u32>) -> Fault {
        Fault {
            host: host.map(str::to_owned),
            attempts,
            ..Fault::new(kind)
        }
    }

    #[test]
    fn a_dcv_fault_strikes_each_host_its_number_of_attempts() {
        let mut faults = Faults::default();
        faults.add(fault(FaultKind::Servfail, None, Some(2)));
        let record = DcvRecord::Txt {
            name: "_acme-challenge.example.com".into(),
            value: "v".into(),
        };
        for _ in 0..2 {
            let reason = faults.strike_dcv(&zone(), "example.com", &record).unwrap();
            assert_eq!(
                reason,
                "SERVFAIL looking up TXT for _acme-challenge.example.com (injected fault)"
            );
        }
        assert_eq!(faults.strike_dcv(&zone(), "example.com", &record), None);
        // Another host has its own count.
        assert!(
            faults
                .strike_dcv(&zone(), "www.example.com", &record)
                .is_some()
        );
        assert_eq!(faults.list()[0].struck_total(), 3);
    }

    #[test]
    fn a_fault_strikes_only_its_host_and_zone() {
        let mut faults = Faults::default();
        faults.add(fault(FaultKind::Caa, Some("WWW.example.com"), None));
        let other = ZoneId::parse("123e105f4ecef8ad9ca31a8372d0c353").unwrap();
        let hosts = ["example.com", "www.example.com"];
        assert!(
            faults
                .strike_step(FaultKind::Caa, &other, "p", hosts.iter().copied())
                .is_some(),
            "a host fault strikes in any zone"
        );
        assert!(
            faults
                .strike_step(FaultKind::Caa, &zone(), "p", ["example.com"].into_iter())
                .is_none()
        );
        assert!(
            faults
                .strike_step(FaultKind::Ca, &zone(), "p", hosts.iter().copied())
                .is_none(),
            "another kind"
        );
        let mut zoned = fault(FaultKind::Ca, None, Some(1));
        zoned.zone = Some(zone());
        faults.add(zoned);
        assert!(
            faults
                .strike_step(FaultKind::Ca, &other, "p", hosts.iter().copied())
                .is_none()
        );
        let reason = faults
            .strike_step(FaultKind::Ca, &zone(), "p", hosts.iter().copied())
            .unwrap()
            .step_reason();
        assert!(reason.contains(DEFAULT_PROBLEM), "{reason}");
        assert_eq!(faults.clear(), 2);
    }
}
