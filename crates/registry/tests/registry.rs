#![allow(unused_crate_dependencies)] // Each test or example file is a crate of its own; none uses every dependency.
#![allow(clippy::unwrap_used)]

use truc_registry::{AgencyCode, NodeId, Registry, RegistryError, ServiceId};

const VALID: &str = r#"[[agency]]
code = "000.00.00.G22"
name = "Văn phòng Chính phủ"

[[agency]]
code = "000.00.00.H37"
name = "UBND tỉnh Lạng Sơn"

[[agency]]
code = "000.01.37.H37"           # hypothetical department of Lạng Sơn
name = "Sở Tư pháp tỉnh Lạng Sơn"
parent = "000.00.00.H37"

[[node]]
id = "ministry"
address = "127.0.0.1:7101"
agencies = ["000.00.00.G22"]

[[node]]
id = "lgsp-langson"
address = "127.0.0.1:7201"
agencies = ["000.00.00.H37", "000.01.37.H37"]

[[service]]
id = "000.00.00.G22/citizen-lookup/v1"
description = "Look up a citizen record"

[[grant]]
client = "000.00.00.H37"
services = ["000.00.00.G22/citizen-lookup/v1"]
"#;

fn a(s: &str) -> AgencyCode {
    AgencyCode::parse(s).unwrap()
}

fn n(s: &str) -> NodeId {
    NodeId::parse(s).unwrap()
}

fn s(x: &str) -> ServiceId {
    ServiceId::parse(x).unwrap()
}

/// Loads `text`, expecting an `Invalid` error; returns (field, line, full message).
fn invalid(text: &str) -> (String, Option<usize>, String) {
    match Registry::from_toml_str(text, "test.toml") {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e @ RegistryError::Invalid { .. }) => {
            let msg = e.to_string();
            let RegistryError::Invalid { field, line, .. } = e else {
                unreachable!()
            };
            (field, line, msg)
        }
        Err(e) => panic!("unexpected error {e}"),
    }
}

/// Replaces exactly one occurrence of `from` in VALID.
fn edit(from: &str, to: &str) -> String {
    assert_eq!(VALID.matches(from).count(), 1, "{from}");
    VALID.replacen(from, to, 1)
}

fn expect(text: &str, field: &str, line: usize, needle: &str) {
    let (f, l, msg) = invalid(text);
    assert_eq!(f, field, "{msg}");
    assert_eq!(l, Some(line), "{msg}");
    assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
    assert!(
        msg.starts_with(&format!("registry test.toml, line {line}, {field}: ")),
        "{msg}"
    );
}

#[test]
fn valid_example_and_queries() {
    let reg = Registry::from_toml_str(VALID, "test.toml").unwrap();
    assert_eq!(reg.agencies().count(), 3);
    assert_eq!(reg.nodes().count(), 2);
    assert_eq!(reg.services().count(), 1);
    let dept = reg.agency(&a("000.01.37.H37")).unwrap();
    assert_eq!(dept.parent, Some(a("000.00.00.H37")));
    assert_eq!(dept.name, "Sở Tư pháp tỉnh Lạng Sơn");

    assert!(reg.hosts(&n("lgsp-langson"), &a("000.01.37.H37")));
    assert!(!reg.hosts(&n("ministry"), &a("000.01.37.H37")));
    assert!(!reg.hosts(&n("nobody"), &a("000.00.00.G22")));
    assert_eq!(
        reg.node_hosting(&a("000.00.00.G22"))
            .map(|x| x.address.as_str()),
        Some("127.0.0.1:7101")
    );
    assert!(reg.node_hosting(&a("999.00.00.Z99")).is_none());
    assert_eq!(
        reg.node(&n("lgsp-langson")).unwrap().agencies,
        vec![a("000.00.00.H37"), a("000.01.37.H37")]
    );

    let svc = s("000.00.00.G22/citizen-lookup/v1");
    assert!(reg.is_granted(&a("000.00.00.H37"), &svc));
    // No inheritance: the department is not granted through its parent.
    assert!(!reg.is_granted(&a("000.01.37.H37"), &svc));
    assert!(!reg.is_granted(&a("000.00.00.G22"), &svc));
    assert!(!reg.is_granted(&a("000.00.00.H37"), &s("000.00.00.G22/other/v1")));
    assert_eq!(
        reg.service(&svc).unwrap().description,
        "Look up a citizen record"
    );
    assert_eq!(
        reg.grants().collect::<Vec<_>>(),
        vec![(&a("000.00.00.H37"), &svc)]
    );

    let expected: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, VALID.as_bytes())
        .as_ref()
        .try_into()
        .unwrap();
    assert_eq!(reg.source_sha256(), expected);

    let snap = reg.to_snapshot();
    assert_eq!(snap.source_sha256.as_ref(), expected.as_slice());
    let agencies: Vec<_> = snap
        .agencies
        .iter()
        .map(|x| (x.code.as_str(), x.parent.as_str()))
        .collect();
    assert_eq!(
        agencies,
        vec![
            ("000.00.00.G22", ""),
            ("000.00.00.H37", ""),
            ("000.01.37.H37", "000.00.00.H37")
        ]
    );
    assert_eq!(snap.agencies[0].name, "Văn phòng Chính phủ");
    let nodes: Vec<_> = snap.nodes.iter().map(|x| x.id.as_str()).collect();
    assert_eq!(nodes, vec!["lgsp-langson", "ministry"]);
    assert_eq!(snap.nodes[0].address, "127.0.0.1:7201");
    assert_eq!(
        snap.nodes[0].agencies,
        vec!["000.00.00.H37", "000.01.37.H37"]
    );
    assert_eq!(snap.services.len(), 1);
    assert_eq!(snap.services[0].id, "000.00.00.G22/citizen-lookup/v1");
    assert_eq!(snap.services[0].provider, "000.00.00.G22");
    assert_eq!(snap.services[0].description, "Look up a citizen record");
    assert_eq!(snap.grants.len(), 1);
    assert_eq!(snap.grants[0].client, "000.00.00.H37");
    assert_eq!(snap.grants[0].service, "000.00.00.G22/citizen-lookup/v1");
}

#[test]
fn empty_file_is_an_empty_registry() {
    let reg = Registry::from_toml_str("", "empty.toml").unwrap();
    assert_eq!(reg.agencies().count(), 0);
    assert_eq!(reg.grants().count(), 0);
}

#[test]
fn load_from_file_and_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.toml");
    std::fs::write(&path, VALID).unwrap();
    let reg = Registry::load(&path).unwrap();
    assert_eq!(reg.nodes().count(), 2);

    std::fs::write(
        &path,
        VALID.replace("000.00.00.G22/citizen-lookup/v1\"\nd", "x\"\nd"),
    )
    .unwrap();
    let err = Registry::load(&path).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "registry {}, line 25, service[0].id: invalid service id \"x\": expected {{provider}}/{{code}}/v{{N}}, e.g. 000.00.00.G22/citizen-lookup/v1",
            path.display()
        )
    );

    let missing = dir.path().join("nope.toml");
    let err = Registry::load(&missing).unwrap_err();
    assert!(matches!(err, RegistryError::Read { .. }));
    assert!(
        err.to_string().starts_with("cannot read registry "),
        "{err}"
    );
}

#[test]
fn toml_syntax_and_unknown_keys() {
    let (field, line, msg) = invalid(&edit("name = \"UBND", "name = UBND"));
    assert_eq!((field.as_str(), line), ("toml", Some(7)), "{msg}");

    let (field, line, msg) = invalid(&edit("parent = ", "color = \"red\"\nparent = "));
    assert_eq!((field.as_str(), line), ("toml", Some(12)), "{msg}");
    assert!(msg.contains("color"), "{msg}");

    let (_, line, msg) = invalid(&format!("{VALID}\n[[widget]]\nx = 1\n"));
    assert!(msg.contains("widget"), "{msg}");
    assert!(line.is_some(), "{msg}");

    let (_, _, msg) = invalid(&edit("address = \"127.0.0.1:7101\"\n", ""));
    assert!(msg.contains("address"), "{msg}");
}

#[test]
fn bad_ids() {
    expect(
        &edit("\"000.00.00.G22\"\nname", "\"000.00.00.g22\"\nname"),
        "agency[0].code",
        2,
        "invalid agency code \"000.00.00.g22\"",
    );
    expect(
        &edit("parent = \"000.00.00.H37\"", "parent = \"H37\""),
        "agency[2].parent",
        12,
        "invalid agency code",
    );
    expect(
        &edit("id = \"lgsp-langson\"", "id = \"LGSP\""),
        "node[1].id",
        20,
        "invalid node id \"LGSP\"",
    );
    expect(
        &edit("[\"000.00.00.H37\", ", "[\"000.00.00.H37\", \"x\", "),
        "node[1].agencies[1]",
        22,
        "invalid agency code \"x\"",
    );
    expect(
        &edit("id = \"000.00.00.G22/citizen-lookup/v1\"", "id = \"x\""),
        "service[0].id",
        25,
        "invalid service id \"x\"",
    );
    expect(
        &edit("client = \"000.00.00.H37\"", "client = \"nope\""),
        "grant[0].client",
        29,
        "invalid agency code \"nope\"",
    );
    expect(
        &edit(
            "services = [\"000.00.00.G22/citizen-lookup/v1\"]",
            "services = [\n  \"000.00.00.G22/citizen-lookup/v1\",\n  \"bad\",\n]",
        ),
        "grant[0].services[1]",
        32,
        "invalid service id \"bad\"",
    );
}

#[test]
fn duplicate_agency_code() {
    expect(
        &edit("code = \"000.01.37.H37\"", "code = \"000.00.00.G22\""),
        "agency[2].code",
        10,
        "duplicate agency code 000.00.00.G22",
    );
}

#[test]
fn duplicate_node_id() {
    expect(
        &edit("id = \"lgsp-langson\"", "id = \"ministry\""),
        "node[1].id",
        20,
        "duplicate node id ministry",
    );
}

#[test]
fn duplicate_node_address() {
    expect(
        &edit("127.0.0.1:7201", "127.0.0.1:7101"),
        "node[1].address",
        21,
        "duplicate node address 127.0.0.1:7101",
    );
}

#[test]
fn bad_node_address() {
    for bad in [
        "",
        "127.0.0.1",
        ":7201",
        "host:99999",
        "host:0",
        "host:x",
        "a b:1",
    ] {
        expect(
            &edit("\"127.0.0.1:7201\"", &format!("{bad:?}")),
            "node[1].address",
            21,
            "invalid address",
        );
    }
    let ok = edit("\"127.0.0.1:7201\"", "\"gw.langson.gov.vn:443\"");
    assert!(Registry::from_toml_str(&ok, "t").is_ok());
    let ok = edit("\"127.0.0.1:7201\"", "\"[::1]:7201\"");
    assert!(Registry::from_toml_str(&ok, "t").is_ok());
}

#[test]
fn duplicate_service_id() {
    let text = edit(
        "[[grant]]",
        "[[service]]\nid = \"000.00.00.G22/citizen-lookup/v1\"\n\n[[grant]]",
    );
    expect(&text, "service[1].id", 29, "duplicate service id");
}

#[test]
fn unknown_parent() {
    expect(
        &edit("parent = \"000.00.00.H37\"", "parent = \"000.00.00.H99\""),
        "agency[2].parent",
        12,
        "unknown parent agency 000.00.00.H99",
    );
}

#[test]
fn own_parent() {
    expect(
        &edit("parent = \"000.00.00.H37\"", "parent = \"000.01.37.H37\""),
        "agency[2].parent",
        12,
        "is its own parent",
    );
}

#[test]
fn parent_cycle() {
    let text = edit(
        "name = \"UBND tỉnh Lạng Sơn\"",
        "name = \"UBND tỉnh Lạng Sơn\"\nparent = \"000.01.37.H37\"",
    );
    expect(&text, "agency[1].parent", 8, "forms a cycle");

    // A longer cycle: G22 -> dept -> H37 -> G22.
    let text = edit(
        "name = \"Văn phòng Chính phủ\"",
        "name = \"Văn phòng Chính phủ\"\nparent = \"000.01.37.H37\"",
    )
    .replacen(
        "name = \"UBND tỉnh Lạng Sơn\"",
        "name = \"UBND tỉnh Lạng Sơn\"\nparent = \"000.00.00.G22\"",
        1,
    );
    expect(&text, "agency[0].parent", 4, "forms a cycle");
}

/// `n` agencies in one parent chain, listed from the deepest up: agency
/// `i` has parent `i + 1`; the last is a root unless `closed`, when its
/// parent is agency `loop_to`.
fn chain(n: usize, closed: Option<usize>) -> String {
    let code = |i: usize| format!("{:03}.{:02}.{:02}.H37", i / 10_000, i / 100 % 100, i % 100);
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&format!(
            "[[agency]]\ncode = \"{}\"\nname = \"agency {i}\"\n",
            code(i)
        ));
        match (i + 1 < n, closed) {
            (true, _) => text.push_str(&format!("parent = \"{}\"\n", code(i + 1))),
            (false, Some(to)) => text.push_str(&format!("parent = \"{}\"\n", code(to))),
            (false, None) => {}
        }
    }
    text
}

#[test]
fn a_deep_parent_chain_is_valid_and_each_agency_keeps_its_parent() {
    // 20 000 deep, listed from the leaf: walking every agency's chain to
    // its root would take 2 * 10^8 steps; each link is walked once.
    let n = 20_000;
    let registry = Registry::from_toml_str(&chain(n, None), "t").unwrap();
    assert_eq!(registry.agencies().count(), n);
    let leaf = registry.agency(&a("000.00.00.H37")).unwrap();
    assert_eq!(leaf.parent, Some(a("000.00.01.H37")));
    let root = registry.agency(&a("001.99.99.H37")).unwrap();
    assert_eq!(root.parent, None);
}

#[test]
fn a_chain_running_into_a_cycle_names_the_cycles_first_agency() {
    // 0 -> 1 -> ... -> 9 -> 5: agencies 0..5 lead into the cycle 5..=9
    // but are not on it; the error names agency 5, its first in the file.
    let text = chain(10, Some(5));
    let (field, _, msg) = invalid(&text);
    assert_eq!(field, "agency[5].parent", "{msg}");
    assert!(
        msg.contains("parent chain of agency 000.00.05.H37 forms a cycle"),
        "{msg}"
    );
    // A deep one: the whole 20 000 chain closed on its leaf.
    let (field, _, msg) = invalid(&chain(20_000, Some(0)));
    assert_eq!(field, "agency[0].parent", "{msg}");
}

#[test]
fn node_agency_must_exist() {
    expect(
        &edit(
            "agencies = [\"000.00.00.G22\"]",
            "agencies = [\"000.00.00.G23\"]",
        ),
        "node[0].agencies[0]",
        17,
        "unknown agency 000.00.00.G23",
    );
}

#[test]
fn agency_hosted_once() {
    expect(
        &edit(
            "agencies = [\"000.00.00.G22\"]",
            "agencies = [\"000.00.00.G22\", \"000.00.00.H37\"]",
        ),
        "node[1].agencies[0]",
        22,
        "already hosted by node ministry",
    );
    expect(
        &edit(
            "[\"000.00.00.H37\", \"000.01.37.H37\"]",
            "[\"000.00.00.H37\", \"000.00.00.H37\"]",
        ),
        "node[1].agencies[1]",
        22,
        "already hosted by node lgsp-langson",
    );
}

#[test]
fn service_provider_must_exist() {
    expect(
        &edit(
            "id = \"000.00.00.G22/citizen-lookup/v1\"",
            "id = \"000.00.00.G99/citizen-lookup/v1\"",
        ),
        "service[0].id",
        25,
        "unknown provider agency 000.00.00.G99",
    );
}

#[test]
fn service_provider_must_be_hosted() {
    expect(
        &edit("agencies = [\"000.00.00.G22\"]", "agencies = []"),
        "service[0].id",
        25,
        "provider agency 000.00.00.G22 is not hosted by any node",
    );
}

#[test]
fn grant_client_must_exist() {
    expect(
        &edit("client = \"000.00.00.H37\"", "client = \"000.00.00.H38\""),
        "grant[0].client",
        29,
        "unknown client agency 000.00.00.H38",
    );
}

#[test]
fn grant_service_must_exist() {
    expect(
        &edit(
            "services = [\"000.00.00.G22/citizen-lookup/v1\"]",
            "services = [\"000.00.00.G22/citizen-lookup/v1\", \"000.00.00.G22/citizen-lookup/v2\"]",
        ),
        "grant[0].services[1]",
        30,
        "unknown service 000.00.00.G22/citizen-lookup/v2",
    );
}

#[test]
fn agency_name_non_empty() {
    expect(
        &edit("name = \"UBND tỉnh Lạng Sơn\"", "name = \"  \""),
        "agency[1].name",
        7,
        "name is empty",
    );
}

#[test]
fn documents_flow_freely_by_default() {
    let r = Registry::from_toml_str(VALID, "t.toml").unwrap();
    assert!(r.may_send_document(&a("000.00.00.H37"), &a("000.00.00.G22")));
    assert!(
        !r.may_send_document(&a("000.00.00.H37"), &a("000.00.00.H41")),
        "unknown recipient"
    );
}

#[test]
fn document_grants_apply_when_the_default_is_deny() {
    let text = format!(
        "{VALID}\n[documents]\ndefault = \"deny\"\n\n[[document_grant]]\nsender = \"000.00.00.H37\"\nrecipients = [\"000.00.00.G22\"]\n"
    );
    let r = Registry::from_toml_str(&text, "t.toml").unwrap();
    assert!(r.may_send_document(&a("000.00.00.H37"), &a("000.00.00.G22")));
    assert!(!r.may_send_document(&a("000.00.00.G22"), &a("000.00.00.H37")));
    assert!(!r.may_send_document(&a("000.01.37.H37"), &a("000.00.00.G22")));
}

#[test]
fn document_policy_errors_name_the_field() {
    let text = format!("{VALID}\n[documents]\ndefault = \"maybe\"\n");
    let e = Registry::from_toml_str(&text, "t.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("documents.default"), "{e}");
    let text = format!(
        "{VALID}\n[[document_grant]]\nsender = \"000.00.00.H37\"\nrecipients = [\"000.00.00.H41\"]\n"
    );
    let e = Registry::from_toml_str(&text, "t.toml")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("document_grant[0].recipients[0]") && e.contains("line"),
        "{e}"
    );
}

#[test]
fn a_node_may_name_its_witness_key() {
    let key = "11".repeat(32);
    let text = edit(
        "id = \"ministry\"\n",
        &format!("id = \"ministry\"\nwitness_key = \"{key}\"\n"),
    );
    let r = Registry::from_toml_str(&text, "test.toml").unwrap();
    assert_eq!(
        r.node(&n("ministry")).unwrap().witness_key,
        Some([0x11; 32])
    );
    assert_eq!(r.node(&n("lgsp-langson")).unwrap().witness_key, None);
    let snapshot = r.to_snapshot();
    assert_eq!(snapshot.nodes[1].witness_key.as_ref(), &[0x11; 32]);
    expect(
        &edit(
            "id = \"ministry\"\n",
            "id = \"ministry\"\nwitness_key = \"abcd\"\n",
        ),
        "node[0].witness_key",
        16,
        "64 hex digits",
    );
}

#[test]
fn grants_may_require_a_purpose_and_services_a_hashed_end_user() {
    let text = VALID
        .replace(
            "services = [\"000.00.00.G22/citizen-lookup/v1\"]\n",
            "services = [\"000.00.00.G22/citizen-lookup/v1\"]\npurposes = [\"hộ tịch\", \"cư trú\"]\n",
        )
        .replace(
            "description = \"Look up a citizen record\"\n",
            "description = \"Look up a citizen record\"\nhash_end_user = true\n",
        )
        + "\n[[grant]]\nclient = \"000.01.37.H37\"\nservices = [\"000.00.00.G22/citizen-lookup/v1\"]\nrequire_purpose = true\n";
    let r = Registry::from_toml_str(&text, "test.toml").unwrap();
    let svc = s("000.00.00.G22/citizen-lookup/v1");
    let listed = r.required_purpose(&a("000.00.00.H37"), &svc).unwrap();
    assert!(listed.allows("hộ tịch") && !listed.allows("other") && !listed.allows(""));
    let any = r.required_purpose(&a("000.01.37.H37"), &svc).unwrap();
    assert!(any.allows("anything") && !any.allows(""));
    assert!(r.hashes_end_user(&svc));
    // Without the keys nothing is required and nothing hashed.
    let plain = Registry::from_toml_str(VALID, "test.toml").unwrap();
    assert!(plain.required_purpose(&a("000.00.00.H37"), &svc).is_none());
    assert!(!plain.hashes_end_user(&svc) && !plain.hashes_any_end_user());
    // Globally.
    let global = Registry::from_toml_str(&format!("hash_end_user = true\n{VALID}"), "t").unwrap();
    assert!(global.hashes_end_user(&svc));
    // A bad purpose in a grant is refused with its field.
    let bad = VALID.replace(
        "services = [\"000.00.00.G22/citizen-lookup/v1\"]\n",
        "services = [\"000.00.00.G22/citizen-lookup/v1\"]\npurposes = [\"a\\u0007b\"]\n",
    );
    let (field, _, _) = invalid(&bad);
    assert_eq!(field, "grant[0].purposes[0]");
}
