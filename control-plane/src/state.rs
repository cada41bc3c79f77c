//! The replicated state: the cluster config and its recent versions, the
//! proxies and cache nodes that serve it, and the purge log. Commands are
//! the only way it changes; applying one is deterministic, so every member
//! of the Raft group that applies the same log holds the same state.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

/// Config versions kept for `GET /v1/config?version=N` and rollback.
pub const KEPT_VERSIONS: usize = 20;
/// Purge log entries kept; a cache node that has fallen further behind
/// flushes instead of replaying.
pub const KEPT_PURGES: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberKind {
    Proxy,
    Cache,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// Takes traffic.
    Active,
    /// Takes no new keys: proxies route around it.
    Draining,
    /// Taken out by an operator; kept so `members` shows it and a restart
    /// of the node does not bring it back.
    Removed,
    /// Stopped on its own (a graceful shutdown: a scale-down, a rolling
    /// restart): off the ring at once rather than when health checks see
    /// it gone, and back to active when it registers again.
    Left,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: String,
    pub kind: MemberKind,
    /// `host:port` where it serves traffic.
    pub address: String,
    #[serde(default)]
    pub zone: Option<String>,
    #[serde(default = "one")]
    pub weight: u32,
    #[serde(default = "active")]
    pub state: MemberState,
}

fn one() -> u32 {
    1
}
fn active() -> MemberState {
    MemberState::Active
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "by", content = "value")]
pub enum PurgeRule {
    /// `host` and `path` (with query) of one URL.
    Url {
        host: String,
        path: String,
    },
    Prefix {
        host: String,
        prefix: String,
    },
    Tag(String),
}

/// A replicated purge as the cache tiers apply it.
impl From<&PurgeRule> for fanout_http_cache::purge::Selector {
    fn from(rule: &PurgeRule) -> Self {
        use fanout_http_cache::purge::Selector;
        match rule {
            PurgeRule::Url { host, path } => Selector::Url {
                host: host.clone(),
                path: path.clone(),
            },
            PurgeRule::Prefix { host, prefix } => Selector::Prefix {
                host: host.clone(),
                prefix: prefix.clone(),
            },
            PurgeRule::Tag(t) => Selector::Tag(t.clone()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purge {
    pub seq: u64,
    pub rule: PurgeRule,
    #[serde(default)]
    pub soft: bool,
    /// Unix seconds, as proposed by the leader.
    pub time: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigVersion {
    pub version: u64,
    /// The `kind: cluster` YAML as submitted (already validated).
    pub yaml: String,
    pub time: u64,
    /// Set when this version was made by rolling back to an older one.
    #[serde(default)]
    pub rolled_back_from: Option<u64>,
}

/// A change to the state, as it travels through the Raft log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum Command {
    SetConfig {
        yaml: String,
        time: u64,
    },
    Rollback {
        to: u64,
        time: u64,
    },
    UpsertMember {
        member: Member,
    },
    SetMemberState {
        id: String,
        state: MemberState,
    },
    RemoveMember {
        id: String,
    },
    /// A member says it is stopping: active becomes left; a state an
    /// operator gave it (draining, removed) stays.
    Leave {
        id: String,
    },
    Purge {
        rule: PurgeRule,
        soft: bool,
        time: u64,
    },
}

/// What applying a command produced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The state's revision after the command.
    pub revision: u64,
    /// The config version now live (for config commands).
    #[serde(default)]
    pub config_version: Option<u64>,
    /// The purge's sequence number (for purges).
    #[serde(default)]
    pub purge_seq: Option<u64>,
    /// Why the command changed nothing (unknown member, version gone).
    #[serde(default)]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// +1 for every applied command that changed something; what watchers
    /// wait on.
    pub revision: u64,
    /// The live config version; 0 before the first `SetConfig`.
    pub config_version: u64,
    /// The last [`KEPT_VERSIONS`] versions, oldest first.
    pub configs: VecDeque<ConfigVersion>,
    pub members: BTreeMap<String, Member>,
    /// The last [`KEPT_PURGES`] purges, in sequence order.
    pub purges: VecDeque<Purge>,
    /// Sequence number of the last purge ever issued.
    pub purge_seq: u64,
}

impl State {
    pub fn config(&self, version: u64) -> Option<&ConfigVersion> {
        self.configs.iter().find(|c| c.version == version)
    }

    pub fn live_config(&self) -> Option<&ConfigVersion> {
        self.config(self.config_version)
    }

    pub fn apply(&mut self, command: Command) -> Outcome {
        let mut outcome = Outcome::default();
        match command {
            Command::SetConfig { yaml, time } => {
                self.push_config(yaml, time, None);
                outcome.config_version = Some(self.config_version);
            }
            Command::Rollback { to, time } => match self.config(to) {
                Some(old) => {
                    let yaml = old.yaml.clone();
                    self.push_config(yaml, time, Some(to));
                    outcome.config_version = Some(self.config_version);
                }
                None => {
                    outcome.error = Some(format!(
                        "version {to} is not kept (kept: {})",
                        self.kept_versions()
                    ))
                }
            },
            Command::UpsertMember { mut member } => {
                // A node registering again (a restart) keeps the state an
                // operator gave it: drained stays drained, removed stays out;
                // one that left on its own is back.
                if let Some(existing) = self.members.get(&member.id) {
                    if existing.state != MemberState::Left {
                        member.state = existing.state;
                    }
                }
                if self.members.get(&member.id) != Some(&member) {
                    self.members.insert(member.id.clone(), member);
                    self.revision += 1;
                }
            }
            Command::SetMemberState { id, state } => match self.members.get_mut(&id) {
                Some(m) if m.state != state => {
                    m.state = state;
                    self.revision += 1;
                }
                Some(_) => {}
                None => outcome.error = Some(format!("no member {id}")),
            },
            Command::RemoveMember { id } => match self.members.get_mut(&id) {
                Some(m) if m.state != MemberState::Removed => {
                    m.state = MemberState::Removed;
                    self.revision += 1;
                }
                Some(_) => {}
                None => outcome.error = Some(format!("no member {id}")),
            },
            Command::Leave { id } => match self.members.get_mut(&id) {
                Some(m) if m.state == MemberState::Active => {
                    m.state = MemberState::Left;
                    self.revision += 1;
                }
                Some(_) => {}
                None => outcome.error = Some(format!("no member {id}")),
            },
            Command::Purge { rule, soft, time } => {
                self.purge_seq += 1;
                self.purges.push_back(Purge {
                    seq: self.purge_seq,
                    rule,
                    soft,
                    time,
                });
                while self.purges.len() > KEPT_PURGES {
                    self.purges.pop_front();
                }
                self.revision += 1;
                outcome.purge_seq = Some(self.purge_seq);
            }
        }
        outcome.revision = self.revision;
        outcome
    }

    fn push_config(&mut self, yaml: String, time: u64, rolled_back_from: Option<u64>) {
        let version = self.configs.back().map_or(0, |c| c.version) + 1;
        self.configs.push_back(ConfigVersion {
            version,
            yaml,
            time,
            rolled_back_from,
        });
        while self.configs.len() > KEPT_VERSIONS {
            self.configs.pop_front();
        }
        self.config_version = version;
        self.revision += 1;
    }

    fn kept_versions(&self) -> String {
        match (self.configs.front(), self.configs.back()) {
            (Some(a), Some(b)) => format!("{} to {}", a.version, b.version),
            _ => "none".into(),
        }
    }

    /// Purges after `seq`, or `None` if some of them are no longer kept
    /// (the caller must flush instead).
    pub fn purges_after(&self, seq: u64) -> Option<Vec<Purge>> {
        let oldest = self.purges.front().map_or(self.purge_seq + 1, |p| p.seq);
        if seq + 1 < oldest && seq < self.purge_seq {
            return None;
        }
        Some(
            self.purges
                .iter()
                .filter(|p| p.seq > seq)
                .cloned()
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(s: &mut State, yaml: &str) -> Outcome {
        s.apply(Command::SetConfig {
            yaml: yaml.into(),
            time: 1,
        })
    }

    #[test]
    fn versions_count_up_rollback_makes_a_new_version_and_old_ones_are_dropped() {
        let mut s = State::default();
        assert_eq!(set(&mut s, "a").config_version, Some(1));
        assert_eq!(set(&mut s, "b").config_version, Some(2));
        let r = s.apply(Command::Rollback { to: 1, time: 2 });
        assert_eq!(r.config_version, Some(3));
        assert_eq!(s.live_config().unwrap().yaml, "a");
        assert_eq!(s.live_config().unwrap().rolled_back_from, Some(1));
        for i in 0..KEPT_VERSIONS {
            set(&mut s, &format!("v{i}"));
        }
        assert_eq!(s.configs.len(), KEPT_VERSIONS);
        let r = s.apply(Command::Rollback { to: 1, time: 3 });
        assert!(r.error.unwrap().contains("not kept"));
    }

    #[test]
    fn members_change_state_and_unknown_ids_are_errors() {
        let mut s = State::default();
        let m = Member {
            id: "c1".into(),
            kind: MemberKind::Cache,
            address: "10.0.0.1:8081".into(),
            zone: None,
            weight: 1,
            state: MemberState::Active,
        };
        s.apply(Command::UpsertMember { member: m.clone() });
        let rev = s.revision;
        s.apply(Command::UpsertMember { member: m });
        assert_eq!(s.revision, rev, "re-registering unchanged is a no-op");
        s.apply(Command::SetMemberState {
            id: "c1".into(),
            state: MemberState::Draining,
        });
        assert_eq!(s.members["c1"].state, MemberState::Draining);
        let r = s.apply(Command::RemoveMember { id: "nope".into() });
        assert!(r.error.is_some());
        // Registering again keeps the operator's state.
        s.apply(Command::UpsertMember {
            member: Member {
                address: "10.0.0.2:8081".into(),
                ..s.members["c1"].clone()
            },
        });
        assert_eq!(s.members["c1"].state, MemberState::Draining);
        assert_eq!(s.members["c1"].address, "10.0.0.2:8081");
        s.apply(Command::RemoveMember { id: "c1".into() });
        let mut again = s.members["c1"].clone();
        again.state = MemberState::Active;
        s.apply(Command::UpsertMember { member: again });
        assert_eq!(
            s.members["c1"].state,
            MemberState::Removed,
            "a removed node stays out"
        );
        // Leaving only turns active into left, and registering again
        // undoes it.
        s.apply(Command::Leave { id: "c1".into() });
        assert_eq!(s.members["c1"].state, MemberState::Removed);
        let m2 = Member {
            id: "c2".into(),
            ..s.members["c1"].clone()
        };
        let mut active = m2.clone();
        active.state = MemberState::Active;
        s.apply(Command::UpsertMember {
            member: active.clone(),
        });
        let rev = s.revision;
        s.apply(Command::Leave { id: "c2".into() });
        assert_eq!(s.members["c2"].state, MemberState::Left);
        assert_eq!(s.revision, rev + 1);
        s.apply(Command::UpsertMember { member: active });
        assert_eq!(s.members["c2"].state, MemberState::Active);
        assert!(s.apply(Command::Leave { id: "c9".into() }).error.is_some());
    }

    #[test]
    fn purges_are_sequenced_and_a_far_behind_reader_must_flush() {
        let mut s = State::default();
        for i in 0..(KEPT_PURGES + 5) {
            s.apply(Command::Purge {
                rule: PurgeRule::Tag(format!("t{i}")),
                soft: false,
                time: 0,
            });
        }
        assert_eq!(s.purge_seq, KEPT_PURGES as u64 + 5);
        assert!(s.purges_after(0).is_none(), "the first purges are gone");
        let recent = s.purges_after(s.purge_seq - 2).unwrap();
        assert_eq!(recent.len(), 2);
        assert_eq!(recent[0].seq, s.purge_seq - 1);
        assert!(s.purges_after(s.purge_seq).unwrap().is_empty());
    }
}
