//! The one error type of the issuance module.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// Why issuing, storing or deploying a certificate failed.
///
/// Messages are written for the operator reading a log or a pack's error field. None of them
/// ever carries private key material: key bytes never reach an error value.
#[derive(Debug, thiserror::Error)]
pub enum IssuanceError {
    /// A file system operation failed.
    #[error("could not {action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "write" or "create directory".
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },

    /// The built-in CA's files exist but cannot be used.
    #[error("the built-in CA in {} is unusable: {reason}", dir.display())]
    CaUnusable {
        /// The CA directory (`<data_dir>/ca`).
        dir: PathBuf,
        /// What is wrong with it and what to do.
        reason: String,
    },

    /// A certificate could not be built or signed.
    #[error("certificate generation failed: {0}")]
    Generation(String),

    /// The request cannot be turned into a certificate as asked.
    #[error("invalid certificate request: {0}")]
    InvalidRequest(String),

    /// The validation method cannot prove control of this host.
    #[error("validation method {method} cannot be used for {host}: {reason}")]
    UnsupportedValidation {
        /// The host concerned.
        host: String,
        /// The method that was asked for.
        method: String,
        /// Why it cannot be used.
        reason: &'static str,
    },

    /// `finish` was given an order reference this issuer did not produce, or a request that
    /// does not match the order.
    #[error("the order does not match: {0}")]
    OrderMismatch(String),

    /// The pack id cannot be used as a directory name.
    #[error(
        "pack id {0:?} cannot name a deployment directory: use 1-64 ASCII letters, digits, '-' or '_'"
    )]
    InvalidPackId(String),

    /// The deploy hook could not be started at all.
    #[error("could not start the deploy hook {program}: {source}")]
    HookSpawn {
        /// The hook's program.
        program: String,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },

    /// The deploy hook ran past its timeout and was killed.
    #[error("the deploy hook {program} did not finish within {timeout:?} and was killed")]
    HookTimeout {
        /// The hook's program.
        program: String,
        /// The configured limit.
        timeout: Duration,
    },

    /// The deploy hook exited unsuccessfully.
    #[error("the deploy hook {program} failed ({status}); the end of its stderr: {stderr_tail:?}")]
    HookFailed {
        /// The hook's program.
        program: String,
        /// How it ended (exit code or signal).
        status: ExitStatus,
        /// The end of its standard error (at most 10 lines), with every line that holds
        /// part of the private key withheld (see `deploy`).
        stderr_tail: String,
    },

    /// The ACME CA refused or could not be reached; the kind says what to do.
    #[error("{0}")]
    Acme(#[from] super::acme::AcmeError),

    /// A background task doing the work panicked or was cancelled.
    #[error("the issuance task did not complete: {0}")]
    Task(String),
}

impl IssuanceError {
    /// The failure as the lifecycle records it: the CA's refusals (a request it will not
    /// sign, an order it does not know) apart from failures on zonecert's side. The
    /// built-in CA names no `Retry-After`.
    pub fn as_issue_failure(&self) -> crate::model::IssueFailure {
        use crate::model::IssueFailure;
        let refused = |problem: &str| IssueFailure::Refused {
            problem: problem.to_owned(),
            detail: self.to_string(),
            retry_after: None,
        };
        match self {
            IssuanceError::InvalidRequest(_) => refused("invalidRequest"),
            IssuanceError::UnsupportedValidation { .. } => refused("unsupportedIdentifier"),
            IssuanceError::OrderMismatch(_) => refused("orderNotReady"),
            IssuanceError::Task(_) => IssueFailure::Unavailable {
                detail: self.to_string(),
                retry_after: None,
            },
            _ => IssueFailure::Local(self.to_string()),
        }
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        IssuanceError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

impl From<rcgen::Error> for IssuanceError {
    fn from(err: rcgen::Error) -> Self {
        // rcgen's messages name parameters and algorithms, never key bytes.
        IssuanceError::Generation(err.to_string())
    }
}

impl From<tokio::task::JoinError> for IssuanceError {
    fn from(err: tokio::task::JoinError) -> Self {
        IssuanceError::Task(err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::IssueFailure;

    #[test]
    fn refusals_and_local_failures_are_told_apart_and_keep_their_message() {
        let refused = IssuanceError::InvalidRequest("not_after is past the expiry".into());
        match refused.as_issue_failure() {
            IssueFailure::Refused {
                problem,
                detail,
                retry_after,
            } => {
                assert_eq!(problem, "invalidRequest");
                assert!(detail.contains("expiry"), "{detail}");
                assert_eq!(retry_after, None);
            }
            other => panic!("{other:?}"),
        }
        let local = IssuanceError::Generation("rcgen".into());
        assert_eq!(
            local.as_issue_failure(),
            IssueFailure::Local("certificate generation failed: rcgen".into())
        );
        assert_eq!(
            local.as_issue_failure().message(),
            "issuance failed: certificate generation failed: rcgen"
        );
    }
}
