//! A server's TLS files under the reloader, and what its CRLs say as
//! metrics and health.

use std::sync::Arc;

use truc_pki::{LiveTls, REFUSAL_REASONS};

use crate::reload::{ReloadError, Reloader, label_value};
use crate::{Metrics, write_metric};

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Reloads `live` when its files change; exposes its CRLs and refused
/// handshakes in `metrics`; a CRL past its nextUpdate is a health warning.
pub fn watch_tls(reloader: &Reloader, metrics: &Metrics, live: Arc<LiveTls>) {
    let l = live.clone();
    reloader.watch("tls", live.files().paths(), move || {
        let closed = l.reload().map_err(|e| ReloadError {
            file: e.path().map(|p| p.to_path_buf()).unwrap_or_default(),
            message: e.to_string(),
        })?;
        if closed > 0 {
            tracing::warn!(
                closed,
                "closed connections of peers whose certificate is now revoked"
            );
        }
        Ok(())
    });
    let l = live.clone();
    metrics.add_source(Box::new(move |out| write_tls_metrics(out, &l, now_secs())));
    metrics.add_health_check(Box::new(move || stale_warnings(&live, now_secs())));
}

fn stale_warnings(live: &LiveTls, now: i64) -> Vec<String> {
    live.crls()
        .iter()
        .filter(|c| c.is_stale(now))
        .map(|c| {
            format!(
                "crl {} is past its nextUpdate by {} s (crl_policy {})",
                c.path.display(),
                now - c.next_update.unwrap_or(now),
                live.files().crl_policy.as_str()
            )
        })
        .collect()
}

fn write_tls_metrics(out: &mut String, live: &LiveTls, now: i64) {
    let crls = live.crls();
    let label = |c: &truc_pki::CrlInfo| {
        format!("{{crl=\"{}\"}}", label_value(&c.path.display().to_string()))
    };
    let labels: Vec<String> = crls.iter().map(label).collect();
    let gauge = |out: &mut String,
                 name: &str,
                 help: &str,
                 f: &dyn Fn(&truc_pki::CrlInfo) -> Option<f64>| {
        let samples: Vec<(&str, f64)> = crls
            .iter()
            .zip(&labels)
            .filter_map(|(c, l)| f(c).map(|v| (l.as_str(), v)))
            .collect();
        write_metric(out, name, "gauge", help, &samples);
    };
    gauge(
        out,
        "truc_crl_age_seconds",
        "Seconds since the thisUpdate of each CRL in force",
        &|c| Some((now - c.this_update) as f64),
    );
    gauge(
        out,
        "truc_crl_next_update_seconds",
        "Seconds until the nextUpdate of each CRL in force (negative: stale)",
        &|c| c.next_update.map(|n| (n - now) as f64),
    );
    gauge(
        out,
        "truc_crl_revoked_certificates",
        "Certificates each CRL in force revokes",
        &|c| Some(c.revoked as f64),
    );
    let stale = crls.iter().filter(|c| c.is_stale(now)).count();
    write_metric(
        out,
        "truc_crl_stale",
        "gauge",
        "CRLs in force past their nextUpdate",
        &[("", stale as f64)],
    );
    let refusals = live.refusals();
    let labels: Vec<String> = REFUSAL_REASONS
        .iter()
        .map(|r| format!("{{reason=\"{r}\"}}"))
        .collect();
    let samples: Vec<(&str, f64)> = labels
        .iter()
        .zip(refusals)
        .map(|(l, n)| (l.as_str(), n as f64))
        .collect();
    write_metric(
        out,
        "truc_tls_handshakes_refused",
        "counter",
        "TLS handshakes refused because of the peer's certificate, by reason",
        &samples,
    );
    write_metric(
        out,
        "truc_tls_connections_tracked",
        "gauge",
        "Established TLS connections watched for revocation of their peer",
        &[("", live.open_connections() as f64)],
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};
    use truc_pki::{Identity, Role};

    #[test]
    fn crl_metrics_and_stale_health() {
        let dir = tempfile::tempdir().expect("dir");
        let layout = truc_devca::init(dir.path(), &truc_devca::testing::options()).expect("pki");
        let files = layout.files(&Identity::new(Role::Hub, "hub").expect("id"));
        let live = LiveTls::load(files, Some(Role::Node)).expect("tls");
        let now = now_secs();
        assert!(stale_warnings(&live, now).is_empty());
        let mut out = String::new();
        write_tls_metrics(&mut out, &live, now);
        let crl = label_value(&layout.crl().display().to_string());
        assert!(
            out.contains(&format!(
                "truc_crl_revoked_certificates{{crl=\"{crl}\"}} 0\n"
            )),
            "{out}"
        );
        assert!(out.contains("truc_crl_stale 0\n"), "{out}");
        assert!(
            out.contains("truc_tls_handshakes_refused_total{reason=\"revoked\"} 0\n"),
            "{out}"
        );

        let day = Duration::from_secs(86_400);
        let t = SystemTime::now();
        truc_devca::reissue_crl(&layout, t - 2 * day, t - day).expect("stale list");
        live.reload().expect("reload");
        let warnings = stale_warnings(&live, now);
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("ca.crl") && warnings[0].contains("warn"),
            "{warnings:?}"
        );
        let mut out = String::new();
        write_tls_metrics(&mut out, &live, now);
        assert!(out.contains("truc_crl_stale 1\n"), "{out}");
        assert!(
            out.contains(&format!("truc_crl_next_update_seconds{{crl=\"{crl}\"}} -")),
            "{out}"
        );
    }
}
