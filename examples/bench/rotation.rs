//! Load generators taking turns on one core: each runs alone for a slice while the others are
//! stopped, so a machine whose speed drifts slows them all alike.

use crate::process::{signal, Proc};
use crate::procfs::cpu_total;
use crate::run::Bench;
use anyhow::Result;
use std::time::{Duration, Instant};

/// One member of a rotation: a load-generating process, and how to count what its target
/// answered and what that cost.
pub struct Member {
    pub name: String,
    pub proc: Proc,
    /// Requests its target has answered so far.
    pub count: Box<dyn Fn() -> Result<u64>>,
    /// The target's process (its CPU is measured too).
    pub target_pid: u32,
}

/// Figures of one member over its active slices.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Rotated {
    pub seconds: f64,
    pub requests: u64,
    pub gen_cpu_s: f64,
    pub target_cpu_s: f64,
    /// Requests per second while it ran.
    pub rps: f64,
    /// Requests per CPU-second of the load generator.
    pub per_gen_cpu_s: f64,
    /// Requests per CPU-second of the target.
    pub per_target_cpu_s: f64,
    pub gen_cpu_share: f64,
    pub target_cpu_share: f64,
}

/// Runs `members` in turns on the generator core: each in turn runs alone for a slice while
/// the others are stopped (SIGSTOP), round after round, until each has run `bench.secs`
/// seconds measured (after a first warm-up turn each). A machine whose speed drifts (other
/// work, a noisy hypervisor) then slows every member alike, so their ratios hold. Each
/// member's figures count only its own slices. At the end every member gets SIGINT (Goose,
/// the CLI and wrk all stop cleanly on it) and is waited for.
pub fn rotate(bench: &Bench, members: Vec<Member>) -> Result<Vec<Rotated>> {
    let slice = Duration::from_millis(if bench.quick { 1000 } else { 2000 });
    let settle = Duration::from_millis(250);
    let rounds = (bench.window().as_secs_f64() / slice.as_secs_f64())
        .ceil()
        .max(1.0) as usize;
    for m in &members[1..] {
        signal(&m.proc, libc::SIGSTOP);
    }
    signal(&members[0].proc, libc::SIGCONT);
    let mut got = vec![Rotated::default(); members.len()];
    let mut active = 0;
    let mut turn = |i: usize, len: Duration, measure: bool, got: &mut Vec<Rotated>| -> Result<()> {
        let m = &members[i];
        if active != i {
            signal(&members[active].proc, libc::SIGSTOP);
            signal(&m.proc, libc::SIGCONT);
            active = i;
        }
        std::thread::sleep(settle);
        let (n0, g0, t0, at) = (
            (m.count)()?,
            cpu_total(m.proc.pid()),
            cpu_total(m.target_pid),
            Instant::now(),
        );
        std::thread::sleep(len);
        let (n1, g1, t1) = ((m.count)()?, cpu_total(m.proc.pid()), cpu_total(m.target_pid));
        if measure {
            let r = &mut got[i];
            r.seconds += at.elapsed().as_secs_f64();
            r.requests += n1.saturating_sub(n0);
            r.gen_cpu_s += g1 - g0;
            r.target_cpu_s += t1 - t0;
        }
        Ok(())
    };
    let result = (|| -> Result<()> {
        for i in 0..members.len() {
            turn(i, bench.warm(), false, &mut got)?;
        }
        for _ in 0..rounds {
            for i in 0..members.len() {
                turn(i, slice, true, &mut got)?;
            }
        }
        Ok(())
    })();
    for m in &members {
        signal(&m.proc, libc::SIGCONT);
        signal(&m.proc, libc::SIGINT);
    }
    for mut m in members {
        // A process may miss a signal that raced its SIGCONT: ask again before giving up.
        let mut ended = false;
        for _ in 0..3 {
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if m.proc.ended() {
                    ended = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if ended {
                break;
            }
            signal(&m.proc, libc::SIGINT);
        }
        if !ended {
            println!("  ({} did not stop on SIGINT; terminated)", m.name);
        }
    }
    result?;
    for r in &mut got {
        r.rps = r.requests as f64 / r.seconds;
        r.per_gen_cpu_s = r.requests as f64 / r.gen_cpu_s;
        r.per_target_cpu_s = r.requests as f64 / r.target_cpu_s;
        r.gen_cpu_share = r.gen_cpu_s / r.seconds;
        r.target_cpu_share = r.target_cpu_s / r.seconds;
    }
    Ok(got)
}
