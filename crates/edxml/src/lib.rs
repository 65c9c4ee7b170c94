//! edXML packages (QCVN 102:2016/BTTTT): document packages and status
//! packages, parsed and written as streams and mapped to truc's
//! [`Envelope`] and [`StatusUpdate`].
//!
//! # API
//!
//! - [`parse_package`]`(reader, sink) -> Result<`[`Package`]`, `[`Error`]`>`:
//!   reads a document package from any `BufRead`. Each attachment's decoded
//!   bytes go to the caller's [`AttachmentSink`] as they are decoded (never
//!   held whole), its metadata (name, size, SHA-256, content id) once its
//!   `Attachment` element ends. The returned [`Package`] holds the envelope
//!   (attachments with size and digest filled in), the [`Preserved`] sidecar
//!   and the [`AttachmentMeta`] of each attachment. The envelope is checked
//!   with [`truc_doc::validate`]: any violation refuses the package as
//!   [`Error::Invalid`] with the same `N.`/`R.` codes.
//! - [`write_package`]`(out, envelope, extra, source)`: writes a document
//!   package; attachment `i`'s bytes are read from [`AttachmentSource::open`]
//!   and streamed out as base64.
//! - [`parse_status`]`(bytes) -> Result<`[`StatusPackage`]`, _>` and
//!   [`write_status`]`(out, status)`: status packages (`StatusCode` 01…16),
//!   mapped to a [`StatusUpdate`] checked with
//!   [`truc_doc::check_status_update`].
//! - [`Memory`] is a sink and a source in memory, [`Discard`] a sink that
//!   only counts and hashes.
//!
//! # What survives a round trip
//!
//! truc's [`Envelope`] has no room for edXML-only content, so the parser
//! returns it in a sidecar the caller keeps next to the envelope,
//! [`Preserved`]: the `DigitalSignature` element byte for byte, the trace
//! hops (`TraceHeaderList`), the attachments' content ids, and every element
//! this crate does not know (in `MessageHeader`, `Bussiness`, `OtherInfo`, …)
//! as a raw XML fragment with the path of its parent. [`write_package`] puts
//! them back at the end of the same parent, so parse → write → parse gives
//! the same envelope and the same sidecar. Whitespace between known elements
//! and attribute order of known elements are not kept (the writer has its
//! own layout).
//!
//! The sidecar travels inside the envelope ([`Envelope::preserved`], as the
//! JSON of [`Preserved`], see [`Preserved::to_bytes`]), so it is stored,
//! relayed and digested with the document. Bytes from another participant
//! are checked with [`check_preserved`]: writing them into a package must
//! give back the same envelope and the same sidecar.
//!
//! # Errors
//!
//! [`Error::codes`] gives the codes to report: the violations of
//! [`truc_doc::validate`] (`N.Subject`, `R.PromulgationInfo.PromulgationDate`,
//! …) plus the codes of this crate: `R.Xml` (not well-formed, truncated, or a
//! text over the size limit), `R.Namespace` (root not `edXML` in
//! `http://www.mic.gov.vn/TBT/QCVN_102_2016`), `N.MessageHeader`,
//! `R.Attachment.Content` (bad base64), `R.DocumentType.Type`,
//! `R.OtherInfo.Priority` and the other numbers (`R.{Element}` when not a
//! number), `R.TraceHeader.Timestamp`, `R.Status.Timestamp`
//! (`yyyy/MM/dd HH:mm:ss`). A sink or reader failure is [`Error::Io`].
//!
//! Times: edXML timestamps carry no zone; they are read and written in
//! Vietnam time (UTC+07:00, no daylight saving).

mod parse;
mod preserved;
mod time;
mod write;

// Dev-dependencies only the integration tests (`tests/`) use; the unit-test build links them too.
#[cfg(test)]
use {proptest as _, ring as _, truc_doc as _};

use std::io::{self, Read};

pub use parse::{Options, is_status_package, parse_package, parse_package_with, parse_status};
pub use preserved::check_preserved;
pub use time::{format_timestamp, parse_timestamp};
use truc_doc::Violation;
use truc_proto::v1::{Attachment, Envelope, Organ, StatusUpdate};
pub use write::{write_package, write_status};

/// The edXML namespace.
pub const NAMESPACE: &str = "http://www.mic.gov.vn/TBT/QCVN_102_2016";
/// The xlink namespace of manifest references.
pub const XLINK: &str = "http://www.w3.org/1999/xlink";

/// A parsed document package.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Package {
    /// The document, attachments with their decoded size and SHA-256.
    pub envelope: Envelope,
    /// What the envelope cannot carry; keep it to write the package again.
    pub extra: Preserved,
    /// One per attachment, in package order (= `envelope.attachments`).
    pub attachments: Vec<AttachmentMeta>,
}

/// One attachment as the package declared it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttachmentMeta {
    /// Its index in `envelope.attachments`.
    pub index: usize,
    pub content_id: String,
    pub name: String,
    pub content_type: String,
    pub description: String,
    /// Decoded bytes.
    pub size: u64,
    /// SHA-256 of the decoded bytes.
    pub sha256: [u8; 32],
}

/// The edXML content a truc [`Envelope`] cannot carry, kept beside it
/// (serde, so that a caller can store it with the document, e.g. as JSON).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Preserved {
    /// `edXML:DigitalSignature` exactly as it came (the element with its
    /// tags), or `None` for none.
    pub signature: Option<String>,
    /// The hops of `TraceHeaderList`, in order.
    pub trace: Vec<TraceHop>,
    /// The raw attributes of the `TraceHeaderList` start tag (e.g.
    /// `id="…" version="1.0"`); `None` writes the defaults.
    pub trace_attributes: Option<String>,
    /// Content id of attachment `i` (written as `cid:` references); missing
    /// ones are generated.
    pub content_ids: Vec<String>,
    /// Elements this crate does not know, raw, each with its parent's path.
    pub unknown: Vec<Fragment>,
}

/// One `TraceHeader`: an organ that handled the package and when.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TraceHop {
    pub organ_id: String,
    /// `yyyy/MM/dd HH:mm:ss`, as written.
    pub timestamp: String,
}

/// An unknown element kept as raw XML.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Fragment {
    /// Local names from the root, `/`-separated, with `[i]` after repeated
    /// elements: `edXML/edXMLEnvelope/edXMLHeader/MessageHeader/To[1]`.
    pub parent: String,
    /// The element, tags included, as it came.
    pub xml: String,
}

/// A parsed status package.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StatusPackage {
    /// The status: `sender`/`document_id` from `ResponseFor`, `recipient` and
    /// `event.by` from `From`, the event from `StatusCode`, `Description`,
    /// `Timestamp` and `StaffInfo`. `transaction_id` is empty.
    pub update: StatusUpdate,
    /// The full `From` organ (the recipient setting the status).
    pub from: Organ,
    pub extra: Preserved,
}

/// Why a package was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Well-formed but breaking the rules; the codes are `N.`/`R.` codes.
    #[error("invalid edXML package: {}", list(.0))]
    Invalid(Vec<Violation>),
    /// Not well-formed XML (or truncated), at byte `position`.
    #[error("malformed edXML at byte {position}: {message}")]
    Xml { position: u64, message: String },
    /// The reader, the sink or the source failed.
    #[error("edXML I/O: {0}")]
    Io(#[from] io::Error),
}

fn list(v: &[Violation]) -> String {
    v.iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    /// The codes to report (`R.Xml` for malformed XML, none for I/O).
    pub fn codes(&self) -> Vec<&'static str> {
        match self {
            Error::Invalid(v) => v.iter().map(|v| v.code).collect(),
            Error::Xml { .. } => vec!["R.Xml"],
            Error::Io(_) => Vec::new(),
        }
    }

    /// The violations, if the package was refused for its content.
    pub fn violations(&self) -> &[Violation] {
        match self {
            Error::Invalid(v) => v,
            _ => &[],
        }
    }
}

/// Where [`parse_package`] puts attachment bytes.
pub trait AttachmentSink {
    /// Attachment `index` starts (indexes count from 0, in package order).
    fn begin(&mut self, index: usize) -> io::Result<()>;
    /// The next decoded bytes of attachment `index`.
    fn write(&mut self, index: usize, data: &[u8]) -> io::Result<()>;
    /// Attachment `meta.index` is complete (its metadata may follow its
    /// content in the package, so it comes last).
    fn end(&mut self, meta: &AttachmentMeta) -> io::Result<()>;
}

/// Where [`write_package`] reads attachment bytes.
pub trait AttachmentSource {
    /// The content of `envelope.attachments[index]`, read to its end.
    fn open(&mut self, index: usize, attachment: &Attachment) -> io::Result<Box<dyn Read + '_>>;
}

/// Attachments in memory: a sink collecting them, a source serving them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Memory(pub Vec<Vec<u8>>);

impl AttachmentSink for Memory {
    fn begin(&mut self, index: usize) -> io::Result<()> {
        if self.0.len() <= index {
            self.0.resize(index + 1, Vec::new());
        }
        Ok(())
    }
    fn write(&mut self, index: usize, data: &[u8]) -> io::Result<()> {
        match self.0.get_mut(index) {
            Some(v) => {
                v.extend_from_slice(data);
                Ok(())
            }
            None => Err(io::Error::other("write before begin")),
        }
    }
    fn end(&mut self, _meta: &AttachmentMeta) -> io::Result<()> {
        Ok(())
    }
}

impl AttachmentSource for Memory {
    fn open(&mut self, index: usize, _: &Attachment) -> io::Result<Box<dyn Read + '_>> {
        match self.0.get(index) {
            Some(v) => Ok(Box::new(v.as_slice())),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no attachment {index}"),
            )),
        }
    }
}

/// A sink that drops the bytes (the metadata still has size and digest).
#[derive(Clone, Copy, Debug, Default)]
pub struct Discard;

impl AttachmentSink for Discard {
    fn begin(&mut self, _: usize) -> io::Result<()> {
        Ok(())
    }
    fn write(&mut self, _: usize, _: &[u8]) -> io::Result<()> {
        Ok(())
    }
    fn end(&mut self, _: &AttachmentMeta) -> io::Result<()> {
        Ok(())
    }
}
