//! The scenarios: their names (as `--scenario` takes them), what each injects, how many
//! instances of each process it runs, the settings it gives the processes, and which of them touch
//! the machine's shared broker or database. What each does while it runs is in
//! [`super::inject`].

use serde::Serialize;

/// One scenario of the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    ParticipantKill,
    OrchestratorKill,
    BrokerDrop,
    BrokerStop,
    PostgresRestart,
    Duplicates,
    SlowParticipant,
    ParticipantDown,
    OutageAndCrash,
    Ambiguous,
}

/// The step deadline of the scenarios built around it (`ORCHESTRATOR_STEP_TIMEOUT_MS`): short, so
/// that a slow or absent participant is far past it.
pub const SHORT_STEP_TIMEOUT_MS: u64 = 1000;
/// The gateway's latency in `slow-participant`: three step deadlines.
pub const SLOW_GATEWAY_LATENCY_MS: u64 = 3 * SHORT_STEP_TIMEOUT_MS;

impl Scenario {
    /// Every scenario, in the order `all` runs them.
    pub const ALL: [Scenario; 10] = [
        Scenario::ParticipantKill,
        Scenario::OrchestratorKill,
        Scenario::BrokerDrop,
        Scenario::BrokerStop,
        Scenario::PostgresRestart,
        Scenario::Duplicates,
        Scenario::SlowParticipant,
        Scenario::ParticipantDown,
        Scenario::OutageAndCrash,
        Scenario::Ambiguous,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::ParticipantKill => "participant-kill",
            Scenario::OrchestratorKill => "orchestrator-kill",
            Scenario::BrokerDrop => "broker-drop",
            Scenario::BrokerStop => "broker-stop",
            Scenario::PostgresRestart => "postgres-restart",
            Scenario::Duplicates => "duplicates",
            Scenario::SlowParticipant => "slow-participant",
            Scenario::ParticipantDown => "participant-down",
            Scenario::OutageAndCrash => "outage-and-crash",
            Scenario::Ambiguous => "ambiguous",
        }
    }

    pub fn from_name(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == name)
    }

    /// One line on what it injects.
    pub fn about(self) -> &'static str {
        match self {
            Scenario::ParticipantKill => "kill -9 of each participant, repeatedly, at random moments; each restarted",
            Scenario::OrchestratorKill => {
                "two orchestrators (and two of each participant): kill -9 of one mid-saga, restarted later, in turn"
            }
            Scenario::BrokerDrop => "the broker closes every connection of the run's vhost, repeatedly",
            Scenario::BrokerStop => {
                "rabbitmqctl stop_app for --broker-down, then start_app, under load (SHARED broker)"
            }
            Scenario::PostgresRestart => {
                "PostgreSQL stopped for --pg-down and started again, under load (SHARED database)"
            }
            Scenario::Duplicates => "commands and replies captured and published again later, shuffled, some twice",
            Scenario::SlowParticipant => "the gateway answers after three step deadlines (step deadline 1 s)",
            Scenario::ParticipantDown => "payment down for longer than its step deadline and attempts, then back",
            Scenario::OutageAndCrash => "gateway outage (every call 503) with a kill -9 of payment during it",
            Scenario::Ambiguous => "gateway and carrier apply 30 % of calls and then lose the answer (500 or cut)",
        }
    }

    /// Whether it stops or restarts a service the whole machine shares (the broker, PostgreSQL):
    /// every other test running meanwhile breaks.
    pub fn touches_shared_services(self) -> bool {
        matches!(self, Scenario::BrokerStop | Scenario::PostgresRestart)
    }

    /// Instances of the orchestrator and of each participant.
    pub fn instances(self) -> (usize, usize) {
        match self {
            Scenario::OrchestratorKill => (2, 2),
            _ => (1, 1),
        }
    }

    /// Settings of the platform processes beyond the harness's wiring.
    pub fn env(self) -> Vec<(String, String)> {
        let short = ("ORCHESTRATOR_STEP_TIMEOUT_MS".to_owned(), SHORT_STEP_TIMEOUT_MS.to_string());
        match self {
            // Payment waits for the slow gateway rather than timing its calls out: the slowness is
            // the participant's, as the orchestrator sees it.
            Scenario::SlowParticipant => vec![short, ("PAYMENT_GATEWAY_TIMEOUT_MS".into(), "10000".into())],
            Scenario::ParticipantDown => vec![short],
            _ => Vec::new(),
        }
    }

    /// Share of the run's order rate this scenario uses (a participant that handles a few calls a
    /// second cannot take the full stream).
    pub fn rate_factor(self) -> f64 {
        match self {
            Scenario::SlowParticipant => 0.25,
            _ => 1.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_read_back() {
        for s in Scenario::ALL {
            assert_eq!(Scenario::from_name(s.name()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.name());
        }
        let names: std::collections::BTreeSet<_> = Scenario::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(names.len(), Scenario::ALL.len());
        assert_eq!(Scenario::from_name("all"), None);
    }

    #[test]
    fn the_slow_gateway_is_far_past_the_short_deadline_and_under_payments_own_timeout() {
        let env = Scenario::SlowParticipant.env();
        let get = |k: &str| env.iter().find(|(key, _)| key == k).map(|(_, v)| v.parse::<u64>().unwrap());
        let deadline = get("ORCHESTRATOR_STEP_TIMEOUT_MS").unwrap();
        assert!(SLOW_GATEWAY_LATENCY_MS >= 2 * deadline);
        assert!(SLOW_GATEWAY_LATENCY_MS < get("PAYMENT_GATEWAY_TIMEOUT_MS").unwrap());
    }
}
