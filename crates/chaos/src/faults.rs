//! The fault schedule: what to break, which instance, when, and for how long, all drawn from one
//! seeded RNG, so that a seed replays the same sequence of faults (the moments they land on in the
//! pipeline's work differ from run to run: that is the point of running many seeds).
//!
//! Faults are injected one at a time: a gap, a fault, its recovery, the next gap.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use rand::{Rng, rngs::StdRng};

use crate::cluster::{Cluster, Kind, LEASE_MS, Postgres};

/// Pause between two faults.
const GAP_MS: std::ops::Range<u64> = 300..2_500;
/// How long a killed service stays down before it is restarted.
const DOWN_MS: std::ops::Range<u64> = 0..1_000;
/// How long a frozen worker stays stopped: always longer than its lease.
const FREEZE_MS: std::ops::Range<u64> = LEASE_MS + 1_000..LEASE_MS + 2_000;

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Fault {
    KillValidator,
    KillWriter,
    KillIngest,
    RestartPostgres,
    TerminateBackends,
    FreezeValidator,
    FreezeWriter,
}

impl Fault {
    const ALL: [Fault; 7] = [
        Fault::KillValidator,
        Fault::KillWriter,
        Fault::KillIngest,
        Fault::RestartPostgres,
        Fault::TerminateBackends,
        Fault::FreezeValidator,
        Fault::FreezeWriter,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::KillValidator => "kill_validator",
            Self::KillWriter => "kill_writer",
            Self::KillIngest => "kill_ingest",
            Self::RestartPostgres => "restart_postgres",
            Self::TerminateBackends => "terminate_backends",
            Self::FreezeValidator => "freeze_validator",
            Self::FreezeWriter => "freeze_writer",
        }
    }
}

/// Faults injected, by kind (every kind listed, zeros included).
pub(crate) type FaultCounts = BTreeMap<&'static str, u32>;

/// What the fault phase did.
#[derive(Debug, Default)]
pub(crate) struct Injected {
    pub counts: FaultCounts,
    /// Process faults (kills, freezes) that hit their target inside a database transaction.
    pub mid_transaction: u32,
}

/// How long a process fault waits for its target to be inside a transaction before striking
/// anyway.
const AIM_PATIENCE: Duration = Duration::from_millis(3_000);

/// Waits for the target to be busy (for a freeze: holding a claim it has not acked yet);
/// describes where the fault landed.
async fn aim(
    cluster: &mut Cluster,
    kind: Kind,
    index: usize,
    before_ack: bool,
    landed: &mut u32,
) -> anyhow::Result<&'static str> {
    Ok(match cluster.wait_busy(kind, index, before_ack, AIM_PATIENCE).await? {
        true if before_ack => {
            *landed += 1;
            "mid-transaction, before its ack"
        }
        true => {
            *landed += 1;
            "mid-transaction"
        }
        false => "idle",
    })
}

/// Injects faults until `duration` has passed since `started`.
pub(crate) async fn run(
    cluster: &mut Cluster,
    postgres: &Postgres,
    database_url: &str,
    rng: &mut StdRng,
    started: Instant,
    duration: Duration,
    quiet: bool,
) -> anyhow::Result<Injected> {
    let mut counts: FaultCounts = Fault::ALL.iter().map(|f| (f.name(), 0)).collect();
    let mut landed = 0;
    let end = started + duration;
    loop {
        cluster.idle(Duration::from_millis(rng.random_range(GAP_MS))).await?;
        if Instant::now() >= end {
            return Ok(Injected { counts, mid_transaction: landed });
        }
        let fault = Fault::ALL[rng.random_range(0..Fault::ALL.len())];
        let at = started.elapsed().as_secs_f64();
        let began = Instant::now();
        let what = match fault {
            Fault::KillValidator | Fault::KillWriter | Fault::KillIngest => {
                let kind = match fault {
                    Fault::KillValidator => Kind::Validator,
                    Fault::KillWriter => Kind::Writer,
                    _ => Kind::Ingest,
                };
                let index = rng.random_range(0..cluster.count(kind));
                let down = Duration::from_millis(rng.random_range(DOWN_MS));
                let busy = aim(cluster, kind, index, false, &mut landed).await?;
                let name = cluster.kill_and_restart(kind, index, down).await?;
                format!("kill -9 {name} ({busy}), restarted after {} ms", down.as_millis())
            }
            Fault::FreezeValidator | Fault::FreezeWriter => {
                let kind =
                    if fault == Fault::FreezeValidator { Kind::Validator } else { Kind::Writer };
                let index = rng.random_range(0..cluster.count(kind));
                let frozen = Duration::from_millis(rng.random_range(FREEZE_MS));
                let busy = aim(cluster, kind, index, true, &mut landed).await?;
                let name = cluster.freeze(kind, index, frozen).await?;
                format!(
                    "SIGSTOP {name} ({busy}) for {} ms (lease {LEASE_MS} ms), SIGCONT",
                    frozen.as_millis()
                )
            }
            Fault::RestartPostgres => {
                postgres.restart().await?;
                format!("pg_ctl restart -m fast ({} ms)", began.elapsed().as_millis())
            }
            Fault::TerminateBackends => {
                let terminated = postgres.terminate_backends(database_url).await?;
                format!("pg_terminate_backend: {terminated} backends")
            }
        };
        *counts.get_mut(fault.name()).expect("every kind counted") += 1;
        if !quiet {
            eprintln!("[{at:6.1}s] {what}");
        }
    }
}
