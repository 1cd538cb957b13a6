//! `paxkv admin member list|add|promote|remove|transfer-leader`: the membership, changed one
//! step at a time through the leader (docs/operations.md, "Membership").

use std::fmt::Write as _;
use std::io::{self, Write};
use std::thread;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use paxkv::api::gen::paxkv::{MemberAddRequest, Membership};
use paxkv::api::TPaxkvSyncClient;

use super::{ConnectionArgs, Failure, Outcome, EXIT_SUCCESS};

/// How often `promote --wait` asks again while the learner catches up.
const CATCH_UP_POLL: Duration = Duration::from_millis(500);

#[derive(Subcommand, Debug)]
pub enum MemberCommand {
    /// Print the committed membership as the leader knows it, and the replicas waiting to
    /// be added.
    List(ListArgs),
    /// Add replica ID as a learner (it receives the log and counts in no quorum). The
    /// replica must be running, so the leader knows its incarnation; a new incarnation of a
    /// member (one that lost its disk) replaces that member.
    Add(AddArgs),
    /// Make learner ID a voter once it has caught up.
    Promote(PromoteArgs),
    /// Remove replica ID from the membership.
    Remove(IdArgs),
    /// Hand leadership to voter ID.
    TransferLeader(IdArgs),
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    connection: ConnectionArgs,
}

#[derive(Args, Debug)]
pub struct AddArgs {
    /// The replica's id.
    id: i32,
    /// Its peer address (ip:port). Default: the one the membership or the leader's config
    /// has for ID.
    #[arg(long, value_name = "IP:PORT")]
    peer_addr: Option<String>,
    /// Its incarnation (see its `paxkv status`). Default: the one it announced when it
    /// connected to the leader.
    #[arg(long, value_name = "N")]
    incarnation: Option<i64>,
    #[command(flatten)]
    connection: ConnectionArgs,
}

#[derive(Args, Debug)]
pub struct PromoteArgs {
    id: i32,
    /// While the learner is still catching up (MEMBER_BEHIND), ask again for up to this
    /// many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    wait: u64,
    #[command(flatten)]
    connection: ConnectionArgs,
}

#[derive(Args, Debug)]
pub struct IdArgs {
    id: i32,
    #[command(flatten)]
    connection: ConnectionArgs,
}

pub fn member(command: MemberCommand) -> Outcome {
    let membership = match command {
        MemberCommand::List(args) => args.connection.connect()?.admin_member_list()?,
        MemberCommand::Add(args) => {
            let request = MemberAddRequest::new(args.id, args.peer_addr, args.incarnation);
            args.connection.connect()?.admin_member_add(request)?
        }
        MemberCommand::Promote(args) => promote(&args)?,
        MemberCommand::Remove(args) => args.connection.connect()?.admin_member_remove(args.id)?,
        MemberCommand::TransferLeader(args) => {
            args.connection.connect()?.admin_transfer_leader(args.id)?
        }
    };
    io::stdout()
        .lock()
        .write_all(format_membership(&membership).as_bytes())?;
    Ok(EXIT_SUCCESS)
}

fn promote(args: &PromoteArgs) -> Result<Membership, Failure> {
    #[allow(clippy::disallowed_methods)]
    let deadline = Instant::now() + Duration::from_secs(args.wait);
    loop {
        let mut client = args.connection.connect()?;
        let error = match client.admin_member_promote(args.id) {
            Ok(membership) => return Ok(membership),
            Err(error) => error,
        };
        let failure = Failure::from(error);
        #[allow(clippy::disallowed_methods)]
        let waiting = Instant::now() < deadline;
        if !(waiting
            && matches!(&failure, Failure::Refused(line) if line.contains("MEMBER_BEHIND")))
        {
            return Err(failure);
        }
        eprintln!(
            "paxkv: replica {} is still catching up; asking again",
            args.id
        );
        thread::sleep(CATCH_UP_POLL);
    }
}

pub(super) fn format_membership(membership: &Membership) -> String {
    let mut text = String::new();
    let leader = (membership.leader).map_or("none".to_string(), |id| id.to_string());
    let _ = writeln!(text, "leader:    {leader}");
    let _ = writeln!(text, "committed: {}", membership.committed_slot);
    let width = (membership.members.iter())
        .map(|m| m.peer_address.len())
        .fold("ADDRESS".len(), usize::max);
    let _ = writeln!(
        text,
        "\n{:<4} {:<8} {:>20} {:<width$} {:>10}",
        "ID", "KIND", "INCARNATION", "ADDRESS", "COMMITTED"
    );
    for member in &membership.members {
        let address = match member.peer_address.is_empty() {
            true => "(config)",
            false => &member.peer_address,
        };
        let committed = (member.committed_slot).map_or("-".to_string(), |slot| slot.to_string());
        let _ = writeln!(
            text,
            "{:<4} {:<8} {:>20} {:<width$} {:>10}",
            member.id, member.kind, member.incarnation, address, committed
        );
    }
    for candidate in &membership.candidates {
        let _ = writeln!(
            text,
            "\nwaiting: replica {} at incarnation {} connected and is not a member \
             (paxkv admin member add {})",
            candidate.id, candidate.incarnation, candidate.id
        );
    }
    text
}
