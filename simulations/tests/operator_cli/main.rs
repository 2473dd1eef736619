//! The operator's CLI as operators read it (issue 16), against the real `outpost serve`, mosquitto and
//! in-process agents: `devices delete` decommissions a device (gone from lists, its retained desired
//! states cleared on the broker, its messages ignored, its id never back) and every verb's audit entry
//! names the operator whose token did it; errors say what to do.

#[path = "../support/mod.rs"]
mod support;

mod delete;
mod errors;
mod readme;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// An HTTP request to the controller with a plain socket, as any client would send it; (status, body).
fn http(port: u16, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    let status = buf.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// The retained messages the broker holds under `filter` (topic, payload length), read with a plain MQTT
/// client. The broker sends a subscription's retained messages before it handles the client's next packet,
/// so once a marker published after subscribing comes back, every retained message has arrived.
fn retained(broker_port: u16, filter: &str) -> Vec<(String, usize)> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let id = format!("reader-{}", std::process::id());
        let mut o = rumqttc::MqttOptions::new(id.clone(), "127.0.0.1", broker_port);
        o.set_keep_alive(Duration::from_secs(5));
        let (client, mut ev) = rumqttc::AsyncClient::new(o, 16);
        let marker = format!("test/{id}/marker");
        client.subscribe(filter, rumqttc::QoS::AtLeastOnce).await.unwrap();
        client.subscribe(&marker, rumqttc::QoS::AtLeastOnce).await.unwrap();
        client.publish(&marker, rumqttc::QoS::AtLeastOnce, false, b"end".to_vec()).await.unwrap();
        let mut got = Vec::new();
        let read = async {
            loop {
                if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) = ev.poll().await.unwrap() {
                    if p.topic == marker {
                        break;
                    }
                    got.push((p.topic.clone(), p.payload.len()));
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(20), read).await.expect("the marker came back");
        got
    })
}
