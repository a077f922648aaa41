//! Consumer groups on one node: the classic group protocol, so that `kcat -G`, the console
//! consumer and any client's `subscribe()` get partitions. The broker only keeps membership and
//! passes assignments on: the group's leader (a client) computes them, as in Kafka.
//!
//! A group is `Empty`, `PreparingRebalance` (members are (re)joining: JoinGroup requests wait),
//! `CompletingRebalance` (the new generation is known: the leader sends the assignments with
//! SyncGroup, the other members' SyncGroup requests wait for it) or `Stable`. A member that
//! joins, leaves or misses its session timeout starts a rebalance; members learn of it from
//! their heartbeats (REBALANCE_IN_PROGRESS) and join again.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

use super::code;

/// How long a rebalance waits for more members when the group was empty, so that members
/// started together land in one generation (Kafka's `group.initial.rebalance.delay.ms`).
const INITIAL_DELAY: Duration = Duration::from_millis(500);
/// The longest a JoinGroup or SyncGroup request is held.
pub(super) const MAX_WAIT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::PreparingRebalance => "PreparingRebalance",
            State::CompletingRebalance => "CompletingRebalance",
            State::Stable => "Stable",
        }
    }
}

/// What a JoinGroup request gets back.
#[derive(Debug, Clone, Default)]
pub(super) struct Joined {
    pub(super) error: i16,
    pub(super) generation: i32,
    pub(super) protocol_type: String,
    pub(super) protocol: String,
    pub(super) leader: String,
    pub(super) member_id: String,
    /// For the leader: every member with its metadata for the chosen protocol.
    pub(super) members: Vec<(String, Bytes)>,
}

impl Joined {
    fn error(error: i16, member_id: &str) -> Joined {
        Joined {
            error,
            generation: -1,
            member_id: member_id.to_string(),
            ..Joined::default()
        }
    }
}

/// What a SyncGroup request gets back.
#[derive(Debug, Clone, Default)]
pub(super) struct Synced {
    pub(super) error: i16,
    pub(super) protocol_type: String,
    pub(super) protocol: String,
    pub(super) assignment: Bytes,
}

impl Synced {
    fn error(error: i16) -> Synced {
        Synced {
            error,
            ..Synced::default()
        }
    }
}

/// A request answered at once, or once the group moves on.
pub(super) enum Reply<T> {
    Now(T),
    Later(oneshot::Receiver<T>),
}

struct Member {
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    last_seen: Instant,
    joining: Option<oneshot::Sender<Joined>>,
    syncing: Option<oneshot::Sender<Synced>>,
    assignment: Bytes,
}

struct Group {
    state: State,
    generation: i32,
    protocol_type: String,
    protocol: String,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, not joined yet, and until when they may
    /// join with it (their session timeout, as Kafka): a client that never comes back leaves
    /// nothing behind.
    pending: BTreeMap<String, Instant>,
    rebalance_started: Instant,
    /// The rebalance started from an empty group: wait a moment for more members.
    from_empty: bool,
}

impl Group {
    fn new() -> Group {
        Group {
            state: State::Empty,
            generation: 0,
            protocol_type: String::new(),
            protocol: String::new(),
            leader: None,
            members: BTreeMap::new(),
            pending: BTreeMap::new(),
            rebalance_started: Instant::now(),
            from_empty: true,
        }
    }

    fn start_rebalance(&mut self) {
        if self.state == State::PreparingRebalance {
            return;
        }
        self.from_empty = self.state == State::Empty;
        self.state = State::PreparingRebalance;
        self.rebalance_started = Instant::now();
        // Members waiting for an assignment of the old generation join again.
        for m in self.members.values_mut() {
            if let Some(tx) = m.syncing.take() {
                let _ = tx.send(Synced::error(code::REBALANCE_IN_PROGRESS));
            }
        }
    }

    fn deadline(&self) -> Instant {
        let longest = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::ZERO);
        self.rebalance_started + longest.min(MAX_WAIT)
    }

    /// Finishes the join phase once every member has joined (or the deadline has passed).
    fn try_complete_join(&mut self, now: Instant) {
        if self.state != State::PreparingRebalance {
            return;
        }
        let everyone = self.members.values().all(|m| m.joining.is_some());
        let waited = !self.from_empty || now >= self.rebalance_started + INITIAL_DELAY;
        if !(everyone && waited) && now < self.deadline() {
            return;
        }
        // Who did not join in time is out.
        self.members.retain(|_, m| m.joining.is_some());
        if self.members.is_empty() {
            self.state = State::Empty;
            self.leader = None;
            return;
        }
        self.generation += 1;
        // The first protocol of the first member that every member supports.
        let first = self.members.values().next();
        let chosen = first.and_then(|f| {
            f.protocols
                .iter()
                .map(|(name, _)| name.clone())
                .find(|name| {
                    self.members
                        .values()
                        .all(|m| m.protocols.iter().any(|(n, _)| n == name))
                })
        });
        let Some(protocol) = chosen else {
            for m in self.members.values_mut() {
                if let Some(tx) = m.joining.take() {
                    let _ = tx.send(Joined::error(code::INCONSISTENT_GROUP_PROTOCOL, ""));
                }
            }
            self.members.clear();
            self.state = State::Empty;
            return;
        };
        self.protocol = protocol.clone();
        let leader = match &self.leader {
            Some(l) if self.members.contains_key(l) => l.clone(),
            _ => self.members.keys().next().cloned().unwrap_or_default(),
        };
        self.leader = Some(leader.clone());
        self.state = State::CompletingRebalance;
        let roster: Vec<(String, Bytes)> = self
            .members
            .iter()
            .map(|(id, m)| {
                let meta = m
                    .protocols
                    .iter()
                    .find(|(n, _)| *n == protocol)
                    .map(|(_, b)| b.clone())
                    .unwrap_or_default();
                (id.clone(), meta)
            })
            .collect();
        let now = Instant::now();
        for (id, m) in self.members.iter_mut() {
            m.last_seen = now;
            if let Some(tx) = m.joining.take() {
                let _ = tx.send(Joined {
                    error: code::NONE,
                    generation: self.generation,
                    protocol_type: self.protocol_type.clone(),
                    protocol: protocol.clone(),
                    leader: leader.clone(),
                    member_id: id.clone(),
                    members: if *id == leader {
                        roster.clone()
                    } else {
                        Vec::new()
                    },
                });
            }
        }
    }

    /// Whether `member` of `generation` may act (heartbeat, commit) now.
    fn check(&mut self, member: &str, generation: i32) -> i16 {
        let Some(m) = self.members.get_mut(member) else {
            return code::UNKNOWN_MEMBER_ID;
        };
        m.last_seen = Instant::now();
        if generation != self.generation {
            return code::ILLEGAL_GENERATION;
        }
        if self.state == State::PreparingRebalance {
            return code::REBALANCE_IN_PROGRESS;
        }
        code::NONE
    }
}

/// A member as DescribeGroups shows it.
pub(super) struct MemberView {
    pub(super) member_id: String,
    pub(super) client_id: String,
    pub(super) client_host: String,
    pub(super) metadata: Bytes,
    pub(super) assignment: Bytes,
}

/// A group as DescribeGroups and ListGroups show it.
pub(super) struct GroupView {
    pub(super) state: &'static str,
    pub(super) protocol_type: String,
    pub(super) protocol: String,
    pub(super) members: Vec<MemberView>,
}

/// What JoinGroup carries.
pub(super) struct JoinRequest {
    pub(super) group: String,
    pub(super) member_id: String,
    pub(super) client_id: String,
    pub(super) client_host: String,
    pub(super) session_timeout: Duration,
    pub(super) rebalance_timeout: Duration,
    pub(super) protocol_type: String,
    pub(super) protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4 and later: a member without an id is given one and asked to join again.
    pub(super) id_required: bool,
}

#[derive(Default)]
pub(super) struct Coordinator {
    groups: Mutex<BTreeMap<String, Group>>,
}

impl Coordinator {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Group>> {
        self.groups.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn join(&self, req: JoinRequest) -> Reply<Joined> {
        let mut groups = self.lock();
        let g = groups.entry(req.group.clone()).or_insert_with(Group::new);
        if req.protocols.is_empty()
            || (!g.members.is_empty() && g.protocol_type != req.protocol_type)
        {
            return Reply::Now(Joined::error(
                code::INCONSISTENT_GROUP_PROTOCOL,
                &req.member_id,
            ));
        }
        let member_id = if req.member_id.is_empty() {
            let id = format!("{}-{}", req.client_id, uuid::Uuid::new_v4());
            if req.id_required {
                g.pending
                    .insert(id.clone(), Instant::now() + req.session_timeout);
                return Reply::Now(Joined::error(code::MEMBER_ID_REQUIRED, &id));
            }
            id
        } else {
            if !g.members.contains_key(&req.member_id) && g.pending.remove(&req.member_id).is_none()
            {
                return Reply::Now(Joined::error(code::UNKNOWN_MEMBER_ID, &req.member_id));
            }
            req.member_id.clone()
        };
        let (tx, rx) = oneshot::channel();
        let changed = match g.members.get_mut(&member_id) {
            Some(m) => {
                let changed = m.protocols != req.protocols;
                m.protocols = req.protocols;
                m.session_timeout = req.session_timeout;
                m.rebalance_timeout = req.rebalance_timeout;
                m.last_seen = Instant::now();
                m.joining = Some(tx);
                changed
            }
            None => {
                g.members.insert(
                    member_id.clone(),
                    Member {
                        client_id: req.client_id,
                        client_host: req.client_host,
                        session_timeout: req.session_timeout,
                        rebalance_timeout: req.rebalance_timeout,
                        protocols: req.protocols,
                        last_seen: Instant::now(),
                        joining: Some(tx),
                        syncing: None,
                        assignment: Bytes::new(),
                    },
                );
                true
            }
        };
        g.protocol_type = req.protocol_type;
        // A follower rejoining a stable group with nothing new only needs its generation again;
        // anything else (a new member, new metadata, the leader) is a rebalance.
        let leader = g.leader.as_deref() == Some(member_id.as_str());
        if g.state == State::Stable && !changed && !leader {
            if let Some(m) = g.members.get_mut(&member_id) {
                m.joining = None;
            }
            return Reply::Now(Joined {
                error: code::NONE,
                generation: g.generation,
                protocol_type: g.protocol_type.clone(),
                protocol: g.protocol.clone(),
                leader: g.leader.clone().unwrap_or_default(),
                member_id,
                members: Vec::new(),
            });
        }
        g.start_rebalance();
        g.try_complete_join(Instant::now());
        Reply::Later(rx)
    }

    pub(super) fn sync(
        &self,
        group: &str,
        member: &str,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
    ) -> Reply<Synced> {
        let mut groups = self.lock();
        let Some(g) = groups.get_mut(group) else {
            return Reply::Now(Synced::error(code::UNKNOWN_MEMBER_ID));
        };
        if !g.members.contains_key(member) {
            return Reply::Now(Synced::error(code::UNKNOWN_MEMBER_ID));
        }
        if generation != g.generation {
            return Reply::Now(Synced::error(code::ILLEGAL_GENERATION));
        }
        let ok = |g: &Group, assignment: Bytes| Synced {
            error: code::NONE,
            protocol_type: g.protocol_type.clone(),
            protocol: g.protocol.clone(),
            assignment,
        };
        match g.state {
            State::Empty | State::PreparingRebalance => {
                Reply::Now(Synced::error(code::REBALANCE_IN_PROGRESS))
            }
            State::Stable => {
                let a = g.members[member].assignment.clone();
                Reply::Now(ok(g, a))
            }
            State::CompletingRebalance => {
                if g.leader.as_deref() == Some(member) {
                    for (id, assignment) in assignments {
                        if let Some(m) = g.members.get_mut(&id) {
                            m.assignment = assignment;
                        }
                    }
                    g.state = State::Stable;
                    let answers: Vec<(oneshot::Sender<Synced>, Bytes)> = g
                        .members
                        .values_mut()
                        .filter_map(|m| m.syncing.take().map(|tx| (tx, m.assignment.clone())))
                        .collect();
                    for (tx, a) in answers {
                        let _ = tx.send(ok(g, a));
                    }
                    let a = g.members[member].assignment.clone();
                    Reply::Now(ok(g, a))
                } else {
                    let (tx, rx) = oneshot::channel();
                    if let Some(m) = g.members.get_mut(member) {
                        m.syncing = Some(tx);
                        m.last_seen = Instant::now();
                    }
                    Reply::Later(rx)
                }
            }
        }
    }

    pub(super) fn heartbeat(&self, group: &str, member: &str, generation: i32) -> i16 {
        match self.lock().get_mut(group) {
            Some(g) => g.check(member, generation),
            None => code::UNKNOWN_MEMBER_ID,
        }
    }

    /// Whether a commit may go on, as Kafka decides: simple consumers (no member, generation
    /// -1) while the group has no members; a member only for its current generation, outside a
    /// rebalance. A simple commit into a live group would move its members' offsets under them:
    /// it is refused as from an unknown member.
    pub(super) fn may_commit(&self, group: &str, member: &str, generation: i32) -> i16 {
        let mut groups = self.lock();
        let live = groups.get_mut(group).filter(|g| !g.members.is_empty());
        match live {
            None if generation < 0 && member.is_empty() => code::NONE,
            None => code::ILLEGAL_GENERATION,
            Some(_) if generation < 0 && member.is_empty() => code::UNKNOWN_MEMBER_ID,
            Some(g) => g.check(member, generation),
        }
    }

    pub(super) fn leave(&self, group: &str, members: &[String]) -> Vec<i16> {
        let mut groups = self.lock();
        let Some(g) = groups.get_mut(group) else {
            return vec![code::UNKNOWN_MEMBER_ID; members.len()];
        };
        let codes = members
            .iter()
            .map(|m| match g.members.remove(m) {
                Some(_) => code::NONE,
                None => code::UNKNOWN_MEMBER_ID,
            })
            .collect();
        if g.members.is_empty() {
            g.state = State::Empty;
            g.leader = None;
        } else {
            g.start_rebalance();
            g.try_complete_join(Instant::now());
        }
        codes
    }

    /// Moves groups on: members past their session timeout are removed, and rebalances whose
    /// members have all joined (or whose time is up) complete.
    pub(super) fn tick(&self) {
        let now = Instant::now();
        for (name, g) in self.lock().iter_mut() {
            g.pending.retain(|_, until| *until > now);
            let expired: Vec<String> = g
                .members
                .iter()
                .filter(|(_, m)| m.joining.is_none() && now > m.last_seen + m.session_timeout)
                .map(|(id, _)| id.clone())
                .collect();
            if !expired.is_empty() {
                tracing::info!(group = %name, members = ?expired, "members missed their session timeout");
                for id in &expired {
                    g.members.remove(id);
                }
                if g.members.is_empty() {
                    g.state = State::Empty;
                    g.leader = None;
                } else {
                    g.start_rebalance();
                }
            }
            g.try_complete_join(now);
        }
    }

    /// Every group with members or a protocol: (name, protocol type, state).
    pub(super) fn list(&self) -> Vec<(String, String, &'static str)> {
        self.lock()
            .iter()
            .map(|(n, g)| (n.clone(), g.protocol_type.clone(), g.state.name()))
            .collect()
    }

    pub(super) fn describe(&self, group: &str) -> Option<GroupView> {
        let groups = self.lock();
        let g = groups.get(group)?;
        Some(GroupView {
            state: g.state.name(),
            protocol_type: g.protocol_type.clone(),
            protocol: g.protocol.clone(),
            members: g
                .members
                .iter()
                .map(|(id, m)| MemberView {
                    member_id: id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m
                        .protocols
                        .iter()
                        .find(|(n, _)| *n == g.protocol)
                        .map(|(_, b)| b.clone())
                        .unwrap_or_default(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(c: &Coordinator, member: &str) -> Reply<Joined> {
        c.join(JoinRequest {
            group: "g".into(),
            member_id: member.into(),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(10),
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"meta"))],
            id_required: true,
        })
    }

    fn now<T>(r: Reply<T>) -> T {
        match r {
            Reply::Now(t) => t,
            Reply::Later(_) => panic!("expected an answer at once"),
        }
    }

    fn later<T>(r: Reply<T>) -> oneshot::Receiver<T> {
        match r {
            Reply::Later(rx) => rx,
            Reply::Now(_) => panic!("expected to wait"),
        }
    }

    #[test]
    fn two_members_join_one_generation_and_the_leader_assigns() {
        let c = Coordinator::default();
        let a = now(join(&c, "")).member_id;
        let b = now(join(&c, "")).member_id;
        let mut ja = later(join(&c, &a));
        let mut jb = later(join(&c, &b));
        // Both joined, but the initial delay holds the generation open for more members.
        c.tick();
        assert!(ja.try_recv().is_err());
        std::thread::sleep(INITIAL_DELAY + Duration::from_millis(20));
        c.tick();
        let (ra, rb) = (ja.try_recv().unwrap(), jb.try_recv().unwrap());
        assert_eq!((ra.error, rb.error), (code::NONE, code::NONE));
        assert_eq!((ra.generation, rb.generation), (1, 1));
        let leader = ra.leader.clone();
        let (lead, follow) = if leader == a { (&a, &b) } else { (&b, &a) };
        let leader_view = if leader == a { &ra } else { &rb };
        assert_eq!(leader_view.members.len(), 2, "the leader gets the roster");
        // The follower waits for the leader's assignment.
        let mut fs = later(c.sync("g", follow, 1, vec![]));
        assert_eq!(c.heartbeat("g", follow, 1), code::NONE);
        let ls = now(c.sync(
            "g",
            lead,
            1,
            vec![
                (lead.clone(), Bytes::from_static(b"p0")),
                (follow.clone(), Bytes::from_static(b"p1")),
            ],
        ));
        assert_eq!(ls.assignment, Bytes::from_static(b"p0"));
        assert_eq!(fs.try_recv().unwrap().assignment, Bytes::from_static(b"p1"));
        // Commits are checked against the generation; simple consumers (no member, generation
        // -1) commit only to groups without members, as in Kafka.
        assert_eq!(c.may_commit("g", follow, 1), code::NONE);
        assert_eq!(c.may_commit("g", follow, 0), code::ILLEGAL_GENERATION);
        assert_eq!(c.may_commit("g", "", -1), code::UNKNOWN_MEMBER_ID);
        assert_eq!(c.may_commit("offsets-only", "", -1), code::NONE);
        // One leaves: the other learns from its heartbeat and joins generation 2 alone.
        assert_eq!(c.leave("g", std::slice::from_ref(follow)), vec![code::NONE]);
        assert_eq!(c.heartbeat("g", lead, 1), code::REBALANCE_IN_PROGRESS);
        let mut again = later(join(&c, lead));
        c.tick();
        assert_eq!(again.try_recv().unwrap().generation, 2);
        let view = c.describe("g").unwrap();
        assert_eq!((view.state, view.members.len()), ("CompletingRebalance", 1));
    }

    #[test]
    fn a_member_id_handed_out_and_never_used_expires() {
        let c = Coordinator::default();
        let req = |member: &str, session_ms: u64| {
            c.join(JoinRequest {
                group: "g".into(),
                member_id: member.into(),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                session_timeout: Duration::from_millis(session_ms),
                rebalance_timeout: Duration::from_millis(session_ms),
                protocol_type: "consumer".into(),
                protocols: vec![("range".into(), Bytes::from_static(b"meta"))],
                id_required: true,
            })
        };
        let first = now(req("", 30));
        assert_eq!(first.error, code::MEMBER_ID_REQUIRED);
        assert_eq!(c.lock()["g"].pending.len(), 1);
        std::thread::sleep(Duration::from_millis(60));
        c.tick();
        assert!(
            c.lock()["g"].pending.is_empty(),
            "the unused id is forgotten"
        );
        // Coming back with it later is coming back as a stranger.
        assert_eq!(
            now(req(&first.member_id, 30)).error,
            code::UNKNOWN_MEMBER_ID
        );
    }

    #[test]
    fn unknown_members_and_protocols_are_refused() {
        let c = Coordinator::default();
        assert_eq!(now(join(&c, "stranger")).error, code::UNKNOWN_MEMBER_ID);
        assert_eq!(c.heartbeat("g", "stranger", 0), code::UNKNOWN_MEMBER_ID);
        assert_eq!(c.may_commit("nobody", "m", 3), code::ILLEGAL_GENERATION);
        assert!(
            matches!(c.sync("g", "x", 0, vec![]), Reply::Now(s) if s.error == code::UNKNOWN_MEMBER_ID)
        );
    }
}
