//! The simulated cluster: one thread, one seeded PRNG, a simulated clock, and the real
//! `Replica` code driven exactly as the service drives it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::checker::{command_id, Checker, CommandId};
use super::faults::{Fault, Partition, Plan, Target};
use super::network::{LinkFaults, Network};
use super::{SimFailure, SimOptions, SimReport};
use crate::consensus::{
    Config, DurableState, Error, Membership, MembershipChange, Message, MessageBody, NodeId,
    ReadState, Ready, Record, Replica, Rng, Role, Slot, Value,
};

const TICK_US: u64 = 10_000;
const CLIENT_TIMEOUT_US: u64 = 300_000;
const CHECK_INTERVAL_US: u64 = 100_000;
/// A run that needs more events than this is stuck in a loop, which is a failure too.
const EVENTS_MAX: u64 = 20_000_000;

#[derive(Debug)]
enum Event {
    Tick(NodeId),
    Deliver(Message),
    Fsync {
        node: NodeId,
        incarnation: u64,
        upto: usize,
    },
    ClientWake {
        client: usize,
        attempt: u64,
    },
    ClientRequest {
        client: usize,
        attempt: u64,
        node: NodeId,
        op: ClientOp,
    },
    Fault(Fault),
    /// A snapshot fetched from `from` arrives at `node` (if it is still that incarnation).
    SnapshotArrives {
        node: NodeId,
        incarnation: u64,
        from: NodeId,
    },
    Restart(NodeId),
    /// The operator looks at the membership and maybe changes it.
    Operate,
    HealPartition(u64),
    Heal,
    Check,
}

#[derive(Clone, Debug)]
enum ClientOp {
    Write {
        command: CommandId,
        payload: Vec<u8>,
    },
    Read {
        context: u64,
        floor: Slot,
    },
}

struct Client {
    op: Option<ClientOp>,
    /// Bumped on every send and completion, so only the latest timer or reply counts.
    attempt: u64,
    leader_hint: Option<NodeId>,
}

struct Node {
    id: NodeId,
    /// Counts this replica's runs (a restart is a new run); not its member incarnation.
    incarnation: u64,
    /// Its member incarnation: one life of its disk.
    member_incarnation: u64,
    /// The bootstrap membership it starts with when its WAL names none; empty for a
    /// replica that joins (a spare, or one that lost its disk).
    bootstrap_members: Vec<NodeId>,
    /// The membership its state machine recorded (it survives crashes, not disk loss).
    machine_membership: Option<Membership>,
    /// And the one its snapshot holds.
    snapshot_membership: Option<Membership>,
    replica: Option<Replica>,
    /// The simulated disk: records past `synced` are lost or torn by a crash.
    wal: Vec<Record>,
    synced: usize,
    /// Records were removed from the front of `wal` (so replay starts at the first
    /// `Compacted` it retains, as the real log store's does).
    prefix_removed: bool,
    /// Readies whose records are written but not yet durable, with the WAL length they need
    /// and the position of the last `Record::Compacted` among their records.
    waiting: VecDeque<(Ready, usize, Option<usize>)>,
    fsync_in_flight: bool,
    paused_until: u64,
    /// Slot of this replica's durable snapshot (of its state machine, which survives crashes).
    snapshot: Slot,
    /// A snapshot fetch is on its way.
    fetching: bool,
}

struct PendingRead {
    client: usize,
    node: NodeId,
    incarnation: u64,
    floor: Slot,
}

pub(super) struct Sim {
    options: SimOptions,
    plan: Plan,
    rng: Rng,
    now: u64,
    seq: u64,
    events: u64,
    queue: BTreeMap<(u64, u64), Event>,
    nodes: Vec<Node>,
    network: Network,
    checker: Checker,
    clients: Vec<Client>,
    next_command: u64,
    next_read: u64,
    proposer: BTreeMap<CommandId, (NodeId, u64)>,
    reads: BTreeMap<u64, PendingRead>,
    partition_generation: u64,
    healed: Option<BTreeSet<NodeId>>,
    /// The membership of the highest slot any replica has applied (chosen, so final).
    chosen_membership: (Slot, Membership),
    /// The one before it: a replica it removed may be the only one that knows the change
    /// is chosen (the remaining voters may have accepted it without learning the commit),
    /// so the liveness phase brings it back too, as an operator keeps a removed replica
    /// running until the others have learned its removal.
    previous_membership: Membership,
    done: bool,
    pub(super) fault_log: Vec<String>,
}

impl Sim {
    pub(super) fn new(options: SimOptions) -> Sim {
        let mut rng = Rng::new(options.seed);
        let plan = Plan::generate(&mut rng, options.safety_us);
        let network = Network::new(plan.links.clone());
        let mut sim = Sim {
            nodes: Vec::new(),
            clients: Vec::new(),
            options,
            rng,
            now: 0,
            seq: 0,
            events: 0,
            queue: BTreeMap::new(),
            network,
            checker: Checker::default(),
            next_command: 1,
            next_read: 1,
            proposer: BTreeMap::new(),
            reads: BTreeMap::new(),
            partition_generation: 0,
            healed: None,
            chosen_membership: (
                0,
                Membership::of_voters(&(1..=plan.nodes).collect::<Vec<_>>()),
            ),
            previous_membership: Membership::of_voters(&(1..=plan.nodes).collect::<Vec<_>>()),
            done: false,
            fault_log: Vec::new(),
            plan,
        };
        sim.start();
        sim
    }

    pub(super) fn plan(&self) -> &Plan {
        &self.plan
    }

    fn start(&mut self) {
        let bootstrap: Vec<NodeId> = (1..=self.plan.nodes).collect();
        for id in 1..=self.plan.all_nodes() {
            let first = id <= self.plan.nodes;
            let mut node = Node {
                id,
                incarnation: 0,
                member_incarnation: if first { 1 } else { 1_000 + u64::from(id) },
                bootstrap_members: if first { bootstrap.clone() } else { Vec::new() },
                machine_membership: first.then(|| Membership::of_voters(&bootstrap)),
                snapshot_membership: None,
                replica: None,
                wal: Vec::new(),
                prefix_removed: false,
                synced: 0,
                waiting: VecDeque::new(),
                fsync_in_flight: false,
                paused_until: 0,
                snapshot: 0,
                fetching: false,
            };
            node.replica = Some(self.build_replica(&node));
            self.nodes.push(node);
            let offset = self.rng.below(TICK_US);
            self.schedule(offset, Event::Tick(id));
        }
        for client in 0..self.plan.clients as usize {
            self.clients.push(Client {
                op: None,
                attempt: 0,
                leader_hint: None,
            });
            let think = self.rng.below(50_000);
            self.schedule(think, Event::ClientWake { client, attempt: 0 });
        }
        for (at, fault) in self.plan.faults.clone() {
            self.schedule(at, Event::Fault(fault));
        }
        let first_look = self.rng.between(50_000, 300_000);
        self.schedule(first_look, Event::Operate);
        self.schedule(self.options.safety_us, Event::Heal);
    }

    fn config_for(&self, node: &Node) -> Config {
        let mut config = Config::new(node.id, node.bootstrap_members.clone());
        config.incarnation = node.member_incarnation;
        config.heartbeat_interval_ticks = self.plan.heartbeat_interval_ticks;
        config.election_timeout_ticks = self.plan.election_timeout_ticks;
        config.inflight_slots_max = self.plan.inflight_slots_max;
        config.slot_bytes_max = self.plan.slot_bytes_max;
        config.pending_bytes_max = self.plan.slot_bytes_max * 64;
        config.catch_up_bytes_max = self.plan.catch_up_bytes_max;
        config.bugs = self.options.bugs;
        config
    }

    fn build_replica(&self, node: &Node) -> Replica {
        let state = DurableState::from_retained(&node.wal, node.prefix_removed);
        let applied = self.checker.applied(node.id);
        let seed = self.options.seed ^ (u64::from(node.id) << 48) ^ node.incarnation;
        let config = self.config_for(node);
        let membership = node.machine_membership.clone();
        let replica = Replica::restore_machine(config, seed, state, applied, membership);
        replica.expect("simulator builds valid configs")
    }

    fn schedule(&mut self, after_us: u64, event: Event) {
        self.seq += 1;
        self.queue.insert((self.now + after_us, self.seq), event);
    }

    fn log_fault(&mut self, what: String) {
        let line = format!("t={:>9.3}ms {what}", self.now as f64 / 1_000.0);
        if self.options.trace {
            eprintln!("{line}");
        }
        self.fault_log.push(line);
    }

    /// Run to completion: Ok with a report, or the first violation.
    pub(super) fn run(&mut self) -> std::result::Result<SimReport, String> {
        while !self.done {
            let Some(((at, _), event)) = self.queue.pop_first() else {
                return Err("liveness: the event queue ran dry".into());
            };
            self.now = at;
            self.events += 1;
            if self.events > EVENTS_MAX {
                return Err(format!("liveness: more than {EVENTS_MAX} events"));
            }
            if self.options.trace {
                eprintln!("t={:>9.3}ms {event:?}", at as f64 / 1_000.0);
            }
            self.process(event)?;
            self.checker.take_violation()?;
        }
        Ok(SimReport {
            seed: self.options.seed,
            nodes: self.plan.nodes,
            events: self.events,
            faults: self.fault_log.len(),
            chosen: self.checker.chosen_count(),
            acknowledged: self.checker.acknowledged_count(),
            simulated_us: self.now,
        })
    }

    fn process(&mut self, event: Event) -> std::result::Result<(), String> {
        if let Some(node) = self.deferred_node(&event) {
            let until = self.nodes[node as usize - 1].paused_until;
            self.seq += 1;
            self.queue.insert((until, self.seq), event);
            return Ok(());
        }
        match event {
            Event::Tick(node) => self.on_tick(node),
            Event::Deliver(message) => self.on_deliver(message),
            Event::Fsync {
                node,
                incarnation,
                upto,
            } => self.on_fsync(node, incarnation, upto),
            Event::ClientWake { client, attempt } => {
                self.on_client_wake(client, attempt);
                Ok(())
            }
            Event::ClientRequest {
                client,
                attempt,
                node,
                op,
            } => self.on_client_request(client, attempt, node, op),
            Event::Fault(fault) => self.on_fault(fault),
            Event::SnapshotArrives {
                node,
                incarnation,
                from,
            } => self.on_snapshot_arrives(node, incarnation, from),
            Event::Restart(node) => self.on_restart(node),
            Event::Operate => self.on_operate(),
            Event::HealPartition(generation) => {
                if generation == self.partition_generation {
                    self.network.heal_all();
                    self.log_fault("partition healed".into());
                }
                Ok(())
            }
            Event::Heal => self.on_heal(),
            Event::Check => self.on_check(),
        }
    }

    /// A paused replica does nothing: its messages, disk completions and requests wait.
    fn deferred_node(&self, event: &Event) -> Option<NodeId> {
        let node = match event {
            Event::Deliver(message) => message.to,
            Event::Fsync { node, .. }
            | Event::ClientRequest { node, .. }
            | Event::SnapshotArrives { node, .. } => *node,
            _ => return None,
        };
        (self.nodes[node as usize - 1].paused_until > self.now).then_some(node)
    }

    fn node(&mut self, id: NodeId) -> &mut Node {
        &mut self.nodes[id as usize - 1]
    }

    fn on_tick(&mut self, id: NodeId) -> std::result::Result<(), String> {
        self.schedule(TICK_US, Event::Tick(id));
        let now = self.now;
        let node = self.node(id);
        if node.paused_until > now {
            return Ok(());
        }
        let Some(replica) = node.replica.as_mut() else {
            return Ok(());
        };
        replica.tick();
        replica.invariants();
        self.drive(id)
    }

    fn on_deliver(&mut self, message: Message) -> std::result::Result<(), String> {
        let id = message.to;
        let Some(replica) = self.node(id).replica.as_mut() else {
            return Ok(());
        };
        replica.step(message);
        replica.invariants();
        self.drive(id)
    }

    fn send(&mut self, message: Message) {
        self.checker.on_send(&message);
        for delay in self.network.delays(&mut self.rng, message.from, message.to) {
            self.schedule(delay, Event::Deliver(message.clone()));
        }
    }

    /// The driver loop, as the service runs it: send, persist, then what depends on it.
    fn drive(&mut self, id: NodeId) -> std::result::Result<(), String> {
        loop {
            self.complete_persisted(id)?;
            let node = self.node(id);
            let Some(replica) = node.replica.as_mut() else {
                return Ok(());
            };
            if !replica.has_ready() {
                break;
            }
            let mut ready = replica.ready();
            let wanted = ready.snapshot_wanted.take();
            let wrote = !ready.records.is_empty();
            let compacted_at = (ready.records.iter())
                .rposition(|record| matches!(record, Record::Compacted { .. }))
                .map(|at| node.wal.len() + at);
            node.wal.append(&mut ready.records);
            let wal_end = node.wal.len();
            let messages = std::mem::take(&mut ready.messages);
            node.waiting.push_back((ready, wal_end, compacted_at));
            self.send_all(id, messages);
            if let Some(wanted) = wanted {
                self.fetch_snapshot(id, wanted.from);
            }
            if wrote
                && self
                    .rng
                    .chance(self.plan.crash_before_fsync_per_mille, 1_000)
            {
                return self.crash_before_fsync(id);
            }
        }
        self.maybe_start_fsync(id);
        Ok(())
    }

    /// Messages a replica addresses to itself never touch the network.
    fn send_all(&mut self, id: NodeId, messages: Vec<Message>) {
        let mut local = Vec::new();
        for message in messages {
            if message.to == id {
                self.checker.on_send(&message);
                local.push(message);
            } else {
                self.send(message);
            }
        }
        for message in local {
            if let Some(replica) = self.node(id).replica.as_mut() {
                replica.step(message);
                replica.invariants();
            }
        }
    }

    fn crash_before_fsync(&mut self, id: NodeId) -> std::result::Result<(), String> {
        self.log_fault(format!(
            "replica {id} crashes right after sending, before its fsync"
        ));
        self.crash(id)?;
        let down_us = self.rng.between(1_000, 500_000);
        self.schedule(down_us, Event::Restart(id));
        Ok(())
    }

    fn maybe_start_fsync(&mut self, id: NodeId) {
        let node = &self.nodes[id as usize - 1];
        if node.fsync_in_flight || node.synced == node.wal.len() || node.replica.is_none() {
            return;
        }
        let (incarnation, upto) = (node.incarnation, node.wal.len());
        self.node(id).fsync_in_flight = true;
        let latency = self
            .rng
            .between(self.plan.fsync_min_us, self.plan.fsync_max_us);
        self.schedule(
            latency,
            Event::Fsync {
                node: id,
                incarnation,
                upto,
            },
        );
    }

    fn on_fsync(
        &mut self,
        id: NodeId,
        incarnation: u64,
        upto: usize,
    ) -> std::result::Result<(), String> {
        let node = self.node(id);
        if node.incarnation != incarnation || node.replica.is_none() {
            return Ok(());
        }
        node.synced = node.synced.max(upto);
        node.fsync_in_flight = false;
        self.drive(id)
    }

    /// Finish every Ready whose records are durable: persisted messages, then apply.
    fn complete_persisted(&mut self, id: NodeId) -> std::result::Result<(), String> {
        loop {
            let node = self.node(id);
            let durable = matches!(node.waiting.front(), Some((_, end, _)) if *end <= node.synced);
            if !durable || node.replica.is_none() {
                return Ok(());
            }
            let (mut ready, _, compacted_at) = node.waiting.pop_front().expect("front exists");
            let messages = std::mem::take(&mut ready.persisted_messages);
            self.send_all(id, messages);
            for (slot, value) in std::mem::take(&mut ready.committed) {
                self.apply(id, slot, &value)?;
            }
            for read in std::mem::take(&mut ready.read_states) {
                self.on_read_state(id, read)?;
            }
            self.node(id)
                .replica
                .as_mut()
                .expect("replica is up")
                .advance(ready);
            if let Some(at) = compacted_at {
                self.drop_wal_before(id, at);
            }
            self.maybe_snapshot(id);
        }
    }

    /// Every `snapshot_interval_slots` applied slots, the replica snapshots its state (in
    /// the simulator the state machine is durable as applied, so the snapshot is too) and
    /// compacts its log.
    fn maybe_snapshot(&mut self, id: NodeId) {
        let interval = self.plan.snapshot_interval_slots;
        // What the state machine applied: the core may have handed out more, in Readies
        // still waiting for their fsync.
        let applied = self.checker.applied(id);
        let node = self.node(id);
        let Some(replica) = node.replica.as_mut() else {
            return;
        };
        if interval == 0 || applied < node.snapshot + interval {
            return;
        }
        node.snapshot = applied;
        node.snapshot_membership = node.machine_membership.clone();
        replica.compact(applied);
        replica.invariants();
    }

    /// As the driver does once the Ready holding a `Record::Compacted` (at `at`) is durable:
    /// records before it go, in whole segments, so some just before it may stay.
    fn drop_wal_before(&mut self, id: NodeId, at: usize) {
        let at = at - self.rng.below(at as u64 + 1) as usize;
        let node = self.node(id);
        node.prefix_removed |= at > 0;
        node.wal.drain(..at);
        node.synced -= at;
        for (_, end, compacted_at) in node.waiting.iter_mut() {
            *end -= at;
            if let Some(position) = compacted_at.as_mut() {
                *position -= at;
            }
        }
    }

    fn fetch_snapshot(&mut self, id: NodeId, from: NodeId) {
        let node = self.node(id);
        if node.fetching {
            return;
        }
        node.fetching = true;
        let incarnation = node.incarnation;
        let transfer_us = self.plan.snapshot_transfer_us;
        self.schedule(
            transfer_us,
            Event::SnapshotArrives {
                node: id,
                incarnation,
                from,
            },
        );
    }

    /// Installs `from`'s snapshot in `id`'s state machine, then tells the core.
    fn on_snapshot_arrives(
        &mut self,
        id: NodeId,
        incarnation: u64,
        from: NodeId,
    ) -> std::result::Result<(), String> {
        let slot = self.nodes[from as usize - 1].snapshot;
        let membership = self.nodes[from as usize - 1].snapshot_membership.clone();
        let node = self.node(id);
        if node.incarnation != incarnation || node.replica.is_none() {
            return Ok(());
        }
        if !node.waiting.is_empty() {
            // Readies wait for their fsync and may hand out slots the snapshot covers: the
            // install waits for them, as it must (see `Replica::install_snapshot`).
            let event = Event::SnapshotArrives {
                node: id,
                incarnation,
                from,
            };
            self.schedule(1_000, event);
            return Ok(());
        }
        node.fetching = false;
        if slot <= self.checker.applied(id) {
            return Ok(());
        }
        self.checker.on_install(id, slot)?;
        self.log_fault(format!(
            "replica {id} installs replica {from}'s snapshot at slot {slot}"
        ));
        let node = self.node(id);
        node.snapshot = slot;
        node.machine_membership = membership.clone();
        node.snapshot_membership = membership.clone();
        let replica = node.replica.as_mut().expect("replica is up");
        let installed = replica.install_snapshot_with(slot, membership);
        assert!(installed, "snapshot ahead of applied");
        replica.invariants();
        self.drive(id)
    }

    fn apply(&mut self, id: NodeId, slot: Slot, value: &Value) -> std::result::Result<(), String> {
        self.checker.on_apply(id, slot, value)?;
        if let Value::Membership(membership) = value {
            self.node(id).machine_membership = Some(membership.clone());
            if slot > self.chosen_membership.0 {
                let previous =
                    std::mem::replace(&mut self.chosen_membership, (slot, membership.clone()));
                self.previous_membership = previous.1;
            }
        }
        let incarnation = self.node(id).incarnation;
        for command in value.commands() {
            let command = command_id(command).expect("simulated commands carry an id");
            if self.proposer.get(&command) == Some(&(id, incarnation))
                && !self.checker.is_acknowledged(command)
            {
                self.checker.on_acknowledge(command, slot);
                self.finish_client_write(command);
            }
        }
        Ok(())
    }

    fn finish_client_write(&mut self, command: CommandId) {
        let client = self.clients.iter().position(
            |c| matches!(&c.op, Some(ClientOp::Write { command: pending, .. }) if *pending == command),
        );
        if let Some(client) = client {
            self.finish_client_op(client);
        }
    }

    fn finish_client_op(&mut self, client: usize) {
        let think = self.rng.below(20_000);
        let state = &mut self.clients[client];
        state.op = None;
        state.attempt += 1;
        let attempt = state.attempt;
        self.schedule(think, Event::ClientWake { client, attempt });
    }

    fn on_read_state(&mut self, id: NodeId, read: ReadState) -> std::result::Result<(), String> {
        let Some(pending) = self.reads.remove(&read.context) else {
            return Ok(());
        };
        let incarnation = self.node(id).incarnation;
        if pending.node != id || pending.incarnation != incarnation {
            return Ok(());
        }
        self.checker.on_read(id, read.index, pending.floor)?;
        let current = matches!(&self.clients[pending.client].op, Some(ClientOp::Read { context, .. }) if *context == read.context);
        if current {
            self.finish_client_op(pending.client);
        }
        Ok(())
    }

    fn on_client_wake(&mut self, client: usize, attempt: u64) {
        if self.clients[client].attempt != attempt {
            return;
        }
        let op = match self.clients[client].op.clone() {
            // Liveness phase: finish outstanding writes, start nothing new.
            Some(ClientOp::Read { .. }) | None if self.healed.is_some() => {
                self.clients[client].op = None;
                return;
            }
            Some(ClientOp::Write { command, payload }) => ClientOp::Write { command, payload },
            Some(ClientOp::Read { .. }) | None => self.new_client_op(),
        };
        self.clients[client].op = Some(op.clone());
        if let ClientOp::Write { command, .. } = &op {
            self.checker.on_propose(*command);
        }
        let node = self.client_target(client);
        let delay = self.network.delay(&mut self.rng);
        self.clients[client].attempt += 1;
        let attempt = self.clients[client].attempt;
        let request = Event::ClientRequest {
            client,
            attempt,
            node,
            op,
        };
        self.schedule(delay, request);
        self.schedule(CLIENT_TIMEOUT_US, Event::ClientWake { client, attempt });
    }

    fn new_client_op(&mut self) -> ClientOp {
        if self.rng.chance(1, 5) {
            let context = self.next_read;
            self.next_read += 1;
            return ClientOp::Read {
                context,
                floor: self.checker.read_floor(),
            };
        }
        let command = self.next_command;
        self.next_command += 1;
        let mut payload = command.to_le_bytes().to_vec();
        let padding_max = (self.plan.slot_bytes_max as u64 - 8).min(64);
        payload.resize(8 + self.rng.below(padding_max + 1) as usize, 0xab);
        ClientOp::Write { command, payload }
    }

    fn client_target(&mut self, client: usize) -> NodeId {
        let hint = self.clients[client].leader_hint.take();
        let allowed = |node: NodeId, healed: &Option<BTreeSet<NodeId>>| {
            healed.as_ref().is_none_or(|set| set.contains(&node))
        };
        match hint {
            Some(node) if allowed(node, &self.healed) => node,
            _ if self.healed.as_ref().is_some_and(BTreeSet::is_empty) => 1,
            _ => loop {
                let node = self.rng.between(1, u64::from(self.plan.all_nodes())) as NodeId;
                if allowed(node, &self.healed) {
                    break node;
                }
            },
        }
    }

    fn on_client_request(
        &mut self,
        client: usize,
        attempt: u64,
        id: NodeId,
        op: ClientOp,
    ) -> std::result::Result<(), String> {
        let incarnation = self.node(id).incarnation;
        let Some(replica) = self.node(id).replica.as_mut() else {
            return Ok(());
        };
        let result = match &op {
            ClientOp::Write { payload, .. } => replica.propose(payload.clone()),
            ClientOp::Read { context, .. } => replica.read_index(*context),
        };
        replica.invariants();
        match (result, op) {
            (Ok(()), ClientOp::Write { command, .. }) => {
                self.proposer.insert(command, (id, incarnation));
            }
            (Ok(()), ClientOp::Read { context, floor }) => {
                let node = id;
                let read = PendingRead {
                    client,
                    node,
                    incarnation,
                    floor,
                };
                self.reads.insert(context, read);
            }
            (Err(Error::NotLeader { leader }), _) if self.clients[client].attempt == attempt => {
                // The client hears "not leader" and soon retries at the hinted replica.
                self.clients[client].leader_hint = leader;
                let backoff = self.network.delay(&mut self.rng) + self.rng.below(10_000);
                self.schedule(backoff, Event::ClientWake { client, attempt });
            }
            (Err(Error::NotLeader { .. } | Error::ProposalQueueFull { .. }), _) => {}
            (Err(error), _) => return Err(format!("simulator: unexpected error {error}")),
        }
        self.drive(id)
    }

    fn current_leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter_map(|node| node.replica.as_ref())
            .filter(|replica| replica.role() == Role::Leader)
            .max_by_key(|replica| replica.promised())
            .map(Replica::id)
    }

    fn resolve(&mut self, target: Target) -> NodeId {
        match target {
            Target::Node(id) => id,
            Target::Leader => match self.current_leader() {
                Some(id) => id,
                None => self.rng.between(1, u64::from(self.plan.all_nodes())) as NodeId,
            },
        }
    }

    fn on_fault(&mut self, fault: Fault) -> std::result::Result<(), String> {
        match fault {
            Fault::Crash { target, down_us } => {
                let id = self.resolve(target);
                self.crash(id)?;
                self.schedule(down_us, Event::Restart(id));
            }
            Fault::Pause { target, paused_us } => {
                let id = self.resolve(target);
                let until = self.now + paused_us;
                let node = self.node(id);
                node.paused_until = node.paused_until.max(until);
                self.log_fault(format!("pause replica {id} for {}ms", paused_us / 1_000));
            }
            Fault::Partition { kind, lasting_us } => self.partition(kind, lasting_us),
            Fault::DiskLoss { target, down_us } => {
                let id = self.resolve(target);
                self.crash(id)?;
                if self.may_lose_disk(id) {
                    self.lose_disk(id);
                }
                self.schedule(down_us, Event::Restart(id));
            }
        }
        Ok(())
    }

    /// Voters of `membership` whose replica still has the disk they were admitted with.
    fn intact_voters(&self, membership: &Membership) -> BTreeSet<NodeId> {
        (membership.members.iter())
            .filter(|(_, member)| member.voter)
            .filter(|(&id, member)| {
                let node = &self.nodes[id as usize - 1];
                node.member_incarnation == member.incarnation
            })
            .map(|(&id, _)| id)
            .collect()
    }

    /// A disk is lost only while the voters that keep theirs still make a quorum, with no
    /// membership change in flight: losing more is losing data, for any protocol.
    fn may_lose_disk(&self, id: NodeId) -> bool {
        let Some(leader) = self.current_leader() else {
            return false;
        };
        let replica = self.nodes[leader as usize - 1].replica.as_ref();
        let replica = replica.expect("the leader is up");
        let committed = replica.committed_membership();
        if committed != replica.latest_membership() || self.membership_may_be_in_flight() {
            return false;
        }
        // The leader's committed membership may lag the chosen one (and the one before it
        // may still be what another replica counts in): each must keep a quorum.
        [
            committed,
            &self.chosen_membership.1,
            &self.previous_membership,
        ]
        .into_iter()
        .all(|membership| {
            let intact = self.intact_voters(membership);
            !intact.contains(&id) || intact.len() > membership.quorum()
        })
    }

    /// Whether any replica, up or down, holds a membership slot above the newest chosen one
    /// (accepted, or in an up replica's log): it may yet be chosen.
    fn membership_may_be_in_flight(&self) -> bool {
        let chosen = self.chosen_membership.0;
        self.nodes.iter().any(|node| {
            let in_wal = node.wal.iter().any(|record| match record {
                Record::Accept { slot, value, .. } | Record::Chosen { slot, value } => {
                    *slot > chosen && value.membership().is_some()
                }
                _ => false,
            });
            let in_log = (node.replica.as_ref()).is_some_and(|replica| {
                replica.latest_membership() != replica.committed_membership()
            });
            in_wal || in_log
        }) || self.queue.values().any(|event| {
            // Or in a message on its way (a paused replica's backlog, say).
            let Event::Deliver(message) = event else {
                return false;
            };
            let is_new = |slot: Slot, value: &Value| slot > chosen && value.membership().is_some();
            match &message.body {
                MessageBody::Accept { entries, .. } | MessageBody::CatchUp { entries } => {
                    entries.iter().any(|(slot, value)| is_new(*slot, value))
                }
                MessageBody::Promise { entries, .. } => {
                    entries.iter().any(|entry| is_new(entry.slot, &entry.value))
                }
                _ => false,
            }
        })
    }

    /// The crashed replica `id` comes back with nothing: no WAL, no state machine, and a
    /// new member incarnation (unless the injected bug keeps its identity).
    fn lose_disk(&mut self, id: NodeId) {
        let keeps_identity = self.options.bugs.empty_replica_votes;
        let voters: Vec<NodeId> = self.chosen_membership.1.voters().collect();
        let node = self.node(id);
        node.wal.clear();
        node.synced = 0;
        node.prefix_removed = false;
        node.snapshot = 0;
        node.machine_membership = None;
        node.snapshot_membership = None;
        if keeps_identity {
            // As a driver that bootstraps again from its config would.
            if voters.contains(&id) {
                node.bootstrap_members = voters;
            }
        } else {
            node.member_incarnation = node.member_incarnation * 1_000 + u64::from(id);
            node.bootstrap_members = Vec::new();
        }
        let incarnation = self.nodes[id as usize - 1].member_incarnation;
        self.checker.on_disk_loss(id);
        self.log_fault(format!(
            "replica {id} lost its disk; it returns as incarnation {incarnation}"
        ));
    }

    /// The operator: re-admits replicas that lost their disk (add the new incarnation as a
    /// learner, promote it once caught up), and in plans with membership changes, adds,
    /// promotes and removes replicas and transfers leadership at random. The core refuses
    /// what it must (a change in flight, a lost quorum, a learner behind); that is fine.
    fn on_operate(&mut self) -> std::result::Result<(), String> {
        if self.healed.is_some() {
            return Ok(()); // the liveness phase changes nothing
        }
        let next = self.rng.between(50_000, 400_000);
        self.schedule(next, Event::Operate);
        let Some(leader) = self.current_leader() else {
            return Ok(());
        };
        let latest = (self.nodes[leader as usize - 1].replica.as_ref())
            .expect("the leader is up")
            .latest_membership()
            .clone();
        let Some(action) = self.choose_change(&latest) else {
            return Ok(());
        };
        let replica = self
            .node(leader)
            .replica
            .as_mut()
            .expect("the leader is up");
        let outcome = match &action {
            Operation::Change(change) => replica.propose_membership(change.clone()).map(|_| ()),
            Operation::Transfer(to) => replica.transfer_leadership(*to),
        };
        replica.invariants();
        if outcome.is_ok() {
            self.log_fault(format!("operator at leader {leader}: {action:?}"));
        }
        self.drive(leader)
    }

    fn choose_change(&mut self, latest: &Membership) -> Option<Operation> {
        for node in &self.nodes {
            let member = latest.get(node.id);
            if node.replica.is_some()
                && member.is_some_and(|m| m.incarnation != node.member_incarnation)
            {
                return Some(Operation::Change(MembershipChange::AddLearner {
                    id: node.id,
                    incarnation: node.member_incarnation,
                    addr: String::new(),
                }));
            }
        }
        let learners: Vec<NodeId> = (latest.members.iter())
            .filter(|(_, member)| !member.voter)
            .map(|(&id, _)| id)
            .collect();
        if let Some(&id) = learners.first() {
            // A careful operator promotes a learner its status shows up and caught up, not
            // one that lost its disk since it was added.
            let intact = latest.get(id).map(|member| member.incarnation)
                == Some(self.nodes[id as usize - 1].member_incarnation);
            if intact && self.rng.chance(2, 3) {
                return Some(Operation::Change(MembershipChange::Promote { id }));
            }
        }
        if !self.plan.membership_changes || !self.rng.chance(1, 3) {
            return None;
        }
        let voters: Vec<NodeId> = latest.voters().collect();
        let outsiders: Vec<NodeId> = (self.nodes.iter())
            .filter(|node| node.replica.is_some() && latest.get(node.id).is_none())
            .map(|node| node.id)
            .collect();
        let pick = |rng: &mut Rng, ids: &[NodeId]| ids[rng.below(ids.len() as u64) as usize];
        match self.rng.below(4) {
            0 if !outsiders.is_empty() => {
                let id = pick(&mut self.rng, &outsiders);
                let incarnation = self.nodes[id as usize - 1].member_incarnation;
                Some(Operation::Change(MembershipChange::AddLearner {
                    id,
                    incarnation,
                    addr: String::new(),
                }))
            }
            1 if voters.len() > 1 => {
                let id = pick(&mut self.rng, &voters);
                let change = MembershipChange::Remove { id };
                // As the runbook says: never remove a voter while the voters left that still
                // have their disks would not make a quorum (one lost its disk, say, and is
                // not replaced yet). The core's check only sees whom the leader heard lately.
                let next = latest.changed(&change).ok()?;
                (self.intact_voters(&next).len() >= next.quorum())
                    .then_some(Operation::Change(change))
            }
            2 if !learners.is_empty() => {
                let id = pick(&mut self.rng, &learners);
                Some(Operation::Change(MembershipChange::Remove { id }))
            }
            3 if voters.len() > 1 => Some(Operation::Transfer(pick(&mut self.rng, &voters))),
            _ => None,
        }
    }

    fn crash(&mut self, id: NodeId) -> std::result::Result<(), String> {
        let node = &self.nodes[id as usize - 1];
        if node.replica.is_none() {
            return Ok(());
        }
        let unsynced = (node.wal.len() - node.synced) as u64;
        let kept = node.synced + self.rng.below(unsynced + 1) as usize;
        let node = self.node(id);
        node.replica = None;
        node.incarnation += 1;
        node.wal.truncate(kept);
        node.synced = kept;
        node.waiting.clear();
        node.fsync_in_flight = false;
        node.paused_until = 0;
        node.fetching = false;
        self.log_fault(format!(
            "crash replica {id}: kept {kept} records ({unsynced} were not yet durable)"
        ));
        let node = &self.nodes[id as usize - 1];
        let durable = DurableState::from_retained(&node.wal, node.prefix_removed);
        let verdict = self.checker.on_crash(id, &durable);
        if self.options.check_acceptor_memory {
            return verdict;
        }
        Ok(())
    }

    fn on_restart(&mut self, id: NodeId) -> std::result::Result<(), String> {
        if self.nodes[id as usize - 1].replica.is_some() {
            return Ok(());
        }
        if self
            .healed
            .as_ref()
            .is_some_and(|healed| !healed.contains(&id))
        {
            return Ok(());
        }
        let replica = self.build_replica(&self.nodes[id as usize - 1]);
        replica.invariants();
        self.node(id).replica = Some(replica);
        self.log_fault(format!("restart replica {id}"));
        self.drive(id)
    }

    fn partition(&mut self, kind: Partition, lasting_us: u64) {
        self.network.heal_all();
        self.partition_generation += 1;
        let nodes: Vec<NodeId> = (1..=self.plan.all_nodes()).collect();
        let description = match kind {
            Partition::Split => {
                let side: BTreeSet<NodeId> = nodes
                    .iter()
                    .copied()
                    .filter(|_| self.rng.chance(1, 2))
                    .collect();
                self.cut_between(&nodes, |a, b| side.contains(&a) != side.contains(&b));
                format!("partition: {side:?} | rest")
            }
            Partition::IsolateLeader => {
                let leader = self.resolve(Target::Leader);
                self.cut_between(&nodes, |a, b| (a == leader) != (b == leader));
                format!("partition: isolate replica {leader}")
            }
            Partition::OneWay => {
                let mut cut = Vec::new();
                for &from in &nodes {
                    for &to in &nodes {
                        if from != to && self.rng.chance(1, 3) {
                            self.network.cut(from, to);
                            cut.push((from, to));
                        }
                    }
                }
                format!("partition: one-way cuts {cut:?}")
            }
            Partition::Bridge => {
                let bridge = self.rng.between(1, u64::from(self.plan.all_nodes())) as NodeId;
                let half: BTreeSet<NodeId> = nodes
                    .iter()
                    .copied()
                    .filter(|_| self.rng.chance(1, 2))
                    .collect();
                self.cut_between(&nodes, |a, b| {
                    a != bridge && b != bridge && half.contains(&a) != half.contains(&b)
                });
                format!("partition: bridge {bridge} between {half:?} and the rest")
            }
        };
        self.log_fault(format!("{description} for {}ms", lasting_us / 1_000));
        let generation = self.partition_generation;
        self.schedule(lasting_us, Event::HealPartition(generation));
    }

    fn cut_between(&mut self, nodes: &[NodeId], apart: impl Fn(NodeId, NodeId) -> bool) {
        for &a in nodes {
            for &b in nodes {
                if a != b && apart(a, b) {
                    self.network.cut(a, b);
                }
            }
        }
    }

    /// Liveness phase: heal a quorum (sometimes everyone) and keep the rest down; from here on
    /// the cluster must make progress.
    fn on_heal(&mut self) -> std::result::Result<(), String> {
        let n = self.plan.all_nodes();
        // The voters that kept their disks, of the newest chosen membership and of any newer
        // one a replica holds (it may yet be chosen): every quorum that can decide.
        let mut memberships = vec![self.chosen_membership.1.clone()];
        if self.previous_membership != memberships[0] {
            memberships.push(self.previous_membership.clone());
        }
        for replica in self.nodes.iter().filter_map(|node| node.replica.as_ref()) {
            let latest = replica.latest_membership();
            if !latest.members.is_empty() && !memberships.contains(latest) {
                memberships.push(latest.clone());
            }
        }
        // And those in the WAL of replicas that are down: one may be chosen without any
        // replica having applied it yet (a leader alone in its membership chooses alone).
        let chosen = self.chosen_membership.0;
        for node in &self.nodes {
            for record in &node.wal {
                let (Record::Accept { slot, value, .. } | Record::Chosen { slot, value }) = record
                else {
                    continue;
                };
                if let Some(membership) = value.membership() {
                    if *slot > chosen && !memberships.contains(membership) {
                        memberships.push(membership.clone());
                    }
                }
            }
        }
        let mut healed = BTreeSet::new();
        for membership in &memberships {
            healed.extend(self.intact_voters(membership));
        }
        if memberships.len() == 1 && self.rng.chance(1, 2) {
            let quorum = memberships[0].quorum();
            while healed.len() > quorum {
                let drop = self.rng.between(1, u64::from(n)) as NodeId;
                healed.remove(&drop);
            }
        }
        self.network.faults = LinkFaults::healthy();
        self.network.heal_among(&healed);
        self.log_fault(format!(
            "liveness phase: heal {healed:?}, the rest stay down"
        ));
        for id in 1..=n {
            if !healed.contains(&id) {
                self.crash(id)?;
            }
        }
        self.healed = Some(healed.clone());
        for &id in &healed {
            self.node(id).paused_until = 0;
            self.on_restart(id)?;
        }
        self.schedule(CHECK_INTERVAL_US, Event::Check);
        Ok(())
    }

    fn on_check(&mut self) -> std::result::Result<(), String> {
        let healed = self
            .healed
            .clone()
            .expect("checks run in the liveness phase");
        let writes_pending = self
            .clients
            .iter()
            .any(|c| matches!(c.op, Some(ClientOp::Write { .. })));
        let leader =
            (self.current_leader()).and_then(|id| self.nodes[id as usize - 1].replica.as_ref());
        let leader_commit = leader.map(Replica::commit_index);
        // Every healed member of the leader's membership must catch up; a replica removed
        // (or replaced by a newer incarnation of itself) is no longer sent the log.
        let members: BTreeSet<NodeId> = match leader {
            Some(leader) => (healed.iter().copied())
                .filter(|&id| {
                    (leader.latest_membership().get(id)).is_some_and(|member| {
                        member.incarnation == self.nodes[id as usize - 1].member_incarnation
                    })
                })
                .collect(),
            None => healed.clone(),
        };
        let applied: Vec<Slot> = members.iter().map(|&id| self.checker.applied(id)).collect();
        let acknowledged_max = self.checker.read_floor();
        let caught_up = leader_commit.is_some_and(|commit| {
            commit >= acknowledged_max && applied.iter().all(|&a| a == commit)
        });
        if !writes_pending && caught_up {
            self.checker.check_durability(&members)?;
            self.done = true;
            return Ok(());
        }
        if self.now >= self.options.safety_us + self.options.liveness_us {
            return Err(format!(
                "liveness: {}ms after healing {healed:?}: writes pending {writes_pending}, leader commit {leader_commit:?}, highest acknowledged slot {acknowledged_max}, applied {applied:?}",
                self.options.liveness_us / 1_000
            ));
        }
        self.schedule(CHECK_INTERVAL_US, Event::Check);
        Ok(())
    }
}

/// What the simulated operator does.
#[derive(Debug)]
enum Operation {
    Change(MembershipChange),
    Transfer(NodeId),
}

impl SimFailure {
    pub(super) fn from_sim(sim: &Sim, options: &SimOptions, violation: String) -> SimFailure {
        SimFailure {
            seed: options.seed,
            violation,
            plan: format!("{:?}", sim.plan()),
            fault_log: sim.fault_log.clone(),
            replay: options.replay_command(),
        }
    }
}
