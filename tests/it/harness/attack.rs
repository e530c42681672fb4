//! Goose attacks run inside the test process, against the simulator or a stub on loopback.

use goose::prelude::{GooseAttack, GooseDefault, GooseDefaultType};

/// The settings every in-process test attack shares: `users` users on `host`, all started at
/// once, held `secs` seconds, metrics kept from the start, no telnet, nothing printed.
pub fn quiet(attack: GooseAttack, host: &str, users: usize, secs: usize) -> GooseAttack {
    attack
        .set_default(GooseDefault::Host, host)
        .and_then(|a| a.set_default(GooseDefault::Users, users))
        .and_then(|a| a.set_default(GooseDefault::IncreaseRate, "100"))
        .and_then(|a| a.set_default(GooseDefault::RunTime, secs))
        .and_then(|a| a.set_default(GooseDefault::NoResetMetrics, true))
        .and_then(|a| a.set_default(GooseDefault::NoTelnet, true))
        .and_then(|a| a.set_default(GooseDefault::Quiet, 1))
        .and_then(|a| a.set_default(GooseDefault::NoPrintMetrics, true))
        .map(|a| *a)
        .expect("valid test attack settings")
}
