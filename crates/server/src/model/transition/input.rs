//! What can happen to a pack: the inputs of [`super::transition`].

use crate::model::pack::{DcvMethod, DcvRecord, IssuedCertificate, PackState};

/// What a DCV check of one host found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckResult {
    /// The record is there.
    Passed,
    /// It is not, with a reason a person can act on.
    Failed(String),
    /// No machine can check it (e-mail validation): an operator approves it.
    AwaitingApproval,
    /// Passed without a lookup: the test controls' auto-validation.
    PassedAutomatically,
}

impl CheckResult {
    /// Whether the host counts as validated.
    pub fn passed(&self) -> bool {
        matches!(self, CheckResult::Passed | CheckResult::PassedAutomatically)
    }
}

/// One host's check result, tied to the record that was checked so it is never applied
/// to a record minted since (a method switch or a restart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostOutcome {
    /// The host's position in the pack.
    pub index: usize,
    /// The record that was checked.
    pub record: DcvRecord,
    /// What the check found.
    pub result: CheckResult,
}

/// What the CAA check of the pack's hosts found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaaCheck {
    /// Every host's CAA records allow the pack's CA.
    Allowed,
    /// A host's records forbid it: why, as shown on the pack.
    Refused(String),
    /// Not asked (the checks were incomplete, or the worker's lease may have run out).
    NotChecked,
}

/// Why the CA (or an injected fault) did not sign, typed so a caller can match it; the
/// text shown on the pack is made by [`IssueFailure::message`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssueFailure {
    /// The CA refused the order (ACME: an `urn:ietf:params:acme:error:*` problem type).
    Refused {
        /// The problem type (`rejectedIdentifier`, `caa`, `rateLimited`, ...; the built-in
        /// CA's own kinds are `invalidRequest` and `orderMismatch`).
        problem: String,
        /// The CA's explanation.
        detail: String,
        /// Unix seconds before which the CA asks not to be asked again (`Retry-After`).
        retry_after: Option<i64>,
    },
    /// The CA could not be reached or failed on its side: worth retrying.
    Unavailable {
        /// What went wrong.
        detail: String,
        /// Unix seconds before which the CA asks not to be asked again (`Retry-After`).
        retry_after: Option<i64>,
    },
    /// zonecert's side failed (the request could not be built, the CA's keys).
    Local(String),
    /// A fault injected by the test controls.
    Injected(String),
}

impl IssueFailure {
    /// The reason as shown on the pack.
    pub fn message(&self) -> String {
        match self {
            IssueFailure::Refused { detail, .. }
            | IssueFailure::Unavailable { detail, .. }
            | IssueFailure::Local(detail)
            | IssueFailure::Injected(detail) => format!("issuance failed: {detail}"),
        }
    }

    /// When the CA asks to be asked again, if it said.
    pub fn retry_after(&self) -> Option<i64> {
        match self {
            IssueFailure::Refused { retry_after, .. }
            | IssueFailure::Unavailable { retry_after, .. } => *retry_after,
            IssueFailure::Local(_) | IssueFailure::Injected(_) => None,
        }
    }
}

/// Something that happened to a pack, which may change it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The clock: stage deadlines (timeouts), expiry, the renewal window.
    Tick,
    /// DCV checks ran (validation, or renewal for an active pack), with CAA when they
    /// completed the validation. No outcomes and CAA asked: CAA alone (a pack whose hosts
    /// all validated, or were validated by a change made while its checks ran).
    Checked {
        /// The outcomes, each for the record it checked.
        outcomes: Vec<HostOutcome>,
        /// CAA, when asked.
        caa: CaaCheck,
    },
    /// An issuer whose tokens come from its CA (ACME) began the order of an
    /// `initializing` pack: one record per host, in the pack's order.
    OrderBegun {
        /// The issuer's reference of the order, kept with the pack so any server
        /// finishes the same order.
        order_ref: String,
        /// What each host must publish (the CA's tokens).
        records: Vec<DcvRecord>,
        /// Unix seconds when the CA's authorizations expire, if it said.
        tokens_expire: Option<i64>,
    },
    /// The issuer signed a certificate for a pack that was in `started_in` when the
    /// issuance began (`pending_issuance`, `pending_deployment` for a retried deployment,
    /// `active` for a renewal).
    Issued {
        /// The state the issuance began in.
        started_in: PackState,
        /// The certificate (its key is never part of a pack).
        certificate: IssuedCertificate,
    },
    /// The CA invalidated the pack's order (a refused validation, an order or account it
    /// no longer knows): a pack being issued goes back to `initializing` for a new order
    /// (an `active` pack being renewed stays `active` and orders again), the host the CA
    /// named (every host when it named none) showing the CA's reason.
    OrderLost {
        /// The state the issuance began in.
        started_in: PackState,
        /// The CA's reason, as shown on the pack and the host.
        reason: String,
        /// The host the CA named, if any.
        host: Option<String>,
        /// The CA refused a validation: the customer's records must change (new tokens),
        /// so the new order waits for the schedule's next slot; otherwise it is placed at
        /// once.
        refused_validation: bool,
    },
    /// The issuer did not sign (or could not begin the order of an `initializing` pack).
    IssuanceFailed {
        /// The state the issuance began in.
        started_in: PackState,
        /// Why.
        failure: IssueFailure,
    },
    /// The CA of an active pack's certificate said when to renew it (ACME Renewal
    /// Information, RFC 9773): renewal starts at `renew_at`, which replaces the renewal
    /// window of the certificate's validity, and the pack is due again at `ask_again_at`
    /// (when the CA asks to be asked again) if that comes first.
    RenewalAdvised {
        /// The certificate the advice is for (its id): advice for a certificate the pack
        /// no longer has does not apply.
        certificate: String,
        /// Unix seconds: when renewal starts.
        renew_at: i64,
        /// Unix seconds: when to ask the CA again.
        ask_again_at: i64,
    },
    /// The certificate was written where it is served and the hook ran.
    Deployed,
    /// Deployment failed: why, as shown on the pack.
    DeploymentFailed(String),
    /// `PATCH .../ssl/verification/{id}`: validate with `method`.
    EditVerification {
        /// The method asked for.
        method: DcvMethod,
        /// The pack's CA orders remotely (ACME): new records come from a new order, so
        /// a switched or restarted pack goes back to `initializing`.
        orders_remotely: bool,
        /// `<zone-dcv-id>.dcv.<service-domain>`, for delegated records.
        dcv_target_suffix: String,
    },
    /// `PATCH .../ssl/certificate_packs/{id}`: set branding, restart a timed-out pack.
    EditPack {
        /// The branding asked for, if any.
        cloudflare_branding: Option<bool>,
        /// As for [`Input::EditVerification`].
        orders_remotely: bool,
        /// `<zone-dcv-id>.dcv.<service-domain>`, for delegated records.
        dcv_target_suffix: String,
    },
    /// `retry=true`: make up to `budget` hosts due now (see [`Pack::recheck_some`]).
    Recheck {
        /// Hosts checked at or after this second (asked for by an earlier retry still
        /// within its coalescing window) are not made due again; `None`: no such retry.
        checked_since: Option<i64>,
        /// Most hosts to make due.
        budget: usize,
        /// A check of the pack is running, begun too long ago to answer this request (it
        /// may have looked before the client published): its due hosts are asked for
        /// anew. The worker drops that check's outcomes (they would answer the request
        /// and push the next check a schedule slot away) and checks again; the write
        /// orders this request against the worker's.
        supersede_running: bool,
    },
    /// `zonecert pack approve`: the brand check lifted, e-mail hosts validated.
    Approve,
    /// The pack is deleted (`DELETE`, `zonecert pack reject`).
    Delete,
}
