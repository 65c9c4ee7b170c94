//! The VXP calls, on the node's documents and the hub's registry.

use std::sync::Arc;

use axum::{
    body::Body,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::{Map, Value};

use super::{Refusal, Vxp, ok, sign::Signed};
use crate::docs::Documents;

/// Every call name the SDK uses.
pub(crate) const CALLS: &[&str] = &[
    "sendEdoc",
    "getReceivedEdocList",
    "getSentEdocList",
    "getEdoc",
    "downloadEdoc",
    "updateStatus",
    "countReceiveEdoc",
    "countReceiveStatus",
    "getAgenciesList",
    "getAgenciesListQD20",
    "getSynchronizeUnit",
    "registerAgency",
    "deleteAgency",
];

/// What the calls act on.
#[derive(Clone)]
pub(crate) struct Node {
    /// Weak: a stopped node's documents (and store) are not kept open by
    /// the VXP server still draining.
    pub(crate) docs: std::sync::Weak<Documents>,
    pub(crate) config: Arc<crate::NodeConfig>,
    /// The registry the node keeps current (`registry_sync`): signed by a
    /// pinned hub key and checked before it is in force.
    pub(crate) registry: Arc<crate::registry_sync::RegistryStats>,
}

impl Node {
    fn docs(&self) -> Result<Arc<Documents>, Refusal> {
        self.docs.upgrade().ok_or_else(|| {
            Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "the node is stopping",
            )
        })
    }
}

pub(crate) async fn dispatch(
    vxp: &Vxp,
    call: &str,
    signed: &Signed,
    body: Body,
) -> Result<Response, Refusal> {
    match call {
        "sendEdoc" => send_edoc(vxp, signed, body).await,
        "getReceivedEdocList" => received_list(vxp, signed).await.map(|(data, _)| {
            let mut extra = Map::new();
            extra.insert("data".into(), Value::Array(data));
            ok(extra)
        }),
        "countReceiveEdoc" | "countReceiveStatus" => {
            let (data, _) = received_list(vxp, signed).await?;
            let mut extra = Map::new();
            extra.insert("count".into(), data.len().into());
            Ok(ok(extra))
        }
        "getEdoc" => get_edoc(vxp, signed, false).await,
        "downloadEdoc" => get_edoc(vxp, signed, true).await,
        "updateStatus" => update_status(vxp, signed).await,
        "getSentEdocList" => sent_list(vxp, signed),
        "getAgenciesList" => agencies(vxp, false).await,
        "getAgenciesListQD20" => agencies(vxp, true).await,
        "registerAgency" | "deleteAgency" => Err(Refusal::denied(
            "agencies are registered in the hub's registry, not through VXP",
        )),
        _ => {
            drop(body);
            Err(Refusal::new(
                StatusCode::NOT_IMPLEMENTED,
                "UNIMPLEMENTED",
                format!("{call} is not served yet"),
            ))
        }
    }
}

/// getAgenciesList (`oldCode`) and getAgenciesListQD20 (`code102`): the
/// registry's agencies, numbered in registry order.
async fn agencies(vxp: &Vxp, qd20: bool) -> Result<Response, Refusal> {
    // The node's own signed copy, checked and kept current every
    // `registry_refresh`: a DMS polling the list costs the hub nothing (a
    // national registry's snapshot is megabytes). A node just started may
    // wait for its first fetch, within the call timeout.
    let timeout = std::time::Duration::from_millis(vxp.node.config.limits.call_timeout_ms);
    let snapshot = vxp.node.registry.in_force(timeout).await.ok_or_else(|| {
        Refusal::from(tonic::Status::unavailable(
            "this node has no registry from the hub yet; try again",
        ))
    })?;
    let index: std::collections::BTreeMap<&str, usize> = snapshot
        .agencies
        .iter()
        .enumerate()
        .map(|(i, a)| (a.code.as_str(), i + 1))
        .collect();
    let data: Vec<Value> = snapshot
        .agencies
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let pid = index.get(a.parent.as_str()).copied().unwrap_or(0);
            let mut o = Map::new();
            o.insert("id".into(), (i + 1).to_string().into());
            o.insert("pid".into(), pid.to_string().into());
            o.insert("code".into(), a.code.clone().into());
            o.insert("name".into(), a.name.clone().into());
            o.insert("mail".into(), "".into());
            let legacy = if qd20 { "code102" } else { "oldCode" };
            o.insert(
                legacy.into(),
                if qd20 { a.code.clone() } else { String::new() }.into(),
            );
            Value::Object(o)
        })
        .collect();
    let mut extra = Map::new();
    extra.insert("data".into(), Value::Array(data));
    Ok(ok(extra))
}

/// The system as a document caller: identity from the verified system id,
/// agencies from the config.
fn caller(vxp: &Vxp, signed: &Signed) -> Result<crate::docs::Caller, Refusal> {
    let system = vxp
        .systems
        .get(&signed.system)
        .ok_or_else(|| Refusal::internal("verified system vanished"))?;
    let identity =
        truc_pki::Identity::new(truc_pki::Role::Client, &format!("vxp.{}", signed.system))
            .or_else(|_| truc_pki::Identity::new(truc_pki::Role::Client, "vxp-system"))
            .map_err(|e| Refusal::internal(e.to_string()))?;
    Ok(crate::docs::Caller {
        identity,
        agencies: system.agencies.clone(),
        node: vxp.node.config.id.clone(),
    })
}

/// The DocId the SDK carries: `sender:document_id` (agency codes hold no `:`).
fn doc_id(sender: &str, document_id: &str) -> String {
    format!("{sender}:{document_id}")
}

fn parse_doc_id(id: &str) -> Result<(&str, &str), Refusal> {
    id.split_once(':')
        .filter(|(s, d)| !s.is_empty() && !d.is_empty())
        .ok_or_else(|| Refusal::invalid(format!("docId {id:?} is not one this node gave")))
}

fn required<'a>(signed: &'a Signed, key: &str) -> Result<&'a str, Refusal> {
    signed
        .get(key)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| Refusal::invalid(format!("signed header XroadVnpt-{key} is required")))
}

/// Files removed when dropped (the spooled body and attachments).
struct Spool(Vec<std::path::PathBuf>);

impl Drop for Spool {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The attachments of a package being parsed, each to its own spool file.
struct FileSink {
    dir: std::path::PathBuf,
    base: String,
    files: Vec<std::path::PathBuf>,
    open: Option<std::io::BufWriter<std::fs::File>>,
}

impl truc_edxml::AttachmentSink for FileSink {
    fn begin(&mut self, index: usize) -> std::io::Result<()> {
        let path = self.dir.join(format!("{}.{index}", self.base));
        self.open = Some(std::io::BufWriter::new(std::fs::File::create(&path)?));
        if self.files.len() <= index {
            self.files.resize(index + 1, std::path::PathBuf::new());
        }
        self.files[index] = path;
        Ok(())
    }
    fn write(&mut self, _index: usize, data: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        match &mut self.open {
            Some(f) => f.write_all(data),
            None => Err(std::io::Error::other("write before begin")),
        }
    }
    fn end(&mut self, _meta: &truc_edxml::AttachmentMeta) -> std::io::Result<()> {
        use std::io::Write;
        if let Some(mut f) = self.open.take() {
            f.flush()?;
        }
        Ok(())
    }
}

/// The body to a spool file, hashing all of it but one trailing CRLF;
/// returns the file, the length without the CRLF and the digest.
async fn spool_body(
    body: Body,
    path: &std::path::Path,
    max: u64,
) -> Result<(u64, ring::digest::Digest), Refusal> {
    use tokio::io::AsyncWriteExt;
    use tokio_stream::StreamExt;
    let io = |e: std::io::Error| Refusal::internal(format!("spooling the package: {e}"));
    let mut file = tokio::fs::File::create(path).await.map_err(io)?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    // The last two bytes are held back: they may be the CRLF the SDK adds.
    let mut tail: Vec<u8> = Vec::with_capacity(2);
    let mut len = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(frame) = stream.next().await {
        let data = frame.map_err(|e| Refusal::invalid(format!("reading the body: {e}")))?;
        len += data.len() as u64;
        if len > max + 2 {
            return Err(Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RESOURCE_EXHAUSTED",
                format!("the package is larger than {max} bytes"),
            ));
        }
        file.write_all(&data).await.map_err(io)?;
        let mut joined = std::mem::take(&mut tail);
        joined.extend_from_slice(&data);
        let keep = joined.len().min(2);
        let (head, rest) = joined.split_at(joined.len() - keep);
        ctx.update(head);
        tail = rest.to_vec();
    }
    file.flush().await.map_err(io)?;
    let mut content = len;
    if tail == b"\r\n" {
        content -= 2;
    } else {
        ctx.update(&tail);
    }
    Ok((content, ctx.finish()))
}

/// sendEdoc: a document package (or, with `messagetype: status`, a status
/// package) from one of the system's agencies.
async fn send_edoc(vxp: &Vxp, signed: &Signed, body: Body) -> Result<Response, Refusal> {
    let kind = required(signed, "messagetype")?;
    let from = required(signed, "from")?;
    let hash_file = required(signed, "hash-file")?;
    let caller = caller(vxp, signed)?;
    let sender = caller.may_act_for(from)?;
    let dir = vxp.node.config.data_dir.join("vxp-spool");
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| Refusal::internal(format!("spool directory: {e}")))?;
    let base = crate::new_transaction_id().map_err(|e| Refusal::internal(e.to_string()))?;
    let body_path = dir.join(format!("{base}.edxml"));
    let mut spool = Spool(vec![body_path.clone()]);
    let limits = &vxp.node.config.documents;
    // base64 makes the package about 4/3 of its attachments.
    let max = limits.max_total_bytes.saturating_mul(4) / 3 + 16 * 1024 * 1024;
    let (len, digest) = spool_body(body, &body_path, max).await?;
    if super::sign::unpadded_hex(digest.as_ref()) != hash_file {
        return Err(Refusal::invalid(
            "XroadVnpt-hash-file does not match the SHA-256 of the package",
        ));
    }
    match kind {
        "edoc" => {}
        "status" => return send_status(vxp, &caller, &sender, &body_path, len).await,
        other => {
            return Err(Refusal::invalid(format!(
                "messagetype {other:?}: edoc or status"
            )));
        }
    }
    let parse_path = body_path.clone();
    let sink = FileSink {
        dir: dir.clone(),
        base: base.clone(),
        files: Vec::new(),
        open: None,
    };
    let parsed = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut sink = sink;
        let file = std::fs::File::open(&parse_path)?;
        let reader = std::io::BufReader::new(file.take(len));
        let result = truc_edxml::parse_package(reader, &mut sink);
        Ok::<_, std::io::Error>((result, sink.files))
    })
    .await
    .map_err(|e| Refusal::internal(e.to_string()))?
    .map_err(|e| Refusal::internal(format!("reading the spooled package: {e}")))?;
    let (result, files) = parsed;
    spool.0.extend(files.iter().cloned());
    let package = result.map_err(|e| {
        Refusal::invalid(format!(
            "edXML package refused ({}): {e}",
            e.codes().join(", ")
        ))
    })?;
    let mut envelope = package.envelope;
    // The signature and unknown elements travel with the document.
    envelope.preserved = package.extra.to_bytes().into();
    let organ = envelope
        .from
        .as_ref()
        .map(|o| o.organ_id.as_str())
        .unwrap_or("");
    if organ != sender.as_str() {
        return Err(Refusal::invalid(format!(
            "the package is from {organ:?}, the signed from is {sender}"
        )));
    }
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(feed_chunks(files, tx));
    let mut chunks = tokio_stream::wrappers::ReceiverStream::new(rx);
    let response = vxp
        .node
        .docs()?
        .send_envelope(&caller, envelope, &mut chunks)
        .await?;
    drop(spool);
    tracing::info!(system = %signed.system, sender = %response.sender, document_id = %response.document_id, duplicate = response.duplicate, "VXP sendEdoc accepted");
    let mut extra = Map::new();
    extra.insert(
        "DocId".into(),
        doc_id(&response.sender, &response.document_id).into(),
    );
    Ok(ok(extra))
}

/// Each attachment file as chunks of at most 256 KiB.
async fn feed_chunks(
    files: Vec<std::path::PathBuf>,
    tx: tokio::sync::mpsc::Sender<Result<truc_proto::v1::Chunk, tonic::Status>>,
) {
    use tokio::io::AsyncReadExt;
    for (i, path) in files.iter().enumerate() {
        let mut file = match tokio::fs::File::open(path).await {
            Ok(f) => f,
            Err(e) => {
                let _ = tx
                    .send(Err(tonic::Status::internal(format!("attachment {i}: {e}"))))
                    .await;
                return;
            }
        };
        let mut offset = 0u64;
        loop {
            let mut buf = vec![0u8; 256 * 1024];
            let n = match file.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    let _ = tx
                        .send(Err(tonic::Status::internal(format!("attachment {i}: {e}"))))
                        .await;
                    return;
                }
            };
            buf.truncate(n);
            let chunk = truc_proto::v1::Chunk {
                attachment: i as u32,
                offset,
                sha256: ring::digest::digest(&ring::digest::SHA256, &buf)
                    .as_ref()
                    .to_vec()
                    .into(),
                data: buf.into(),
            };
            offset += n as u64;
            if tx.send(Ok(chunk)).await.is_err() {
                return;
            }
        }
    }
}

/// A status package through sendEdoc: the recipient's `UpdateStatus`.
async fn send_status(
    vxp: &Vxp,
    caller: &crate::docs::Caller,
    from: &truc_registry::AgencyCode,
    path: &std::path::Path,
    len: u64,
) -> Result<Response, Refusal> {
    const MAX_STATUS: u64 = 1024 * 1024;
    if len > MAX_STATUS {
        return Err(Refusal::invalid("a status package is at most 1 MiB"));
    }
    let mut bytes = tokio::fs::read(path)
        .await
        .map_err(|e| Refusal::internal(format!("reading the spooled status: {e}")))?;
    bytes.truncate(len as usize);
    let package = truc_edxml::parse_status(&bytes).map_err(|e| {
        Refusal::invalid(format!(
            "edXML status package refused ({}): {e}",
            e.codes().join(", ")
        ))
    })?;
    let update = package.update;
    let recipient = caller.may_act_for(&update.recipient)?;
    if &recipient != from {
        return Err(Refusal::invalid(format!(
            "the status is from {}, the signed from is {from}",
            update.recipient
        )));
    }
    let event = update.event.unwrap_or_default();
    let request = truc_proto::v1::UpdateStatusRequest {
        recipient: recipient.to_string(),
        sender: update.sender.clone(),
        document_id: update.document_id.clone(),
        status: event.code.clone(),
        description: event.description.clone(),
        staff: event.staff.clone(),
    };
    let same = |e: &truc_proto::v1::InboxEntry| e.status == event.code;
    // A retried status the inbox already holds is not a transition.
    let current = vxp
        .node
        .docs()?
        .inbox_entry(&recipient, &update.sender, &update.document_id)?;
    if !current.as_ref().is_some_and(same) {
        vxp.node.docs()?.update_status(&recipient, request).await?;
    }
    let mut extra = Map::new();
    extra.insert(
        "DocId".into(),
        doc_id(&update.sender, &update.document_id).into(),
    );
    Ok(ok(extra))
}

/// The receipt key of a document the system has taken (`updateStatus`).
fn receipt_key(system: &str, recipient: &str, sender: &str, document_id: &str) -> Vec<u8> {
    let mut k = b"vxp-receipt\0".to_vec();
    for part in [system, recipient, sender, document_id] {
        k.extend_from_slice(part.as_bytes());
        k.push(0);
    }
    k
}

fn storage(e: impl std::fmt::Display) -> Refusal {
    Refusal::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "UNAVAILABLE",
        format!("storage: {e}"),
    )
}

/// `yyyy-MM-dd HH:mm:ss` in Vietnam time.
fn date(unix_ms: u64) -> String {
    let edxml = truc_edxml::format_timestamp(unix_ms);
    edxml.replace('/', "-")
}

/// getReceivedEdocList: the documents in the inbox of the system's
/// agencies that it has not taken yet (`updateStatus`), filtered by
/// `messagetype` only (stale `status`/`docId` headers are ignored).
async fn received_list(vxp: &Vxp, signed: &Signed) -> Result<(Vec<Value>, ()), Refusal> {
    let kind = signed.get("messagetype").unwrap_or("edoc");
    let caller = caller(vxp, signed)?;
    let mut data = Vec::new();
    if kind == "status" {
        return Ok((received_statuses(vxp, signed, &caller)?, ()));
    }
    if kind != "edoc" {
        return Err(Refusal::invalid(format!(
            "messagetype {kind:?}: edoc or status"
        )));
    }
    let docs = vxp.node.docs()?;
    let store = docs.store();
    for agency in &caller.agencies {
        let mut page_token = String::new();
        loop {
            let page = vxp.node.docs()?.list_inbox(
                agency,
                &truc_proto::v1::ListInboxRequest {
                    recipient: agency.to_string(),
                    page_size: 500,
                    page_token: page_token.clone(),
                    ..Default::default()
                },
            )?;
            for e in page.entries {
                let key = receipt_key(&signed.system, agency.as_str(), &e.sender, &e.document_id);
                if store.get(&key).map_err(storage)?.is_some() {
                    continue;
                }
                let mut o = Map::new();
                o.insert("docId".into(), doc_id(&e.sender, &e.document_id).into());
                o.insert("serviceType".into(), "eDoc".into());
                o.insert("messageType".into(), "edoc".into());
                o.insert("created_time".into(), date(e.arrived_unix_ms).into());
                o.insert("updated_time".into(), date(e.updated_unix_ms).into());
                o.insert("from".into(), e.sender.clone().into());
                o.insert("to".into(), agency.to_string().into());
                o.insert("status".into(), "initial".into());
                o.insert("status_desc".into(), e.status.clone().into());
                data.push(Value::Object(o));
            }
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
    }
    Ok((data, ()))
}

/// The inbox entry a docId names, at one of the system's agencies.
fn find_entry(
    vxp: &Vxp,
    signed: &Signed,
) -> Result<(truc_registry::AgencyCode, truc_proto::v1::InboxEntry), Refusal> {
    let id = required(signed, "docId")?;
    let (sender, document_id) = parse_doc_id(id)?;
    let caller = caller(vxp, signed)?;
    for agency in &caller.agencies {
        if let Some(e) = vxp.node.docs()?.inbox_entry(agency, sender, document_id)? {
            return Ok((agency.clone(), e));
        }
    }
    Err(Refusal::new(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!(
            "no document {id} for the agencies of system {}",
            signed.system
        ),
    ))
}

/// Attachments as the node stores them.
struct Blobs<'a>(&'a Documents);

impl truc_edxml::AttachmentSource for Blobs<'_> {
    fn open(
        &mut self,
        _index: usize,
        a: &truc_proto::v1::Attachment,
    ) -> std::io::Result<Box<dyn std::io::Read + '_>> {
        self.0.read_attachment(a)
    }
}

/// getEdoc (base64 in `data`) and downloadEdoc (the raw package): the
/// document as an edXML package written by `truc_edxml`.
async fn get_edoc(vxp: &Vxp, signed: &Signed, raw: bool) -> Result<Response, Refusal> {
    if let Some(status) = status_ref(required(signed, "docId")?)? {
        let package = status_package(vxp, signed, &status)?;
        let mut out = Vec::new();
        truc_edxml::write_status(&mut out, &package)
            .map_err(|e| Refusal::internal(format!("writing the status package: {e}")))?;
        return Ok(package_answer(out, raw));
    }
    let (_, entry) = find_entry(vxp, signed)?;
    let envelope = entry.envelope.unwrap_or_default();
    // Checked when it arrived; a stored one that no longer reads is a bug.
    let extra = truc_edxml::Preserved::from_envelope(&envelope)
        .map_err(|e| Refusal::internal(format!("the stored edXML content: {e}")))?;
    let docs = vxp.node.docs()?;
    let package = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        truc_edxml::write_package(&mut out, &envelope, &extra, &mut Blobs(&docs)).map(|()| out)
    })
    .await
    .map_err(|e| Refusal::internal(e.to_string()))?
    .map_err(|e| Refusal::internal(format!("writing the edXML package: {e}")))?;
    Ok(package_answer(package, raw))
}

/// A package as downloadEdoc's raw body or getEdoc's base64 `data`.
fn package_answer(package: Vec<u8>, raw: bool) -> Response {
    if raw {
        let mut response = (StatusCode::OK, package).into_response();
        response.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/xml"),
        );
        return response;
    }
    use base64::Engine;
    let mut extra = Map::new();
    extra.insert(
        "data".into(),
        base64::engine::general_purpose::STANDARD
            .encode(package)
            .into(),
    );
    ok(extra)
}

/// Records a DMS's receipt durably (a flush shared with the documents'
/// writes, off the async workers).
async fn receipt(vxp: &Vxp, key: &[u8], status: &str) -> Result<(), Refusal> {
    let docs = vxp.node.docs()?;
    docs.insert_durably(key, status.as_bytes())
        .await
        .map_err(|s| storage(s.message()))
}

/// updateStatus: `done` (taken by the DMS) or `fail` (it could not take
/// it); the receipt is recorded once and a repeat answers the same.
async fn update_status(vxp: &Vxp, signed: &Signed) -> Result<Response, Refusal> {
    let status = required(signed, "status")?;
    if status != "done" && status != "fail" {
        return Err(Refusal::invalid(format!(
            "status {status:?}: done or fail (business statuses travel as status packages)"
        )));
    }
    if let Some(r) = status_ref(required(signed, "docId")?)? {
        status_package(vxp, signed, &r)?;
        let key = receipt_key(&signed.system, &r.sender, &r.status_key(), &r.document_id);
        receipt(vxp, &key, status).await?;
        return Ok(ok(Map::new()));
    }
    let (agency, entry) = find_entry(vxp, signed)?;
    let key = receipt_key(
        &signed.system,
        agency.as_str(),
        &entry.sender,
        &entry.document_id,
    );
    receipt(vxp, &key, status).await?;
    tracing::info!(system = %signed.system, recipient = %agency, sender = %entry.sender, document_id = %entry.document_id, status, "VXP receipt recorded");
    Ok(ok(Map::new()))
}

/// A status a recipient set on a document one of the system's agencies
/// sent: its docId is `recipient~seq~sender:document_id` (agency codes hold
/// neither `~` nor `:`).
struct StatusRef {
    recipient: String,
    seq: usize,
    sender: String,
    document_id: String,
}

impl StatusRef {
    fn id(&self) -> String {
        format!(
            "{}~{}~{}",
            self.recipient,
            self.seq,
            doc_id(&self.sender, &self.document_id)
        )
    }
    /// Where its receipt is kept (in place of the sender of a document).
    fn status_key(&self) -> String {
        format!("status~{}~{}", self.recipient, self.seq)
    }
}

fn status_ref(id: &str) -> Result<Option<StatusRef>, Refusal> {
    let (head, document_id) = parse_doc_id(id)?;
    let mut parts = head.split('~');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(_), None, _, _) => Ok(None),
        (Some(recipient), Some(seq), Some(sender), None) => Ok(Some(StatusRef {
            recipient: recipient.into(),
            seq: seq
                .parse()
                .map_err(|_| Refusal::invalid(format!("docId {id:?} is not one this node gave")))?,
            sender: sender.into(),
            document_id: document_id.into(),
        })),
        _ => Err(Refusal::invalid(format!(
            "docId {id:?} is not one this node gave"
        ))),
    }
}

/// How many sent documents the lists look at, per agency.
const MAX_SENT: usize = 1000;

/// The statuses set on the documents the system's agencies sent that it
/// has not taken yet.
fn received_statuses(
    vxp: &Vxp,
    signed: &Signed,
    caller: &crate::docs::Caller,
) -> Result<Vec<Value>, Refusal> {
    let docs = vxp.node.docs()?;
    let store = docs.store();
    let mut data = Vec::new();
    for agency in &caller.agencies {
        for t in vxp.node.docs()?.sent_by(agency, MAX_SENT)? {
            for r in &t.recipients {
                for (seq, event) in r.history.iter().enumerate() {
                    let s = StatusRef {
                        recipient: r.recipient.clone(),
                        seq,
                        sender: t.sender.clone(),
                        document_id: t.document_id.clone(),
                    };
                    let key =
                        receipt_key(&signed.system, &s.sender, &s.status_key(), &s.document_id);
                    if store.get(&key).map_err(storage)?.is_some() {
                        continue;
                    }
                    let mut o = Map::new();
                    o.insert("docId".into(), s.id().into());
                    o.insert("serviceType".into(), "eDoc".into());
                    o.insert("messageType".into(), "status".into());
                    o.insert("created_time".into(), date(event.unix_ms).into());
                    o.insert("updated_time".into(), date(event.unix_ms).into());
                    o.insert("from".into(), r.recipient.clone().into());
                    o.insert("to".into(), t.sender.clone().into());
                    o.insert("status".into(), event.code.clone().into());
                    o.insert("status_desc".into(), event.description.clone().into());
                    data.push(Value::Object(o));
                }
            }
        }
    }
    Ok(data)
}

/// The status package of a status the system may read.
fn status_package(
    vxp: &Vxp,
    signed: &Signed,
    s: &StatusRef,
) -> Result<truc_edxml::StatusPackage, Refusal> {
    let caller = caller(vxp, signed)?;
    let sender = caller.may_act_for(&s.sender)?;
    let t = vxp.node.docs()?.tracking(&sender, &s.document_id)?;
    let event = t
        .recipients
        .iter()
        .find(|r| r.recipient == s.recipient)
        .and_then(|r| r.history.get(s.seq))
        .cloned()
        .ok_or_else(|| {
            Refusal::new(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                format!("no status {}", s.id()),
            )
        })?;
    Ok(truc_edxml::StatusPackage {
        update: truc_proto::v1::StatusUpdate {
            sender: s.sender.clone(),
            document_id: s.document_id.clone(),
            recipient: s.recipient.clone(),
            event: Some(event),
            ..Default::default()
        },
        from: truc_proto::v1::Organ {
            organ_id: s.recipient.clone(),
            ..Default::default()
        },
        extra: truc_edxml::Preserved::default(),
    })
}

/// getSentEdocList: one line per recipient of each document the system's
/// agencies sent. The signed `docId` is not a filter: it is usually a
/// stale key from an earlier getEdoc/updateStatus of the same SDK object.
fn sent_list(vxp: &Vxp, signed: &Signed) -> Result<Response, Refusal> {
    let caller = caller(vxp, signed)?;
    let mut data = Vec::new();
    for agency in &caller.agencies {
        for t in vxp.node.docs()?.sent_by(agency, MAX_SENT)? {
            let env = t.envelope.clone().unwrap_or_default();
            let code = env.code.clone().unwrap_or_default();
            for r in &t.recipients {
                let received = r
                    .history
                    .first()
                    .map(|e| date(e.unix_ms))
                    .unwrap_or_default();
                let mut o = Map::new();
                let id = doc_id(&t.sender, &t.document_id);
                o.insert("senderDocId".into(), id.clone().into());
                o.insert("receiverDocId".into(), id.into());
                o.insert("fromCode".into(), t.sender.clone().into());
                o.insert("toCode".into(), r.recipient.clone().into());
                o.insert("serviceType".into(), "eDoc".into());
                o.insert("messageType".into(), "edoc".into());
                o.insert("title".into(), env.subject.clone().into());
                o.insert(
                    "notation".into(),
                    format!("{}/{}", code.code_number, code.code_notation).into(),
                );
                o.insert("sentTime".into(), date(t.accepted_unix_ms).into());
                o.insert("receivedTime".into(), received.into());
                o.insert("sendStatus".into(), r.delivery.clone().into());
                o.insert("sendStatusDesc".into(), r.last_error.clone().into());
                o.insert("receiveStatus".into(), r.status.clone().into());
                o.insert(
                    "receiveStatusDesc".into(),
                    r.history
                        .last()
                        .map(|e| e.description.clone())
                        .unwrap_or_default()
                        .into(),
                );
                data.push(Value::Object(o));
            }
        }
    }
    let mut extra = Map::new();
    extra.insert("data".into(), Value::Array(data));
    Ok(ok(extra))
}
