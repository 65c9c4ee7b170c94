#![allow(unused_crate_dependencies)] // Each test or example file is a crate of its own; none uses every dependency.
//! Documents with the real binaries: a send acknowledged by the sender's
//! node survives that node being killed with SIGKILL right after, and is
//! delivered once both nodes are back.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn track(data: &std::path::Path, doc: &str) -> String {
    let out = run(&[
        "track",
        "--config",
        data.join("client-langson-dms.toml")
            .to_str()
            .expect("utf-8"),
        "--as",
        "000.00.00.H37",
        "--document-id",
        doc,
    ]);
    text(&out.stdout)
}

#[test]
fn send_acknowledged_then_sender_node_killed_is_still_delivered_once() {
    let dir = tempfile::tempdir().expect("dir");
    let data = demo_files(dir.path(), "1");
    let p = |f: &str| data.join(f).to_str().expect("utf-8").to_string();
    let mut d = Deployment::spawn(&data);
    let up = call_until_up(
        &data.join("client-langson-dms.toml"),
        "000.00.00.H37",
        "000.00.00.G22/citizen-lookup/v1",
    );
    assert!(up.status.success(), "{}", text(&up.stderr));

    // The recipient's node is down, so the document cannot leave yet.
    d.ministry.signal_and_wait("KILL");
    let attachment = dir.path().join("bao-cao.pdf");
    std::fs::write(&attachment, vec![7u8; 300_000]).expect("write");
    let doc = "000.00.00.H37,2026/11/28,501/UBND-VP";
    let send = || {
        run(&[
            "send",
            "--config",
            &p("client-langson-dms.toml"),
            "--as",
            "000.00.00.H37",
            "--to",
            "000.00.00.G22",
            "--subject",
            "Báo cáo tháng 11",
            "--document-id",
            doc,
            "--attach",
            attachment.to_str().expect("utf-8"),
        ])
    };
    let sent = send();
    assert!(
        sent.status.success(),
        "{}{}",
        text(&sent.stdout),
        text(&sent.stderr)
    );
    // Acknowledged: now the sender's node dies without any chance to flush.
    d.province.signal_and_wait("KILL");

    d.province = spawn(&["node", "--config", &p("node-lgsp-langson.toml")]);
    d.ministry = spawn(&["node", "--config", &p("node-vpcp.toml")]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let t = track(&data, doc);
        if t.contains("delivered") && t.contains("01") {
            break;
        }
        assert!(Instant::now() < deadline, "never delivered:\n{t}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Sent again after the restart: recognised, not stored twice.
    let again = send();
    assert!(
        text(&again.stdout).contains("duplicate"),
        "{}",
        text(&again.stdout)
    );
    let inbox = run(&[
        "inbox",
        "--config",
        &p("client-vpcp-dms.toml"),
        "--as",
        "000.00.00.G22",
    ]);
    let listing = text(&inbox.stdout);
    assert_eq!(listing.matches(doc).count(), 1, "{listing}");
}
