#![allow(unused_crate_dependencies)] // Each test or example file is a crate of its own; none uses every dependency.
//! Maintenance mode of the real binary: `truc hub drain` and
//! SIGTERM take a `truc hub` process out of service; it exits 0 and its log
//! verifies.

mod common;

use common::*;

const AGENCY: &str = "000.00.00.H37";
const SERVICE: &str = "000.00.00.G22/citizen-lookup/v1";

#[test]
fn truc_hub_drain_and_sigterm_stop_the_hub_cleanly() {
    let dir = tempfile::tempdir().expect("dir");
    let data = demo_files(dir.path(), "1");
    let client = data.join("client-langson-dms.toml");
    let mut deployment = Deployment::spawn(&data);
    let up = call_until_up(&client, AGENCY, SERVICE);
    assert!(up.status.success(), "{}", text(&up.stderr));

    // (A node's certificate is refused by the hub: tests/drain.rs; the
    // tools' TLS config will not even offer it to the hub.)
    // A deadline over the most is the caller's mistake: exit 2.
    let admin = data.join("admin.toml");
    let admin = admin.to_str().expect("utf-8");
    let out = run(&["hub", "drain", "--config", admin, "--deadline", "2h"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("deadline"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        deployment.hub.0.try_wait().expect("wait").is_none(),
        "still up"
    );

    let out = run(&["hub", "drain", "--config", admin, "--deadline", "20s"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("draining"),
        "{}",
        text(&out.stdout)
    );
    let status = deployment.hub.wait_for_exit();
    assert_eq!(status.code(), Some(0), "{status:?}");
    verify_hub_log(&data);

    // Restarted, it serves again; SIGTERM drains it the same way.
    deployment.hub = spawn(&[
        "hub",
        "--config",
        data.join("hub.toml").to_str().expect("utf-8"),
    ]);
    let again = call_until_up(&client, AGENCY, SERVICE);
    assert!(again.status.success(), "{}", text(&again.stderr));
    let status = deployment.hub.signal_and_wait("TERM");
    assert_eq!(status.code(), Some(0), "{status:?}");
    verify_hub_log(&data);
}
