//! The committed generated code matches the IDL: regenerating with the pinned compiler must
//! give the same bytes, so an IDL change without `bash thrift/gen.sh` fails CI.
use std::path::Path;
use std::process::Command;

/// What `thrift --version` prints for the pinned compiler (Debian's thrift-compiler).
const THRIFT_VERSION_LINE: &str = "Thrift version 0.17.0";

fn require_pinned_thrift() {
    let output = match Command::new("thrift").arg("--version").output() {
        Ok(output) => output,
        Err(error) => panic!(
            "the Thrift compiler is needed to check the generated code ({error}): install \
             Debian's thrift-compiler 0.17.0 (apt-get install thrift-compiler)"
        ),
    };
    let version = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        version.trim(),
        THRIFT_VERSION_LINE,
        "the generated code is pinned to Apache Thrift 0.17.0 (Debian's thrift-compiler)"
    );
}

#[test]
fn committed_generated_code_matches_the_idl() {
    require_pinned_thrift();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out_dir = tempfile::tempdir().unwrap();
    let output = Command::new("bash")
        .arg(root.join("thrift/gen.sh"))
        .arg(out_dir.path())
        .output()
        .expect("bash runs thrift/gen.sh");
    assert!(
        output.status.success(),
        "thrift/gen.sh failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let generated = std::fs::read(out_dir.path().join("paxkv.rs")).unwrap();
    let committed = std::fs::read(root.join("src/api/gen/paxkv.rs")).unwrap();
    assert!(
        generated == committed,
        "src/api/gen/paxkv.rs is stale or hand-edited: regenerate it with `bash thrift/gen.sh` \
         and commit the result"
    );
}

#[test]
fn gen_sh_refuses_another_compiler_version() {
    // A fake `thrift` first on PATH that claims another version: gen.sh must stop, say why,
    // and write nothing.
    let fake_bin = tempfile::tempdir().unwrap();
    let fake_thrift = fake_bin.path().join("thrift");
    std::fs::write(&fake_thrift, "#!/bin/sh\necho 'Thrift version 0.19.0'\n").unwrap();
    std::fs::set_permissions(
        &fake_thrift,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        fake_bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out_dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new("bash")
        .arg(root.join("thrift/gen.sh"))
        .arg(out_dir.path())
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("need Apache Thrift 0.17.0"), "{stderr}");
    assert!(!out_dir.path().join("paxkv.rs").exists());
}
