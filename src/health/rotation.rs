//! Whether a server takes traffic, from its health reports, with
//! hysteresis: pure (no I/O, no clock), fed one report at a time. The
//! rules are in the module doc of `health`.

use std::fmt;
use std::time::Duration;

use super::{HealthReport, ServerRole};

/// Good checks in a row that bring a server back into rotation.
pub const RISE: u32 = 2;

/// Why a server is out of rotation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutReason {
    /// The check failed: unreachable, login refused, a query failed.
    Down(String),
    /// A replica behind its primary by more than its `max_lag`.
    Lagging(Duration),
    /// A replica whose IO or SQL thread is not running (or that reports
    /// no lag at all): its data is frozen at some past point.
    ReplicationStopped,
    /// A server in the primary role that refuses writes.
    ReadOnlyPrimary,
}

impl OutReason {
    /// Same kind of reason (a lag or an error message that changed is not
    /// a new transition).
    fn same_kind(&self, other: &OutReason) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }
}

impl fmt::Display for OutReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutReason::Down(why) => write!(f, "down: {why}"),
            OutReason::Lagging(lag) => write!(f, "lagging {} s behind", lag.as_secs()),
            OutReason::ReplicationStopped => f.write_str("replication stopped"),
            OutReason::ReadOnlyPrimary => f.write_str("primary is read_only"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RotationState {
    /// No report yet.
    Unknown,
    InRotation,
    OutOfRotation(OutReason),
}

impl fmt::Display for RotationState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RotationState::Unknown => f.write_str("unknown"),
            RotationState::InRotation => f.write_str("in rotation"),
            RotationState::OutOfRotation(why) => write!(f, "out of rotation ({why})"),
        }
    }
}

/// What one report says of the server.
enum Verdict {
    Bad(OutReason),
    /// Fit to stay in rotation; `fit_to_return`: also fit to come back
    /// (a lag within half the limit).
    Good {
        fit_to_return: bool,
    },
}

/// One server's rotation state.
#[derive(Clone, Debug)]
pub struct Rotation {
    role: ServerRole,
    max_lag: Option<Duration>,
    state: RotationState,
    /// Good checks in a row, fit to return, while out of rotation.
    rising: u32,
}

impl Rotation {
    pub fn new(role: ServerRole, max_lag: Option<Duration>) -> Self {
        Rotation {
            role,
            max_lag,
            state: RotationState::Unknown,
            rising: 0,
        }
    }

    /// Feeds a report; returns Some((old, new)) when the state changes
    /// (the caller logs and counts it). While out, a new reason of the same
    /// kind (another lag, another error message) replaces the old one
    /// without a transition.
    pub fn observe(&mut self, report: &HealthReport) -> Option<(RotationState, RotationState)> {
        let new = match (self.judge(report), &self.state) {
            (Verdict::Bad(why), RotationState::OutOfRotation(old)) if why.same_kind(old) => {
                self.rising = 0;
                self.state = RotationState::OutOfRotation(why);
                return None;
            }
            (Verdict::Bad(why), _) => {
                self.rising = 0;
                RotationState::OutOfRotation(why)
            }
            (Verdict::Good { .. }, RotationState::InRotation) => return None,
            (Verdict::Good { .. }, RotationState::Unknown) => RotationState::InRotation,
            (Verdict::Good { fit_to_return }, RotationState::OutOfRotation(_)) => {
                self.rising = if fit_to_return { self.rising + 1 } else { 0 };
                if self.rising < RISE {
                    return None;
                }
                self.rising = 0;
                RotationState::InRotation
            }
        };
        let old = std::mem::replace(&mut self.state, new);
        Some((old, self.state.clone()))
    }

    /// Whether the engine may send this server work: in rotation, or not
    /// yet checked (the first check runs at once).
    pub fn in_rotation(&self) -> bool {
        !matches!(self.state, RotationState::OutOfRotation(_))
    }

    pub fn state(&self) -> &RotationState {
        &self.state
    }

    fn judge(&self, report: &HealthReport) -> Verdict {
        let facts = match &report.outcome {
            Err(why) => return Verdict::Bad(OutReason::Down(why.clone())),
            Ok(facts) => facts,
        };
        match self.role {
            ServerRole::Primary if facts.read_only => Verdict::Bad(OutReason::ReadOnlyPrimary),
            ServerRole::Primary => Verdict::Good {
                fit_to_return: true,
            },
            ServerRole::Replica => match (facts.replicating, facts.lag, self.max_lag) {
                (false, _, _) | (true, None, _) => Verdict::Bad(OutReason::ReplicationStopped),
                (true, Some(lag), Some(max)) if lag > max => Verdict::Bad(OutReason::Lagging(lag)),
                (true, Some(lag), Some(max)) => Verdict::Good {
                    fit_to_return: lag <= max / 2,
                },
                (true, Some(_), None) => Verdict::Good {
                    fit_to_return: true,
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::super::{GtidPosition, ServerFacts};
    use super::*;

    fn report(outcome: Result<ServerFacts, String>) -> HealthReport {
        HealthReport {
            server: 3,
            checked_at: Instant::now(),
            rtt: Duration::from_millis(1),
            outcome,
        }
    }

    fn primary(read_only: bool) -> HealthReport {
        report(Ok(ServerFacts {
            read_only,
            lag: None,
            replicating: false,
            gtid: GtidPosition::default(),
        }))
    }

    fn replica(lag_secs: Option<u64>) -> HealthReport {
        report(Ok(ServerFacts {
            read_only: true,
            lag: lag_secs.map(Duration::from_secs),
            replicating: lag_secs.is_some(),
            gtid: GtidPosition::default(),
        }))
    }

    fn down() -> HealthReport {
        report(Err("connect to 127.0.0.1:1: connection refused".into()))
    }

    fn out(why: OutReason) -> RotationState {
        RotationState::OutOfRotation(why)
    }

    /// Feeds the reports and returns the state after each.
    fn run(rotation: &mut Rotation, reports: &[HealthReport]) -> Vec<RotationState> {
        reports
            .iter()
            .map(|r| {
                let before = rotation.state().clone();
                let change = rotation.observe(r);
                match &change {
                    Some((old, new)) => {
                        assert_eq!(old, &before);
                        assert_ne!(old, new, "a transition changes the state");
                        assert_eq!(new, rotation.state());
                    }
                    None => assert_eq!(
                        std::mem::discriminant(&before),
                        std::mem::discriminant(rotation.state())
                    ),
                }
                rotation.state().clone()
            })
            .collect()
    }

    #[test]
    fn starts_unknown_counted_in_rotation_and_the_first_good_check_confirms_it() {
        let mut r = Rotation::new(ServerRole::Primary, None);
        assert_eq!(r.state(), &RotationState::Unknown);
        assert!(r.in_rotation());
        assert_eq!(
            r.observe(&primary(false)),
            Some((RotationState::Unknown, RotationState::InRotation))
        );
        assert_eq!(r.observe(&primary(false)), None);
    }

    #[test]
    fn goes_out_at_the_first_failed_check_and_back_after_two_good_ones() {
        let mut r = Rotation::new(ServerRole::Replica, Some(Duration::from_secs(10)));
        let down_state = out(OutReason::Down(
            "connect to 127.0.0.1:1: connection refused".into(),
        ));
        let states = run(
            &mut r,
            &[
                replica(Some(0)),
                down(),
                replica(Some(0)),
                down(),
                replica(Some(0)),
                replica(Some(0)),
            ],
        );
        assert_eq!(
            states,
            vec![
                RotationState::InRotation,
                down_state.clone(),
                down_state.clone(),
                // A failure in between starts the count again.
                down_state.clone(),
                down_state,
                RotationState::InRotation,
            ]
        );
        // Unknown goes out at once too.
        let mut fresh = Rotation::new(ServerRole::Primary, None);
        assert!(fresh.observe(&down()).is_some());
        assert!(!fresh.in_rotation());
    }

    #[test]
    fn a_lagging_replica_returns_only_within_half_its_limit() {
        let mut r = Rotation::new(ServerRole::Replica, Some(Duration::from_secs(10)));
        let lag = |s| out(OutReason::Lagging(Duration::from_secs(s)));
        let states = run(
            &mut r,
            &[
                replica(Some(10)), // at the limit: in
                replica(Some(11)), // above: out at once
                replica(Some(9)),  // within the limit but above half: still out
                replica(Some(9)),
                replica(Some(5)), // half: one good check
                replica(Some(6)), // above half again: the count restarts
                replica(Some(5)),
                replica(Some(0)),
                replica(Some(8)), // back in: stays in up to the limit
                replica(Some(10)),
            ],
        );
        assert_eq!(
            states,
            vec![
                RotationState::InRotation,
                lag(11),
                lag(11),
                lag(11),
                lag(11),
                lag(11),
                lag(11),
                RotationState::InRotation,
                RotationState::InRotation,
                RotationState::InRotation,
            ]
        );
        // The lag of a later bad check replaces the old one, silently.
        assert!(r.observe(&replica(Some(30))).is_some());
        assert_eq!(r.observe(&replica(Some(40))), None);
        assert_eq!(r.state(), &lag(40));
    }

    #[test]
    fn a_read_only_primary_is_out_and_a_read_only_replica_is_not() {
        let mut p = Rotation::new(ServerRole::Primary, None);
        let states = run(
            &mut p,
            &[
                primary(false),
                primary(true),
                primary(false),
                primary(false),
            ],
        );
        assert_eq!(
            states,
            vec![
                RotationState::InRotation,
                out(OutReason::ReadOnlyPrimary),
                out(OutReason::ReadOnlyPrimary),
                RotationState::InRotation,
            ]
        );
        let mut replica_role = Rotation::new(ServerRole::Replica, None);
        replica_role.observe(&replica(Some(0)));
        assert_eq!(replica_role.state(), &RotationState::InRotation);
    }

    #[test]
    fn stopped_replication_takes_a_replica_out_with_or_without_a_lag_limit() {
        for max_lag in [None, Some(Duration::from_secs(5))] {
            let mut r = Rotation::new(ServerRole::Replica, max_lag);
            let states = run(
                &mut r,
                &[
                    replica(Some(0)),
                    replica(None),
                    replica(Some(0)),
                    replica(Some(0)),
                ],
            );
            assert_eq!(
                states,
                vec![
                    RotationState::InRotation,
                    out(OutReason::ReplicationStopped),
                    out(OutReason::ReplicationStopped),
                    RotationState::InRotation,
                ],
                "max_lag {max_lag:?}"
            );
        }
        // Both threads running but no lag reported (NULL): counted as stopped.
        let mut r = Rotation::new(ServerRole::Replica, None);
        let mut no_lag = replica(Some(0));
        if let Ok(facts) = &mut no_lag.outcome {
            facts.lag = None;
        }
        r.observe(&no_lag);
        assert_eq!(r.state(), &out(OutReason::ReplicationStopped));
        // Without a limit any lag is fine.
        let mut r = Rotation::new(ServerRole::Replica, None);
        r.observe(&replica(Some(100_000)));
        assert_eq!(r.state(), &RotationState::InRotation);
    }

    #[test]
    fn a_change_of_reason_while_out_is_a_transition() {
        let mut r = Rotation::new(ServerRole::Replica, Some(Duration::from_secs(1)));
        r.observe(&replica(Some(5)));
        assert_eq!(
            r.observe(&down()).map(|(_, new)| new),
            Some(out(OutReason::Down(
                "connect to 127.0.0.1:1: connection refused".into()
            )))
        );
        assert_eq!(
            r.observe(&replica(None)).map(|(_, new)| new),
            Some(out(OutReason::ReplicationStopped))
        );
    }
}
