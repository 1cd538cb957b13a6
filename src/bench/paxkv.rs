//! The paxkv target: the blocking Thrift client of [`crate::api::connect`].
//!
//! The sync client carries one call at a time, so clients that share a connection take turns
//! on it (a mutex): with fewer connections than clients, at most `connections` requests are
//! in flight. After a transport error the connection is dropped (a half-read reply may be
//! left on it) and the next operation reconnects.
use std::sync::{Arc, Mutex, MutexGuard};

use crate::api::gen::paxkv::{
    CommitRequest, Compare, CompareOp, CompareTarget, Conflict, GetRequest, InternalError,
    InvalidArgument, KeyRange, LimitExceeded, Mutation, MutationType, PutRequest, TooOld,
    TxnRequest, Unavailable,
};
use crate::api::gen::paxkv::{PatchDocumentRequest, PatchFormat, PutDocumentRequest};
use crate::api::{connect, Client, Protocol, TPaxkvSyncClient};

use paxkv_bench::{BenchClient, ErrorKind, OpError, Outcome, Target};

/// At most this many mutations in one preload commit (the server's default
/// mutations_per_txn_max is 10,000).
const BATCH_MUTATIONS_MAX: usize = 1_000;

pub struct PaxkvTarget {
    protocol: Protocol,
}

impl PaxkvTarget {
    pub fn new(protocol: Protocol) -> PaxkvTarget {
        PaxkvTarget { protocol }
    }
}

/// One TCP connection, reopened after a transport error.
pub struct PaxkvConnection {
    endpoint: String,
    protocol: Protocol,
    client: Mutex<Option<Client>>,
}

impl Target for PaxkvTarget {
    type Connection = PaxkvConnection;
    type Client = PaxkvClient;

    fn name(&self) -> &'static str {
        "paxkv"
    }

    fn connect(&self, endpoint: &str) -> Result<PaxkvConnection, OpError> {
        let client = connect(endpoint, self.protocol).map_err(|e| op_error(&e))?;
        Ok(PaxkvConnection {
            endpoint: endpoint.to_string(),
            protocol: self.protocol,
            client: Mutex::new(Some(client)),
        })
    }

    fn client(&self, connection: &Arc<PaxkvConnection>) -> Result<PaxkvClient, OpError> {
        Ok(PaxkvClient {
            connection: connection.clone(),
        })
    }

    fn batch_pairs_max(&self) -> usize {
        BATCH_MUTATIONS_MAX
    }
}

pub struct PaxkvClient {
    connection: Arc<PaxkvConnection>,
}

impl PaxkvClient {
    /// Runs `call` on the connection, holding it for the whole call (several RPCs for a txn).
    fn with<T>(
        &mut self,
        call: impl FnOnce(&mut Client) -> thrift::Result<T>,
    ) -> Result<T, OpError> {
        let mut slot = lock(&self.connection.client);
        let client = match &mut *slot {
            Some(client) => client,
            None => slot.insert(
                connect(self.connection.endpoint.as_str(), self.connection.protocol)
                    .map_err(|e| op_error(&e))?,
            ),
        };
        let result = call(client);
        if matches!(result, Err(thrift::Error::Transport(_))) {
            *slot = None;
        }
        result.map_err(|e| op_error(&e))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A client that panicked mid-call poisons nothing the others rely on: the slot is
    // either a client or empty.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `[key, key + "\0")`: exactly `key`.
fn single_key_range(key: &[u8]) -> KeyRange {
    let mut end = key.to_vec();
    end.push(0);
    KeyRange::new(key.to_vec(), end)
}

fn set(key: &[u8], value: &[u8]) -> Mutation {
    Mutation::new(MutationType::SET, key.to_vec(), value.to_vec(), None)
}

impl BenchClient for PaxkvClient {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), OpError> {
        self.with(|c| c.put(PutRequest::new(key.to_vec(), value.to_vec(), None)))
            .map(drop)
    }

    fn put_batch(&mut self, pairs: &[(Vec<u8>, Vec<u8>)]) -> Result<(), OpError> {
        let mutations = pairs.iter().map(|(k, v)| set(k, v)).collect();
        // A blind write: no read conflict ranges, so the read version only has to be recent.
        self.with(|c| {
            let version = c.get_read_version()?;
            c.commit(CommitRequest::new(version, mutations, Vec::new(), None))
        })
        .map(drop)
    }

    fn get(&mut self, key: &[u8]) -> Result<(), OpError> {
        self.with(|c| c.get(GetRequest::new(key.to_vec(), None)))
            .map(drop)
    }

    fn read_version(&mut self) -> Result<i64, OpError> {
        self.with(|c| c.get_read_version())
    }

    fn get_at(&mut self, key: &[u8], version: i64) -> Result<(), OpError> {
        self.with(|c| c.get(GetRequest::new(key.to_vec(), version)))
            .map(drop)
    }

    /// getReadVersion, two snapshot gets at it, and a commit with both keys as read conflict
    /// ranges: four calls.
    fn txn(&mut self, keys: [&[u8]; 2], value: &[u8]) -> Result<Outcome, OpError> {
        self.with(|c| {
            let version = c.get_read_version()?;
            for key in keys {
                c.get(GetRequest::new(key.to_vec(), version))?;
            }
            let request = CommitRequest::new(
                version,
                keys.iter().map(|key| set(key, value)).collect(),
                keys.iter().map(|key| single_key_range(key)).collect(),
                None,
            );
            match c.commit(request) {
                Ok(_) => Ok(Outcome::Done),
                Err(thrift::Error::User(user)) if user.downcast_ref::<Conflict>().is_some() => {
                    Ok(Outcome::Conflict)
                }
                Err(error) => Err(error),
            }
        })
    }

    /// A linearizable get, then a conditional txn: two calls.
    fn cas_increment(&mut self, key: &[u8]) -> Result<Outcome, OpError> {
        self.with(|c| {
            let current = c
                .get(GetRequest::new(key.to_vec(), None))?
                .kv
                .map(|kv| kv.value);
            let count = parse_counter(current.as_deref());
            let compare = match &current {
                Some(value) => Compare::new(
                    key.to_vec(),
                    CompareTarget::VALUE,
                    CompareOp::EQUAL,
                    value.clone(),
                    None,
                    None,
                ),
                None => Compare::new(
                    key.to_vec(),
                    CompareTarget::EXISTS,
                    CompareOp::EQUAL,
                    None,
                    None,
                    false,
                ),
            };
            let next = (count + 1).to_string().into_bytes();
            let request = TxnRequest::new(vec![compare], vec![set(key, &next)], Vec::new(), None);
            let succeeded = c.txn(request)?.succeeded;
            Ok(if succeeded {
                Outcome::Done
            } else {
                Outcome::Conflict
            })
        })
    }

    fn put_document(&mut self, key: &[u8], json: &[u8]) -> Result<(), OpError> {
        let request = PutDocumentRequest::new(key.to_vec(), json.to_vec(), None, None);
        self.with(|c| c.put_document(request.clone())).map(|_| ())
    }

    fn patch_document(&mut self, key: &[u8], patch: &[u8]) -> Result<u64, OpError> {
        let request = PatchDocumentRequest::new(
            key.to_vec(),
            patch.to_vec(),
            PatchFormat::JSON_PATCH,
            None,
            None,
        );
        let written = self.with(|c| c.patch_document(request.clone()))?;
        Ok(written.logged_bytes as u64)
    }
}

/// A counter's value: decimal text, absent (or unparsable) as 0.
pub fn parse_counter(value: Option<&[u8]>) -> u64 {
    value
        .and_then(|bytes| std::str::from_utf8(bytes).ok())
        .and_then(|text| text.parse().ok())
        .unwrap_or(0)
}

/// Names the server's exception and its fields, so a `LimitExceeded` says which limit.
fn op_error(error: &thrift::Error) -> OpError {
    match error {
        thrift::Error::Transport(e) => OpError::new(ErrorKind::Transport, e.message.clone()),
        thrift::Error::Protocol(e) => OpError::new(ErrorKind::Protocol, e.message.clone()),
        thrift::Error::Application(e) => OpError::new(ErrorKind::Protocol, e.message.clone()),
        thrift::Error::User(user) => user_error(user.as_ref()),
    }
}

fn user_error(user: &(dyn std::error::Error + Send + Sync + 'static)) -> OpError {
    if let Some(e) = user.downcast_ref::<LimitExceeded>() {
        return OpError::new(
            ErrorKind::LimitExceeded,
            format!(
                "LimitExceeded: {} ({} > {}): {}",
                e.limit, e.actual, e.maximum, e.message
            ),
        );
    }
    if let Some(e) = user.downcast_ref::<Unavailable>() {
        return OpError::new(ErrorKind::Unavailable, e.message.clone());
    }
    if let Some(e) = user.downcast_ref::<TooOld>() {
        return OpError::new(
            ErrorKind::TooOld,
            format!(
                "read version {} older than {}: {}",
                e.read_version, e.oldest_version, e.message
            ),
        );
    }
    if let Some(e) = user.downcast_ref::<InvalidArgument>() {
        return OpError::new(ErrorKind::InvalidArgument, e.message.clone());
    }
    if let Some(e) = user.downcast_ref::<InternalError>() {
        return OpError::new(ErrorKind::Internal, e.message.clone());
    }
    OpError::new(ErrorKind::Protocol, format!("{user:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_parse_as_decimal_with_absent_as_zero() {
        assert_eq!(parse_counter(None), 0);
        assert_eq!(parse_counter(Some(b"41")), 41);
        assert_eq!(parse_counter(Some(b"junk")), 0);
    }

    #[test]
    fn limit_exceeded_names_the_limit() {
        let error = thrift::Error::User(Box::new(LimitExceeded::new(
            crate::api::gen::paxkv::ErrorCode::LIMIT_EXCEEDED,
            "value_bytes_max".into(),
            10_485_760,
            1_048_576,
            "too big".into(),
        )));
        let op = op_error(&error);
        assert_eq!(op.kind, ErrorKind::LimitExceeded);
        assert!(
            op.message.contains("value_bytes_max (10485760 > 1048576)"),
            "{}",
            op.message
        );
    }
}
