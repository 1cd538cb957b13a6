//! Thrift connections with timeouts, and what a failed call means for the history.
//!
//! The library's `connect` waits forever; a replica stopped with SIGSTOP accepts nothing
//! and answers nothing, so every socket here has connect, read and write timeouts.
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use paxkv::api::gen::paxkv::{
    Compacted, Conflict, DocumentError, InternalError, InvalidArgument, LimitExceeded, TooOld,
    Unavailable,
};
use paxkv::api::{client_on, Client, Protocol};

/// The words the server uses in `Unavailable` when it proposed nothing (no leader took the
/// request): only then is a failed write known not to have happened.
pub const NOTHING_APPLIED: &str = "nothing was applied";

/// Longest pause taken on a server's `retry_after_ms`.
const RETRY_AFTER_MAX: Duration = Duration::from_millis(500);

pub fn connect(endpoint: SocketAddr, timeout: Duration) -> thrift::Result<Client> {
    let stream = TcpStream::connect_timeout(&endpoint, timeout)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    client_on(stream, Protocol::Binary)
}

/// A failed call, classified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The call definitely had no effect (recorded as `fail`); otherwise its outcome is
    /// unknown (recorded as `info`).
    pub definite: bool,
    /// The connection may hold half a reply: open a new one (to the next replica).
    pub reconnect: bool,
    /// Wait this long before the next call.
    pub pause: Option<Duration>,
    pub message: String,
}

impl Failure {
    /// The call was refused by the client itself before anything was sent.
    pub fn refused(message: impl Into<String>) -> Failure {
        Failure {
            definite: true,
            reconnect: false,
            pause: None,
            message: message.into(),
        }
    }
}

pub fn classify(error: &thrift::Error) -> Failure {
    let user = match error {
        thrift::Error::User(user) => user,
        other => {
            return Failure {
                definite: false,
                reconnect: true,
                pause: None,
                message: describe(other),
            }
        }
    };
    let message = describe(error);
    let definite = |definite| Failure {
        definite,
        reconnect: false,
        pause: None,
        message: message.clone(),
    };
    if let Some(unavailable) = user.downcast_ref::<Unavailable>() {
        let asked = u64::try_from(unavailable.retry_after_ms).unwrap_or(0);
        return Failure {
            pause: Some(Duration::from_millis(asked).min(RETRY_AFTER_MAX)),
            ..definite(unavailable.message.contains(NOTHING_APPLIED))
        };
    }
    if user.is::<InternalError>() {
        return definite(false);
    }
    // Rejected before or at apply time: nothing was written.
    let rejected = user.is::<Conflict>()
        || user.is::<InvalidArgument>()
        || user.is::<LimitExceeded>()
        || user.is::<TooOld>()
        || user.is::<Compacted>()
        || user.is::<DocumentError>();
    definite(rejected)
}

/// One line for any thrift error, with the typed exception's fields.
pub fn describe(error: &thrift::Error) -> String {
    match error {
        thrift::Error::Transport(e) => format!("transport {:?}: {}", e.kind, e.message),
        thrift::Error::Protocol(e) => format!("protocol {:?}: {}", e.kind, e.message),
        thrift::Error::Application(e) => format!("application {:?}: {}", e.kind, e.message),
        thrift::Error::User(user) => {
            let source = user.source().map(|s| format!(" ({s})")).unwrap_or_default();
            format!("{user:?}{source}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use paxkv::api::gen::paxkv::ErrorCode;

    fn unavailable(message: &str) -> thrift::Error {
        let e = Unavailable::new(ErrorCode::UNAVAILABLE, message.into(), 200);
        thrift::Error::User(Box::new(e))
    }

    #[test]
    fn only_unavailable_saying_nothing_was_applied_is_a_definite_failure() {
        let none = classify(&unavailable(
            "no leader within the request timeout; nothing was applied",
        ));
        assert!(none.definite);
        assert_eq!(none.pause, Some(Duration::from_millis(200)));
        let maybe = classify(&unavailable("leadership changed: may or may not"));
        assert!(!maybe.definite);
    }

    #[test]
    fn transport_errors_are_unknown_and_reconnect() {
        let error = thrift::Error::Transport(thrift::TransportError::new(
            thrift::TransportErrorKind::TimedOut,
            "read timed out",
        ));
        let failure = classify(&error);
        assert!(!failure.definite);
        assert!(failure.reconnect);
    }

    #[test]
    fn conflicts_are_definite_and_internal_errors_are_not() {
        let conflict = Conflict::new(ErrorCode::CONFLICT, "c".into(), None);
        assert!(classify(&thrift::Error::User(Box::new(conflict))).definite);
        let internal = InternalError::new(ErrorCode::INTERNAL, "i".into());
        assert!(!classify(&thrift::Error::User(Box::new(internal))).definite);
    }
}
