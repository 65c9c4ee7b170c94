//! Streaming parser: quick-xml reads the tags; text (and base64 attachment
//! content in particular) is read straight from the `BufRead` between tags,
//! so no text is held beyond [`Options::max_text_bytes`] and attachments go
//! to the sink in bounded pieces.

use std::io::BufRead;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};
use ring::digest;
use truc_doc::{Limits, Violation};
use truc_proto::v1::{
    Attachment, DocumentCode, DocumentType, Envelope, Organ, OtherInfo, PromulgationInfo,
    ResponseFor, SignerInfo, StaffInfo, StatusEvent, StatusUpdate,
};

use crate::{
    AttachmentMeta, AttachmentSink, Discard, Error, Fragment, NAMESPACE, Package, Preserved,
    StatusPackage, TraceHop,
};

/// Parser limits.
#[derive(Clone, Debug)]
pub struct Options {
    /// Attachment count and sizes, enforced while decoding (a package over
    /// them is refused before the sink gets more than the limit).
    pub limits: Limits,
    /// Longest text of one element, base64 content excepted (default 1 MiB).
    pub max_text_bytes: usize,
    /// Largest kept unknown element or signature (default 4 MiB).
    pub max_fragment_bytes: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            limits: Limits::default(),
            max_text_bytes: 1 << 20,
            max_fragment_bytes: 4 << 20,
        }
    }
}

/// Reads a document package; attachment bytes go to `sink` as they are
/// decoded. Default [`Options`].
pub fn parse_package<R: BufRead>(
    reader: R,
    sink: &mut dyn AttachmentSink,
) -> Result<Package, Error> {
    parse_package_with(reader, sink, &Options::default())
}

/// [`parse_package`] with explicit limits.
pub fn parse_package_with<R: BufRead>(
    reader: R,
    sink: &mut dyn AttachmentSink,
    opts: &Options,
) -> Result<Package, Error> {
    let doc = Parser::new(reader, opts, sink).run()?;
    doc.into_package(opts)
}

/// Reads a status package.
pub fn parse_status(bytes: &[u8]) -> Result<StatusPackage, Error> {
    let opts = Options::default();
    let doc = Parser::new(bytes, &opts, &mut Discard).run()?;
    doc.into_status()
}

/// Whether a parsed package is a status package (its `MessageHeader` has a
/// `StatusCode`), for callers that take either kind.
pub fn is_status_package(bytes: &[u8]) -> Result<bool, Error> {
    let opts = Options::default();
    let doc = Parser::new(bytes, &opts, &mut Discard).run()?;
    Ok(doc.status_code.is_some())
}

/// What one parse collected.
#[derive(Default)]
struct Doc {
    env: Envelope,
    extra: Preserved,
    metas: Vec<AttachmentMeta>,
    refs: Vec<Reference>,
    violations: Vec<Violation>,
    saw_header: bool,
    status_code: Option<String>,
    status_description: String,
    status_timestamp: Option<String>,
    status_staff: Option<StaffInfo>,
}

#[derive(Default)]
struct Reference {
    content_id: String,
    name: String,
    content_type: String,
    description: String,
}

struct Frame {
    local: String,
    /// The local name, with `[i]` for the i-th (i > 0) same-named sibling.
    label: String,
    /// Namespace declarations on this element: (prefix, uri), "" = default.
    ns: Vec<(String, String)>,
    /// How many children of each name so far.
    seen: Vec<(String, usize)>,
}

struct Capture {
    depth: usize,
    buf: Vec<u8>,
    parent: String,
    signature: bool,
}

struct Current {
    hash: digest::Context,
    size: u64,
    /// Base64 content failed to decode: the rest is skipped.
    bad: bool,
}

struct Parser<'a, R> {
    xml: Reader<R>,
    /// Bytes read around quick-xml (text), for error positions.
    raw: u64,
    opts: &'a Options,
    sink: &'a mut dyn AttachmentSink,
    stack: Vec<Frame>,
    capture: Option<Capture>,
    text: Vec<u8>,
    doc: Doc,
    current: Option<Current>,
    total: u64,
    done: bool,
}

fn utf8(b: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(b).map_err(|_| "text is not UTF-8".to_string())
}

impl<'a, R: BufRead> Parser<'a, R> {
    fn new(reader: R, opts: &'a Options, sink: &'a mut dyn AttachmentSink) -> Parser<'a, R> {
        let mut xml = Reader::from_reader(reader);
        let cfg = xml.config_mut();
        cfg.check_end_names = true;
        cfg.trim_text(false);
        Parser {
            xml,
            raw: 0,
            opts,
            sink,
            stack: Vec::new(),
            capture: None,
            text: Vec::new(),
            doc: Doc::default(),
            current: None,
            total: 0,
            done: false,
        }
    }

    fn malformed(&self, message: impl Into<String>) -> Error {
        Error::Xml {
            position: self.xml.buffer_position() + self.raw,
            message: message.into(),
        }
    }

    fn run(mut self) -> Result<Doc, Error> {
        let mut buf = Vec::new();
        loop {
            if !self.stack.is_empty() {
                self.read_text()?;
            }
            buf.clear();
            let ev = match self.xml.read_event_into(&mut buf) {
                Ok(ev) => ev,
                Err(e) => return Err(self.malformed(e.to_string())),
            };
            match ev {
                Event::Start(e) => self.start(&e, false)?,
                Event::Empty(e) => self.start(&e, true)?,
                Event::End(e) => {
                    if let Some(c) = &mut self.capture {
                        c.buf.extend_from_slice(b"</");
                        c.buf.extend_from_slice(&e);
                        c.buf.extend_from_slice(b">");
                        c.depth -= 1;
                        if c.depth == 0 {
                            self.finish_capture()?;
                        }
                    } else {
                        self.end()?;
                    }
                }
                Event::Text(t) => {
                    if !t.iter().all(u8::is_ascii_whitespace) {
                        return Err(self.malformed("text outside the root element"));
                    }
                }
                Event::CData(t) => match &mut self.capture {
                    Some(c) => {
                        c.buf.extend_from_slice(b"<![CDATA[");
                        c.buf.extend_from_slice(&t);
                        c.buf.extend_from_slice(b"]]>");
                    }
                    None if !self.stack.is_empty() => {
                        self.text.extend_from_slice(&escape_bytes(&t));
                        self.check_text_len()?;
                    }
                    None => return Err(self.malformed("CDATA outside the root element")),
                },
                Event::Comment(t) => {
                    if let Some(c) = &mut self.capture {
                        c.buf.extend_from_slice(b"<!--");
                        c.buf.extend_from_slice(&t);
                        c.buf.extend_from_slice(b"-->");
                    }
                }
                Event::PI(t) => {
                    if let Some(c) = &mut self.capture {
                        c.buf.extend_from_slice(b"<?");
                        c.buf.extend_from_slice(&t);
                        c.buf.extend_from_slice(b"?>");
                    }
                }
                Event::Decl(d) => {
                    if let Some(Ok(enc)) = d.encoding() {
                        if !enc.eq_ignore_ascii_case(b"utf-8") {
                            return Err(self.malformed(format!(
                                "only UTF-8 packages are read (declared {})",
                                String::from_utf8_lossy(&enc)
                            )));
                        }
                    }
                }
                Event::DocType(_) => {}
                Event::GeneralRef(_) => {
                    return Err(self.malformed("entity reference outside the root element"));
                }
                Event::Eof => {
                    if let Some(f) = self.stack.last() {
                        return Err(
                            self.malformed(format!("truncated: <{}> is not closed", f.local))
                        );
                    }
                    if !self.done {
                        return Err(self.malformed("no root element"));
                    }
                    break;
                }
            }
        }
        Ok(self.doc)
    }

    fn check_text_len(&self) -> Result<(), Error> {
        if self.text.len() > self.opts.max_text_bytes {
            return Err(self.malformed(format!(
                "a text longer than {} bytes",
                self.opts.max_text_bytes
            )));
        }
        Ok(())
    }

    /// The text up to the next `<`, read around quick-xml.
    fn read_text(&mut self) -> Result<(), Error> {
        loop {
            let avail = self.xml.get_mut().fill_buf()?;
            if avail.is_empty() {
                return Ok(());
            }
            let avail = &avail[..avail.len().min(64 * 1024)];
            let (n, stop) = match avail.iter().position(|&c| c == b'<') {
                Some(i) => (i, true),
                None => (avail.len(), false),
            };
            match &mut self.capture {
                Some(c) => {
                    c.buf.extend_from_slice(&avail[..n]);
                    if c.buf.len() > self.opts.max_fragment_bytes {
                        let max = self.opts.max_fragment_bytes;
                        return Err(
                            self.malformed(format!("an unknown element longer than {max} bytes"))
                        );
                    }
                }
                None => self.text.extend_from_slice(&avail[..n]),
            }
            self.xml.get_mut().consume(n);
            self.raw += n as u64;
            if self.capture.is_none() {
                self.check_text_len()?;
            }
            if stop {
                return Ok(());
            }
        }
    }

    fn path(&self) -> String {
        self.stack
            .iter()
            .map(|f| f.label.as_str())
            .collect::<Vec<_>>()
            .join("/")
    }

    fn resolve(&self, prefix: &str, own: &[(String, String)]) -> Option<String> {
        own.iter()
            .chain(self.stack.iter().rev().flat_map(|f| f.ns.iter()))
            .find(|(p, _)| p == prefix)
            .map(|(_, u)| u.clone())
    }

    fn start(&mut self, e: &BytesStart<'_>, empty: bool) -> Result<(), Error> {
        if let Some(c) = &mut self.capture {
            c.buf.push(b'<');
            c.buf.extend_from_slice(e);
            c.buf.extend_from_slice(if empty { b"/>" } else { b">" });
            if !empty {
                c.depth += 1;
            }
            return Ok(());
        }
        if self.done {
            return Err(self.malformed("a second root element"));
        }
        let qname = utf8(e.name().as_ref())
            .map_err(|m| self.malformed(m))?
            .to_string();
        let (prefix, local) = match qname.split_once(':') {
            Some((p, l)) => (p.to_string(), l.to_string()),
            None => (String::new(), qname.clone()),
        };
        let mut ns = Vec::new();
        let mut attrs = Vec::new();
        for a in e.attributes() {
            let a = a.map_err(|err| self.malformed(err.to_string()))?;
            let key = utf8(a.key.as_ref())
                .map_err(|m| self.malformed(m))?
                .to_string();
            let value = a
                .unescape_value()
                .map_err(|err| self.malformed(err.to_string()))?
                .into_owned();
            if key == "xmlns" {
                ns.push((String::new(), value));
            } else if let Some(p) = key.strip_prefix("xmlns:") {
                ns.push((p.to_string(), value));
            } else {
                attrs.push((key, value));
            }
        }
        let parent = self.stack.last().map(|f| f.local.clone());
        let known = match &parent {
            None => {
                let uri = self.resolve(&prefix, &ns);
                if local != "edXML" || uri.as_deref() != Some(NAMESPACE) {
                    return Err(Error::Invalid(vec![Violation::new(
                        "R.Namespace",
                        "edXML",
                        format!(
                            "the root element is edXML in namespace {NAMESPACE} (has {qname} in {})",
                            uri.as_deref().unwrap_or("no namespace")
                        ),
                    )]));
                }
                true
            }
            Some(p) => known(p, &local),
        };
        if !known || (parent.as_deref() == Some("edXMLHeader") && local == "DigitalSignature") {
            let mut buf = Vec::new();
            buf.push(b'<');
            buf.extend_from_slice(e);
            buf.extend_from_slice(if empty { b"/>" } else { b">" });
            self.capture = Some(Capture {
                depth: usize::from(!empty),
                buf,
                parent: self.path(),
                signature: known,
            });
            if empty {
                self.finish_capture()?;
            }
            return Ok(());
        }
        if parent.is_some() {
            let uri = self.resolve(&prefix, &ns);
            if uri.as_deref() != Some(NAMESPACE) {
                return Err(Error::Invalid(vec![Violation::new(
                    "R.Namespace",
                    self.path() + "/" + &local,
                    format!(
                        "{qname} must be in namespace {NAMESPACE} (is in {})",
                        uri.as_deref().unwrap_or("no namespace")
                    ),
                )]));
            }
        }
        let index = match self.stack.last_mut() {
            Some(f) => match f.seen.iter_mut().find(|(n, _)| *n == local) {
                Some((_, k)) => {
                    *k += 1;
                    *k - 1
                }
                None => {
                    f.seen.push((local.clone(), 1));
                    0
                }
            },
            None => 0,
        };
        let label = if index == 0 {
            local.clone()
        } else {
            format!("{local}[{index}]")
        };
        self.open(parent.as_deref().unwrap_or(""), &local, e, &attrs)?;
        self.stack.push(Frame {
            local,
            label,
            ns,
            seen: Vec::new(),
        });
        self.text.clear();
        let in_attachment = parent.as_deref() == Some("Attachment");
        if in_attachment
            && self
                .stack
                .last()
                .is_some_and(|f| f.local == "ContentTransferEncoded")
            && !empty
        {
            self.decode_base64()?;
        }
        if empty {
            self.end()?;
        }
        Ok(())
    }

    /// What starting a known element does.
    fn open(
        &mut self,
        parent: &str,
        local: &str,
        e: &BytesStart<'_>,
        attrs: &[(String, String)],
    ) -> Result<(), Error> {
        let d = &mut self.doc;
        match (parent, local) {
            ("MessageHeader", "To") => d.env.to.push(Organ::default()),
            ("MessageHeader", "ResponseFor") => d.env.response_for.push(ResponseFor::default()),
            ("TraceHeaderList", "TraceHeader") => d.extra.trace.push(TraceHop::default()),
            ("edXMLHeader", "MessageHeader") => d.saw_header = true,
            ("edXMLHeader", "TraceHeaderList") => {
                let raw = String::from_utf8_lossy(e.attributes_raw())
                    .trim()
                    .to_string();
                d.extra.trace_attributes = Some(raw);
            }
            ("edXMLManifest", "Reference") => {
                let href = attrs
                    .iter()
                    .find(|(k, _)| k == "href" || k.ends_with(":href"))
                    .map(|(_, v)| v.strip_prefix("cid:").unwrap_or(v).to_string())
                    .unwrap_or_default();
                d.refs.push(Reference {
                    content_id: href,
                    ..Reference::default()
                });
            }
            ("AttachmentEncoded", "Attachment") => {
                let index = d.metas.len();
                if index >= self.opts.limits.max_attachments {
                    return Err(Error::Invalid(vec![Violation::new(
                        "R.Attachments.Count",
                        "attachments",
                        format!("at most {} attachments", self.opts.limits.max_attachments),
                    )]));
                }
                d.metas.push(AttachmentMeta {
                    index,
                    ..AttachmentMeta::default()
                });
                self.current = Some(Current {
                    hash: digest::Context::new(&digest::SHA256),
                    size: 0,
                    bad: false,
                });
                self.sink.begin(index)?;
            }
            _ => {}
        }
        Ok(())
    }

    fn finish_capture(&mut self) -> Result<(), Error> {
        let Some(c) = self.capture.take() else {
            return Ok(());
        };
        let xml = String::from_utf8(c.buf).map_err(|_| self.malformed("text is not UTF-8"))?;
        if c.signature {
            self.doc.extra.signature = Some(xml);
        } else {
            self.doc.extra.unknown.push(Fragment {
                parent: c.parent,
                xml,
            });
        }
        Ok(())
    }

    fn end(&mut self) -> Result<(), Error> {
        let Some(frame) = self.stack.pop() else {
            return Err(self.malformed("an end tag without a start"));
        };
        let text = std::mem::take(&mut self.text);
        let parent = self
            .stack
            .last()
            .map(|f| f.local.clone())
            .unwrap_or_default();
        let grand = self
            .stack
            .len()
            .checked_sub(2)
            .and_then(|i| self.stack.get(i))
            .map(|f| f.local.clone())
            .unwrap_or_default();
        if self.stack.is_empty() {
            self.done = true;
            return Ok(());
        }
        if is_leaf(&parent, &frame.local) && frame.local != "ContentTransferEncoded" {
            let raw = utf8(&text).map_err(|m| self.malformed(m))?;
            let value = quick_xml::escape::unescape(raw)
                .map_err(|e| self.malformed(e.to_string()))?
                .trim()
                .to_string();
            self.set(&grand, &parent, &frame.local, value);
        }
        if parent == "AttachmentEncoded" && frame.local == "Attachment" {
            let cur = self.current.take();
            if let (Some(cur), Some(meta)) = (cur, self.doc.metas.last_mut()) {
                meta.size = cur.size;
                meta.sha256.copy_from_slice(cur.hash.finish().as_ref());
                self.sink.end(meta)?;
            }
        }
        Ok(())
    }

    fn number(&mut self, code: &'static str, field: &str, value: &str) -> u32 {
        if value.is_empty() {
            return 0;
        }
        match value.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                self.doc.violations.push(Violation::new(
                    code,
                    field,
                    format!("{field} must be a number (has {value:?})"),
                ));
                0
            }
        }
    }

    /// Stores the value of a leaf element.
    fn set(&mut self, grand: &str, parent: &str, local: &str, v: String) {
        match (parent, local) {
            ("From" | "To", _) => {
                let organ = if parent == "From" {
                    Some(self.doc.env.from.get_or_insert_with(Organ::default))
                } else {
                    self.doc.env.to.last_mut()
                };
                if let Some(o) = organ {
                    match local {
                        "OrganId" => o.organ_id = v,
                        "OrganizationInCharge" => o.organization_in_charge = v,
                        "OrganName" => o.organ_name = v,
                        "OrganAdd" => o.organ_add = v,
                        "Email" => o.email = v,
                        "Telephone" => o.telephone = v,
                        "Fax" => o.fax = v,
                        "Website" => o.website = v,
                        _ => {}
                    }
                }
            }
            ("Code", _) => {
                let c = self.doc.env.code.get_or_insert_with(DocumentCode::default);
                match local {
                    "CodeNumber" => c.code_number = v,
                    "CodeNotation" => c.code_notation = v,
                    _ => {}
                }
            }
            ("PromulgationInfo", _) => {
                let p = self
                    .doc
                    .env
                    .promulgation_info
                    .get_or_insert_with(PromulgationInfo::default);
                match local {
                    "Place" => p.place = v,
                    "PromulgationDate" => p.promulgation_date = v,
                    _ => {}
                }
            }
            ("DocumentType", _) => {
                let n = (local == "Type")
                    .then(|| self.number("R.DocumentType.Type", "document_type.type", &v));
                let t = self
                    .doc
                    .env
                    .document_type
                    .get_or_insert_with(DocumentType::default);
                match local {
                    "Type" => t.r#type = n.unwrap_or(0),
                    "TypeName" => t.type_name = v,
                    "TypeDetail" => t.type_detail = v,
                    _ => {}
                }
            }
            ("SignerInfo", _) => {
                let s = self
                    .doc
                    .env
                    .signer_info
                    .get_or_insert_with(SignerInfo::default);
                match local {
                    "Competence" => s.competence = v,
                    "Position" => s.position = v,
                    "FullName" => s.full_name = v,
                    _ => {}
                }
            }
            ("ToPlaces", "Place") => self.doc.env.to_places.push(v),
            ("Appendixes", "Appendix") => self
                .doc
                .env
                .other_info
                .get_or_insert_with(OtherInfo::default)
                .appendixes
                .push(v),
            ("OtherInfo", _) => {
                let n = match local {
                    "Priority" => self.number("R.OtherInfo.Priority", "other_info.priority", &v),
                    "PromulgationAmount" => self.number(
                        "R.OtherInfo.PromulgationAmount",
                        "other_info.promulgation_amount",
                        &v,
                    ),
                    "PageAmount" => {
                        self.number("R.OtherInfo.PageAmount", "other_info.page_amount", &v)
                    }
                    _ => 0,
                };
                let o = self
                    .doc
                    .env
                    .other_info
                    .get_or_insert_with(OtherInfo::default);
                match local {
                    "Priority" => o.priority = n,
                    "PromulgationAmount" => o.promulgation_amount = n,
                    "PageAmount" => o.page_amount = n,
                    "SphereOfPromulgation" => o.sphere_of_promulgation = v,
                    "TyperNotation" => o.typer_notation = v,
                    _ => {}
                }
            }
            ("ResponseFor", _) => {
                if let Some(r) = self.doc.env.response_for.last_mut() {
                    match local {
                        "OrganId" => r.organ_id = v,
                        "Code" => r.code = v,
                        "PromulgationDate" => r.promulgation_date = v,
                        "DocumentId" => r.document_id = v,
                        _ => {}
                    }
                }
            }
            ("TraceHeader", _) => {
                if local == "Timestamp" && crate::time::parse_timestamp(&v).is_none() {
                    let i = self.doc.extra.trace.len().saturating_sub(1);
                    self.doc.violations.push(Violation::new(
                        "R.TraceHeader.Timestamp",
                        format!("trace[{i}].timestamp"),
                        format!("a trace timestamp is yyyy/MM/dd HH:mm:ss (has {v:?})"),
                    ));
                }
                if let Some(t) = self.doc.extra.trace.last_mut() {
                    match local {
                        "OrganId" => t.organ_id = v,
                        "Timestamp" => t.timestamp = v,
                        _ => {}
                    }
                }
            }
            ("Bussiness", "BussinessDocType") => {
                let n = self.number("R.BusinessKind", "business_kind", &v);
                self.doc.env.business_kind = i32::try_from(n).unwrap_or(i32::MAX);
            }
            ("Bussiness", "BussinessDocReason") => self.doc.env.business_reason = v,
            ("StaffInfo", _) => {
                let slot = if grand == "Bussiness" {
                    &mut self.doc.env.staff_info
                } else {
                    &mut self.doc.status_staff
                };
                let s = slot.get_or_insert_with(StaffInfo::default);
                match local {
                    "Department" => s.department = v,
                    "Staff" => s.staff = v,
                    "Mobile" => s.mobile = v,
                    "Email" => s.email = v,
                    _ => {}
                }
            }
            ("MessageHeader", _) => match local {
                "Subject" => self.doc.env.subject = v,
                "Content" => self.doc.env.content = v,
                "DueDate" => self.doc.env.due_date = v,
                "SteeringType" => {
                    self.doc.env.steering_type = self.number("R.SteeringType", "steering_type", &v)
                }
                "DocumentId" => self.doc.env.document_id = v,
                "StatusCode" => self.doc.status_code = Some(v),
                "Description" => self.doc.status_description = v,
                "Timestamp" => self.doc.status_timestamp = Some(v),
                _ => {}
            },
            ("Reference", _) => {
                if let Some(r) = self.doc.refs.last_mut() {
                    match local {
                        "ContentId" => r.content_id = v,
                        "AttachmentName" => r.name = v,
                        "ContentType" => r.content_type = v,
                        "Description" => r.description = v,
                        _ => {}
                    }
                }
            }
            ("Attachment", _) => {
                if let Some(m) = self.doc.metas.last_mut() {
                    match local {
                        "ContentId" => m.content_id = v,
                        "AttachmentName" => m.name = v,
                        "ContentType" => m.content_type = v,
                        "Description" => m.description = v,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }

    /// Decodes an attachment's base64 text straight from the reader, up to
    /// the next `<`, into the sink.
    fn decode_base64(&mut self) -> Result<(), Error> {
        const PIECE: usize = 64 * 1024;
        let engine = GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            GeneralPurposeConfig::new()
                .with_decode_padding_mode(DecodePaddingMode::Indifferent)
                .with_decode_allow_trailing_bits(true),
        );
        let index = self.doc.metas.len().saturating_sub(1);
        let mut pending: Vec<u8> = Vec::with_capacity(2 * PIECE);
        let mut out: Vec<u8> = Vec::with_capacity(PIECE / 4 * 3 + 3);
        let mut padded = false;
        loop {
            let avail = self.xml.get_mut().fill_buf()?;
            if avail.is_empty() {
                break;
            }
            // At most PIECE bytes at a time, however much the reader offers.
            let avail = &avail[..avail.len().min(PIECE)];
            let (n, stop) = match avail.iter().position(|&c| c == b'<') {
                Some(i) => (i, true),
                None => (avail.len(), false),
            };
            let bad = self.current.as_ref().is_none_or(|c| c.bad);
            let mut invalid = false;
            if !bad {
                for &c in &avail[..n] {
                    match c {
                        b' ' | b'\t' | b'\r' | b'\n' => {}
                        b'=' => {
                            padded = true;
                            pending.push(c);
                        }
                        b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'+' | b'/' if !padded => {
                            pending.push(c)
                        }
                        _ => {
                            invalid = true;
                            break;
                        }
                    }
                }
            }
            self.xml.get_mut().consume(n);
            self.raw += n as u64;
            if invalid {
                self.bad_base64(index);
                pending.clear();
            }
            // Whole pieces (PIECE is a multiple of 4), then the rest at the end.
            while pending.len() >= PIECE || (stop && !pending.is_empty()) {
                let take = pending.len().min(PIECE);
                out.clear();
                match engine.decode_vec(&pending[..take], &mut out) {
                    Ok(()) => self.emit(index, &out)?,
                    Err(_) => self.bad_base64(index),
                }
                pending.drain(..take);
            }
            if stop {
                break;
            }
        }
        Ok(())
    }

    fn bad_base64(&mut self, index: usize) {
        if let Some(c) = &mut self.current {
            if !c.bad {
                c.bad = true;
                self.doc.violations.push(Violation::new(
                    "R.Attachment.Content",
                    format!("attachments[{index}]"),
                    "the attachment content is not valid base64",
                ));
            }
        }
    }

    fn emit(&mut self, index: usize, data: &[u8]) -> Result<(), Error> {
        let Some(c) = &mut self.current else {
            return Ok(());
        };
        if c.bad || data.is_empty() {
            return Ok(());
        }
        let n = data.len() as u64;
        c.size += n;
        self.total += n;
        let limits = &self.opts.limits;
        if c.size > limits.max_attachment_bytes {
            return Err(Error::Invalid(vec![Violation::new(
                "R.Attachment.Size",
                format!("attachments[{index}]"),
                format!(
                    "an attachment has at most {} bytes",
                    limits.max_attachment_bytes
                ),
            )]));
        }
        if self.total > limits.max_total_bytes {
            return Err(Error::Invalid(vec![Violation::new(
                "R.Attachments.TotalSize",
                "attachments",
                format!(
                    "attachments have at most {} bytes in all",
                    limits.max_total_bytes
                ),
            )]));
        }
        c.hash.update(data);
        self.sink.write(index, data)?;
        Ok(())
    }
}

/// CDATA content escaped, so that it joins the raw text.
fn escape_bytes(b: &[u8]) -> Vec<u8> {
    let s = String::from_utf8_lossy(b);
    quick_xml::escape::escape(s.as_ref())
        .into_owned()
        .into_bytes()
}

fn is_leaf(parent: &str, child: &str) -> bool {
    matches!(
        (parent, child),
        (
            "From" | "To",
            "OrganId"
                | "OrganizationInCharge"
                | "OrganName"
                | "OrganAdd"
                | "Email"
                | "Telephone"
                | "Fax"
                | "Website"
        ) | ("Code", "CodeNumber" | "CodeNotation")
            | ("PromulgationInfo", "Place" | "PromulgationDate")
            | ("DocumentType", "Type" | "TypeName" | "TypeDetail")
            | ("SignerInfo", "Competence" | "Position" | "FullName")
            | ("ToPlaces", "Place")
            | (
                "OtherInfo",
                "Priority"
                    | "SphereOfPromulgation"
                    | "TyperNotation"
                    | "PromulgationAmount"
                    | "PageAmount"
            )
            | ("Appendixes", "Appendix")
            | (
                "ResponseFor",
                "OrganId" | "Code" | "PromulgationDate" | "DocumentId"
            )
            | ("TraceHeader", "OrganId" | "Timestamp")
            | ("Bussiness", "BussinessDocType" | "BussinessDocReason")
            | ("StaffInfo", "Department" | "Staff" | "Mobile" | "Email")
            | (
                "MessageHeader",
                "Subject"
                    | "Content"
                    | "DueDate"
                    | "SteeringType"
                    | "DocumentId"
                    | "StatusCode"
                    | "Description"
                    | "Timestamp"
            )
            | (
                "Reference",
                "Description" | "AttachmentName" | "ContentType" | "ContentId"
            )
            | (
                "Attachment",
                "ContentType"
                    | "ContentId"
                    | "Description"
                    | "AttachmentName"
                    | "ContentTransferEncoded"
            )
    )
}

/// Whether `child` is an element this crate reads inside `parent`.
fn known(parent: &str, child: &str) -> bool {
    is_leaf(parent, child)
        || matches!(
            (parent, child),
            ("edXML", "edXMLEnvelope" | "AttachmentEncoded")
                | ("edXMLEnvelope", "edXMLHeader" | "edXMLBody")
                | (
                    "edXMLHeader",
                    "MessageHeader" | "TraceHeaderList" | "DigitalSignature"
                )
                | (
                    "MessageHeader",
                    "From"
                        | "To"
                        | "Code"
                        | "PromulgationInfo"
                        | "DocumentType"
                        | "SignerInfo"
                        | "ToPlaces"
                        | "OtherInfo"
                        | "ResponseFor"
                        | "StaffInfo"
                )
                | ("OtherInfo", "Appendixes")
                | ("TraceHeaderList", "TraceHeader" | "Bussiness")
                | ("Bussiness", "StaffInfo")
                | ("edXMLBody", "edXMLManifest")
                | ("edXMLManifest", "Reference")
                | ("AttachmentEncoded", "Attachment")
        )
}

impl Doc {
    fn into_package(mut self, opts: &Options) -> Result<Package, Error> {
        if self.status_code.is_some() {
            return Err(Error::Invalid(vec![Violation::new(
                "R.MessageType",
                "edXML",
                "a status package, not a document package",
            )]));
        }
        if !self.saw_header {
            self.violations.push(Violation::new(
                "N.MessageHeader",
                "edXML/edXMLEnvelope/edXMLHeader/MessageHeader",
                "the MessageHeader is required",
            ));
        }
        for r in &self.refs {
            if !r.content_id.is_empty() && !self.metas.iter().any(|m| m.content_id == r.content_id)
            {
                self.violations.push(Violation::new(
                    "N.Attachment",
                    "edXMLManifest",
                    format!(
                        "the manifest names cid:{} but no attachment carries it",
                        r.content_id
                    ),
                ));
            }
        }
        for m in &mut self.metas {
            if let Some(r) = self.refs.iter().find(|r| r.content_id == m.content_id) {
                if m.name.is_empty() {
                    m.name = r.name.clone();
                }
                if m.content_type.is_empty() {
                    m.content_type = r.content_type.clone();
                }
                if m.description.is_empty() {
                    m.description = r.description.clone();
                }
            }
            self.env.attachments.push(Attachment {
                name: m.name.clone(),
                content_type: m.content_type.clone(),
                size: m.size,
                sha256: bytes::Bytes::copy_from_slice(&m.sha256),
                description: m.description.clone(),
            });
        }
        self.extra.content_ids = self.metas.iter().map(|m| m.content_id.clone()).collect();
        let mut violations = self.violations;
        violations.extend(truc_doc::validate(&self.env, &opts.limits));
        if !violations.is_empty() {
            return Err(Error::Invalid(violations));
        }
        Ok(Package {
            envelope: self.env,
            extra: self.extra,
            attachments: self.metas,
        })
    }

    fn into_status(self) -> Result<StatusPackage, Error> {
        let mut violations = self.violations;
        if !self.saw_header {
            violations.push(Violation::new(
                "N.MessageHeader",
                "edXML/edXMLEnvelope/edXMLHeader/MessageHeader",
                "the MessageHeader is required",
            ));
        }
        let from = self.env.from.clone().unwrap_or_default();
        let rf = self.env.response_for.first().cloned().unwrap_or_default();
        if self.env.response_for.is_empty() {
            violations.push(Violation::new(
                "N.ResponseFor",
                "response_for",
                "a status package names the document it answers (ResponseFor)",
            ));
        }
        let unix_ms = match &self.status_timestamp {
            None => {
                violations.push(Violation::new(
                    "N.Status.Timestamp",
                    "event.unix_ms",
                    "the status Timestamp is required",
                ));
                0
            }
            Some(t) => crate::time::parse_timestamp(t).unwrap_or_else(|| {
                violations.push(Violation::new(
                    "R.Status.Timestamp",
                    "event.unix_ms",
                    format!("the status Timestamp is yyyy/MM/dd HH:mm:ss (has {t:?})"),
                ));
                0
            }),
        };
        let update = StatusUpdate {
            transaction_id: String::new(),
            sender: rf.organ_id.clone(),
            document_id: rf.document_id.clone(),
            recipient: from.organ_id.clone(),
            event: Some(StatusEvent {
                code: self.status_code.clone().unwrap_or_default(),
                description: self.status_description.clone(),
                unix_ms,
                by: from.organ_id.clone(),
                staff: self.status_staff.clone(),
            }),
            change: 0,
        };
        if let Err(e) = truc_doc::check_status_update(&update) {
            violations.extend(e.violations().iter().cloned());
        }
        if !violations.is_empty() {
            return Err(Error::Invalid(violations));
        }
        Ok(StatusPackage {
            update,
            from,
            extra: self.extra,
        })
    }
}
