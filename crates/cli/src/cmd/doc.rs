//! `truc send`, `truc inbox`, `truc fetch`, `truc status` and `truc track`:
//! official documents, as an agency system talking to its node.
//!
//! Attachments are streamed both ways, one chunk (at most 1 MiB) in memory at
//! a time, so that files of hundreds of MiB cost no more memory than small ones.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::{Args, ValueEnum};
use tokio::io::AsyncWriteExt;
use truc_client::{Client, SavedFile, Upload};
use truc_doc::{DocumentId, StatusCode, is_valid_date};
use truc_ops::{config::ClientConfig, now_ms};
use truc_proto::v1::{
    BusinessKind, DocumentCode, DocumentType, Envelope, InboxEntry, InboxEvent, ListInboxRequest,
    Organ, OtherInfo, PromulgationInfo, StatusEvent, Tracking, UpdateStatusRequest,
};

use super::{CliError, failed, interrupted};

/// The client config and the agency, common to every document command.
#[derive(Args)]
pub(super) struct Agent {
    /// Client config: the node's address and this system's certificate.
    #[arg(long)]
    config: PathBuf,
    /// The agency acting (electronic organ code, NNN.NN.NN.XNN).
    #[arg(long = "as")]
    agency: String,
}

// ---------------------------------------------------------------- send

#[derive(Args)]
pub(crate) struct SendArgs {
    #[command(flatten)]
    agent: Agent,
    /// A recipient agency; repeat for several.
    #[arg(long = "to", required_unless_present = "edxml")]
    to: Vec<String>,
    /// The subject (required, at most 500 characters).
    #[arg(long, required_unless_present = "edxml")]
    subject: Option<String>,
    /// Send the document of this edXML package (envelope and attachments
    /// from the package; the other document options do not apply).
    #[arg(long, conflicts_with_all = ["to", "subject", "attach", "document_id", "number", "notation", "date", "reason"])]
    edxml: Option<PathBuf>,
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

pub(super) async fn send(args: SendArgs) -> Result<ExitCode, CliError> {
    if let Some(path) = &args.edxml {
        return super::edxml::send(&args.agent.config, &args.agent.agency, path).await;
    }
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

    let mut uploads = Vec::with_capacity(args.attach.len());
    for path in &args.attach {
        uploads.push(
            Upload::file(path)
                .await
                .map_err(|e| CliError::Usage(e.to_string()))?,
        );
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
        subject: args.subject.unwrap_or_default(),
        content: args.content,
        due_date: args.due.unwrap_or_default(),
        other_info: Some(OtherInfo {
            priority: args.priority,
            ..OtherInfo::default()
        }),
        document_id,
        business_kind: args.kind.business() as i32,
        business_reason: args.reason.unwrap_or_default(),
        ..Envelope::default()
    };

    let response = client(&args.agent.config)?
        .send_document(envelope, uploads)
        .await
        .map_err(rpc_failed)?;
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

// ---------------------------------------------------------------- inbox

#[derive(Args)]
pub(crate) struct InboxArgs {
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

pub(super) async fn inbox(args: InboxArgs) -> Result<ExitCode, CliError> {
    if let Some(status) = &args.status {
        StatusCode::parse(status).map_err(|v| CliError::Usage(format!("--status: {}", v.rule)))?;
    }
    let recipient = args.agent.agency.clone();
    let client = client(&args.agent.config)?;
    // Watch before listing, so that nothing happening meanwhile is missed.
    let mut events = if args.watch {
        Some(client.watch_inbox(&recipient).await.map_err(rpc_failed)?)
    } else {
        None
    };
    let filter = ListInboxRequest {
        recipient: recipient.clone(),
        status: args.status.clone().unwrap_or_default(),
        sender: args.from.clone().unwrap_or_default(),
        ..ListInboxRequest::default()
    };
    let entries = client.list_inbox_all(filter).await.map_err(rpc_failed)?;
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
            event = events.next() => match event.map_err(rpc_failed)? {
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
pub(crate) struct FetchArgs {
    #[command(flatten)]
    agent: Agent,
    /// The sending agency.
    #[arg(long = "from")]
    from: String,
    /// The document id.
    #[arg(long)]
    document_id: String,
    /// Where to write the attachments and envelope.txt (created if missing).
    #[arg(long, required_unless_present = "edxml", conflicts_with = "edxml")]
    out: Option<PathBuf>,
    /// Write the document, attachments included, as this edXML package
    /// instead (the file must not exist).
    #[arg(long)]
    edxml: Option<PathBuf>,
}

pub(super) async fn fetch(args: FetchArgs) -> Result<ExitCode, CliError> {
    let a = &args.agent;
    let out = match (&args.edxml, &args.out) {
        (Some(package), _) => {
            return super::edxml::fetch(
                &a.config,
                &a.agency,
                &args.from,
                &args.document_id,
                package,
            )
            .await;
        }
        (None, Some(out)) => out.clone(),
        (None, None) => return Err(CliError::Usage("--out or --edxml is required".into())),
    };
    let incoming = client(&args.agent.config)?
        .fetch(&args.agent.agency, &args.from, &args.document_id)
        .await
        .map_err(rpc_failed)?;
    let entry = incoming.entry().clone();
    // Every name is decided, and nothing is there, before anything is written.
    let files = incoming
        .plan(&out, &[ENVELOPE_FILE])
        .await
        .map_err(|e| match e {
            truc_client::Error::Rpc(_) | truc_client::Error::Protocol(_) => failed(e),
            _ => CliError::Usage(e.to_string()),
        })?;
    let dump = out.join(ENVELOPE_FILE);
    let mut envelope_file = truc_client::create_new(&dump).await.map_err(failed)?;
    envelope_file
        .write_all(envelope_dump(&entry, &files).as_bytes())
        .await
        .and(envelope_file.flush().await)
        .map_err(|e| failed(format!("cannot write {}: {e}", dump.display())))?;
    drop(envelope_file);
    let files = incoming.save(files).await.map_err(rpc_failed)?;
    println!("{}", dump.display());
    for f in &files {
        println!("{}", f.path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// The envelope and entry, written next to the attachments.
const ENVELOPE_FILE: &str = "envelope.txt";

fn envelope_dump(entry: &InboxEntry, files: &[SavedFile]) -> String {
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
pub(crate) struct StatusArgs {
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

pub(super) async fn status(args: StatusArgs) -> Result<ExitCode, CliError> {
    StatusCode::parse(&args.status)
        .map_err(|v| CliError::Usage(format!("--status: {}", v.rule)))?;
    let request = UpdateStatusRequest {
        recipient: args.agent.agency,
        sender: args.from,
        document_id: args.document_id,
        status: args.status,
        description: args.description,
        staff: None,
    };
    let entry = client(&args.agent.config)?
        .update_status(request)
        .await
        .map_err(rpc_failed)?;
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
pub(crate) struct TrackArgs {
    #[command(flatten)]
    agent: Agent,
    /// The document id.
    #[arg(long)]
    document_id: String,
    /// Print the tracking again each time a delivery or a status changes, until Ctrl-C.
    #[arg(long)]
    watch: bool,
}

pub(super) async fn track(args: TrackArgs) -> Result<ExitCode, CliError> {
    let client = client(&args.agent.config)?;
    let (sender, doc) = (&args.agent.agency, &args.document_id);
    if !args.watch {
        let tracking = client.tracking(sender, doc).await.map_err(rpc_failed)?;
        print_tracking(&tracking);
        return Ok(ExitCode::SUCCESS);
    }
    let mut watch = client
        .watch_tracking(sender, doc)
        .await
        .map_err(rpc_failed)?;
    eprintln!("watching {doc}; Ctrl-C to stop");
    let stop = interrupted();
    tokio::pin!(stop);
    let mut first = true;
    loop {
        tokio::select! {
            () = &mut stop => break,
            tracking = watch.next() => match tracking.map_err(rpc_failed)? {
                Some(tracking) => {
                    if !first {
                        println!();
                        println!("---- {}", format_utc(now_ms()));
                    }
                    first = false;
                    print_tracking(&tracking);
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

fn print_tracking(tracking: &Tracking) {
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
}

// ---------------------------------------------------------------- helpers

/// A client of the node named in the config file.
pub(super) fn client(config: &Path) -> Result<Client, CliError> {
    connect(&ClientConfig::load(config)?)
}

/// A client of the node named in `config`.
pub(super) fn connect(config: &ClientConfig) -> Result<Client, CliError> {
    Client::connect(&config.address, &config.server_name, &config.tls).map_err(failed)
}

/// A client library error as a failure (exit 1): a gRPC error with the
/// transaction id when the node gave one.
pub(super) fn rpc_failed(e: truc_client::Error) -> CliError {
    CliError::Failed(e.to_string())
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
