//! `truc-bench edxml`: writes an edXML package with one large attachment to
//! a temporary file, parses it back, and reports each phase's throughput
//! and its peak resident memory growth (Linux `VmHWM`, reset between phases
//! through `/proc/self/clear_refs`). The attachment is generated as it is
//! written and only hashed as it is parsed, so the memory measured is the
//! writer's and the parser's own.

use std::{
    fs::File,
    io::{self, BufReader, Read},
    time::Instant,
};

use clap::Args;
use ring::digest;
use truc_edxml::{AttachmentMeta, AttachmentSink, AttachmentSource, Preserved};
use truc_proto::v1::Attachment;

use crate::mem::PeakGrowth;

#[derive(Args, Debug)]
pub(crate) struct EdxmlArgs {
    /// Size of the attachment in MiB.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=4096))]
    size_mib: u64,
    /// Fail when either phase grows the peak resident memory by more than
    /// this many MiB.
    #[arg(long, default_value_t = 64)]
    max_rss_growth_mib: u64,
}

/// Pseudo-random bytes (xorshift), `left` of them.
struct Generated {
    state: u64,
    left: u64,
    hash: digest::Context,
}

impl Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        for b in &mut buf[..n] {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            *b = (self.state >> 24) as u8;
        }
        self.hash.update(&buf[..n]);
        self.left -= n as u64;
        Ok(n)
    }
}

struct Source(Option<Generated>);

impl AttachmentSource for Source {
    fn open(&mut self, _: usize, _: &Attachment) -> io::Result<Box<dyn Read + '_>> {
        match self.0.as_mut() {
            Some(g) => Ok(Box::new(g)),
            None => Err(io::Error::other("opened twice")),
        }
    }
}

/// Hashes what the parser decodes.
struct Hashing(digest::Context, u64);

impl AttachmentSink for Hashing {
    fn begin(&mut self, _: usize) -> io::Result<()> {
        Ok(())
    }
    fn write(&mut self, _: usize, data: &[u8]) -> io::Result<()> {
        self.0.update(data);
        self.1 += data.len() as u64;
        Ok(())
    }
    fn end(&mut self, _: &AttachmentMeta) -> io::Result<()> {
        Ok(())
    }
}

/// Runs `phase`; returns its seconds and its peak RSS growth in KiB.
fn measured<T>(phase: impl FnOnce() -> Result<T, String>) -> Result<(T, f64, Option<u64>), String> {
    let peak = PeakGrowth::start();
    let start = Instant::now();
    let out = phase()?;
    let secs = start.elapsed().as_secs_f64();
    Ok((out, secs, peak.kib()))
}

pub(crate) fn run(args: EdxmlArgs) -> Result<(), String> {
    let size = args.size_mib << 20;
    let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let path = dir.path().join("bench.edxml");

    // The envelope declares no size or digest (the writer learns them as it
    // streams); the parser fills them in.
    let mut envelope = truc_doc::sample::envelope(
        "000.00.00.H37",
        &["000.00.00.G22"],
        "1",
        vec![Attachment {
            name: "bao-cao.pdf".into(),
            content_type: "application/pdf".into(),
            ..Attachment::default()
        }],
    );
    envelope.subject = "Đo hiệu năng gói edXML".into();
    let mut source = Source(Some(Generated {
        state: 0x9E37_79B9_7F4A_7C15,
        left: size,
        hash: digest::Context::new(&digest::SHA256),
    }));
    let ((), write_secs, write_growth) = measured(|| {
        let file = File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        truc_edxml::write_package(&file, &envelope, &Preserved::default(), &mut source)
            .map_err(|e| format!("write: {e}"))
    })?;
    let written = source
        .0
        .take()
        .map(|g| g.hash.finish())
        .ok_or("no source")?;
    let package_bytes = std::fs::metadata(&path).map_err(|e| e.to_string())?.len();

    let mut sink = Hashing(digest::Context::new(&digest::SHA256), 0);
    let limits = truc_doc::Limits {
        max_attachment_bytes: size.max(1),
        max_total_bytes: size.max(1),
        ..truc_doc::Limits::default()
    };
    let opts = truc_edxml::Options {
        limits,
        ..truc_edxml::Options::default()
    };
    let (package, parse_secs, parse_growth) = measured(|| {
        let file = File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        truc_edxml::parse_package_with(BufReader::with_capacity(64 * 1024, file), &mut sink, &opts)
            .map_err(|e| format!("parse: {e}"))
    })?;
    let parsed = sink.0.finish();
    if parsed.as_ref() != written.as_ref() || sink.1 != size {
        return Err("the parsed attachment differs from the one written".into());
    }
    if package.envelope.attachments.first().map(|a| a.size) != Some(size) {
        return Err("the parsed envelope has the wrong attachment size".into());
    }

    let mib = size as f64 / f64::from(1 << 20);
    let show = |g: Option<u64>| {
        g.map_or("unknown".to_string(), |k| {
            format!("{:.1} MiB", k as f64 / 1024.0)
        })
    };
    println!(
        "edXML package: {mib:.0} MiB attachment, {:.1} MiB on disk (base64)",
        package_bytes as f64 / f64::from(1 << 20)
    );
    println!(
        "write: {write_secs:.2} s, {:.1} MiB/s of attachment, peak RSS growth {}",
        mib / write_secs,
        show(write_growth)
    );
    println!(
        "parse: {parse_secs:.2} s, {:.1} MiB/s of attachment, peak RSS growth {}",
        mib / parse_secs,
        show(parse_growth)
    );
    let bound = args.max_rss_growth_mib << 10;
    for (phase, g) in [("write", write_growth), ("parse", parse_growth)] {
        if let Some(g) = g
            && g > bound
        {
            return Err(format!(
                "{phase} grew the peak RSS by {} (bound {} MiB)",
                show(Some(g)),
                args.max_rss_growth_mib
            ));
        }
    }
    Ok(())
}
