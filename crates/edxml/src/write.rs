//! Writer: the envelope and the sidecar as edXML, attachments streamed out
//! as base64 from the caller's readers.

use std::io::{self, BufWriter, Read, Write};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::digest;
use truc_doc::DocumentId;
use truc_proto::v1::{Envelope, Organ, StaffInfo};

use crate::{AttachmentSource, Error, NAMESPACE, Preserved, StatusPackage, TraceHop, XLINK};

const ROOT: &str = "edXML";
const ENV: &str = "edXML/edXMLEnvelope";
const HEADER: &str = "edXML/edXMLEnvelope/edXMLHeader";
const MH: &str = "edXML/edXMLEnvelope/edXMLHeader/MessageHeader";
const TRACE: &str = "edXML/edXMLEnvelope/edXMLHeader/TraceHeaderList";

struct W<'a, O: Write> {
    out: BufWriter<O>,
    extra: &'a Preserved,
}

fn esc(s: &str) -> std::borrow::Cow<'_, str> {
    quick_xml::escape::escape(s)
}

/// `name` with `[i]` for i > 0, as the parser labels repeated elements.
fn label(name: &str, i: usize) -> String {
    if i == 0 {
        name.to_string()
    } else {
        format!("{name}[{i}]")
    }
}

impl<O: Write> W<'_, O> {
    fn raw(&mut self, s: &str) -> io::Result<()> {
        self.out.write_all(s.as_bytes())
    }

    /// `<edXML:{name}>{value}</edXML:{name}>` on its own line.
    fn leaf(&mut self, indent: usize, name: &str, value: &str) -> io::Result<()> {
        writeln!(
            self.out,
            "{:indent$}<edXML:{name}>{}</edXML:{name}>",
            "",
            esc(value)
        )
    }

    fn leaf_if(&mut self, indent: usize, name: &str, value: &str) -> io::Result<()> {
        if value.is_empty() {
            return Ok(());
        }
        self.leaf(indent, name, value)
    }

    fn open(&mut self, indent: usize, name: &str) -> io::Result<()> {
        writeln!(self.out, "{:indent$}<edXML:{name}>", "")
    }

    fn close(&mut self, indent: usize, name: &str, path: &str) -> io::Result<()> {
        self.fragments(indent + 2, path)?;
        writeln!(self.out, "{:indent$}</edXML:{name}>", "")
    }

    /// The kept unknown elements of `path`.
    fn fragments(&mut self, indent: usize, path: &str) -> io::Result<()> {
        let extra = self.extra;
        for f in extra.unknown.iter().filter(|f| f.parent == path) {
            writeln!(self.out, "{:indent$}{}", "", f.xml)?;
        }
        Ok(())
    }

    /// Whether kept unknown elements live under `path` (so the element must
    /// be written even if empty).
    fn has_fragments(&self, path: &str) -> bool {
        self.extra.unknown.iter().any(|f| f.parent == path)
    }

    fn organ(&mut self, indent: usize, name: &str, path: &str, o: &Organ) -> io::Result<()> {
        self.open(indent, name)?;
        let i = indent + 2;
        self.leaf(i, "OrganId", &o.organ_id)?;
        self.leaf_if(i, "OrganizationInCharge", &o.organization_in_charge)?;
        self.leaf_if(i, "OrganName", &o.organ_name)?;
        self.leaf_if(i, "OrganAdd", &o.organ_add)?;
        self.leaf_if(i, "Email", &o.email)?;
        self.leaf_if(i, "Telephone", &o.telephone)?;
        self.leaf_if(i, "Fax", &o.fax)?;
        self.leaf_if(i, "Website", &o.website)?;
        self.close(indent, name, path)
    }

    fn staff(&mut self, indent: usize, path: &str, s: &StaffInfo) -> io::Result<()> {
        self.open(indent, "StaffInfo")?;
        let i = indent + 2;
        self.leaf_if(i, "Department", &s.department)?;
        self.leaf_if(i, "Staff", &s.staff)?;
        self.leaf_if(i, "Mobile", &s.mobile)?;
        self.leaf_if(i, "Email", &s.email)?;
        self.close(indent, "StaffInfo", path)
    }

    fn start(&mut self) -> io::Result<()> {
        self.raw("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n")?;
        self.raw(&format!("<edXML xmlns=\"{NAMESPACE}\">\n"))?;
        self.raw(&format!(
            "  <edXML:edXMLEnvelope xmlns:edXML=\"{NAMESPACE}\" xmlns:xlink=\"{XLINK}\">\n"
        ))?;
        self.open(4, "edXMLHeader")?;
        self.open(6, "MessageHeader")
    }

    fn trace(&mut self, default: Option<TraceHop>, business: Option<&Envelope>) -> io::Result<()> {
        let extra = self.extra;
        match &extra.trace_attributes {
            Some(a) if !a.is_empty() => writeln!(self.out, "      <edXML:TraceHeaderList {a}>")?,
            _ => self.open(6, "TraceHeaderList")?,
        }
        let hops: Vec<TraceHop> = if extra.trace.is_empty() {
            default.into_iter().collect()
        } else {
            extra.trace.clone()
        };
        for (i, hop) in hops.iter().enumerate() {
            self.open(8, "TraceHeader")?;
            self.leaf(10, "OrganId", &hop.organ_id)?;
            self.leaf(10, "Timestamp", &hop.timestamp)?;
            self.close(
                8,
                "TraceHeader",
                &format!("{TRACE}/{}", label("TraceHeader", i)),
            )?;
        }
        if let Some(env) = business {
            let path = format!("{TRACE}/Bussiness");
            self.open(8, "Bussiness")?;
            self.leaf(10, "BussinessDocType", &env.business_kind.to_string())?;
            self.leaf_if(10, "BussinessDocReason", &env.business_reason)?;
            if let Some(s) = &env.staff_info {
                self.staff(10, &format!("{path}/StaffInfo"), s)?;
            }
            self.close(8, "Bussiness", &path)?;
        }
        self.close(6, "TraceHeaderList", TRACE)?;
        if let Some(sig) = &extra.signature {
            writeln!(self.out, "      {sig}")?;
        }
        self.close(4, "edXMLHeader", HEADER)
    }
}

/// Writes a document package: `envelope` and `extra` as the header,
/// attachment `i` read from `source` and streamed as base64. When the
/// envelope declares an attachment's size or SHA-256, a source that does not
/// match it fails the write ([`Error::Io`], `InvalidData`).
pub fn write_package<O: Write>(
    out: O,
    envelope: &Envelope,
    extra: &Preserved,
    source: &mut dyn AttachmentSource,
) -> Result<(), Error> {
    let mut w = W {
        out: BufWriter::with_capacity(64 * 1024, out),
        extra,
    };
    let e = envelope;
    w.start()?;
    let default_organ = Organ::default();
    w.organ(
        8,
        "From",
        &format!("{MH}/From"),
        e.from.as_ref().unwrap_or(&default_organ),
    )?;
    for (i, to) in e.to.iter().enumerate() {
        w.organ(8, "To", &format!("{MH}/{}", label("To", i)), to)?;
    }
    let code = e.code.clone().unwrap_or_default();
    w.open(8, "Code")?;
    w.leaf(10, "CodeNumber", &code.code_number)?;
    w.leaf(10, "CodeNotation", &code.code_notation)?;
    w.close(8, "Code", &format!("{MH}/Code"))?;
    let p = e.promulgation_info.clone().unwrap_or_default();
    w.open(8, "PromulgationInfo")?;
    w.leaf(10, "Place", &p.place)?;
    w.leaf(10, "PromulgationDate", &p.promulgation_date)?;
    w.close(8, "PromulgationInfo", &format!("{MH}/PromulgationInfo"))?;
    let path = format!("{MH}/DocumentType");
    if e.document_type.is_some() || w.has_fragments(&path) {
        let t = e.document_type.clone().unwrap_or_default();
        w.open(8, "DocumentType")?;
        w.leaf(10, "Type", &t.r#type.to_string())?;
        w.leaf_if(10, "TypeName", &t.type_name)?;
        w.leaf_if(10, "TypeDetail", &t.type_detail)?;
        w.close(8, "DocumentType", &path)?;
    }
    w.leaf(8, "Subject", &e.subject)?;
    w.leaf_if(8, "Content", &e.content)?;
    let path = format!("{MH}/SignerInfo");
    if e.signer_info.is_some() || w.has_fragments(&path) {
        let s = e.signer_info.clone().unwrap_or_default();
        w.open(8, "SignerInfo")?;
        w.leaf_if(10, "Competence", &s.competence)?;
        w.leaf_if(10, "Position", &s.position)?;
        w.leaf_if(10, "FullName", &s.full_name)?;
        w.close(8, "SignerInfo", &path)?;
    }
    w.leaf_if(8, "DueDate", &e.due_date)?;
    let path = format!("{MH}/ToPlaces");
    if !e.to_places.is_empty() || w.has_fragments(&path) {
        w.open(8, "ToPlaces")?;
        for place in &e.to_places {
            w.leaf(10, "Place", place)?;
        }
        w.close(8, "ToPlaces", &path)?;
    }
    let path = format!("{MH}/OtherInfo");
    if e.other_info.is_some() || w.has_fragments(&path) {
        let o = e.other_info.clone().unwrap_or_default();
        w.open(8, "OtherInfo")?;
        w.leaf(10, "Priority", &o.priority.to_string())?;
        w.leaf_if(10, "SphereOfPromulgation", &o.sphere_of_promulgation)?;
        w.leaf_if(10, "TyperNotation", &o.typer_notation)?;
        w.leaf(10, "PromulgationAmount", &o.promulgation_amount.to_string())?;
        w.leaf(10, "PageAmount", &o.page_amount.to_string())?;
        let apath = format!("{path}/Appendixes");
        if !o.appendixes.is_empty() || w.has_fragments(&apath) {
            w.open(10, "Appendixes")?;
            for a in &o.appendixes {
                w.leaf(12, "Appendix", a)?;
            }
            w.close(10, "Appendixes", &apath)?;
        }
        w.close(8, "OtherInfo", &path)?;
    }
    for (i, r) in e.response_for.iter().enumerate() {
        w.open(8, "ResponseFor")?;
        w.leaf(10, "OrganId", &r.organ_id)?;
        w.leaf_if(10, "Code", &r.code)?;
        w.leaf_if(10, "PromulgationDate", &r.promulgation_date)?;
        w.leaf_if(10, "DocumentId", &r.document_id)?;
        w.close(
            8,
            "ResponseFor",
            &format!("{MH}/{}", label("ResponseFor", i)),
        )?;
    }
    w.leaf(8, "SteeringType", &e.steering_type.to_string())?;
    w.leaf(8, "DocumentId", &e.document_id)?;
    w.close(6, "MessageHeader", MH)?;
    w.trace(None, Some(e))?;

    let ids: Vec<String> = (0..e.attachments.len())
        .map(|i| match extra.content_ids.get(i) {
            Some(id) if !id.is_empty() => id.clone(),
            _ => format!("attachment{}", i + 1),
        })
        .collect();
    w.open(4, "edXMLBody")?;
    w.raw("      <edXML:edXMLManifest version=\"1.0\">\n")?;
    let mpath = format!("{ENV}/edXMLBody/edXMLManifest");
    for (i, a) in e.attachments.iter().enumerate() {
        writeln!(
            w.out,
            "        <edXML:Reference xlink:href=\"cid:{}\">",
            esc(&ids[i])
        )?;
        w.leaf_if(10, "Description", &a.description)?;
        w.leaf(10, "AttachmentName", &a.name)?;
        w.leaf(10, "ContentType", &a.content_type)?;
        w.leaf(10, "ContentId", &ids[i])?;
        w.close(
            8,
            "Reference",
            &format!("{mpath}/{}", label("Reference", i)),
        )?;
    }
    w.close(6, "edXMLManifest", &mpath)?;
    w.close(4, "edXMLBody", &format!("{ENV}/edXMLBody"))?;
    w.fragments(4, ENV)?;
    w.raw("  </edXML:edXMLEnvelope>\n")?;
    if !e.attachments.is_empty() {
        w.raw("  <AttachmentEncoded>\n")?;
        for (i, a) in e.attachments.iter().enumerate() {
            w.raw("    <Attachment>\n")?;
            writeln!(
                w.out,
                "      <ContentType>{}</ContentType>",
                esc(&a.content_type)
            )?;
            writeln!(w.out, "      <ContentId>{}</ContentId>", esc(&ids[i]))?;
            writeln!(
                w.out,
                "      <Description>{}</Description>",
                esc(&a.description)
            )?;
            w.raw("      <ContentTransferEncoded>")?;
            let (size, sha) = {
                let reader = source.open(i, a)?;
                encode(reader, &mut w.out)?
            };
            if (a.size != 0 && a.size != size) || (!a.sha256.is_empty() && a.sha256[..] != sha[..])
            {
                return Err(Error::Io(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "attachment {i} ({}) has {size} bytes or a digest other than the envelope declares ({} bytes)",
                        a.name, a.size
                    ),
                )));
            }
            w.raw("</ContentTransferEncoded>\n")?;
            writeln!(
                w.out,
                "      <AttachmentName>{}</AttachmentName>",
                esc(&a.name)
            )?;
            let path = format!("{ROOT}/AttachmentEncoded/{}", label("Attachment", i));
            for f in extra.unknown.iter().filter(|f| f.parent == path) {
                writeln!(w.out, "      {}", f.xml)?;
            }
            w.raw("    </Attachment>\n")?;
        }
        let path = format!("{ROOT}/AttachmentEncoded");
        w.fragments(4, &path)?;
        w.raw("  </AttachmentEncoded>\n")?;
    }
    w.fragments(2, ROOT)?;
    w.raw("</edXML>\n")?;
    w.out.flush()?;
    Ok(())
}

/// Streams `reader` out as base64; returns its size and SHA-256.
fn encode(mut reader: impl Read, out: &mut impl Write) -> io::Result<(u64, [u8; 32])> {
    const BLOCK: usize = 3 * 16 * 1024;
    let mut buf = vec![0u8; BLOCK];
    let mut filled = 0;
    let mut text = String::with_capacity(BLOCK / 3 * 4 + 4);
    let mut hash = digest::Context::new(&digest::SHA256);
    let mut size = 0u64;
    loop {
        let n = match reader.read(&mut buf[filled..]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        filled += n;
        if n == 0 || filled == BLOCK {
            hash.update(&buf[..filled]);
            size += filled as u64;
            text.clear();
            STANDARD.encode_string(&buf[..filled], &mut text);
            out.write_all(text.as_bytes())?;
            if n == 0 {
                break;
            }
            filled = 0;
        }
    }
    let mut sha = [0u8; 32];
    sha.copy_from_slice(hash.finish().as_ref());
    Ok((size, sha))
}

/// Writes a status package: `ResponseFor` from the update's sender and
/// document id, `From` from `status.from` (its organ id set to the update's
/// recipient if empty), then `StaffInfo`, `StatusCode`, `Description` and
/// `Timestamp`; the trace is `extra.trace`, or one hop of the recipient at
/// the event's time.
pub fn write_status<O: Write>(out: O, status: &StatusPackage) -> Result<(), Error> {
    let mut w = W {
        out: BufWriter::new(out),
        extra: &status.extra,
    };
    let u = &status.update;
    let ev = u.event.clone().unwrap_or_default();
    let mut from = status.from.clone();
    if from.organ_id.is_empty() {
        from.organ_id = u.recipient.clone();
    }
    w.start()?;
    w.organ(8, "From", &format!("{MH}/From"), &from)?;
    w.open(8, "ResponseFor")?;
    w.leaf(10, "OrganId", &u.sender)?;
    let (code, date) = match DocumentId::parse(&u.document_id) {
        Ok(id) => (format!("{}/{}", id.number, id.notation), id.date),
        Err(_) => (String::new(), String::new()),
    };
    w.leaf_if(10, "Code", &code)?;
    w.leaf_if(10, "PromulgationDate", &date)?;
    w.leaf(10, "DocumentId", &u.document_id)?;
    w.close(8, "ResponseFor", &format!("{MH}/ResponseFor"))?;
    if let Some(s) = &ev.staff {
        w.staff(8, &format!("{MH}/StaffInfo"), s)?;
    }
    let timestamp = crate::time::format_timestamp(ev.unix_ms);
    w.leaf(8, "StatusCode", &ev.code)?;
    w.leaf(8, "Description", &ev.description)?;
    w.leaf(8, "Timestamp", &timestamp)?;
    w.close(6, "MessageHeader", MH)?;
    w.trace(
        Some(TraceHop {
            organ_id: from.organ_id.clone(),
            timestamp,
        }),
        None,
    )?;
    w.fragments(4, ENV)?;
    w.raw("  </edXML:edXMLEnvelope>\n")?;
    w.fragments(2, ROOT)?;
    w.raw("</edXML>\n")?;
    w.out.flush()?;
    Ok(())
}
