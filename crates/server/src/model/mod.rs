//! The domain model: identifiers, packs and their lifecycle, access control, and the
//! DCV schedule. Pure data and rules: no I/O, no clock (times are passed in).

pub mod access;
pub mod ids;
pub mod order;
pub mod pack;
pub mod schedule;
pub mod transition;

pub use access::{Need, Permission, Principal, Token, User};
pub use ids::{Hostname, PackId, ParseError, ZoneId};
pub use pack::{
    CaChoice, DcvMethod, DcvRecord, HostCheck, IssuedCertificate, Pack, PackHost, PackState,
};
pub use transition::{
    AUTO_VALIDATED, CaaCheck, CheckResult, Event, HostOutcome, Input, IssueFailure, Refusal, Rules,
    Transition, transition,
};

/// A zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// Its id.
    pub id: ZoneId,
    /// Its apex.
    pub name: Hostname,
    /// Unix seconds.
    pub created_at: i64,
}
