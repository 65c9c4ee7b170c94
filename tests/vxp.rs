#![allow(unused_crate_dependencies)] // Each test or example file is a crate of its own; none uses every dependency.

//! The VXP API between two nodes, through a client written from the wire
//! description of the VXP Java SDK: the exact header set (one service object
//! per DMS, so headers accumulate and the timestamp is days old), the HMAC
//! over the raw signed JSON, `Expect: 100-continue`, the unpadded hash and
//! the CRLF after the package.

use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use truc_proto::v1::{Organ, StatusEvent, StatusUpdate};
use truc_tests::{docs::*, *};

/// A DMS's SDK service object: its header map keeps every key ever set.
struct Sdk {
    addr: std::net::SocketAddr,
    /// HTTPS: the client's TLS config and the server name.
    tls: Option<(std::sync::Arc<tokio_rustls::rustls::ClientConfig>, String)>,
    secret: String,
    keys: Vec<(String, String)>,
}

/// One answer: HTTP status, the JSON, and whether a 100 Continue came first.
struct Answer {
    http: u16,
    json: Value,
    continued: bool,
}

impl Sdk {
    fn new(addr: std::net::SocketAddr, system: &str, secret: &str) -> Sdk {
        Sdk {
            addr,
            tls: None,
            secret: secret.into(),
            // Taken once at construction, never refreshed: days old.
            keys: vec![
                ("timestamp".into(), "27112026T081502+0042".into()),
                ("systemid".into(), system.into()),
            ],
        }
    }

    fn set(&mut self, k: &str, v: &str) {
        match self.keys.iter_mut().find(|(key, _)| key == k) {
            Some(e) => e.1 = v.into(),
            None => self.keys.push((k.into(), v.into())),
        }
    }

    /// The signed JSON and its HMAC for the current keys.
    fn signature(&self) -> (String, String) {
        let object: serde_json::Map<String, Value> = self
            .keys
            .iter()
            .map(|(k, v)| (format!("XroadVnpt-{k}"), Value::String(v.clone())))
            .collect();
        // serde_json's map is sorted: an order the server cannot rebuild
        // from anything but the raw bytes, like Java's HashMap order.
        let signed = Value::Object(object).to_string();
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, self.secret.as_bytes());
        let tag = hex(ring::hmac::sign(&key, signed.as_bytes()).as_ref());
        (signed, tag)
    }

    /// A call of the SDK: `params` are the caller's JSON keys.
    async fn call(
        &mut self,
        method: &str,
        call: &str,
        params: &[(&str, &str)],
        body: &[u8],
    ) -> Answer {
        let content_type = if call == "sendEdoc" {
            "application/octet-stream"
        } else {
            "application/json"
        };
        self.set("Content-Type", content_type);
        for (k, v) in params {
            self.set(k, v);
        }
        let (signed, tag) = self.signature();
        self.raw(method, call, &signed, &tag, body, &[]).await
    }

    /// Sends the request with this signature; `change` replaces loose headers.
    async fn raw(
        &self,
        method: &str,
        call: &str,
        signed: &str,
        tag: &str,
        body: &[u8],
        change: &[(&str, &str)],
    ) -> Answer {
        let mut head = format!("{method} /{call} HTTP/1.1\r\n");
        for (k, v) in &self.keys {
            let v = change
                .iter()
                .find(|(c, _)| c.eq_ignore_ascii_case(&format!("XroadVnpt-{k}")))
                .map_or(v.as_str(), |(_, v)| v);
            if k == "Content-Type" {
                head.push_str(&format!("Content-Type: {v}\r\n"));
            }
            head.push_str(&format!("XroadVnpt-{k}: {v}\r\n"));
        }
        let key_list: Vec<&str> = self.keys.iter().map(|(k, _)| k.as_str()).collect();
        head.push_str(&format!(
            "XroadVnpt-sign-header-key: {}\r\n",
            key_list.join(";")
        ));
        head.push_str(&format!("XroadVnpt-sign-header: {signed}\r\n"));
        head.push_str(&format!("XroadVnpt-hash-header: {tag}\r\n"));
        head.push_str(
            "User-Agent: JAVASDKAgent/1.0.0 XRoad/VPCP\r\nXroadVnpt-version: 3.0.201608\r\n",
        );
        let expect = call != "sendEdoc" && !body.is_empty();
        if method == "POST" {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str(&format!("Host: {}\r\n", self.addr));
        if call == "sendEdoc" {
            head.push_str(
                "Cache-Control: no-cache\r\nPragma: no-cache\r\nConnection: keep-alive\r\n",
            );
        } else {
            head.push_str("Connection: Keep-Alive\r\n");
            if expect {
                head.push_str("Expect: 100-continue\r\n");
            }
            head.push_str("Accept-Encoding: gzip,deflate\r\n");
        }
        head.push_str("\r\n");
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("connect");
        let stream: Box<dyn Io> = match &self.tls {
            None => Box::new(tcp),
            Some((config, name)) => {
                let name = tokio_rustls::rustls::pki_types::ServerName::try_from(name.clone())
                    .expect("name");
                Box::new(
                    tokio_rustls::TlsConnector::from(config.clone())
                        .connect(name, tcp)
                        .await
                        .expect("TLS handshake"),
                )
            }
        };
        let mut stream = BufReader::new(stream);
        stream
            .get_mut()
            .write_all(head.as_bytes())
            .await
            .expect("head");
        let mut continued = false;
        if expect {
            // HttpClient waits for the interim answer before the body.
            let mut line = String::new();
            stream.read_line(&mut line).await.expect("interim");
            assert!(
                line.starts_with("HTTP/1.1 100"),
                "no 100 Continue: {line:?}"
            );
            stream.read_line(&mut line).await.expect("blank");
            continued = true;
        }
        stream.get_mut().write_all(body).await.expect("body");
        let mut status = String::new();
        stream.read_line(&mut status).await.expect("status line");
        let http: u16 = status
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("status line {status:?}"));
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            stream.read_line(&mut line).await.expect("header");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').expect("header line");
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().expect("length");
            }
            assert!(!name.eq_ignore_ascii_case("content-encoding"), "compressed");
        }
        let mut text = vec![0u8; length];
        stream.read_exact(&mut text).await.expect("body");
        assert!(
            text.is_ascii(),
            "answers are ASCII only: {}",
            String::from_utf8_lossy(&text)
        );
        let json: Value = serde_json::from_slice(&text).expect("a JSON answer");
        for field in ["status", "ErrorCode", "ErrorDesc"] {
            assert!(json[field].is_string(), "{field} missing in {json}");
        }
        assert!(!text.windows(4).any(|w| w == b"null"), "a null in {json}");
        Answer {
            http,
            json,
            continued,
        }
    }

    /// sendEdoc as the SDK does: the file, then CRLF; hash-file unpadded.
    async fn send_edoc(&mut self, from: &str, kind: &str, file: &[u8]) -> Answer {
        let hash = unpadded(ring::digest::digest(&ring::digest::SHA256, file).as_ref());
        let mut body = file.to_vec();
        body.extend_from_slice(b"\r\n");
        self.call(
            "POST",
            "sendEdoc",
            &[
                ("servicetype", "eDoc"),
                ("messagetype", kind),
                ("hash-file", &hash),
                ("from", from),
            ],
            &body,
        )
        .await
    }

    /// The received list, polled until `done` holds (no event on VXP).
    async fn received_until(&mut self, kind: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + WAIT;
        loop {
            let a = self
                .call(
                    "POST",
                    "getReceivedEdocList",
                    &[("servicetype", "eDoc"), ("messagetype", kind)],
                    b"",
                )
                .await;
            assert_eq!(a.json["status"], "OK", "{}", a.json);
            let list = a.json["data"].as_array().expect("data").clone();
            if done(&list) {
                return list;
            }
            assert!(Instant::now() < deadline, "never listed: {list:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn unpadded(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:x}")).collect()
}

const G22_SYSTEM: &str = "vxp.vpcp.01";
const H37_SYSTEM: &str = "vxp.langson.01";

/// Restarts both nodes with a VXP listener and one system each; returns the
/// two SDK objects (ministry, province).
async fn with_vxp(c: &mut Cluster) -> (Sdk, Sdk) {
    with_vxp_tls(c, false).await
}

/// As [`with_vxp`]; with `tls`, the ministry's listener serves HTTPS with
/// its node certificate.
async fn with_vxp_tls(c: &mut Cluster, tls: bool) -> (Sdk, Sdk) {
    let mut out = Vec::new();
    for (node, system, agencies) in [
        (MINISTRY_NODE, G22_SYSTEM, vec![G22]),
        (PROVINCE_NODE, H37_SYSTEM, vec![H37, H37_DEPT]),
    ] {
        let secret = format!("TEST-ONLY-{node}/0123+abc");
        let secret_file = c.dir.path().join(format!("{node}.vxp-secret"));
        std::fs::write(&secret_file, format!("{secret}\n")).expect("secret");
        // A port the OS chose, for the node to bind again.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port");
        c.deployment.stop_node(node).await.expect("stop");
        c.deployment
            .edit_node_config(node, |f| {
                let https = tls && node == MINISTRY_NODE;
                f.vxp = Some(truc_node::VxpSection {
                    listen: addr.to_string(),
                    tls: https,
                    cert: https.then(|| f.tls.cert.clone()),
                    key: https.then(|| f.tls.key.clone()),
                    systems: vec![truc_node::VxpSystemEntry {
                        id: system.into(),
                        secret_file: secret_file.clone(),
                        agencies: agencies.iter().map(|a| a.to_string()).collect(),
                    }],
                });
            })
            .expect("edit");
        c.deployment.restart_node(node).await.expect("restart");
        out.push(Sdk::new(addr, system, &secret));
    }
    let province = out.pop().expect("province");
    let ministry = out.pop().expect("ministry");
    (ministry, province)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agencies_list_is_served_from_the_nodes_registry_with_the_hub_down() {
    let mut c = start().await;
    let (mut ministry, _) = with_vxp(&mut c).await;
    // Once the node holds a signed registry (what its metrics say) ...
    let ops = c.deployment.node(MINISTRY_NODE).expect("node").ops_addr();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, m) = http_get(ops, "/metrics").await;
        if m.lines()
            .any(|l| l.starts_with("truc_registry_version_info{"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "no registry in force:\n{m}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ... a DMS polling the agencies list costs the hub nothing: it is
    // answered while the hub is down.
    c.deployment
        .restart_hub(async || {
            let agencies = ministry.call("POST", "getAgenciesList", &[], b"").await;
            assert_eq!(agencies.json["ErrorCode"], "0", "{}", agencies.json);
            let data = agencies.json["data"].as_array().expect("data");
            assert!(data.iter().any(|a| a["code"] == H37), "{data:?}");
        })
        .await
        .expect("hub restart");
}

/// An edXML package of `envelope` with its attachments.
fn package(envelope: &truc_proto::v1::Envelope, files: &[(&str, &[u8])]) -> Vec<u8> {
    package_with(envelope, files, &truc_edxml::Preserved::default())
}

/// An edXML package of `envelope` with a DMS's own content: `extra`'s
/// signature and unknown elements.
fn package_with(
    envelope: &truc_proto::v1::Envelope,
    files: &[(&str, &[u8])],
    extra: &truc_edxml::Preserved,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut source = truc_edxml::Memory(files.iter().map(|(_, d)| d.to_vec()).collect());
    truc_edxml::write_package(&mut out, envelope, extra, &mut source).expect("package");
    out
}

fn doc_id_of(list: &[Value], document_id: &str) -> Option<String> {
    list.iter()
        .filter_map(|e| e["docId"].as_str())
        .find(|d| d.ends_with(&format!(":{document_id}")))
        .map(String::from)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_and_its_status_travel_between_two_dms_through_vxp() {
    let mut c = start_fast_retries().await;
    let (mut ministry, mut province) = with_vxp(&mut c).await;

    let agencies = ministry.call("POST", "getAgenciesList", &[], b"").await;
    assert_eq!(agencies.json["ErrorCode"], "0", "{}", agencies.json);
    assert!(
        agencies.json["data"]
            .as_array()
            .expect("data")
            .iter()
            .any(|a| a["code"] == H37)
    );

    let files: [(&str, &[u8]); 1] = [("công-văn.pdf", b"%PDF-1.4 noi dung")];
    let env = envelope(G22, &[H37], "4838", &files);
    let file = package(&env, &files);
    let sent = ministry.send_edoc(G22, "edoc", &file).await;
    assert_eq!(sent.json["status"], "OK", "{}", sent.json);
    let doc_id = sent.json["DocId"].as_str().expect("DocId").to_string();
    // The SDK's retry of the same package: the same document.
    let again = ministry.send_edoc(G22, "edoc", &file).await;
    assert_eq!(again.json["DocId"], doc_id.as_str(), "{}", again.json);

    // The province's DMS lists it although its headers carry stale keys.
    let list = province
        .received_until("edoc", |l| doc_id_of(l, &env.document_id).is_some())
        .await;
    let received = doc_id_of(&list, &env.document_id).expect("listed");
    assert_eq!(received, doc_id);
    let got = province
        .call(
            "POST",
            "getEdoc",
            &[("docId", &received), ("filePath", "/tmp/dms")],
            b"{}",
        )
        .await;
    assert!(got.continued, "the {{}} body went after a 100 Continue");
    assert_eq!(got.json["status"], "OK", "{}", got.json);
    let edxml = base64::engine::general_purpose::STANDARD
        .decode(got.json["data"].as_str().expect("data"))
        .expect("base64");
    let mut memory = truc_edxml::Memory::default();
    let parsed = truc_edxml::parse_package(&edxml[..], &mut memory).expect("an edXML package");
    assert_eq!(parsed.envelope.subject, env.subject);
    assert_eq!(memory.0, [files[0].1.to_vec()]);

    for _ in 0..2 {
        let done = province
            .call(
                "POST",
                "updateStatus",
                &[("docId", &received), ("status", "done")],
                b"{}",
            )
            .await;
        assert_eq!(done.json["status"], "OK", "idempotent: {}", done.json);
    }
    // Taken: no longer listed, although `status: done` is now a stale header.
    let list = province.received_until("edoc", |_| true).await;
    assert!(doc_id_of(&list, &env.document_id).is_none(), "{list:?}");

    // The province's business status as an edXML status package.
    let status = truc_edxml::StatusPackage {
        update: StatusUpdate {
            sender: G22.into(),
            document_id: env.document_id.clone(),
            recipient: H37.into(),
            event: Some(StatusEvent {
                code: "03".into(),
                description: "Đã tiếp nhận".into(),
                unix_ms: 1_764_547_200_000,
                by: H37.into(),
                staff: None,
            }),
            ..StatusUpdate::default()
        },
        from: Organ {
            organ_id: H37.into(),
            organ_name: "UBND tỉnh Lạng Sơn".into(),
            ..Organ::default()
        },
        extra: truc_edxml::Preserved::default(),
    };
    let mut status_file = Vec::new();
    truc_edxml::write_status(&mut status_file, &status).expect("status package");
    let a = province.send_edoc(H37, "status", &status_file).await;
    assert_eq!(a.json["status"], "OK", "{}", a.json);
    let again = province.send_edoc(H37, "status", &status_file).await;
    assert_eq!(
        again.json["status"], "OK",
        "a retried status: {}",
        again.json
    );
    // The ministry's gRPC tracking sees it.
    let grpc = c.client(MINISTRY_NODE, MINISTRY_CLIENT);
    tracking_at(&grpc, G22, &env.document_id, H37, "03").await;

    // And the ministry's DMS receives it as a status package.
    let is_03 = |e: &Value| e["status"] == "03" && e["from"] == H37;
    let list = ministry
        .received_until("status", |l| l.iter().any(is_03))
        .await;
    let entry = list.iter().find(|e| is_03(e)).expect("listed");
    assert_eq!(entry["messageType"], "status");
    let id = entry["docId"].as_str().expect("docId").to_string();
    let got = ministry
        .call(
            "POST",
            "getEdoc",
            &[("docId", &id), ("filePath", "/tmp/dms")],
            b"{}",
        )
        .await;
    assert_eq!(got.json["status"], "OK", "{}", got.json);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(got.json["data"].as_str().expect("data"))
        .expect("base64");
    let parsed = truc_edxml::parse_status(&bytes).expect("a status package");
    assert_eq!(parsed.update.document_id, env.document_id);
    assert_eq!(parsed.update.event.expect("event").code, "03");
    let done = ministry
        .call(
            "POST",
            "updateStatus",
            &[("docId", &id), ("status", "done")],
            b"{}",
        )
        .await;
    assert_eq!(done.json["status"], "OK", "{}", done.json);
    let list = ministry.received_until("status", |_| true).await;
    assert!(!list.iter().any(|e| e["docId"] == id.as_str()), "{list:?}");

    // The sent list, although the signed docId is a stale one of a status.
    let sent = ministry
        .call(
            "POST",
            "getSentEdocList",
            &[
                ("servicetype", "eDoc"),
                ("messagetype", "edoc"),
                ("docId", &id),
            ],
            b"",
        )
        .await;
    assert_eq!(sent.json["status"], "OK", "{}", sent.json);
    let rows = sent.json["data"].as_array().expect("data");
    let row = rows
        .iter()
        .find(|r| r["senderDocId"] == doc_id.as_str())
        .unwrap_or_else(|| panic!("not in the sent list: {rows:?}"));
    assert_eq!(row["toCode"], H37);
    assert_eq!(row["receiveStatus"], "03");
    assert_eq!(row["sendStatus"], "delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_sent_by_grpc_is_downloaded_through_vxp_as_edxml() {
    let mut c = start_fast_retries().await;
    let (_ministry, mut province) = with_vxp(&mut c).await;
    let grpc = c.client(MINISTRY_NODE, MINISTRY_CLIENT);
    let files: [(&str, &[u8]); 1] = [("bao-cao.txt", "Báo cáo".as_bytes())];
    let env = envelope(G22, &[H37_DEPT], "77", &files);
    send(&grpc, &env, &files).await.expect("gRPC send");
    // The province's system acts for both of its agencies.
    let list = province
        .received_until("edoc", |l| doc_id_of(l, &env.document_id).is_some())
        .await;
    let id = doc_id_of(&list, &env.document_id).expect("listed");
    let got = province
        .call("POST", "getEdoc", &[("docId", &id)], b"{}")
        .await;
    let edxml = base64::engine::general_purpose::STANDARD
        .decode(got.json["data"].as_str().expect("data"))
        .expect("base64");
    let mut memory = truc_edxml::Memory::default();
    let parsed = truc_edxml::parse_package(&edxml[..], &mut memory).expect("edXML");
    assert_eq!(parsed.envelope.document_id, env.document_id);
    assert_eq!(memory.0, [files[0].1.to_vec()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_sent_through_vxp_is_fetched_by_grpc() {
    let mut c = start_fast_retries().await;
    let (_ministry, mut province) = with_vxp(&mut c).await;
    let files: [(&str, &[u8]); 1] = [("to-trinh.pdf", b"%PDF tep")];
    let env = envelope(H37, &[G22], "12", &files);
    let a = province
        .send_edoc(H37, "edoc", &package(&env, &files))
        .await;
    assert_eq!(a.json["status"], "OK", "{}", a.json);
    let grpc = c.client(PROVINCE_NODE, PROVINCE_CLIENT);
    tracking_at(&grpc, H37, &env.document_id, G22, "01").await;
    let ministry = c.client(MINISTRY_NODE, MINISTRY_CLIENT);
    let out = c.dir.path().join("fetched");
    ministry
        .fetch(G22, H37, &env.document_id)
        .await
        .expect("fetch")
        .save_to(&out)
        .await
        .expect("saved");
    assert_eq!(
        std::fs::read(out.join("to-trinh.pdf")).expect("read"),
        files[0].1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_come_in_the_sdk_json_shape() {
    let mut c = start_fast_retries().await;
    let (mut ministry, _province) = with_vxp(&mut c).await;
    let files: [(&str, &[u8]); 1] = [("a.txt", b"a")];
    let file = package(&envelope(G22, &[H37], "9", &files), &files);
    let addr = ministry.addr;

    let mut wrong = Sdk::new(addr, G22_SYSTEM, "TEST-ONLY-not-the-secret");
    let a = wrong.call("POST", "getAgenciesList", &[], b"").await;
    assert_eq!(
        (a.http, a.json["status"].as_str()),
        (401, Some("FAIL")),
        "{}",
        a.json
    );

    let mut unknown = Sdk::new(addr, "vxp.nobody", "x");
    let a = unknown
        .call(
            "POST",
            "getReceivedEdocList",
            &[("messagetype", "edoc")],
            b"",
        )
        .await;
    assert_eq!(a.http, 401, "{}", a.json);
    assert!(
        a.json["ErrorDesc"]
            .as_str()
            .expect("desc")
            .contains("unknown system")
    );

    // The ministry's system may not act for the province.
    let a = ministry.send_edoc(H37, "edoc", &file).await;
    assert_eq!(
        (a.http, a.json["ErrorCode"].as_str()),
        (403, Some("PERMISSION_DENIED")),
        "{}",
        a.json
    );
    assert_eq!(a.json["DocId"], "", "sendEdoc carries DocId on errors");

    // A tampered body: the signed hash-file no longer matches.
    let hash = unpadded(ring::digest::digest(&ring::digest::SHA256, &file).as_ref());
    for (k, v) in [
        ("servicetype", "eDoc"),
        ("messagetype", "edoc"),
        ("hash-file", hash.as_str()),
        ("from", G22),
        ("Content-Type", "application/octet-stream"),
    ] {
        ministry.set(k, v);
    }
    let (signed, tag) = ministry.signature();
    let mut tampered = file.clone();
    tampered.extend_from_slice(b"<!-- x -->\r\n");
    let a = ministry
        .raw("POST", "sendEdoc", &signed, &tag, &tampered, &[])
        .await;
    assert_eq!(
        (a.http, a.json["ErrorCode"].as_str()),
        (400, Some("INVALID_ARGUMENT")),
        "{}",
        a.json
    );
    assert!(
        a.json["ErrorDesc"]
            .as_str()
            .expect("desc")
            .contains("hash-file")
    );

    // A changed signed value: the loose header differs, or the JSON does.
    let mut body = file.clone();
    body.extend_from_slice(b"\r\n");
    let a = ministry
        .raw(
            "POST",
            "sendEdoc",
            &signed,
            &tag,
            &body,
            &[("XroadVnpt-from", H37)],
        )
        .await;
    assert_eq!(a.http, 401, "{}", a.json);
    let changed = signed.replace(G22, H37);
    let a = ministry
        .raw("POST", "sendEdoc", &changed, &tag, &body, &[])
        .await;
    assert_eq!(a.http, 401, "{}", a.json);
    // The same request unchanged goes through.
    let a = ministry
        .raw("POST", "sendEdoc", &signed, &tag, &body, &[])
        .await;
    assert_eq!(a.json["status"], "OK", "{}", a.json);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vxp_listener_serves_tls_1_2_and_1_3() {
    use tokio_rustls::rustls::{self, pki_types::pem::PemObject};
    let mut c = start_fast_retries().await;
    let (mut ministry, _) = with_vxp_tls(&mut c, true).await;
    let ca = std::fs::read(c.deployment.files.pki.ca_cert()).expect("ca");
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots.add(cert.expect("pem")).expect("root");
    }
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[version])
        .expect("version")
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
        ministry.tls = Some((std::sync::Arc::new(config), MINISTRY_NODE.into()));
        let a = ministry.call("POST", "getAgenciesList", &[], b"").await;
        assert_eq!(a.json["status"], "OK", "{version:?}: {}", a.json);
    }
}

/// Count rows: every field but the day (a test may cross midnight) → count.
type Counts = std::collections::BTreeMap<(String, String, String, String, String), u64>;

/// The hub's counts of documents from `from` to `to`.
async fn document_counts(c: &Cluster, from: &str, to: &str) -> Counts {
    let counts = c
        .counts(truc_pki::Role::Admin, "admin")
        .await
        .expect("counts");
    let mut out = std::collections::BTreeMap::new();
    for r in counts.rows {
        if r.client_agency == from && r.provider_agency == to {
            let key = (
                r.client_agency,
                r.provider_agency,
                r.service,
                r.kind,
                r.outcome,
            );
            *out.entry(key).or_default() += r.count;
        }
    }
    out
}

/// Every audit record the hub holds (read as its administrator).
async fn hub_records(c: &Cluster) -> Vec<truc_proto::v1::AuditRecord> {
    let mut audit = truc_proto::v1::audit_client::AuditClient::new(
        c.hub_channel(truc_pki::Role::Admin, "admin"),
    );
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = audit
            .list_records(truc_proto::v1::ListRecordsRequest {
                page_size: 1000,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await
            .expect("records")
            .into_inner();
        out.extend(page.records.into_iter().filter_map(|r| r.record));
        if page.next_page_token.is_empty() {
            return out;
        }
        page_token = page.next_page_token;
    }
}

/// A record without the fields two sends must differ in: [`comparable`]'s
/// and the digests. Sizes are kept: both sends carry the same attachment.
fn masked(r: truc_proto::v1::AuditRecord) -> truc_proto::v1::AuditRecord {
    let mut r = comparable(r);
    r.request_sha256 = Default::default();
    r.response_sha256 = Default::default();
    r
}

/// What the sender's node and the recipient's node keep of one delivered
/// document: the hub's record (decoded from the receipt the sender's node
/// holds), the hub's own copy of it, the sender's tracking of the
/// recipient and the recipient's inbox entry.
struct Kept {
    in_receipt: truc_proto::v1::AuditRecord,
    at_hub: truc_proto::v1::AuditRecord,
    tracking: truc_proto::v1::RecipientTracking,
    inbox: truc_proto::v1::InboxEntry,
    envelope: truc_proto::v1::Envelope,
}

async fn kept(c: &Cluster, document_id: &str) -> Kept {
    let sender = c.client(MINISTRY_NODE, MINISTRY_CLIENT);
    let t = tracking_at(&sender, G22, document_id, H37, "01").await;
    let r = t.recipients.into_iter().next().expect("one recipient");
    let receipt = r.receipt.clone().expect("the hub's receipt");
    let in_receipt =
        <truc_proto::v1::AuditRecord as prost::Message>::decode(receipt.record.as_ref())
            .expect("the receipt's record");
    let at_hub = hub_records(c)
        .await
        .into_iter()
        .find(|h| h.transaction_id == receipt.transaction_id)
        .expect("the hub's record");
    let recipient = c.client(PROVINCE_NODE, PROVINCE_CLIENT);
    let inbox = inbox(&recipient, H37)
        .await
        .into_iter()
        .find(|e| e.document_id == document_id)
        .expect("in the recipient's inbox");
    Kept {
        in_receipt,
        at_hub,
        tracking: r,
        inbox,
        envelope: t.envelope.expect("envelope"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vxp_send_is_recorded_and_counted_like_a_grpc_send_and_works_within_one_node() {
    let mut c = start_fast_retries().await;
    let (mut ministry, mut province) = with_vxp(&mut c).await;
    let grpc = c.client(MINISTRY_NODE, MINISTRY_CLIENT);
    let files: [(&str, &[u8]); 1] = [("a.txt", b"noi dung")];

    let before = document_counts(&c, G22, H37).await;
    let by_grpc = envelope(G22, &[H37], "501", &files);
    send(&grpc, &by_grpc, &files).await.expect("gRPC send");
    let g = kept(&c, &by_grpc.document_id).await;
    let after_grpc = document_counts(&c, G22, H37).await;

    let by_vxp = envelope(G22, &[H37], "502", &files);
    let a = ministry
        .send_edoc(G22, "edoc", &package(&by_vxp, &files))
        .await;
    assert_eq!(a.json["status"], "OK", "{}", a.json);
    let v = kept(&c, &by_vxp.document_id).await;
    let after_vxp = document_counts(&c, G22, H37).await;

    for k in [&g, &v] {
        // The node holds what the hub holds, and the digest is the envelope's.
        assert_eq!(k.in_receipt, k.at_hub);
        assert_eq!(
            k.at_hub.request_sha256,
            truc_doc::envelope_digest(&k.envelope).to_vec()
        );
        assert_eq!(k.at_hub.kind, "document");
        assert_eq!(k.at_hub.outcome, "OK");
    }
    assert_ne!(g.at_hub.transaction_id, v.at_hub.transaction_id);
    // Field by field, every field but those that must differ.
    assert_eq!(masked(g.at_hub.clone()), masked(v.at_hub.clone()));
    assert_eq!(g.at_hub.request_bytes, files[0].1.len() as u64);
    let tracked = |mut r: truc_proto::v1::RecipientTracking| {
        r.receipt = None;
        r.next_attempt_unix_ms = 0;
        for e in &mut r.history {
            e.unix_ms = 0;
        }
        r
    };
    assert_eq!(tracked(g.tracking), tracked(v.tracking));
    let entry = |mut e: truc_proto::v1::InboxEntry| {
        e.document_id.clear();
        e.envelope = None;
        e.arrived_unix_ms = 0;
        e.updated_unix_ms = 0;
        for h in &mut e.history {
            h.unix_ms = 0;
        }
        e
    };
    assert_eq!(entry(g.inbox), entry(v.inbox));
    // The envelopes differ only in the document's own number and in what
    // the package kept beside them (content ids).
    let same_doc = |mut e: truc_proto::v1::Envelope| {
        e.document_id.clear();
        e.code = None;
        e.preserved = Default::default();
        e
    };
    assert_eq!(same_doc(g.envelope), same_doc(v.envelope));

    // The statistics: the VXP send added exactly the rows the gRPC send did.
    let added = |from: &Counts, to: &Counts| {
        to.iter()
            .map(|(k, n)| (k.clone(), n - from.get(k).copied().unwrap_or(0)))
            .filter(|(_, n)| *n > 0)
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let by_grpc_rows = added(&before, &after_grpc);
    assert!(!by_grpc_rows.is_empty(), "the hub counted the gRPC send");
    assert_eq!(added(&after_grpc, &after_vxp), by_grpc_rows);

    // Between two agencies of the same node, through one system.
    let inner = envelope(H37, &[H37_DEPT], "503", &files);
    let a = province
        .send_edoc(H37, "edoc", &package(&inner, &files))
        .await;
    assert_eq!(a.json["status"], "OK", "{}", a.json);
    let list = province
        .received_until("edoc", |l| doc_id_of(l, &inner.document_id).is_some())
        .await;
    let row = list
        .iter()
        .find(|e| {
            e["docId"]
                .as_str()
                .is_some_and(|d| d.ends_with(&inner.document_id))
        })
        .expect("listed");
    assert_eq!(row["to"], H37_DEPT);
    assert_eq!(row["from"], H37);
}

/// A DMS's XML signature, with its own namespaces, attribute order and
/// spacing, as it would come from a signing library.
const SIGNATURE: &str = "<edXML:DigitalSignature><Signature xmlns=\"http://www.w3.org/2000/09/xmldsig#\" Id=\"sig-1\"><SignedInfo><CanonicalizationMethod Algorithm=\"http://www.w3.org/TR/2001/REC-xml-c14n-20010315\"/><Reference URI=\"\"><DigestValue>q83vEjRWeJA=</DigestValue></Reference></SignedInfo>\n  <SignatureValue>TWluaCBjaOG7qW5n</SignatureValue><KeyInfo><X509Data><X509Certificate>MIIBszCCAVmgAwIBAgIU</X509Certificate></X509Data></KeyInfo></Signature></edXML:DigitalSignature>";

/// A vendor's element this node does not know.
const VENDOR: &str = "<edXML:VendorExtension xmlns:v=\"urn:vendor\" v:ban=\"2\"><v:SoDen>1234</v:SoDen><v:GhiChu>Văn bản mật</v:GhiChu></edXML:VendorExtension>";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dms_signature_and_unknown_elements_reach_the_other_dms_as_they_came() {
    let mut c = start_fast_retries().await;
    let (mut ministry, mut province) = with_vxp(&mut c).await;
    let files: [(&str, &[u8]); 1] = [("quyet-dinh.pdf", b"%PDF-1.4 quyet dinh")];
    let env = envelope(G22, &[H37], "8801", &files);
    let extra = truc_edxml::Preserved {
        signature: Some(SIGNATURE.into()),
        unknown: vec![truc_edxml::Fragment {
            parent: "edXML/edXMLEnvelope/edXMLHeader/MessageHeader".into(),
            xml: VENDOR.into(),
        }],
        ..truc_edxml::Preserved::default()
    };
    let file = package_with(&env, &files, &extra);
    let sent = ministry.send_edoc(G22, "edoc", &file).await;
    assert_eq!(sent.json["status"], "OK", "{}", sent.json);

    let list = province
        .received_until("edoc", |l| doc_id_of(l, &env.document_id).is_some())
        .await;
    let id = doc_id_of(&list, &env.document_id).expect("listed");
    let got = province
        .call("POST", "getEdoc", &[("docId", &id)], b"{}")
        .await;
    assert_eq!(got.json["status"], "OK", "{}", got.json);
    let edxml = base64::engine::general_purpose::STANDARD
        .decode(got.json["data"].as_str().expect("data"))
        .expect("base64");
    let text = String::from_utf8(edxml.clone()).expect("utf-8");
    // Byte for byte, in the other DMS's package.
    assert!(text.contains(SIGNATURE), "signature lost:\n{text}");
    assert!(text.contains(VENDOR), "unknown element lost:\n{text}");
    let mut memory = truc_edxml::Memory::default();
    let parsed = truc_edxml::parse_package(&edxml[..], &mut memory).expect("edXML");
    assert_eq!(parsed.extra.signature.as_deref(), Some(SIGNATURE));
    assert_eq!(parsed.extra.unknown, extra.unknown);
    assert_eq!(parsed.envelope.subject, env.subject);
    assert_eq!(memory.0, [files[0].1.to_vec()]);

    // And through gRPC, the recipient's envelope carries the same bytes
    // that the hub's audit record digested.
    let grpc = c.client(PROVINCE_NODE, PROVINCE_CLIENT);
    let fetched = grpc.fetch(H37, G22, &env.document_id).await.expect("fetch");
    let carried = fetched.entry().envelope.clone().expect("envelope");
    let kept = truc_edxml::Preserved::from_envelope(&carried).expect("kept");
    assert_eq!(kept.signature.as_deref(), Some(SIGNATURE));
    let relayed = hub_records(&c)
        .await
        .into_iter()
        .find(|r| r.kind == "document" && r.provider_agency == H37 && r.client_agency == G22)
        .expect("the hub's record of the delivery");
    assert_eq!(
        relayed.request_sha256,
        truc_doc::envelope_digest(&carried).to_vec(),
        "the hub's digest covers the kept content"
    );

    // A signature past the bound is refused in the SDK's shape, by code.
    let big = truc_edxml::Preserved {
        signature: Some(format!(
            "<edXML:DigitalSignature><Signature>{}</Signature></edXML:DigitalSignature>",
            "A".repeat(truc_doc::MAX_PRESERVED_BYTES)
        )),
        ..truc_edxml::Preserved::default()
    };
    let env = envelope(G22, &[H37], "8802", &files);
    let refused = ministry
        .send_edoc(G22, "edoc", &package_with(&env, &files, &big))
        .await;
    assert_eq!(
        (refused.http, refused.json["status"].as_str()),
        (400, Some("FAIL")),
        "{}",
        refused.json
    );
    assert_eq!(refused.json["ErrorCode"], "INVALID_ARGUMENT");
    assert!(
        refused.json["ErrorDesc"]
            .as_str()
            .is_some_and(|d| d.contains("R.Preserved.Size")),
        "{}",
        refused.json
    );
    assert_eq!(refused.json["DocId"], "");
}
