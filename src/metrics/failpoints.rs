//! `/debug/failpoints` on a node's HTTP endpoint, in `chaos` builds only: sets, lists and
//! removes the WAL's fault points (wal/src/disk.rs) and the executor's (a deliberate
//! divergence, src/executor/mod.rs) while the node runs.
//!
//! - `PUT /debug/failpoints/<name>` with a `fail` action string as the body (`return`,
//!   `return(torn)` for `wal::write`, `sleep(2000)`, `pause`, `off`, ...): 200, or 400 for
//!   an action `fail` does not parse, or 404 for a name that is not one of [`FAULT_POINTS`].
//! - `DELETE /debug/failpoints/<name>`: removes it (a paused thread goes on).
//! - `GET /debug/failpoints`: one `name=actions` line per fault point set.
//!
//! `fail` keeps one registry per process. `paxkv server` runs one replica per process, so
//! a fault point set on its endpoint hits that replica alone; in `paxkv dev` the three
//! replicas share a process, and a fault point set on any endpoint hits all three.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::get;

/// The fault points the WAL and the executor evaluate; a name outside this list would match
/// nothing, so it is refused rather than silently set. `executor::apply_wrongly` (any
/// action but `off`) makes the replica write one extra record with every slot of commands
/// it applies: its state then differs from its peers', which divergence detection catches.
pub const FAULT_POINTS: [&str; 5] = [
    "wal::write",
    "wal::fsync",
    "wal::create_segment",
    "wal::dir_sync",
    "executor::apply_wrongly",
];

/// The routes, for any state: they read none.
pub fn routes<S: Clone + Send + Sync + 'static>() -> axum::Router<S> {
    axum::Router::new()
        .route("/debug/failpoints", get(list))
        .route(
            "/debug/failpoints/{name}",
            axum::routing::put(set).delete(remove),
        )
}

async fn list() -> String {
    let mut set = fail::list();
    set.sort();
    set.iter()
        .map(|(name, actions)| format!("{name}={actions}\n"))
        .collect()
}

async fn set(Path(name): Path<String>, actions: String) -> (StatusCode, String) {
    if let Err(refusal) = known(&name) {
        return refusal;
    }
    let actions = actions.trim();
    match fail::cfg(name.as_str(), actions) {
        Ok(()) => {
            tracing::warn!(fault_point = name, actions, "fault point set");
            (StatusCode::OK, format!("{name}={actions}\n"))
        }
        Err(error) => (
            StatusCode::BAD_REQUEST,
            format!("{name}: action {actions:?}: {error}\n"),
        ),
    }
}

async fn remove(Path(name): Path<String>) -> (StatusCode, String) {
    if let Err(refusal) = known(&name) {
        return refusal;
    }
    fail::remove(&name);
    tracing::warn!(fault_point = name, "fault point removed");
    (StatusCode::OK, format!("{name} removed\n"))
}

fn known(name: &str) -> Result<(), (StatusCode, String)> {
    if FAULT_POINTS.contains(&name) {
        return Ok(());
    }
    let known = FAULT_POINTS.join(", ");
    Err((
        StatusCode::NOT_FOUND,
        format!("no fault point {name:?}; there are {known}\n"),
    ))
}
