//! The network between devices and the broker: per-message delay (a minimum plus an exponential tail),
//! loss, duplication, reordering, corruption of chunks, and the broker's own semantics (retained desired
//! states, last wills, no delivery to a disconnected device).
//!
//! Modelling choices, stated because they decide what the runs prove:
//! - A lost message is gone for good and nothing retransmits it at the protocol level (stricter than a
//!   QoS 1 session, which redelivers in-flight messages after a reconnect). Connections also die on their
//!   own (`link_failures_per_hour`); the device notices at the keepalive and reconnects. Recovery rests on
//!   the application: retained desired states and hello on every connect, telemetry resent until
//!   acknowledged, chunk requests retried by the update machine.
//! - Messages to a disconnected device are lost (no queued QoS 1 session), except the retained desired
//!   state.
//! - Desired states of one model to one device are never reordered among themselves: the broker delivers
//!   one topic (`down/desired/{model}`) in order. Everything else may be overtaken, the desired states of
//!   two models by each other too.
//! - Bytes are the real frame sizes: the 4-byte codec header plus the postcard encoding of the real
//!   `outpost_protocol` message (a desired state as the signed director statement the controller publishes). Telemetry is counted uncompressed (the agent compresses a batch only when
//!   that pays, so real figures are at most these).

use super::world::{Ev, World};
use outpost_protocol::DeviceId;
use outpost_protocol::director::SignedDesired;
use outpost_protocol::keys::PrivateKey;
use outpost_protocol::messages::{Chunk, DesiredState, Message, TelemetryAck};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Broker → device messages. Chunks name the release and index; the device reads the bytes from the
/// catalog (the same bytes the controller's bundle store holds) and checks them against the digest.
#[derive(Debug, Clone)]
pub enum Down {
    Desired(Arc<Published>),
    /// Model `m`'s retained desired state cleared.
    Withdrawn(u8),
    Chunk {
        release: u8,
        index: u32,
        corrupt: bool,
    },
    Ack(u64),
}

/// A desired state as `outpost serve` publishes it on `down/desired/{model}`: the director's statement for
/// one device, signed by the controller (`daemon/fleet.rs` `signed_desired`). The device takes the signed
/// frame; `desired` is what it says, kept beside it for the simulator's own bookkeeping.
#[derive(Debug)]
pub struct Published {
    pub desired: DesiredState,
    pub signed: SignedDesired,
}

impl Published {
    /// Signs `desired` for `device` with the director key `key`.
    pub fn new(device: &DeviceId, desired: DesiredState, key: &PrivateKey) -> Published {
        let signed = SignedDesired::sign(device, &desired, key);
        Published { desired, signed }
    }
}

/// Counts per message kind.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Kind {
    pub sent: u64,
    pub bytes: u64,
    pub dropped: u64,
    pub duplicated: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Traffic {
    /// By kind name, sorted, so the report is stable.
    pub kinds: BTreeMap<&'static str, Kind>,
    pub corrupted_chunks: u64,
    /// Published while the device was not connected (lost, or left to the retained state).
    pub undeliverable: u64,
}

impl Traffic {
    pub fn total(&self) -> Kind {
        let mut t = Kind::default();
        for k in self.kinds.values() {
            t.sent += k.sent;
            t.bytes += k.bytes;
            t.dropped += k.dropped;
            t.duplicated += k.duplicated;
        }
        t
    }
}

const FRAME_HEADER: u64 = 4;

fn up_kind(m: &Message) -> &'static str {
    match m {
        Message::Hello(_) => "up/hello",
        Message::Telemetry(_) => "up/telemetry",
        Message::Event(_) => "up/events",
        Message::ChunkRequest(_) => "up/fetch",
        Message::Presence(_) => "up/presence",
        _ => "up/other",
    }
}

fn varint_len(mut n: u64) -> u64 {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

/// The encoded size of a message, through a reusable buffer (no allocation per message).
fn encoded_len(scratch: &mut Vec<u8>, m: &Message) -> u64 {
    loop {
        match postcard::to_slice(m, scratch) {
            Ok(used) => return FRAME_HEADER + used.len() as u64,
            Err(_) => {
                let n = scratch.len().max(1024) * 2;
                scratch.resize(n, 0);
            }
        }
    }
}

impl World {
    fn delay(&mut self) -> u64 {
        let f = &self.scenario.fabric;
        let (min, mean, reorder, reorder_ms) = (f.delay_min_ms, f.delay_mean_ms as f64, f.reorder, f.reorder_ms);
        let mut d = min + self.rng.exp(mean) as u64;
        if self.rng.chance(reorder) {
            d += self.rng.range(0, reorder_ms);
        }
        d
    }

    fn count(&mut self, kind: &'static str, bytes: u64) {
        let k = self.traffic.kinds.entry(kind).or_default();
        k.sent += 1;
        k.bytes += bytes;
    }

    /// A device publishes `m` (only while connected; the caller keeps what must survive, like telemetry).
    pub fn dev_send(&mut self, dev: u32, m: Message) {
        let d = &self.devices[dev as usize];
        if !d.link.up {
            return;
        }
        let kind = up_kind(&m);
        let bytes = encoded_len(&mut self.ctl.scratch, &m);
        self.count(kind, bytes);
        if self.rng.chance(self.scenario.fabric.drop) {
            self.traffic.kinds.get_mut(kind).expect("counted").dropped += 1;
            return;
        }
        if self.rng.chance(self.scenario.fabric.duplicate) {
            self.traffic.kinds.get_mut(kind).expect("counted").duplicated += 1;
            let delay = self.delay();
            self.q.after(delay, Ev::ToController { dev, msg: Box::new(m.clone()) });
        }
        let delay = self.delay();
        self.q.after(delay, Ev::ToController { dev, msg: Box::new(m) });
    }

    /// The controller publishes to a device through the broker.
    pub fn ctl_send(&mut self, dev: u32, msg: Down) {
        let (kind, bytes) = self.down_size(&msg);
        self.count(kind, bytes);
        let d = &self.devices[dev as usize];
        if !d.link.up || !self.ctl.broker_up {
            self.traffic.undeliverable += 1;
            return;
        }
        let conn = d.link.conn;
        if self.rng.chance(self.scenario.fabric.drop) {
            self.traffic.kinds.get_mut(kind).expect("counted").dropped += 1;
            return;
        }
        let msg = match msg {
            Down::Chunk { release, index, .. } if self.rng.chance(self.scenario.fabric.corrupt_chunks) => {
                self.traffic.corrupted_chunks += 1;
                Down::Chunk { release, index, corrupt: true }
            }
            m => m,
        };
        let topic = match &msg {
            Down::Desired(p) => Some(self.catalog.index(p.desired.model.as_str()).unwrap_or(0)),
            Down::Withdrawn(m) => Some(*m),
            _ => None,
        };
        let copies = if self.rng.chance(self.scenario.fabric.duplicate) {
            self.traffic.kinds.get_mut(kind).expect("counted").duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut at = self.now_ms() + self.delay();
            if let Some(m) = topic {
                // One topic, in order: never before the previous desired state of this model to this device.
                let last = &mut self.devices[dev as usize].link.last_desired_at;
                if last.len() <= m as usize {
                    last.resize(m as usize + 1, 0);
                }
                at = at.max(last[m as usize] + 1);
                last[m as usize] = at;
            }
            self.q.at(at, Ev::ToDevice { dev, conn, msg: msg.clone() });
        }
    }

    fn down_size(&mut self, msg: &Down) -> (&'static str, u64) {
        match msg {
            // The frame the broker carries: the signed statement (signature, key id, device id and all).
            Down::Desired(p) => {
                let m = Message::SignedDesired(p.signed.clone());
                ("down/desired", encoded_len(&mut self.ctl.scratch, &m))
            }
            // An empty retained publish clears the state: no payload at all.
            Down::Withdrawn(_) => ("down/desired", 0),
            Down::Ack(n) => (
                "down/ack",
                encoded_len(
                    &mut self.ctl.scratch,
                    &Message::TelemetryAck(TelemetryAck { up_to_seq: *n, hello_wanted: false }),
                ),
            ),
            Down::Chunk { release, index, .. } => {
                // Encode the real message with empty data, then add the data and its longer length prefix.
                let r = self.catalog.get(*release);
                let len = r.chunk_data[*index as usize].len() as u64;
                let total = r.bundle.chunks.len() as u32;
                let empty = Message::Chunk(Chunk { bundle: r.bundle.digest, index: *index, total, data: vec![] });
                ("down/chunk", encoded_len(&mut self.ctl.scratch, &empty) - 1 + varint_len(len) + len)
            }
        }
    }

    /// The device's connection dies. The broker publishes its last will after the keepalive; the device
    /// notices at its own keepalive and starts reconnecting. A powered-off device does not reconnect.
    pub fn break_link(&mut self, dev: u32) {
        let keepalive = self.scenario.fabric.keepalive_secs * 1000;
        let d = &mut self.devices[dev as usize];
        if !d.link.up {
            return;
        }
        d.link.up = false;
        let (conn, boot_id) = (d.link.conn, d.boot_id);
        if self.ctl.broker_up {
            self.q.after(keepalive * 3 / 2, Ev::LastWill { dev, conn, boot_id });
        }
        self.q.after(keepalive, Ev::LinkLost { dev, conn });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_have_the_postcard_lengths() {
        for (n, len) in [(0, 1), (127, 1), (128, 2), (16_383, 2), (16_384, 3), (u64::from(u32::MAX), 5)] {
            assert_eq!(varint_len(n), len, "{n}");
            assert_eq!(postcard::to_allocvec(&n).unwrap().len() as u64, len, "{n}");
        }
    }
}
