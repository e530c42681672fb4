//! The Locust users' success rules: which statuses pass each request, and how a status that does
//! not is named. The API, high-load and webhook users judge their answers by them, and the
//! results leave the answers they accept out of the errors ([`super::accepts`]).

use std::borrow::Cow;

/// A task's success rule, as its Locust user wrote it: the statuses that pass, and how a status
/// that does not is named.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub passes: &'static [u16],
    pub names_failure: fn(u16) -> Cow<'static, str>,
}

pub(super) const PASS_OK: Rule = Rule {
    passes: &[200],
    names_failure: failure_reason,
};
pub(super) const PASS_CREATED: Rule = Rule {
    passes: &[201],
    names_failure: failure_reason,
};
pub(super) const PASS_KNOWN_OR_NOT: Rule = Rule {
    passes: &[200, 404],
    names_failure: failure_reason,
};
/// The high-load user's: rate limiting is what it probes for, so a 429 passes too.
pub(super) const PASS_RAPID: Rule = Rule {
    passes: &[200, 429],
    names_failure: unexpected_status,
};

/// The high-load user's failure for any status it does not accept: "Unexpected status: 500".
pub fn unexpected_status(status: u16) -> Cow<'static, str> {
    Cow::Owned(format!("Unexpected status: {status}"))
}

/// Locust's failure message for a status an API or webhook task does not accept.
pub fn failure_reason(status: u16) -> Cow<'static, str> {
    match status {
        429 => Cow::Borrowed("Rate limited"),
        422 => Cow::Borrowed("Validation error"),
        s => Cow::Owned(format!("Unexpected status {s}")),
    }
}
