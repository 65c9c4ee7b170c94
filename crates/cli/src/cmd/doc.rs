//! `truc send`, `truc inbox`, `truc fetch`, `truc status` and `truc track`:
//! official documents, as an agency system talking to its node.
//!
//! Attachments are streamed both ways, one chunk (at most 1 MiB) in memory at
//! a time, so that files of hundreds of MiB cost no more memory than small ones.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    process::ExitCode,
    time::{SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use clap::{Args, ValueEnum};
use ring::digest::{Context, SHA256};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::mpsc,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use truc_doc::{DocumentId, StatusCode, chunks::MAX_CHUNK_BYTES, is_valid_date};
use truc_ops::config::ClientConfig;
use truc_proto::v1::{
    Attachment, BusinessKind, Chunk, DocumentCode, DocumentType, Envelope, FetchDocumentRequest,
    GetTrackingRequest, InboxEntry, InboxEvent, ListInboxRequest, Organ, OtherInfo,
    PromulgationInfo, SendDocumentRequest, StatusEvent, UpdateStatusRequest, WatchInboxRequest,
    agency_client::AgencyClient, fetch_document_response, send_document_request,
};

use super::{CliError, failed, interrupted};

/// The largest gRPC message the client sends or accepts: a chunk and its framing fit easily.
const MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;

/// How many messages may wait between the file-reading task and the network.
const SEND_QUEUE: usize = 4;

/// The client config and the agency, common to every document command.
#[derive(Args)]
pub struct Agent {
    /// Client config: the node's address and this system's certificate.
    #[arg(long)]
    config: PathBuf,
    /// The agency acting (electronic organ code, NNN.NN.NN.XNN).
    #[arg(long = "as")]
    agency: String,
}

// ---------------------------------------------------------------- send

#[derive(Args)]
pub struct SendArgs {
    #[command(flatten)]
    agent: Agent,
    /// A recipient agency; repeat for several.
    #[arg(long = "to", required = true)]
    to: Vec<String>,
    /// The subject (required, at most 500 characters).
    #[arg(long)]
    subject: String,
    /// The document number [default: seconds since midnight UTC, or the one in --document-id].
    #[arg(long)]
    number: Option<String>,
    /// The document notation [default: TRUC, or the one in --document-id].
    #[arg(long)]
    notation: Option<String>,
    /// The document id [default: {sender},{date},{number}/{notation}].
    #[arg(long)]
    document_id: Option<String>,
    /// The promulgation date, yyyy/MM/dd [default: today (UTC), or the one in --document-id].
    #[arg(long)]
    date: Option<String>,
    /// The document type (18 = official letter).
    #[arg(long = "type", default_value_t = 18)]
    doc_type: u32,
    /// A summary of the content (at most 500 characters).
    #[arg(long, default_value = "")]
    content: String,
    /// 0 normal, 1 urgent, 2 very urgent, 3 express, 4 timed express.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=4))]
    priority: u32,
    /// The due date, yyyy/MM/dd.
    #[arg(long)]
    due: Option<String>,
    /// What this send is: a new document, or a change to one sent before.
    #[arg(long, value_enum, default_value_t = Kind::New)]
    kind: Kind,
    /// Why (required for recall, update and replace).
    #[arg(long)]
    reason: Option<String>,
    /// A file to attach; repeat for several.
    #[arg(long = "attach")]
    attach: Vec<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kind {
    New,
    Recall,
    Update,
    Replace,
}

impl Kind {
    fn business(self) -> BusinessKind {
        match self {
            Kind::New => BusinessKind::New,
            Kind::Recall => BusinessKind::Recall,
            Kind::Update => BusinessKind::Update,
            Kind::Replace => BusinessKind::Replace,
        }
    }
}

pub async fn send(args: SendArgs) -> Result<ExitCode, CliError> {
    let sender = args.agent.agency.clone();
    // A given document id supplies the date, number and notation not given
    // explicitly, so that a recall or update names the same document.
    let parsed = args
        .document_id
        .as_deref()
        .and_then(|id| DocumentId::parse(id).ok());
    let now = now_ms();
    let date = args
        .date
        .clone()
        .or_else(|| parsed.as_ref().map(|p| p.date.clone()))
        .unwrap_or_else(|| truc_audit::day_of(now).replace('-', "/"));
    let number = args
        .number
        .clone()
        .or_else(|| parsed.as_ref().map(|p| p.number.clone()))
        .unwrap_or_else(|| (now / 1000 % 86_400).to_string());
    let notation = args
        .notation
        .clone()
        .or_else(|| parsed.as_ref().map(|p| p.notation.clone()))
        .unwrap_or_else(|| "TRUC".to_owned());
    if !is_valid_date(&date) {
        return Err(CliError::Usage(format!(
            "--date must be a real date written yyyy/MM/dd, not {date:?}"
        )));
    }
    if let Some(due) = &args.due
        && !is_valid_date(due)
    {
        return Err(CliError::Usage(format!(
            "--due must be a real date written yyyy/MM/dd, not {due:?}"
        )));
    }
    if args.kind != Kind::New && args.reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
        return Err(CliError::Usage(
            "--reason is required for recall, update and replace".into(),
        ));
    }
    let document_id = args
        .document_id
        .clone()
        .unwrap_or_else(|| DocumentId::format(&sender, &date, &number, &notation));

    let mut attachments = Vec::with_capacity(args.attach.len());
    for path in &args.attach {
        attachments.push(describe_file(path).await?);
    }
    let recipients = args.to.len();
    let envelope = Envelope {
        from: Some(organ(&sender)),
        to: args.to.iter().map(|t| organ(t)).collect(),
        code: Some(DocumentCode {
            code_number: number,
            code_notation: notation,
        }),
        promulgation_info: Some(PromulgationInfo {
            place: String::new(),
            promulgation_date: date,
        }),
        document_type: Some(DocumentType {
            r#type: args.doc_type,
            ..DocumentType::default()
        }),
        subject: args.subject,
        content: args.content,
        due_date: args.due.unwrap_or_default(),
        other_info: Some(OtherInfo {
            priority: args.priority,
            ..OtherInfo::default()
        }),
        document_id,
        business_kind: args.kind.business() as i32,
        business_reason: args.reason.unwrap_or_default(),
        attachments,
        ..Envelope::default()
    };

    let mut client = client(&args.agent.config)?;
    let (tx, rx) = mpsc::channel(SEND_QUEUE);
    let reader = tokio::spawn(stream_document(envelope, args.attach, tx));
    let response = match client.send_document(ReceiverStream::new(rx)).await {
        Ok(r) => r.into_inner(),
        Err(status) => {
            // A local read error ends the stream early and the node then
            // complains of a short file: the local error says more.
            reader.abort();
            if let Ok(Err(local)) = reader.await {
                return Err(CliError::Failed(local));
            }
            return Err(rpc_failed(status));
        }
    };
    match reader.await {
        Ok(Ok(())) => {}
        Ok(Err(local)) => return Err(CliError::Failed(local)),
        Err(e) => return Err(failed(format!("the file reader stopped: {e}"))),
    }
    let duplicate = if response.duplicate {
        " (duplicate: already sent, nothing new stored)"
    } else {
        ""
    };
    println!(
        "sent {} from {} to {recipients} recipients{duplicate}",
        response.document_id, response.sender
    );
    println!(
        "follow it with: truc track --config {} --as {} --document-id {}",
        shell_word(&args.agent.config.display().to_string()),
        shell_word(&sender),
        shell_word(&response.document_id)
    );
    Ok(ExitCode::SUCCESS)
}

fn organ(id: &str) -> Organ {
    Organ {
        organ_id: id.to_owned(),
        ..Organ::default()
    }
}

/// An attachment's description: name, content type, size and SHA-256, the
/// file read 1 MiB at a time.
async fn describe_file(path: &Path) -> Result<Attachment, CliError> {
    let unreadable =
        |e: std::io::Error| CliError::Usage(format!("cannot read {}: {e}", path.display()));
    let meta = tokio::fs::metadata(path).await.map_err(unreadable)?;
    if !meta.is_file() {
        return Err(CliError::Usage(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| CliError::Usage(format!("{} has no file name", path.display())))?;
    let mut file = tokio::fs::File::open(path).await.map_err(unreadable)?;
    let mut hash = Context::new(&SHA256);
    let mut buf = vec![0u8; MAX_CHUNK_BYTES];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).await.map_err(unreadable)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        size += n as u64;
    }
    Ok(Attachment {
        content_type: content_type_for(&name).to_owned(),
        name,
        size,
        sha256: Bytes::copy_from_slice(hash.finish().as_ref()),
        description: String::new(),
    })
}

/// Sends the envelope, then every attachment's chunks, into `tx`. Stops
/// quietly when the other end is gone (the call failed; its error is the
/// one to report); returns an error only for local reading problems.
async fn stream_document(
    envelope: Envelope,
    files: Vec<PathBuf>,
    tx: mpsc::Sender<SendDocumentRequest>,
) -> Result<(), String> {
    let sizes: Vec<u64> = envelope.attachments.iter().map(|a| a.size).collect();
    let first = SendDocumentRequest {
        part: Some(send_document_request::Part::Envelope(envelope)),
    };
    if tx.send(first).await.is_err() {
        return Ok(());
    }
    for (index, (path, size)) in files.iter().zip(sizes).enumerate() {
        let index = u32::try_from(index).map_err(|_| "too many attachments".to_owned())?;
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let mut offset = 0u64;
        while offset < size {
            let want = (size - offset).min(MAX_CHUNK_BYTES as u64);
            let mut buf = Vec::with_capacity(want as usize);
            (&mut file)
                .take(want)
                .read_to_end(&mut buf)
                .await
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            if buf.is_empty() {
                return Err(format!(
                    "{} became shorter while it was being sent ({offset} of {size} bytes)",
                    path.display()
                ));
            }
            let len = buf.len() as u64;
            let chunk = truc_doc::chunks::chunk(index, offset, Bytes::from(buf));
            let message = SendDocumentRequest {
                part: Some(send_document_request::Part::Chunk(chunk)),
            };
            if tx.send(message).await.is_err() {
                return Ok(());
            }
            offset += len;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- inbox

#[derive(Args)]
pub struct InboxArgs {
    #[command(flatten)]
    agent: Agent,
    /// Only documents with this status code, e.g. 01 (also applies to --watch).
    #[arg(long)]
    status: Option<String>,
    /// Only documents from this sender (also applies to --watch).
    #[arg(long = "from")]
    from: Option<String>,
    /// After listing, print arrivals and status changes as they happen, until Ctrl-C.
    #[arg(long)]
    watch: bool,
}

pub async fn inbox(args: InboxArgs) -> Result<ExitCode, CliError> {
    if let Some(status) = &args.status {
        StatusCode::parse(status).map_err(|v| CliError::Usage(format!("--status: {}", v.rule)))?;
    }
    let recipient = args.agent.agency.clone();
    let mut client = client(&args.agent.config)?;
    // Watch before listing, so that nothing happening meanwhile is missed.
    let mut events = if args.watch {
        let request = WatchInboxRequest {
            recipient: recipient.clone(),
        };
        Some(
            client
                .watch_inbox(request)
                .await
                .map_err(rpc_failed)?
                .into_inner(),
        )
    } else {
        None
    };

    let mut entries = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = ListInboxRequest {
            recipient: recipient.clone(),
            status: args.status.clone().unwrap_or_default(),
            sender: args.from.clone().unwrap_or_default(),
            since_unix_ms: 0,
            page_size: 500,
            page_token,
        };
        let page = client
            .list_inbox(request)
            .await
            .map_err(rpc_failed)?
            .into_inner();
        entries.extend(page.entries);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let rows: Vec<Vec<String>> = entries.iter().map(inbox_row).collect();
    print_table(
        &[
            "SENDER",
            "DOCUMENT ID",
            "STATUS",
            "ARRIVED",
            "SUBJECT",
            "ATTACHMENTS",
        ],
        &rows,
    );
    println!("{} documents in the inbox of {recipient}", entries.len());

    let Some(events) = events.as_mut() else {
        return Ok(ExitCode::SUCCESS);
    };
    eprintln!("watching the inbox of {recipient}; Ctrl-C to stop");
    let stop = interrupted();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            event = events.message() => match event.map_err(rpc_failed)? {
                Some(event) => {
                    if event_matches(&event, &args) {
                        println!("{}", event_line(&event));
                    }
                }
                None => {
                    eprintln!("the node ended the watch");
                    break;
                }
            },
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn inbox_row(e: &InboxEntry) -> Vec<String> {
    let envelope = e.envelope.as_ref();
    vec![
        e.sender.clone(),
        e.document_id.clone(),
        status_text(&e.status),
        when(e.arrived_unix_ms),
        shorten(envelope.map_or("", |v| v.subject.as_str()), 60),
        envelope.map_or(0, |v| v.attachments.len()).to_string(),
    ]
}

fn event_matches(event: &InboxEvent, args: &InboxArgs) -> bool {
    let Some(entry) = &event.entry else {
        return false;
    };
    args.status.as_ref().is_none_or(|s| *s == entry.status)
        && args.from.as_ref().is_none_or(|f| *f == entry.sender)
}

fn event_line(event: &InboxEvent) -> String {
    let entry = event.entry.clone().unwrap_or_default();
    let subject = entry.envelope.as_ref().map_or("", |v| v.subject.as_str());
    format!(
        "{:<8} {}  {}  {}  {}",
        event.kind,
        entry.sender,
        entry.document_id,
        status_text(&entry.status),
        shorten(subject, 80)
    )
}

// ---------------------------------------------------------------- fetch

#[derive(Args)]
pub struct FetchArgs {
    #[command(flatten)]
    agent: Agent,
    /// The sending agency.
    #[arg(long = "from")]
    from: String,
    /// The document id.
    #[arg(long)]
    document_id: String,
    /// Where to write the attachments and envelope.txt (created if missing).
    #[arg(long)]
    out: PathBuf,
}

pub async fn fetch(args: FetchArgs) -> Result<ExitCode, CliError> {
    let mut client = client(&args.agent.config)?;
    let request = FetchDocumentRequest {
        recipient: args.agent.agency.clone(),
        sender: args.from.clone(),
        document_id: args.document_id.clone(),
    };
    let mut stream = client
        .fetch_document(request)
        .await
        .map_err(rpc_failed)?
        .into_inner();
    let entry = match stream.message().await.map_err(rpc_failed)? {
        Some(m) => match m.part {
            Some(fetch_document_response::Part::Entry(entry)) => entry,
            _ => return Err(failed("the node did not start with the document's entry")),
        },
        None => return Err(failed("the node sent nothing")),
    };
    let envelope = entry.envelope.clone().unwrap_or_default();

    // Every name is decided before anything is written.
    let mut used = HashSet::from(["envelope.txt".to_owned()]);
    let mut files = Vec::with_capacity(envelope.attachments.len());
    for (i, a) in envelope.attachments.iter().enumerate() {
        let name = safe_file_name(&a.name).ok_or_else(|| {
            failed(format!(
                "attachment {i} has a name that cannot be a file name: {:?}",
                a.name
            ))
        })?;
        files.push(Expected {
            path: args.out.join(unique_name(&name, &mut used)),
            size: a.size,
            sha256: a.sha256.clone(),
        });
    }
    let dump = args.out.join("envelope.txt");
    // Never write through a link or over a file: a sender chooses the
    // names, and the output directory may hold anything.
    if is_symlink(&args.out).await {
        return Err(CliError::Usage(format!(
            "{} is a symbolic link; give a real directory",
            args.out.display()
        )));
    }
    tokio::fs::create_dir_all(&args.out)
        .await
        .map_err(|e| CliError::Usage(format!("cannot create {}: {e}", args.out.display())))?;
    for path in std::iter::once(&dump).chain(files.iter().map(|f| &f.path)) {
        if tokio::fs::symlink_metadata(path).await.is_ok() {
            return Err(CliError::Usage(format!(
                "{} already exists; refusing to overwrite it (fetch into an empty directory)",
                path.display()
            )));
        }
    }
    let mut envelope_file = create_new(&dump).await.map_err(failed)?;
    envelope_file
        .write_all(envelope_dump(&entry, &files).as_bytes())
        .await
        .and(envelope_file.flush().await)
        .map_err(|e| failed(format!("cannot write {}: {e}", dump.display())))?;
    drop(envelope_file);

    let mut writer = Writer::new(files);
    let result = async {
        while let Some(message) = stream.message().await.map_err(rpc_failed)? {
            match message.part {
                Some(fetch_document_response::Part::Chunk(chunk)) => {
                    writer.chunk(chunk).await.map_err(CliError::Failed)?;
                }
                Some(fetch_document_response::Part::Entry(_)) => {
                    return Err(failed("the node sent the entry twice"));
                }
                None => {}
            }
        }
        writer.finish().await.map_err(CliError::Failed)
    }
    .await;
    if let Err(e) = result {
        writer.discard().await;
        return Err(e);
    }
    println!("{}", dump.display());
    for f in &writer.files {
        println!("{}", f.path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether `path` is a symbolic link (false if it does not exist).
async fn is_symlink(path: &Path) -> bool {
    tokio::fs::symlink_metadata(path)
        .await
        .is_ok_and(|m| m.file_type().is_symlink())
}

/// Creates `path`, which must not exist yet: `O_CREAT | O_EXCL`, which also
/// refuses a symbolic link in its place, dangling or not.
async fn create_new(path: &Path) -> Result<tokio::fs::File, String> {
    tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .await
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                format!(
                    "{} already exists (or is a link); refusing to overwrite it",
                    path.display()
                )
            } else {
                format!("cannot create {}: {e}", path.display())
            }
        })
}

/// A file to receive: where, and what the envelope says it is.
struct Expected {
    path: PathBuf,
    size: u64,
    sha256: Bytes,
}

/// Writes attachment chunks to their files as they arrive, checking each
/// file's size and SHA-256 once it is complete.
struct Writer {
    files: Vec<Expected>,
    /// The attachment being written.
    index: usize,
    /// Its file, once created.
    open: Option<OpenFile>,
}

struct OpenFile {
    file: tokio::fs::File,
    hash: Context,
    written: u64,
}

impl Writer {
    fn new(files: Vec<Expected>) -> Writer {
        Writer {
            files,
            index: 0,
            open: None,
        }
    }

    /// The current file, created on first use.
    async fn current(&mut self) -> Result<&mut OpenFile, String> {
        if self.open.is_none() {
            let path = &self.files[self.index].path;
            let file = create_new(path).await?;
            self.open = Some(OpenFile {
                file,
                hash: Context::new(&SHA256),
                written: 0,
            });
        }
        self.open
            .as_mut()
            .ok_or_else(|| "internal: no open file".to_owned())
    }

    async fn chunk(&mut self, chunk: Chunk) -> Result<(), String> {
        let target = chunk.attachment as usize;
        if target >= self.files.len() {
            return Err(format!(
                "a chunk for attachment {target}, but the envelope has {}",
                self.files.len()
            ));
        }
        if target < self.index {
            return Err(format!(
                "a chunk for attachment {target} after attachment {} had started",
                self.index
            ));
        }
        while self.index < target {
            self.complete().await?;
        }
        let Expected { path, size, .. } = &self.files[self.index];
        let (path, size) = (path.clone(), *size);
        let open = self.current().await?;
        if chunk.offset != open.written {
            return Err(format!(
                "{}: a chunk at offset {} where {} was expected",
                path.display(),
                chunk.offset,
                open.written
            ));
        }
        let end = open.written + chunk.data.len() as u64;
        if end > size {
            return Err(format!(
                "{}: more than the {size} bytes the envelope declares",
                path.display()
            ));
        }
        open.file
            .write_all(&chunk.data)
            .await
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        open.hash.update(&chunk.data);
        open.written = end;
        Ok(())
    }

    /// Checks and closes the current file, and moves to the next attachment.
    async fn complete(&mut self) -> Result<(), String> {
        let path = self.files[self.index].path.clone();
        let open = self.current().await?;
        open.file
            .flush()
            .await
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        let written = open.written;
        let got = open.hash.clone().finish();
        let expected = &self.files[self.index];
        if written != expected.size {
            return Err(format!(
                "{}: {written} bytes where the envelope declares {}; the file was deleted",
                path.display(),
                expected.size
            ));
        }
        if got.as_ref() != expected.sha256.as_ref() {
            return Err(format!(
                "{}: sha256 {} does not match the envelope's {}; the file was deleted",
                path.display(),
                hex::encode(got.as_ref()),
                hex::encode(&expected.sha256)
            ));
        }
        self.open = None;
        self.index += 1;
        Ok(())
    }

    /// Completes every remaining attachment (empty ones have no chunks).
    async fn finish(&mut self) -> Result<(), String> {
        while self.index < self.files.len() {
            self.complete().await?;
        }
        Ok(())
    }

    /// Deletes the file that was being written, after a failure.
    async fn discard(&mut self) {
        if let Some(open) = self.open.take() {
            drop(open);
            if let Some(f) = self.files.get(self.index) {
                let _ = tokio::fs::remove_file(&f.path).await;
            }
        }
    }
}

fn envelope_dump(entry: &InboxEntry, files: &[Expected]) -> String {
    let mut out = format!(
        "sender:      {}\ndocument id: {}\nrecipient:   {}\nstatus:      {}\narrived:     {}\nupdated:     {}\n",
        entry.sender,
        entry.document_id,
        entry.recipient,
        status_text(&entry.status),
        when(entry.arrived_unix_ms),
        when(entry.updated_unix_ms),
    );
    for f in files {
        out.push_str(&format!(
            "attachment:  {} ({} bytes, sha256 {})\n",
            f.path.display(),
            f.size,
            hex::encode(&f.sha256)
        ));
    }
    out.push_str(&format!("\nenvelope: {:#?}\n", entry.envelope));
    if let Some(change) = &entry.pending_change {
        out.push_str(&format!("\npending change: {change:#?}\n"));
    }
    out
}

// ---------------------------------------------------------------- status

#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    agent: Agent,
    /// The sending agency.
    #[arg(long = "from")]
    from: String,
    /// The document id.
    #[arg(long)]
    document_id: String,
    /// The new status: 02 rejected, 03 accepted, 04 awaiting assignment,
    /// 05 in processing, 06 completed, 15/16 change accepted/refused.
    #[arg(long)]
    status: String,
    /// A note that travels with the status.
    #[arg(long, default_value = "")]
    description: String,
}

pub async fn status(args: StatusArgs) -> Result<ExitCode, CliError> {
    StatusCode::parse(&args.status)
        .map_err(|v| CliError::Usage(format!("--status: {}", v.rule)))?;
    let mut client = client(&args.agent.config)?;
    let request = UpdateStatusRequest {
        recipient: args.agent.agency,
        sender: args.from,
        document_id: args.document_id,
        status: args.status,
        description: args.description,
        staff: None,
    };
    let entry = client
        .update_status(request)
        .await
        .map_err(rpc_failed)?
        .into_inner()
        .entry
        .unwrap_or_default();
    println!(
        "{} from {} at {}: now {}",
        entry.document_id,
        entry.sender,
        entry.recipient,
        status_text(&entry.status)
    );
    print_history(&entry.history, "");
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------- track

#[derive(Args)]
pub struct TrackArgs {
    #[command(flatten)]
    agent: Agent,
    /// The document id.
    #[arg(long)]
    document_id: String,
}

pub async fn track(args: TrackArgs) -> Result<ExitCode, CliError> {
    let mut client = client(&args.agent.config)?;
    let request = GetTrackingRequest {
        sender: args.agent.agency,
        document_id: args.document_id,
    };
    let tracking = client
        .get_tracking(request)
        .await
        .map_err(rpc_failed)?
        .into_inner();
    let subject = tracking
        .envelope
        .as_ref()
        .map_or("", |e| e.subject.as_str());
    println!("{} from {}", tracking.document_id, tracking.sender);
    println!("subject:  {subject}");
    println!("accepted: {}", when(tracking.accepted_unix_ms));
    println!();
    let rows: Vec<Vec<String>> = tracking
        .recipients
        .iter()
        .map(|r| {
            vec![
                r.recipient.clone(),
                r.delivery.clone(),
                r.attempts.to_string(),
                status_text(&r.status),
                if r.last_error.is_empty() {
                    "-".to_owned()
                } else {
                    r.last_error.clone()
                },
            ]
        })
        .collect();
    print_table(
        &["RECIPIENT", "DELIVERY", "ATTEMPTS", "STATUS", "LAST ERROR"],
        &rows,
    );
    for r in &tracking.recipients {
        if r.history.is_empty() {
            continue;
        }
        println!();
        println!("{}:", r.recipient);
        print_history(&r.history, "  ");
    }
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------- helpers

/// A client of the node named in the config file.
fn client(config: &Path) -> Result<AgencyClient<Channel>, CliError> {
    let config = ClientConfig::load(config)?;
    let channel = config.channel().map_err(failed)?;
    Ok(AgencyClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

/// A gRPC error as a failure (exit 1), with the transaction id when the node gave one.
fn rpc_failed(status: tonic::Status) -> CliError {
    let tx = status
        .metadata()
        .get(truc_node::TRANSACTION_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|t| format!(" (transaction {t})"))
        .unwrap_or_default();
    CliError::Failed(format!("{:?}: {}{tx}", status.code(), status.message()))
}

/// One line per status event: time, code and meaning, by whom, note.
fn print_history(history: &[StatusEvent], indent: &str) {
    for e in history {
        let note = if e.description.is_empty() {
            String::new()
        } else {
            format!("  {}", e.description)
        };
        println!(
            "{indent}{}  {:<22}  by {}{note}",
            when(e.unix_ms),
            status_text(&e.code),
            e.by
        );
    }
}

/// Prints left-aligned columns under their headers.
fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut out = String::new();
        for (cell, w) in cells.zip(&widths) {
            out.push_str(&format!("{cell:<w$}  "));
        }
        println!("{}", out.trim_end());
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
}

/// A status code with its meaning, e.g. "03 accepted"; "-" when unset.
fn status_text(code: &str) -> String {
    if code.is_empty() {
        return "-".to_owned();
    }
    match StatusCode::parse(code) {
        Ok(s) => format!("{} {}", s.code(), s.meaning()),
        Err(_) => code.to_owned(),
    }
}

/// At most `max` characters of `text`, on one line.
fn shorten(text: &str, max: usize) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() <= max {
        one_line
    } else {
        let mut cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

/// A time for tables: UTC, or "-" when unset (0).
fn when(unix_ms: u64) -> String {
    if unix_ms == 0 {
        "-".to_owned()
    } else {
        format_utc(unix_ms)
    }
}

/// Unix milliseconds as "yyyy-MM-dd HH:mm:ss" UTC.
fn format_utc(unix_ms: u64) -> String {
    let secs = unix_ms / 1000 % 86_400;
    format!(
        "{} {:02}:{:02}:{:02}",
        truc_audit::day_of(unix_ms),
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A content type guessed from the file name's extension.
fn content_type_for(name: &str) -> &'static str {
    let ext = Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match ext.as_str() {
        "pdf" => "application/pdf",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "xml" => "application/xml",
        "txt" => "text/plain",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "zip" => "application/zip",
        _ => "application/octet-stream",
    }
}

/// The attachment name as a plain local file name: what follows the last `/`
/// or `\`, without control characters or surrounding spaces. None when that
/// is empty, `.` or `..`.
fn safe_file_name(name: &str) -> Option<String> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = base.chars().filter(|c| !c.is_control()).collect();
    let cleaned = cleaned.trim();
    match cleaned {
        "" | "." | ".." => None,
        _ => Some(cleaned.to_owned()),
    }
}

/// `name`, or `name` with -1, -2… before its extension when already used
/// (compared without case, for case-insensitive file systems).
fn unique_name(name: &str, used: &mut HashSet<String>) -> String {
    if used.insert(name.to_lowercase()) {
        return name.to_owned();
    }
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => name.split_at(i),
        _ => (name, ""),
    };
    let mut n = 1u32;
    loop {
        let candidate = format!("{stem}-{n}{ext}");
        if used.insert(candidate.to_lowercase()) {
            return candidate;
        }
        n += 1;
    }
}

/// `s` quoted for a POSIX shell when it needs to be.
fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./,:=+@".contains(c));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_reduced_to_a_plain_name() {
        assert_eq!(safe_file_name("report.pdf").as_deref(), Some("report.pdf"));
        assert_eq!(
            safe_file_name("../../etc/passwd").as_deref(),
            Some("passwd")
        );
        assert_eq!(safe_file_name(r"C:\docs\a.docx").as_deref(), Some("a.docx"));
        assert_eq!(safe_file_name("a\nb.txt").as_deref(), Some("ab.txt"));
        assert_eq!(
            safe_file_name("công văn.pdf").as_deref(),
            Some("công văn.pdf")
        );
        for bad in ["", "  ", ".", "..", "dir/", "a/..", r"..\..", "\u{7}"] {
            assert_eq!(safe_file_name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn repeated_names_get_a_suffix() {
        let mut used = HashSet::from(["envelope.txt".to_owned()]);
        assert_eq!(unique_name("a.pdf", &mut used), "a.pdf");
        assert_eq!(unique_name("a.pdf", &mut used), "a-1.pdf");
        assert_eq!(unique_name("A.PDF", &mut used), "A-2.PDF");
        assert_eq!(unique_name("envelope.txt", &mut used), "envelope-1.txt");
        assert_eq!(unique_name("README", &mut used), "README");
        assert_eq!(unique_name("README", &mut used), "README-1");
        assert_eq!(unique_name(".hidden", &mut used), ".hidden");
        assert_eq!(unique_name(".hidden", &mut used), ".hidden-1");
    }

    #[test]
    fn content_types_follow_the_extension() {
        assert_eq!(content_type_for("a.pdf"), "application/pdf");
        assert_eq!(content_type_for("A.PDF"), "application/pdf");
        assert_eq!(
            content_type_for("x.docx"),
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
        );
        assert_eq!(
            content_type_for("x.xlsx"),
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
        );
        assert_eq!(content_type_for("x.xml"), "application/xml");
        assert_eq!(content_type_for("x.txt"), "text/plain");
        assert_eq!(content_type_for("x.png"), "image/png");
        assert_eq!(content_type_for("x.jpg"), "image/jpeg");
        assert_eq!(content_type_for("x.zip"), "application/zip");
        assert_eq!(content_type_for("x.tar.gz"), "application/octet-stream");
        assert_eq!(content_type_for("noext"), "application/octet-stream");
    }

    #[test]
    fn times_are_utc() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00");
        assert_eq!(format_utc(86_399_999), "1970-01-01 23:59:59");
        // 2024-02-29T13:45:30.250Z
        assert_eq!(format_utc(1_709_214_330_250), "2024-02-29 13:45:30");
        assert_eq!(when(0), "-");
    }

    #[test]
    fn statuses_show_their_meaning() {
        assert_eq!(status_text("03"), "03 accepted");
        assert_eq!(status_text(""), "-");
        assert_eq!(status_text("99"), "99");
    }

    #[test]
    fn shortened_text_fits() {
        assert_eq!(shorten("abc", 5), "abc");
        assert_eq!(shorten("abcdef", 4), "abc…");
        assert_eq!(shorten("a\nb", 5), "a b");
    }

    fn expected(dir: &Path, name: &str, data: &[u8]) -> Expected {
        Expected {
            path: dir.join(name),
            size: data.len() as u64,
            sha256: Bytes::copy_from_slice(ring::digest::digest(&SHA256, data).as_ref()),
        }
    }

    #[tokio::test]
    async fn received_files_are_checked_and_bad_ones_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = vec![
            expected(dir.path(), "a.txt", b"hello world"),
            expected(dir.path(), "empty", b""),
            expected(dir.path(), "b.txt", b"abc"),
        ];
        let mut w = Writer::new(files);
        let c = truc_doc::chunks::chunk;
        w.chunk(c(0, 0, Bytes::from_static(b"hello ")))
            .await
            .expect("1");
        w.chunk(c(0, 6, Bytes::from_static(b"world")))
            .await
            .expect("2");
        w.chunk(c(2, 0, Bytes::from_static(b"abc")))
            .await
            .expect("3");
        w.finish().await.expect("complete");
        let read = |n: &str| std::fs::read(dir.path().join(n)).expect("read");
        assert_eq!(read("a.txt"), b"hello world");
        assert_eq!(read("empty"), b"");
        assert_eq!(read("b.txt"), b"abc");

        let mut w = Writer::new(vec![expected(dir.path(), "c.txt", b"hello")]);
        w.chunk(c(0, 0, Bytes::from_static(b"jello")))
            .await
            .expect("written");
        assert!(w.finish().await.is_err(), "hash mismatch");
        w.discard().await;
        assert!(!dir.path().join("c.txt").exists(), "deleted");

        let mut w = Writer::new(vec![expected(dir.path(), "d.txt", b"hello")]);
        w.chunk(c(0, 0, Bytes::from_static(b"hel")))
            .await
            .expect("written");
        assert!(
            w.chunk(c(0, 4, Bytes::from_static(b"o"))).await.is_err(),
            "gap"
        );
        assert!(
            w.chunk(c(0, 3, Bytes::from_static(b"lo!"))).await.is_err(),
            "too long"
        );
        assert!(w.finish().await.is_err(), "short");
        w.discard().await;
        assert!(!dir.path().join("d.txt").exists(), "deleted");
    }

    #[test]
    fn shell_words_are_quoted_when_needed() {
        assert_eq!(shell_word("000.00.00.G22"), "000.00.00.G22");
        assert_eq!(
            shell_word("000.00.00.G22,2024/01/02,12/TRUC"),
            "000.00.00.G22,2024/01/02,12/TRUC"
        );
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
    }
}
