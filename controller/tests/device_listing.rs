//! The device list in pages: a real `outpost serve`, devices said hello by plain MQTT clients, the
//! operator CLI reading the list a few devices a request, and the API's paging asked directly.

#[path = "support/serve.rs"]
mod serve;

use outpost_protocol::messages::{Hello, Message};
use outpost_protocol::{Arch, DeviceId, Version};
use serve::*;
use std::path::Path;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_outpost"))
}

/// In id order; the last holds characters a URL must escape.
const DEVICES: [&str; 5] = ["edge-01", "edge-02", "edge-03", "edge-04", "edge-05 &x=1%"];

fn hello(device: &str) -> Message {
    Message::Hello(Hello {
        device: DeviceId::new(device).unwrap(),
        arch: Arch::Aarch64,
        agent_version: Version::new(0, 1, 0),
        labels: vec![("region".into(), if device < "edge-03" { "eu" } else { "us" }.into())],
        running: vec![],
        boot_id: 1,
        max_packet: 1 << 20,
    })
}

/// GET with the API token: status and body.
fn get(ctl: &Serve, path: &str) -> (u16, String) {
    let token = std::fs::read_to_string(ctl.data.join("api-token")).unwrap();
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut r = agent
        .get(format!("{}{path}", ctl.url))
        .header("Authorization", format!("Bearer {}", token.trim()))
        .call()
        .unwrap();
    (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
}

fn ids(body: &str) -> Vec<String> {
    let list: Vec<serde_json::Value> = serde_json::from_str(body).unwrap();
    list.iter().map(|d| d["id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_list_reads_in_pages_whole_and_in_order() {
    let dir = tempdir("listing");
    let ctl = Serve::start(bin(), &dir, &[]);
    let mut clients = Vec::new();
    for d in DEVICES {
        let mut dev = Plain::device(ctl.mqtt, d);
        assert!(dev.outcome().await);
        greet(&ctl, &dev, d, &hello(d), 1).await;
        clients.push(dev);
    }

    // The API: a page, the page after it, the last (short) page; a brief page; refusals that name the
    // parameter.
    let (status, page) = get(&ctl, "/api/v1/devices?limit=2");
    assert_eq!((status, ids(&page)), (200, vec!["edge-01".to_owned(), "edge-02".to_owned()]));
    assert_eq!(ids(&get(&ctl, "/api/v1/devices?limit=2&after=edge-02").1), ["edge-03", "edge-04"]);
    assert_eq!(ids(&get(&ctl, "/api/v1/devices?limit=2&after=edge-04").1), [DEVICES[4]]);
    assert_eq!(ids(&get(&ctl, "/api/v1/devices?limit=3&selector=region%3Dus").1), ["edge-03", "edge-04", DEVICES[4]]);
    let (_, whole) = get(&ctl, "/api/v1/devices");
    assert_eq!(ids(&whole), DEVICES, "without limit: the whole fleet, as the console asks");
    let (status, brief) = get(&ctl, "/api/v1/devices?view=brief");
    assert_eq!((status, ids(&brief)), (200, ids(&whole)));
    for (query, says) in [
        ("limit=0", "limit=\\\"0\\\": give a number of devices from 1 to 10000"),
        ("view=all", "the device list's views are full and brief"),
        ("after=a%2Fb", "is not a device id"),
        ("pagesize=2", "unknown parameter"),
    ] {
        let (status, body) = get(&ctl, &format!("/api/v1/devices?{query}"));
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains(says), "{query}: {body}");
    }

    // The CLI, two devices a request: every device once, in order, the escaped id included; the JSON is
    // the same whatever the chunk size.
    let table = ctl.run(&["devices", "list", "--chunk-size", "2"]);
    let listed: Vec<&str> = table.lines().skip(1).map(|l| l.split("  ").next().unwrap().trim()).collect();
    assert_eq!(listed, DEVICES, "{table}");
    let by_two = ctl.run(&["devices", "list", "-o", "json", "--chunk-size", "2"]);
    let at_once = ctl.run(&["devices", "list", "-o", "json"]);
    assert_eq!(by_two, at_once);
    assert_eq!(ids(&at_once), DEVICES);
    let eu = ctl.run(&["devices", "list", "-l", "region=eu", "--chunk-size", "1"]);
    assert_eq!(eu.lines().count(), 3, "a header and the two eu devices:\n{eu}");
    let shown = ctl.run(&["devices", "show", DEVICES[4], "-o", "json"]);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&shown).unwrap()["id"], DEVICES[4]);
    let e = ctl.cli(&["devices", "list", "--chunk-size", "0"]);
    assert!(!e.status.success());
    assert!(String::from_utf8_lossy(&e.stderr).contains("--chunk-size"), "{}", String::from_utf8_lossy(&e.stderr));
}
