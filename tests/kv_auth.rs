//! The raw KV API under `auth.enabled` (the default of `paxkv server`), on three real
//! `paxkv server` processes: a call without a token is Unauthenticated; a principal reads
//! and writes only the prefixes granted to it; a revoked grant or token stops working;
//! admin calls need root; and the system key space stays closed even to root. Also the
//! CLI with `--token`.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::thread;
use std::time::Duration;

use paxkv::api::gen::paxkv::{
    CreatePrincipalRequest, CreateTokenRequest, GetRangeRequest, GetRequest, InvalidArgument,
    KeyRange, KvGrantRequest, PermissionDenied, PutRequest, TConfmanSyncClient, Unauthenticated,
};
use paxkv::api::{connect_as, connect_config, Client, Protocol, TPaxkvSyncClient};
use support::{user_error, Deadline, ServerCluster};

const READY: Duration = Duration::from_secs(30);

fn client_as(endpoint: SocketAddr, token: Option<&str>) -> Client {
    connect_as(endpoint, Protocol::Binary, token).unwrap_or_else(|e| panic!("connect: {e:?}"))
}

fn put(client: &mut Client, key: &str, value: &str) -> thrift::Result<i64> {
    client.put(PutRequest::new(
        key.as_bytes().to_vec(),
        value.as_bytes().to_vec(),
        None,
    ))
}

fn get(client: &mut Client, key: &str) -> thrift::Result<Option<Vec<u8>>> {
    let got = client.get(GetRequest::new(key.as_bytes().to_vec(), None))?;
    Ok(got.kv.map(|kv| kv.value))
}

fn range(client: &mut Client, start: &str, end: &str) -> thrift::Result<usize> {
    let range = KeyRange::new(start.as_bytes().to_vec(), end.as_bytes().to_vec());
    let page = client.get_range(GetRangeRequest::new(range, 100, false, None, None))?;
    Ok(page.kvs.len())
}

/// Until the replica behind `call` has applied a grant change (checks read its applied
/// state), the call may still see the old grants.
fn eventually<T: std::fmt::Debug>(
    what: &str,
    mut call: impl FnMut() -> thrift::Result<T>,
    wanted: impl Fn(&thrift::Result<T>) -> bool,
) {
    let deadline = Deadline::after(READY);
    loop {
        let got = call();
        if wanted(&got) {
            return;
        }
        assert!(!deadline.passed(), "{what}: last {got:?}");
        thread::sleep(Duration::from_millis(20));
    }
}

fn denied<T>(result: &thrift::Result<T>) -> bool {
    matches!(result, Err(e) if user_error::<PermissionDenied>(e).is_some())
}

#[test]
fn the_kv_api_serves_only_what_a_token_is_granted() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = ServerCluster::start_with(dir.path(), "[auth]\nenabled = true\n");
    let root = cluster.root_token();
    // Every replica checks; use a follower-or-leader other than the one root was made on.
    let endpoint = cluster.endpoints[1];

    // No token: Unauthenticated, typed; the server keeps serving.
    let mut anonymous = client_as(endpoint, None);
    let error = put(&mut anonymous, "app/a", "1").unwrap_err();
    let refused = user_error::<Unauthenticated>(&error).expect("Unauthenticated");
    assert!(
        refused.message.contains("authenticate"),
        "{}",
        refused.message
    );
    assert!(get(&mut anonymous, "app/a").is_err());
    assert!(anonymous.status().is_ok(), "status needs no token");

    // Root reads and writes every user key, but not the system key space.
    let mut as_root = client_as(endpoint, Some(&root));
    put(&mut as_root, "app/a", "1").unwrap();
    put(&mut as_root, "other/b", "2").unwrap();
    let error = put(&mut as_root, "\u{7f}", "x").map(|_| ());
    assert!(error.is_ok(), "0x7F is a user key");
    let system = as_root.put(PutRequest::new(vec![0xFF, b'c'], b"x".to_vec(), None));
    assert!(user_error::<InvalidArgument>(&system.unwrap_err()).is_some());
    assert!(as_root.admin_member_list().is_ok());

    // A service principal with readwrite on app/ and read on shared/.
    let mut admin = connect_config(endpoint, Protocol::Binary, Some(&root)).unwrap();
    admin
        .create_principal(CreatePrincipalRequest::new(
            "billing".to_string(),
            "service".to_string(),
            None,
        ))
        .unwrap();
    let token = admin
        .create_token(CreateTokenRequest::new("billing".to_string(), None, None))
        .unwrap()
        .token;
    let grant = |prefix: &str, access: &str| {
        KvGrantRequest::new(
            "billing".to_string(),
            prefix.as_bytes().to_vec(),
            Some(access.to_string()),
        )
    };
    let mut billing = client_as(endpoint, Some(&token));
    // No grant yet: a valid token that may touch nothing.
    assert!(denied(&put(&mut billing, "app/x", "1")));
    let principal = admin.grant_kv(grant("app/", "readwrite")).unwrap();
    assert_eq!(principal.kv_grants.unwrap().len(), 1);
    admin.grant_kv(grant("shared/", "read")).unwrap();
    let bad = admin.grant_kv(grant("x/", "everything")).unwrap_err();
    assert!(user_error::<InvalidArgument>(&bad).is_some());

    eventually(
        "a put under the granted prefix",
        || put(&mut billing, "app/x", "1"),
        |r| r.is_ok(),
    );
    assert_eq!(get(&mut billing, "app/a").unwrap(), Some(b"1".to_vec()));
    assert_eq!(range(&mut billing, "app/", "app0").unwrap(), 2);
    eventually(
        "a read under the read grant",
        || get(&mut billing, "shared/z"),
        |r| r.is_ok(),
    );
    let error = put(&mut billing, "shared/z", "1").unwrap_err();
    let refused = user_error::<PermissionDenied>(&error).expect("PermissionDenied");
    assert_eq!(refused.permission, "kv_write");
    assert!(refused.ns.contains("shared/z"), "{}", refused.ns);
    assert!(denied(&get(&mut billing, "other/b")));
    // A range that reaches past the grant is refused whole, not cut.
    assert!(denied(&range(&mut billing, "a", "z")));
    assert!(denied(&billing.admin_member_list()));
    assert!(denied(&billing.admin_snapshot()));

    // Revoking the grant, then the token.
    let revoke = KvGrantRequest::new("billing".to_string(), b"app/".to_vec(), None);
    admin.revoke_kv(revoke).unwrap();
    eventually(
        "a put after the grant is revoked",
        || put(&mut billing, "app/y", "1"),
        denied,
    );
    let tokens = admin.list_tokens("billing".to_string()).unwrap();
    admin.revoke_token(tokens[0].token_id.clone()).unwrap();
    eventually(
        "a read after the token is revoked",
        || get(&mut billing, "shared/z"),
        |r| matches!(r, Err(e) if user_error::<Unauthenticated>(e).is_some()),
    );

    // The CLI: --token, and a wrong token given explicitly is an error (exit 9).
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_paxkv"))
            .args(args)
            .args(["--endpoint", &endpoint.to_string()])
            .env("PAXKV_TOKEN_FILE", dir.path().join("no-token-file"))
            .env_remove("PAXKV_TOKEN")
            .output()
            .unwrap()
    };
    let out = cli(&["put", "cli/k", "v", "--token", &root]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&["get", "cli/k", "--token", &root]);
    assert!(String::from_utf8_lossy(&out.stdout).contains('v'));
    let out = cli(&["get", "cli/k"]);
    assert_eq!(
        out.status.code(),
        Some(9),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("Unauthenticated"));
    let out = cli(&["get", "cli/k", "--token", &token]);
    assert_eq!(out.status.code(), Some(9));
    let out = cli(&[
        "grant", "kv", "billing", "cli/", "read", "--token", &root, "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let wanted = serde_json::json!([{"prefix": "cli/", "access": "read"},
                                    {"prefix": "shared/", "access": "read"}]);
    assert_eq!(shown["kv_grants"], wanted, "{shown}");
    let out = cli(&["grant", "kv-remove", "billing", "cli/", "--token", &token]);
    assert_eq!(
        out.status.code(),
        Some(9),
        "a revoked token cannot manage grants"
    );
}
