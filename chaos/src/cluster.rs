//! A paxkv cluster of 3 or 5 processes on loopback: one `paxkv server --config nodeN.toml`
//! per replica, on ports the OS picked, with its config, data and log under one directory.
//!
//! Faults act on one replica by its PID: `kill9` (SIGKILL, then reap), `pause` (SIGSTOP)
//! and `resume` (SIGCONT). A PID is only signalled while its child is unreaped, so it
//! cannot belong to another process. Dropping the cluster kills and reaps every replica.
//!
//! Every replica has a metrics endpoint, so `failpoint` can set a fault point of its
//! process (`PUT /debug/failpoints/NAME`, in builds with the `chaos` feature), and a
//! replica can be started with a known bug switched on (`InjectedBug`).
//!
//! `lose_disk` deletes a killed replica's data directory, and `readmit` starts it again and
//! makes it a voter once more (`paxkv admin member add`, then `promote`), as an operator
//! replacing a failed disk does (docs/operations.md, "Replacing a failed machine").
//!
//! Each directed peer link (n * (n - 1) of them) goes through a `Proxy` (each replica's
//! config names, as the other members' peer addresses, the proxies of its links to them),
//! so `set_link_cut` can drop a link in one direction, `set_link_delay` slow it and
//! `set_link_faults` also make it lose or reorder frames.
use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

use paxkv::api::gen::paxkv::{MemberAddRequest, MembershipRefused};
use paxkv::api::TPaxkvSyncClient;

use crate::client::{connect, describe};
use crate::error::{ChaosError, Result};
use crate::history::Clock;
use crate::proxy::{self, LinkCounts, LinkFaults, Proxy};

/// Replicas in the cluster unless told otherwise.
pub const REPLICAS_DEFAULT: usize = 3;
/// The cluster sizes a run can have: odd, so a split always leaves a majority on one side.
pub const REPLICAS_ALLOWED: [usize; 2] = [3, 5];
/// Timeout for one `status` call while looking for the leader.
const STATUS_TIMEOUT: Duration = Duration::from_millis(500);
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Connect, write and read timeout of one request to a metrics endpoint.
const HTTP_TIMEOUT: Duration = Duration::from_secs(2);
/// Timeout of one membership call (the server's own request timeout is shorter).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Between membership calls that were told to try again.
const ADMIN_RETRY: Duration = Duration::from_millis(200);
/// Refusals of `add` and `promote` that a later try may not meet: no leader yet, a change
/// still committing, a replica not yet connected or caught up, an outcome lost with a
/// leader, a replace refused while another fault has a voter down.
const ADMIN_TRANSIENT: [&str; 6] = [
    "NO_LEADER",
    "OUTCOME_UNKNOWN",
    "CHANGE_IN_PROGRESS",
    "NOT_CONNECTED",
    "MEMBER_BEHIND",
    "WOULD_LOSE_QUORUM",
];

/// A known bug a server of a `chaos` build switches on from its config's `[debug]` table,
/// to show that the checkers catch what it breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InjectedBug {
    /// `unsafe_local_reads`: linearizable reads answered from the replica's own applied
    /// state, without a read index from the leader, so a lagging replica reads stale.
    StaleReads,
}

impl InjectedBug {
    pub const ALL: [InjectedBug; 1] = [InjectedBug::StaleReads];

    pub fn name(self) -> &'static str {
        match self {
            InjectedBug::StaleReads => "stale-reads",
        }
    }

    fn config(self) -> &'static str {
        match self {
            InjectedBug::StaleReads => "unsafe_local_reads = true\n",
        }
    }
}

/// Server settings the chaos run relies on, written into every replica's config.
#[derive(Clone, Debug)]
pub struct Timing {
    pub tick_ms: u64,
    pub election_timeout_ticks: u64,
    pub request_timeout_ms: u64,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            tick_ms: 10,
            election_timeout_ticks: 20,
            request_timeout_ms: 2_000,
        }
    }
}

impl Timing {
    /// The longest a follower waits before it starts an election (1 to 2 times the
    /// timeout, see docs/operations.md).
    pub fn election_timeout_max(&self) -> Duration {
        Duration::from_millis(2 * self.election_timeout_ticks * self.tick_ms)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    Running,
    Paused,
    Killed,
}

impl NodeState {
    fn name(self) -> &'static str {
        match self {
            NodeState::Running => "running",
            NodeState::Paused => "paused",
            NodeState::Killed => "killed",
        }
    }
}

struct Node {
    id: u32,
    thrift_addr: SocketAddr,
    metrics_addr: SocketAddr,
    config: PathBuf,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    paused: bool,
    /// Started with `--bootstrap`: a member of the cluster as first created. False once its
    /// disk was lost: from then on it starts as a replica that joins.
    bootstrap: bool,
}

impl Node {
    fn state(&self) -> NodeState {
        match (&self.child, self.paused) {
            (None, _) => NodeState::Killed,
            (Some(_), true) => NodeState::Paused,
            (Some(_), false) => NodeState::Running,
        }
    }
}

/// How to start a cluster besides where: its size, timing, injected bugs, and the seed of
/// its link proxies' frame faults.
#[derive(Clone, Debug)]
pub struct Setup {
    pub replicas: usize,
    pub timing: Timing,
    pub bugs: Vec<InjectedBug>,
    pub seed: u64,
}

impl Default for Setup {
    fn default() -> Setup {
        Setup {
            replicas: REPLICAS_DEFAULT,
            timing: Timing::default(),
            bugs: Vec::new(),
            seed: 0,
        }
    }
}

pub struct Cluster {
    binary: PathBuf,
    nodes: Vec<Node>,
    /// The proxy of each directed peer link, by (from, to).
    links: BTreeMap<(u32, u32), Proxy>,
}

impl Cluster {
    /// Writes the configs of 3 replicas under `dir`, starts every replica and waits for a
    /// leader.
    pub fn start(binary: &Path, dir: &Path, timing: &Timing, ready: Duration) -> Result<Cluster> {
        let setup = Setup {
            timing: timing.clone(),
            ..Setup::default()
        };
        Cluster::start_with(binary, dir, &setup, ready)
    }

    /// As `start`, with `setup.replicas` replicas and `setup.bugs` switched on in every
    /// replica's config.
    ///
    /// The free ports are found by binding port 0 and letting go, so another process may
    /// take one before a replica binds it (an outgoing connection's ephemeral port, say):
    /// a replica that exits at start because its address is in use makes the whole start
    /// begin again, on fresh ports and empty data directories, up to
    /// `START_ATTEMPTS_MAX` times.
    pub fn start_with(
        binary: &Path,
        dir: &Path,
        setup: &Setup,
        ready: Duration,
    ) -> Result<Cluster> {
        assert!(
            REPLICAS_ALLOWED.contains(&setup.replicas),
            "{} replicas",
            setup.replicas
        );
        let mut attempt = 1;
        loop {
            match Cluster::start_once(binary, dir, setup, ready) {
                Err(ChaosError::Exited { log, .. })
                    if attempt < START_ATTEMPTS_MAX && address_was_in_use(&log) =>
                {
                    attempt += 1;
                    for id in 1..=setup.replicas {
                        let _ = std::fs::remove_dir_all(dir.join(format!("node{id}")));
                    }
                }
                result => return result,
            }
        }
    }

    fn start_once(binary: &Path, dir: &Path, setup: &Setup, ready: Duration) -> Result<Cluster> {
        if !binary.is_file() {
            return Err(ChaosError::NoBinary(binary.to_path_buf()));
        }
        let n = setup.replicas;
        let addrs = free_addrs(3 * n)?;
        let (thrift, rest) = addrs.split_at(n);
        let (peers, metrics) = rest.split_at(n);
        let (links, link_addrs) = start_links(peers, setup.seed)?;
        let mut nodes = Vec::new();
        for (i, &thrift_addr) in thrift.iter().enumerate() {
            let id = u32::try_from(i + 1).expect("a handful of replicas");
            let config = dir.join(format!("node{id}.toml"));
            // Its own listener, and the proxies of its links to the others.
            let members: Vec<SocketAddr> = (1..=n)
                .map(|j| {
                    let to = u32::try_from(j).expect("small");
                    link_addrs.get(&(id, to)).copied().unwrap_or(peers[i])
                })
                .collect();
            let addrs = Addrs {
                thrift: thrift_addr,
                metrics: metrics[i],
                peers: &members,
            };
            let data_dir = dir.join(format!("node{id}"));
            let text = config_text(id, &data_dir, &addrs, &setup.timing, &setup.bugs);
            std::fs::write(&config, text).map_err(|source| ChaosError::File {
                path: config.clone(),
                source,
            })?;
            let log = dir.join(format!("node{id}.log"));
            nodes.push(Node {
                id,
                thrift_addr,
                metrics_addr: metrics[i],
                config,
                data_dir,
                log,
                child: None,
                paused: false,
                bootstrap: true,
            });
        }
        let mut cluster = Cluster {
            binary: binary.to_path_buf(),
            nodes,
            links,
        };
        for id in cluster.ids() {
            cluster.spawn(id)?;
        }
        cluster.wait_for_leader(ready)?;
        Ok(cluster)
    }

    /// The root token of the configuration service, which the bootstrap member with the
    /// smallest id wrote into its data directory when the cluster was created. Read it
    /// before any nemesis can take that directory away.
    pub fn root_token(&self) -> Result<String> {
        let node = (self.nodes.iter().filter(|n| n.bootstrap))
            .min_by_key(|n| n.id)
            .ok_or_else(|| ChaosError::Setup("no bootstrap member".into()))?;
        let path = node.data_dir.join("root-token");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ChaosError::Setup(format!("{}: {e}", path.display())))?;
        Ok(text.trim().to_string())
    }

    pub fn ids(&self) -> Vec<u32> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    pub fn endpoints(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.thrift_addr).collect()
    }

    pub fn state(&self, id: u32) -> NodeState {
        self.node(id).state()
    }

    /// The PID of a replica's process while it runs or is paused.
    pub fn pid(&self, id: u32) -> Option<u32> {
        self.node(id).child.as_ref().map(Child::id)
    }

    pub fn log_path(&self, id: u32) -> PathBuf {
        self.node(id).log.clone()
    }

    fn node(&self, id: u32) -> &Node {
        let index = usize::try_from(id).expect("u32 fits") - 1;
        &self.nodes[index]
    }

    fn node_mut(&mut self, id: u32) -> &mut Node {
        let index = usize::try_from(id).expect("u32 fits") - 1;
        &mut self.nodes[index]
    }

    fn spawn(&mut self, id: u32) -> Result<()> {
        let binary = self.binary.clone();
        let node = self.node_mut(id);
        // Appended, so a restarted replica's log follows its previous run's.
        let log = OpenOptions::new().create(true).append(true).open(&node.log);
        let log = log.map_err(|source| ChaosError::File {
            path: node.log.clone(),
            source,
        })?;
        let stderr = log
            .try_clone()
            .map_err(|source| ChaosError::Spawn { id, source })?;
        let mut command = Command::new(binary);
        command.arg("server");
        if node.bootstrap {
            // Every start until its disk is lost: a directory that holds this cluster's
            // identity keeps it whatever the flag says.
            command.arg("--bootstrap");
        }
        let child = command
            .arg("--config")
            .arg(&node.config)
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .map_err(|source| ChaosError::Spawn { id, source })?;
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    /// SIGKILL, then reap: the process is gone when this returns.
    pub fn kill9(&mut self, id: u32) -> Result<()> {
        let node = self.node_mut(id);
        let Some(mut child) = node.child.take() else {
            return Err(wrong_state(node, "kill"));
        };
        // `Child::kill` is SIGKILL; it works on a stopped process too.
        let _ = child.kill();
        let _ = child.wait();
        node.paused = false;
        Ok(())
    }

    pub fn restart(&mut self, id: u32) -> Result<()> {
        let node = self.node(id);
        if node.state() != NodeState::Killed {
            return Err(wrong_state(node, "restart"));
        }
        self.spawn(id)
    }

    /// Disk loss: SIGKILL the replica (if it runs) and delete its data directory. Its next
    /// start finds no state and joins as a new incarnation, which `readmit` makes a member.
    pub fn lose_disk(&mut self, id: u32) -> Result<()> {
        if self.state(id) != NodeState::Killed {
            self.kill9(id)?;
        }
        let node = self.node_mut(id);
        node.bootstrap = false;
        match std::fs::remove_dir_all(&node.data_dir) {
            Err(source) if source.kind() != std::io::ErrorKind::NotFound => {
                let path = node.data_dir.clone();
                Err(ChaosError::File { path, source })
            }
            _ => Ok(()),
        }
    }

    /// Starts a replica that lost its disk and makes it a voter again through the other
    /// replicas: `admin_member_add` at the incarnation its own status names (no address:
    /// each replica's config names it), then `admin_member_promote` once it caught up. The
    /// incarnation is given, not left to the leader, which may not yet have heard the new
    /// one (its connection from before the loss announced the old). Each call is tried
    /// again, on the next of the other replicas, while the refusal says a later try may
    /// succeed, up to `timeout` in all; any other refusal, or the timeout, is an error.
    pub fn readmit(&mut self, id: u32, timeout: Duration) -> Result<()> {
        self.restart(id)?;
        let clock = Clock::start();
        let own = self.node(id).thrift_addr;
        let incarnation = loop {
            let status = connect(own, ADMIN_TIMEOUT).and_then(|mut c| c.status());
            let running = (status.as_ref().ok())
                .and_then(|s| {
                    s.replicas
                        .iter()
                        .find(|r| u32::try_from(r.id).ok() == Some(id))
                })
                .and_then(|r| r.running_incarnation);
            if let Some(incarnation) = running {
                break incarnation;
            }
            if clock.elapsed() >= timeout {
                let last = format!("no incarnation in its status: {status:?}");
                return Err(ChaosError::Readmit { id, last });
            }
            thread::sleep(ADMIN_RETRY);
        };
        let others: Vec<SocketAddr> = (self.nodes.iter())
            .filter(|n| n.id != id)
            .map(|n| n.thrift_addr)
            .collect();
        let member = i32::try_from(id).expect("small");
        let (mut promoting, mut turn) = (false, 0);
        loop {
            let addr = others[turn % others.len()];
            let called = connect(addr, ADMIN_TIMEOUT).and_then(|mut client| match promoting {
                false => client
                    .admin_member_add(MemberAddRequest::new(member, None, Some(incarnation)))
                    .map(drop),
                true => client.admin_member_promote(member).map(drop),
            });
            let error = match called {
                Ok(()) if promoting => return Ok(()),
                Ok(()) => {
                    eprintln!("           replica {id} added as a learner, promoting it");
                    promoting = true;
                    continue;
                }
                Err(error) => error,
            };
            let refusal = match &error {
                thrift::Error::User(user) => user.downcast_ref::<MembershipRefused>(),
                _ => None,
            };
            let reason = refusal.map(|r| r.reason.as_str());
            match reason {
                Some("ALREADY_MEMBER") if !promoting => promoting = true,
                Some("ALREADY_VOTER") if promoting => return Ok(()),
                Some(reason) if !ADMIN_TRANSIENT.contains(&reason) => {
                    return Err(ChaosError::Readmit {
                        id,
                        last: describe(&error),
                    });
                }
                _ if clock.elapsed() >= timeout => {
                    return Err(ChaosError::Readmit {
                        id,
                        last: format!("not a voter within {timeout:?}: {}", describe(&error)),
                    });
                }
                // No answer, or a refusal a later try may not get: ask the next replica,
                // since the one asked may be down or cut off from the others (NO_LEADER
                // for as long as another fault isolates it, and that fault's heal waits
                // for this one).
                _ => turn += 1,
            }
            thread::sleep(ADMIN_RETRY);
        }
    }

    /// Per running replica: its `paxkv_divergence_detected` and `paxkv_divergent_peers`
    /// gauges, or why they could not be read.
    pub fn divergence(&self) -> Vec<DivergenceReading> {
        (self.nodes.iter())
            .filter(|n| n.state() == NodeState::Running)
            .map(|node| {
                let scraped = http_request(node.metrics_addr, "GET", "/metrics", "");
                let (detected, peers, error) = match scraped {
                    Ok((200, body)) => (
                        gauge(&body, "paxkv_divergence_detected"),
                        gauge(&body, "paxkv_divergent_peers"),
                        None,
                    ),
                    Ok((code, body)) => (None, None, Some(format!("HTTP {code}: {body}"))),
                    Err(error) => (None, None, Some(error.to_string())),
                };
                let error = error.or_else(|| {
                    (detected.is_none() || peers.is_none())
                        .then(|| "the divergence gauges are missing".to_string())
                });
                DivergenceReading {
                    node: node.id,
                    detected: detected.unwrap_or(0.0) != 0.0,
                    divergent_peers: peers.unwrap_or(0.0),
                    error,
                }
            })
            .collect()
    }

    pub fn pause(&mut self, id: u32) -> Result<()> {
        let node = self.node_mut(id);
        if node.state() != NodeState::Running {
            return Err(wrong_state(node, "pause"));
        }
        signal(node, libc::SIGSTOP)?;
        node.paused = true;
        Ok(())
    }

    pub fn resume(&mut self, id: u32) -> Result<()> {
        let node = self.node_mut(id);
        if node.state() != NodeState::Paused {
            return Err(wrong_state(node, "resume"));
        }
        signal(node, libc::SIGCONT)?;
        node.paused = false;
        Ok(())
    }

    /// Sets fault point `name` of replica `id`'s process to `actions` (the `fail` crate's
    /// syntax: `return`, `pause`, `off`, ...). The replica must be running.
    pub fn failpoint(&self, id: u32, name: &str, actions: &str) -> Result<()> {
        let node = self.node(id);
        if node.state() != NodeState::Running {
            return Err(wrong_state(node, "set a fault point"));
        }
        let path = format!("/debug/failpoints/{name}");
        let failed = |reason: String| ChaosError::Failpoint {
            id,
            name: name.to_string(),
            actions: actions.to_string(),
            reason,
        };
        let (code, body) =
            http_put(node.metrics_addr, &path, actions).map_err(|e| failed(e.to_string()))?;
        if code != 200 {
            return Err(failed(format!("HTTP {code}: {}", body.trim())));
        }
        Ok(())
    }

    /// Cuts (or restores) the peer link from replica `from` to replica `to`: messages of
    /// `from` no longer reach `to`. The other direction is a link of its own.
    pub fn set_link_cut(&self, from: u32, to: u32, cut: bool) {
        if let Some(proxy) = self.links.get(&(from, to)) {
            proxy.set_cut(cut);
        }
    }

    /// Delays what the peer link from `from` to `to` carries by `delay` (zero: none).
    pub fn set_link_delay(&self, from: u32, to: u32, delay: Duration) {
        if let Some(proxy) = self.links.get(&(from, to)) {
            proxy.set_delay(delay);
        }
    }

    /// Sets every fault of the peer link from `from` to `to` at once.
    pub fn set_link_faults(&self, from: u32, to: u32, faults: LinkFaults) {
        if let Some(proxy) = self.links.get(&(from, to)) {
            proxy.set_faults(faults);
        }
    }

    /// The faults the peer link from `from` to `to` has now (none for a link that does
    /// not exist).
    pub fn link_faults(&self, from: u32, to: u32) -> LinkFaults {
        (self.links.get(&(from, to))).map_or_else(LinkFaults::default, Proxy::faults)
    }

    /// Every directed peer link, as (from, to).
    pub fn links(&self) -> Vec<(u32, u32)> {
        self.links.keys().copied().collect()
    }

    /// Frames forwarded, dropped and reordered, summed over every link.
    pub fn link_counts(&self) -> LinkCounts {
        (self.links.values()).fold(LinkCounts::default(), |sum, p| sum.plus(p.counts()))
    }

    /// Restores every peer link, and takes every delay, loss and reordering off.
    pub fn heal_links(&self) {
        for proxy in self.links.values() {
            proxy.set_faults(LinkFaults::default());
        }
    }

    /// The links that are cut, as (from, to).
    pub fn cut_links(&self) -> Vec<(u32, u32)> {
        (self.links.iter())
            .filter(|(_, proxy)| proxy.is_cut())
            .map(|(&link, _)| link)
            .collect()
    }

    /// Restores every peer link, resumes every paused replica and restarts every killed one.
    pub fn heal(&mut self) -> Result<()> {
        self.heal_links();
        for id in self.ids() {
            match self.state(id) {
                NodeState::Paused => self.resume(id)?,
                NodeState::Killed => self.restart(id)?,
                NodeState::Running => {}
            }
        }
        Ok(())
    }

    /// Replicas that exited without being killed (crashes), with their exit status. They
    /// are marked killed, so `restart` brings them back.
    pub fn take_crashed(&mut self) -> Vec<(u32, String)> {
        let mut crashed = Vec::new();
        for node in &mut self.nodes {
            let Some(child) = node.child.as_mut() else {
                continue;
            };
            if let Ok(Some(status)) = child.try_wait() {
                crashed.push((node.id, status.to_string()));
                node.child = None;
                node.paused = false;
            }
        }
        crashed
    }

    /// The leader as a majority of the running replicas report it (healthy, and agreeing),
    /// if it is running itself; or why there is none.
    pub fn leader(&self) -> std::result::Result<u32, String> {
        let replicas = self.nodes.len();
        let mut votes = vec![0usize; replicas + 1];
        let mut last = String::from("no replica running");
        let running: Vec<(u32, SocketAddr)> = (self.nodes.iter())
            .filter(|n| n.state() == NodeState::Running)
            .map(|n| (n.id, n.thrift_addr))
            .collect();
        // All at once: a replica that does not answer (its driver stalled in an fsync, say)
        // holds the answer up by one `STATUS_TIMEOUT`, not one per such replica, so a
        // nemesis choosing its next target does not hold up the heal of a fault in progress.
        let named: Vec<std::result::Result<usize, String>> = thread::scope(|scope| {
            let calls: Vec<_> = (running.iter())
                .map(|&(id, addr)| scope.spawn(move || named_leader(id, addr, replicas)))
                .collect();
            (calls.into_iter())
                .map(|call| call.join().expect("a status call panicked"))
                .collect()
        });
        for answer in named {
            match answer {
                Ok(index) => votes[index] += 1,
                Err(why) => last = why,
            }
        }
        let majority = replicas / 2 + 1;
        let Some(index) = votes.iter().position(|&v| v >= majority) else {
            return Err(last);
        };
        let leader = u32::try_from(index).expect("small");
        // Just after a pause or kill the others still name the old leader (and count it
        // answered no status yet): a replica this runner has stopped is not the leader.
        let running = self
            .nodes
            .iter()
            .any(|n| n.id == leader && n.state() == NodeState::Running);
        match running {
            true => Ok(leader),
            false => Err(format!(
                "replica {leader} is named leader but is not running"
            )),
        }
    }

    pub fn wait_for_leader(&mut self, timeout: Duration) -> Result<u32> {
        let clock = Clock::start();
        loop {
            if let Some((id, status)) = self.take_crashed().into_iter().next() {
                let log = self.log_path(id);
                return Err(ChaosError::Exited { id, status, log });
            }
            let last = match self.leader() {
                Ok(leader) => return Ok(leader),
                Err(last) => last,
            };
            if clock.elapsed() >= timeout {
                let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
                return Err(ChaosError::NoLeader { timeout_ms, last });
            }
            thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// The leader replica `id` names (as an index into 1..=replicas), if it is healthy and
/// names one; or why not.
fn named_leader(id: u32, addr: SocketAddr, replicas: usize) -> std::result::Result<usize, String> {
    let status = connect(addr, STATUS_TIMEOUT).and_then(|mut c| c.status());
    match status {
        Ok(status) if status.healthy => match status.leader {
            Some(leader) => match usize::try_from(leader) {
                Ok(index) if (1..=replicas).contains(&index) => Ok(index),
                _ => Err(format!("replica {id} names leader {leader}")),
            },
            None => Err(format!("replica {id}: no leader")),
        },
        Ok(status) => Err(format!("replica {id}: not healthy: {status:?}")),
        Err(error) => Err(format!("replica {id}: {}", describe(&error))),
    }
}

fn wrong_state(node: &Node, action: &'static str) -> ChaosError {
    ChaosError::WrongState {
        id: node.id,
        state: node.state().name(),
        action,
    }
}

/// Sends `signal` to the node's child, which is unreaped, so its PID is still its own.
fn signal(node: &mut Node, signal: i32) -> Result<()> {
    let child = node.child.as_mut().expect("only called on a live child");
    let pid = child.id();
    let raw = libc::pid_t::try_from(pid).expect("PIDs fit pid_t");
    // SAFETY: kill(2) has no memory effects; the PID is our unreaped child's.
    let rc = unsafe { libc::kill(raw, signal) };
    if rc != 0 {
        let source = std::io::Error::last_os_error();
        return Err(ChaosError::Signal {
            signal,
            pid,
            source,
        });
    }
    Ok(())
}

/// A proxy for every directed link between the replicas listening on `peers`, each on a
/// port of its own, and the addresses they listen on, by (from, to).
type Links = (
    BTreeMap<(u32, u32), Proxy>,
    BTreeMap<(u32, u32), SocketAddr>,
);

/// Each link's proxy gets a seed of its own, derived from `seed` and the link.
fn start_links(peers: &[SocketAddr], seed: u64) -> Result<Links> {
    let io = |source| ChaosError::File {
        path: PathBuf::from("127.0.0.1:0"),
        source,
    };
    let (mut links, mut addrs) = (BTreeMap::new(), BTreeMap::new());
    for (i, from) in (1..=peers.len()).enumerate() {
        for (j, to) in (1..=peers.len()).enumerate() {
            if i == j {
                continue;
            }
            let link = (
                u32::try_from(from).expect("small"),
                u32::try_from(to).expect("small"),
            );
            let listener = TcpListener::bind("127.0.0.1:0").map_err(io)?;
            addrs.insert(link, listener.local_addr().map_err(io)?);
            let link_seed = proxy::derive_seed(seed, (u64::from(link.0) << 32) | u64::from(link.1));
            let proxy = Proxy::start(listener, peers[j], link_seed).map_err(io)?;
            links.insert(link, proxy);
        }
    }
    Ok((links, addrs))
}

/// `count` distinct free loopback addresses: all listeners are held until every port is
/// picked. Another process may take a port before the server binds it; that race is
/// accepted.
/// Starts of a cluster tried before a port taken under it is given up on.
const START_ATTEMPTS_MAX: u32 = 3;

fn address_was_in_use(log: &Path) -> bool {
    std::fs::read_to_string(log).is_ok_and(|text| text.contains("Address already in use"))
}

fn free_addrs(count: usize) -> Result<Vec<SocketAddr>> {
    let io = |source| ChaosError::File {
        path: PathBuf::from("127.0.0.1:0"),
        source,
    };
    let listeners = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").map_err(io))
        .collect::<Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| l.local_addr().map_err(io))
        .collect()
}

/// What one replica's divergence gauges said at the end of a run.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DivergenceReading {
    pub node: u32,
    /// `paxkv_divergence_detected`: it found its own state differs from a majority's.
    pub detected: bool,
    /// `paxkv_divergent_peers`: peers it found differing from a majority.
    pub divergent_peers: f64,
    /// The scrape failed or lacked a gauge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The value of the first sample of `name` (whatever its labels) in a Prometheus text
/// exposition.
fn gauge(exposition: &str, name: &str) -> Option<f64> {
    (exposition.lines())
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .filter(|(series, _)| series.split('{').next() == Some(name))
        .find_map(|(_, value)| value.trim().parse().ok())
}

fn http_put(addr: SocketAddr, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    http_request(addr, "PUT", path, body)
}

/// One request with a text body, on its own connection; the status code and the body.
fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)?;
    stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
    stream.set_write_timeout(Some(HTTP_TIMEOUT))?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response).into_owned();
    let invalid = || std::io::Error::new(std::io::ErrorKind::InvalidData, response.clone());
    let (head, body) = response.split_once("\r\n\r\n").ok_or_else(invalid)?;
    let code = (head.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(invalid)?;
    Ok((code, body.to_string()))
}

/// Snapshots this often, so that a replica killed or cut off for a few seconds comes back
/// behind the others' compacted logs and catches up by snapshot transfer.
const SNAPSHOT_INTERVAL_SLOTS: u64 = 500;

/// The addresses one replica's config names.
struct Addrs<'a> {
    thrift: SocketAddr,
    metrics: SocketAddr,
    peers: &'a [SocketAddr],
}

fn config_text(
    id: u32,
    data_dir: &Path,
    addrs: &Addrs,
    timing: &Timing,
    bugs: &[InjectedBug],
) -> String {
    let members: Vec<String> = (addrs.peers.iter().enumerate())
        .map(|(i, peer)| format!("  {{ id = {}, peer_addr = \"{peer}\" }},", i + 1))
        .collect();
    let mut text = format!(
        "id = {id}\ndata_dir = \"{}\"\nthrift_addr = \"{}\"\nauth.enabled = false\nmetrics_addr = \"{}\"\n\
         log = \"info\"\nmembers = [\n{}\n]\n\n[timing]\ntick_ms = {}\n\
         election_timeout_ticks = {}\nrequest_timeout_ms = {}\n\n[snapshot]\n\
         interval_slots = {SNAPSHOT_INTERVAL_SLOTS}\nretain_slots = 100\n",
        data_dir.display(),
        addrs.thrift,
        addrs.metrics,
        members.join("\n"),
        timing.tick_ms,
        timing.election_timeout_ticks,
        timing.request_timeout_ms,
    );
    if !bugs.is_empty() {
        text.push_str("\n[debug]\n");
        for bug in bugs {
            text.push_str(bug.config());
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_are_read_by_exact_name() {
        let text = "# TYPE paxkv_divergent_peers gauge\npaxkv_divergent_peers 2\n\
                    paxkv_divergence_detected_total 5\npaxkv_divergence_detected{replica=\"1\"} 0\n";
        assert_eq!(gauge(text, "paxkv_divergent_peers"), Some(2.0));
        assert_eq!(gauge(text, "paxkv_divergence_detected"), Some(0.0));
        assert_eq!(gauge(text, "paxkv_divergence_first_slot"), None);
    }

    #[test]
    fn config_names_every_member_and_the_timing() {
        let peers: Vec<SocketAddr> = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let addrs = Addrs {
            thrift: "127.0.0.1:9".parse().unwrap(),
            metrics: "127.0.0.1:8".parse().unwrap(),
            peers: &peers,
        };
        let node2 = Path::new("/d/node2");
        let text = config_text(2, node2, &addrs, &Timing::default(), &[]);
        assert!(text.contains("id = 2\n"));
        assert!(text.contains("metrics_addr = \"127.0.0.1:8\"\n"));
        assert!(text.contains("{ id = 3, peer_addr = \"127.0.0.1:3\" }"));
        assert!(text.contains("request_timeout_ms = 2000"));
        assert!(!text.contains("[debug]"));
        let bugs = [InjectedBug::StaleReads];
        let text = config_text(2, node2, &addrs, &Timing::default(), &bugs);
        assert!(
            text.ends_with("\n[debug]\nunsafe_local_reads = true\n"),
            "{text}"
        );
    }
}
