//! edXML packages (QCVN 102:2016): `truc edxml check`, `truc edxml status
//! write|read`, and the `--edxml` forms of `truc send` and `truc fetch`.
//!
//! Attachments never sit whole in memory: a package sent is decoded into
//! temporary files as it is read, then streamed from them to the node; a
//! fetched document's attachments are saved (and checked) into a temporary
//! directory and streamed from there into the package as base64.

use std::{
    fs::File,
    io::{self, BufReader, BufWriter, Read, Write},
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::{Args, Subcommand};
use truc_client::Upload;
use truc_doc::StatusCode;
use truc_edxml::{
    AttachmentMeta, AttachmentSink, AttachmentSource, Discard, Error as EdxmlError, Preserved,
    StatusPackage,
};
use truc_ops::now_ms;
use truc_proto::v1::{Attachment, Organ, StaffInfo, StatusEvent, StatusUpdate};

use super::{CliError, doc, failed};

/// The largest status package read (they are a few KiB).
const MAX_STATUS_BYTES: u64 = 16 << 20;

#[derive(Subcommand)]
pub(crate) enum EdxmlCommand {
    /// Checks an edXML document or status package: exit 0 valid, 1 invalid
    /// (the N./R. codes are listed), 2 unreadable.
    Check(CheckArgs),
    /// Writes or reads an edXML status package.
    #[command(subcommand)]
    Status(StatusCommand),
}

#[derive(Args)]
pub(crate) struct CheckArgs {
    /// The package (.edxml).
    file: PathBuf,
}

#[derive(Subcommand)]
pub(crate) enum StatusCommand {
    /// Writes a status package answering a document.
    Write(StatusWriteArgs),
    /// Reads a status package and prints the status it carries.
    Read(CheckArgs),
}

#[derive(Args)]
pub(crate) struct StatusWriteArgs {
    /// The recipient setting the status (electronic organ code).
    #[arg(long = "as")]
    agency: String,
    /// The document's sender.
    #[arg(long = "from")]
    from: String,
    /// The document id.
    #[arg(long)]
    document_id: String,
    /// The status code: 01 … 06, 13, 15, 16.
    #[arg(long)]
    status: String,
    /// A note that travels with the status.
    #[arg(long, default_value = "")]
    description: String,
    /// The recipient's name in the package.
    #[arg(long, default_value = "")]
    organ_name: String,
    /// The staff member who set it.
    #[arg(long)]
    staff: Option<String>,
    /// Their department.
    #[arg(long)]
    department: Option<String>,
    /// Where to write the package (must not exist).
    #[arg(long)]
    out: PathBuf,
}

pub(super) fn run(command: EdxmlCommand) -> Result<ExitCode, CliError> {
    match command {
        EdxmlCommand::Check(a) => check(&a.file),
        EdxmlCommand::Status(StatusCommand::Write(a)) => status_write(a),
        EdxmlCommand::Status(StatusCommand::Read(a)) => status_read(&a.file),
    }
}

fn unreadable(path: &Path, e: impl std::fmt::Display) -> CliError {
    CliError::Usage(format!("{}: cannot read: {e}", path.display()))
}

/// Prints the violations (one per line: code, field, rule) and answers exit 1.
fn invalid(path: &Path, e: &EdxmlError) -> ExitCode {
    println!("{}: invalid edXML package", path.display());
    match e {
        EdxmlError::Invalid(v) => {
            for v in v {
                println!("  {v}");
            }
        }
        other => println!("  {}: {other}", other.codes().join(", ")),
    }
    ExitCode::from(1)
}

fn check(path: &Path) -> Result<ExitCode, CliError> {
    let file = File::open(path).map_err(|e| unreadable(path, e))?;
    match truc_edxml::parse_package(BufReader::new(file), &mut Discard) {
        Ok(p) => {
            let e = &p.envelope;
            let bytes: u64 = e.attachments.iter().map(|a| a.size).sum();
            println!(
                "{}: valid document package {} from {} to {} recipients, {} attachments ({bytes} bytes)",
                path.display(),
                e.document_id,
                e.from.as_ref().map_or("", |f| f.organ_id.as_str()),
                e.to.len(),
                e.attachments.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if e.codes() == ["R.MessageType"] => {
            let bytes = read_small(path)?;
            match truc_edxml::parse_status(&bytes) {
                Ok(s) => {
                    println!(
                        "{}: valid status package: {}",
                        path.display(),
                        status_line(&s)
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(EdxmlError::Io(e)) => Err(unreadable(path, e)),
                Err(e) => Ok(invalid(path, &e)),
            }
        }
        Err(EdxmlError::Io(e)) => Err(unreadable(path, e)),
        Err(e) => Ok(invalid(path, &e)),
    }
}

fn read_small(path: &Path) -> Result<Vec<u8>, CliError> {
    let file = File::open(path).map_err(|e| unreadable(path, e))?;
    let mut bytes = Vec::new();
    file.take(MAX_STATUS_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| unreadable(path, e))?;
    if bytes.len() as u64 > MAX_STATUS_BYTES {
        return Err(CliError::Usage(format!(
            "{}: a status package of more than {MAX_STATUS_BYTES} bytes",
            path.display()
        )));
    }
    Ok(bytes)
}

fn status_line(s: &StatusPackage) -> String {
    let u = &s.update;
    let ev = u.event.clone().unwrap_or_default();
    let meaning = StatusCode::parse(&ev.code).map_or("", |c| c.meaning());
    format!(
        "{} {meaning} for {} (sent by {}) at {}, {}{}",
        ev.code,
        u.document_id,
        u.sender,
        u.recipient,
        truc_edxml::format_timestamp(ev.unix_ms),
        if ev.description.is_empty() {
            String::new()
        } else {
            format!(": {}", ev.description)
        }
    )
}

fn status_read(path: &Path) -> Result<ExitCode, CliError> {
    let bytes = read_small(path)?;
    match truc_edxml::parse_status(&bytes) {
        Ok(s) => {
            println!("{}", status_line(&s));
            if let Some(staff) = s.update.event.as_ref().and_then(|e| e.staff.as_ref()) {
                println!("staff: {} ({})", staff.staff, staff.department);
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(EdxmlError::Io(e)) => Err(unreadable(path, e)),
        Err(e) => Ok(invalid(path, &e)),
    }
}

fn status_write(a: StatusWriteArgs) -> Result<ExitCode, CliError> {
    let staff = (a.staff.is_some() || a.department.is_some()).then(|| StaffInfo {
        staff: a.staff.clone().unwrap_or_default(),
        department: a.department.clone().unwrap_or_default(),
        ..StaffInfo::default()
    });
    let update = StatusUpdate {
        transaction_id: String::new(),
        sender: a.from.clone(),
        document_id: a.document_id.clone(),
        recipient: a.agency.clone(),
        event: Some(StatusEvent {
            code: a.status.clone(),
            description: a.description.clone(),
            unix_ms: now_ms() / 1000 * 1000,
            by: a.agency.clone(),
            staff,
        }),
        change: 0,
    };
    if let Err(e) = truc_doc::check_status_update(&update) {
        let lines: Vec<String> = e.violations().iter().map(|v| v.to_string()).collect();
        return Err(CliError::Usage(lines.join("\n")));
    }
    let package = StatusPackage {
        update,
        from: Organ {
            organ_id: a.agency.clone(),
            organ_name: a.organ_name.clone(),
            ..Organ::default()
        },
        extra: Preserved::default(),
    };
    let out = create_new(&a.out)?;
    let written = truc_edxml::write_status(&out, &package).and_then(|()| Ok(out.sync_all()?));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&a.out);
        return Err(failed(format!("{}: {e}", a.out.display())));
    }
    println!("{}", a.out.display());
    Ok(ExitCode::SUCCESS)
}

fn create_new(path: &Path) -> Result<File, CliError> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| CliError::Usage(format!("{}: cannot create: {e}", path.display())))
}

/// Decodes attachments into files of a temporary directory.
struct Spool {
    dir: tempfile::TempDir,
    files: Vec<Option<BufWriter<File>>>,
}

impl Spool {
    fn path(&self, index: usize) -> PathBuf {
        self.dir.path().join(format!("{index}.bin"))
    }
}

impl AttachmentSink for Spool {
    fn begin(&mut self, index: usize) -> io::Result<()> {
        let file = File::create(self.path(index))?;
        if self.files.len() <= index {
            self.files.resize_with(index + 1, || None);
        }
        self.files[index] = Some(BufWriter::new(file));
        Ok(())
    }
    fn write(&mut self, index: usize, data: &[u8]) -> io::Result<()> {
        match self.files.get_mut(index).and_then(Option::as_mut) {
            Some(f) => f.write_all(data),
            None => Err(io::Error::other("attachment written before it began")),
        }
    }
    fn end(&mut self, meta: &AttachmentMeta) -> io::Result<()> {
        match self.files.get_mut(meta.index).and_then(Option::take) {
            Some(mut f) => f.flush(),
            None => Ok(()),
        }
    }
}

/// `truc send --edxml FILE`: the package's document, sent as `agency`.
pub(super) async fn send(config: &Path, agency: &str, path: &Path) -> Result<ExitCode, CliError> {
    let file = File::open(path).map_err(|e| unreadable(path, e))?;
    let mut spool = Spool {
        dir: tempfile::tempdir().map_err(failed)?,
        files: Vec::new(),
    };
    let package = match truc_edxml::parse_package(BufReader::new(file), &mut spool) {
        Ok(p) => p,
        Err(EdxmlError::Io(e)) => return Err(unreadable(path, e)),
        Err(e) => {
            invalid(path, &e);
            return Err(CliError::Failed(format!(
                "{}: not sent ({})",
                path.display(),
                e.codes().join(", ")
            )));
        }
    };
    let sender = package
        .envelope
        .from
        .as_ref()
        .map_or("", |f| f.organ_id.as_str());
    if sender != agency {
        return Err(CliError::Usage(format!(
            "{}: the package is from {sender}, not from --as {agency}",
            path.display()
        )));
    }
    let mut uploads = Vec::with_capacity(package.envelope.attachments.len());
    for (i, a) in package.envelope.attachments.iter().enumerate() {
        let f = tokio::fs::File::open(spool.path(i)).await.map_err(failed)?;
        uploads.push(Upload::reader(a.clone(), f));
    }
    let recipients = package.envelope.to.len();
    let mut envelope = package.envelope;
    // The signature and unknown elements travel with the document.
    envelope.preserved = package.extra.to_bytes().into();
    let response = doc::client(config)?
        .send_document(envelope, uploads)
        .await
        .map_err(doc::rpc_failed)?;
    let duplicate = if response.duplicate {
        " (duplicate: already sent, nothing new stored)"
    } else {
        ""
    };
    println!(
        "sent {} from {} to {recipients} recipients{duplicate}",
        response.document_id, response.sender
    );
    drop(spool);
    Ok(ExitCode::SUCCESS)
}

/// Reads attachment `i` from `files[i]`.
struct Files(Vec<PathBuf>);

impl AttachmentSource for Files {
    fn open(&mut self, index: usize, _: &Attachment) -> io::Result<Box<dyn Read + '_>> {
        let path = self
            .0
            .get(index)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such attachment"))?;
        Ok(Box::new(BufReader::new(File::open(path)?)))
    }
}

/// `truc fetch --edxml OUT`: the document written as an edXML package.
pub(super) async fn fetch(
    config: &Path,
    recipient: &str,
    sender: &str,
    document_id: &str,
    out: &Path,
) -> Result<ExitCode, CliError> {
    if std::fs::symlink_metadata(out).is_ok() {
        return Err(CliError::Usage(format!(
            "{}: already exists",
            out.display()
        )));
    }
    let incoming = doc::client(config)?
        .fetch(recipient, sender, document_id)
        .await
        .map_err(doc::rpc_failed)?;
    let envelope = incoming.entry().envelope.clone().unwrap_or_default();
    let dir = tempfile::tempdir().map_err(failed)?;
    // Saved under plain numbered names: the checks (size, SHA-256) are the
    // client library's, the names the package's.
    let files: Vec<truc_client::SavedFile> = envelope
        .attachments
        .iter()
        .enumerate()
        .map(|(i, a)| truc_client::SavedFile {
            path: dir.path().join(format!("{i}.bin")),
            size: a.size,
            sha256: a.sha256.clone(),
        })
        .collect();
    let files = incoming.save(files).await.map_err(doc::rpc_failed)?;
    let target = create_new(out)?;
    let mut source = Files(files.into_iter().map(|f| f.path).collect());
    // The sender's signature and unknown elements, checked by both nodes.
    let written = Preserved::from_envelope(&envelope)
        .and_then(|extra| truc_edxml::write_package(&target, &envelope, &extra, &mut source))
        .and_then(|()| Ok(target.sync_all()?));
    if let Err(e) = written {
        let _ = std::fs::remove_file(out);
        return Err(failed(format!("{}: {e}", out.display())));
    }
    println!("{}", out.display());
    Ok(ExitCode::SUCCESS)
}
