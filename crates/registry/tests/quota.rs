#![allow(unused_crate_dependencies)] // Each test or example file is a crate of its own; none uses every dependency.
#![allow(clippy::unwrap_used)]

//! The `[quota]` table: defaults, overrides and their precedence, the
//! division between hub replicas, and the errors of a bad table.

use truc_registry::{AgencyCode, Limit, Registry, RegistryError, ServiceId};

const BASE: &str = r#"[[agency]]
code = "000.00.00.G22"
name = "Văn phòng Chính phủ"

[[agency]]
code = "000.00.00.H37"
name = "UBND tỉnh Lạng Sơn"

[[agency]]
code = "000.00.00.H26"
name = "UBND tỉnh Hưng Yên"

[[node]]
id = "ministry"
address = "127.0.0.1:7101"
agencies = ["000.00.00.G22"]

[[node]]
id = "provinces"
address = "127.0.0.1:7201"
agencies = ["000.00.00.H37", "000.00.00.H26"]

[[service]]
id = "000.00.00.G22/citizen-lookup/v1"

[[service]]
id = "000.00.00.G22/land/v1"

[[grant]]
client = "000.00.00.H37"
services = ["000.00.00.G22/citizen-lookup/v1", "000.00.00.G22/land/v1"]

[[grant]]
client = "000.00.00.H26"
services = ["000.00.00.G22/citizen-lookup/v1", "000.00.00.G22/land/v1"]
"#;

const H37: &str = "000.00.00.H37";
const H26: &str = "000.00.00.H26";
const LOOKUP: &str = "000.00.00.G22/citizen-lookup/v1";
const LAND: &str = "000.00.00.G22/land/v1";

/// The base registry followed by `quota` (its first line is line 36).
fn with(quota: &str) -> String {
    format!("{BASE}{quota}")
}

fn load(quota: &str) -> Registry {
    Registry::from_toml_str(&with(quota), "test.toml").unwrap()
}

fn limit(r: &Registry, client: &str, service: &str) -> Option<Limit> {
    r.quotas().limit(
        &AgencyCode::parse(client).unwrap(),
        &ServiceId::parse(service).unwrap(),
    )
}

fn l(rate: f64, burst: u32) -> Option<Limit> {
    Some(Limit { rate, burst })
}

/// Expects an error naming `field` at `line` and containing `needle`.
fn expect(quota: &str, field: &str, line: usize, needle: &str) {
    match Registry::from_toml_str(&with(quota), "test.toml") {
        Err(e @ RegistryError::Invalid { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.starts_with(&format!("registry test.toml, line {line}, {field}: ")),
                "{msg}"
            );
            assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("expected an error for:\n{quota}"),
    }
}

#[test]
fn without_a_quota_table_nothing_is_limited() {
    let r = load("");
    assert_eq!(limit(&r, H37, LOOKUP), None);
    assert_eq!(r.quotas().replicas(), 1);
}

#[test]
fn a_default_applies_to_every_pair_and_its_burst_defaults_to_one_second() {
    let r = load("[quota]\nrate = 20\n");
    assert_eq!(limit(&r, H37, LOOKUP), l(20.0, 20));
    assert_eq!(limit(&r, H26, LAND), l(20.0, 20));
    let r = load("[quota]\nrate = 0.5\n");
    assert_eq!(limit(&r, H37, LOOKUP), l(0.5, 1), "at least one call");
}

#[test]
fn the_most_specific_override_wins() {
    let r = load(
        r#"[quota]
rate = 100
burst = 200

[[quota.override]]
service = "000.00.00.G22/land/v1"
rate = 10

[[quota.override]]
client = "000.00.00.H37"
rate = 50
burst = 60

[[quota.override]]
client = "000.00.00.H37"
service = "000.00.00.G22/land/v1"
rate = 2
burst = 3

[[quota.override]]
client = "000.00.00.H26"
service = "000.00.00.G22/citizen-lookup/v1"
unlimited = true
"#,
    );
    // Pair over client over service over default.
    assert_eq!(limit(&r, H37, LAND), l(2.0, 3));
    assert_eq!(limit(&r, H37, LOOKUP), l(50.0, 60));
    assert_eq!(limit(&r, H26, LAND), l(10.0, 10));
    assert_eq!(limit(&r, H26, LOOKUP), None);
}

#[test]
fn replicas_divide_the_rate_and_the_burst_rounded_up() {
    let r = load("[quota]\nrate = 30\nburst = 10\nreplicas = 3\n");
    assert_eq!(r.quotas().replicas(), 3);
    let one = r
        .quotas()
        .per_replica(
            &AgencyCode::parse(H37).unwrap(),
            &ServiceId::parse(LOOKUP).unwrap(),
        )
        .unwrap();
    assert_eq!(
        one,
        Limit {
            rate: 10.0,
            burst: 4
        }
    );
    assert_eq!(
        Limit {
            rate: 1.0,
            burst: 1
        }
        .per_replica(5)
        .burst,
        1
    );
}

#[test]
fn bad_quota_tables_name_the_field_and_line() {
    expect("[quota]\nrate = 0\n", "quota.rate", 37, "a rate is");
    expect("[quota]\nrate = -1\n", "quota.rate", 37, "a rate is");
    expect("[quota]\nrate = nan\n", "quota.rate", 37, "a rate is");
    expect("[quota]\nrate = 2e6\n", "quota.rate", 37, "a rate is");
    expect("[quota]\nrate = \"fast\"\n", "toml", 37, "");
    expect(
        "[quota]\nrate = 1\nburst = 0\n",
        "quota.burst",
        38,
        "a burst is",
    );
    expect(
        "[quota]\nrate = 1\nburst = 99999999999\n",
        "quota.burst",
        38,
        "a burst is",
    );
    expect("[quota]\nburst = 5\n", "quota.burst", 37, "needs a rate");
    expect("[quota]\nreplicas = 0\n", "quota.replicas", 37, "1 to 1000");
    expect("[quota]\nrates = 1\n", "toml", 37, "unknown field");
    let o = "[quota]\n[[quota.override]]\n";
    expect(
        &format!("{o}client = \"000.00.00.X99\"\nrate = 1\n"),
        "quota.override[0].client",
        38,
        "unknown agency",
    );
    expect(
        &format!("{o}client = \"nope\"\nrate = 1\n"),
        "quota.override[0].client",
        38,
        "",
    );
    expect(
        &format!("{o}service = \"000.00.00.G22/none/v1\"\nrate = 1\n"),
        "quota.override[0].service",
        38,
        "unknown service",
    );
    expect(
        &format!("{o}rate = 1\n"),
        "quota.override[0].client",
        38,
        "names a client, a service or both",
    );
    expect(
        &format!("{o}client = \"{H37}\"\n"),
        "quota.override[0].rate",
        38,
        "needs a rate",
    );
    expect(
        &format!("{o}client = \"{H37}\"\nrate = 1\nunlimited = true\n"),
        "quota.override[0].unlimited",
        40,
        "no rate nor burst",
    );
    expect(
        &format!("{o}client = \"{H37}\"\nrate = 1\nburst = -3\n"),
        "quota.override[0].burst",
        40,
        "a burst is",
    );
    expect(
        &format!(
            "{o}client = \"{H37}\"\nrate = 1\n[[quota.override]]\nclient = \"{H37}\"\nrate = 2\n"
        ),
        "quota.override[1]",
        41,
        "the same client and service as quota.override[0]",
    );
}
