//! The queue between the MQTT poll loop and the message handler, bounded in messages and in bytes. It
//! used to be unbounded: a flood of publishes grew the controller's memory without limit. Now a full
//! queue makes the poll loop wait, so the backlog stays at the broker (which bounds its own queues) and
//! TCP slows the senders down.
//!
//! That wait is safe only because the handler never waits on the poll loop: only `eventloop.poll()`
//! drains the client's request channel, so a handler blocked on a full request channel while the poll
//! loop is blocked on a full inbox would freeze both. The handler therefore publishes with `try_publish`
//! (`Fleet::send`), and drops what does not fit: every reply is asked for again (telemetry is resent until
//! acknowledged, chunks and enrollment requests are repeated).

use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// Messages queued at most.
pub const MAX_MESSAGES: usize = 1_024;
/// Payload bytes queued at most (a message is at most 2 MiB, the broker's packet limit).
pub const MAX_BYTES: usize = 64 << 20;
/// Bytes are counted in KiB units (a semaphore has at most `u32` permits per acquire).
const UNIT: usize = 1024;

#[derive(Debug)]
pub struct Sender {
    tx: mpsc::Sender<(rumqttc::Publish, OwnedSemaphorePermit)>,
    bytes: Arc<Semaphore>,
    max_units: u32,
}

#[derive(Debug)]
pub struct Receiver {
    rx: mpsc::Receiver<(rumqttc::Publish, OwnedSemaphorePermit)>,
}

/// A message and its share of the byte bound, given back when this is dropped (after handling).
#[derive(Debug)]
pub struct Received {
    pub publish: rumqttc::Publish,
    _bytes: OwnedSemaphorePermit,
}

pub fn bounded(max_messages: usize, max_bytes: usize) -> (Sender, Receiver) {
    let (tx, rx) = mpsc::channel(max_messages);
    let units = (max_bytes / UNIT).max(1);
    let bytes = Arc::new(Semaphore::new(units));
    (Sender { tx, bytes, max_units: u32::try_from(units).unwrap_or(u32::MAX) }, Receiver { rx })
}

impl Sender {
    /// Queues `p`, waiting while the queue is full. `false` once the handler is gone.
    pub async fn send(&self, p: rumqttc::Publish) -> bool {
        let units = u32::try_from(p.payload.len().div_ceil(UNIT)).unwrap_or(u32::MAX).clamp(1, self.max_units);
        let Ok(permit) = self.bytes.clone().acquire_many_owned(units).await else { return false };
        self.tx.send((p, permit)).await.is_ok()
    }
}

impl Receiver {
    pub async fn recv(&mut self) -> Option<Received> {
        let (publish, permit) = self.rx.recv().await?;
        Some(Received { publish, _bytes: permit })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn publish(n: usize) -> rumqttc::Publish {
        rumqttc::Publish::new("outpost/v1/devices/d/up/telemetry", rumqttc::QoS::AtLeastOnce, vec![0u8; n])
    }

    /// How many of `offers` messages of `size` bytes go in before the sender has to wait.
    async fn fits(tx: &Sender, offers: usize, size: usize) -> usize {
        let mut n = 0;
        for _ in 0..offers {
            match tokio::time::timeout(Duration::from_millis(50), tx.send(publish(size))).await {
                Ok(true) => n += 1,
                _ => break,
            }
        }
        n
    }

    #[tokio::test]
    async fn a_flood_waits_at_the_message_and_byte_bounds_and_goes_on_as_the_handler_drains() {
        let (tx, mut rx) = bounded(8, 10 * UNIT);
        assert_eq!(fits(&tx, 100, 10).await, 8, "at most 8 messages");
        for _ in 0..8 {
            drop(rx.recv().await.unwrap());
        }
        assert_eq!(fits(&tx, 100, 3 * UNIT).await, 3, "at most 10 KiB");
        let held = rx.recv().await.unwrap();
        assert_eq!(fits(&tx, 100, 3 * UNIT).await, 0, "bytes come back only once a message is handled");
        drop(held);
        assert_eq!(fits(&tx, 100, 3 * UNIT).await, 1);
        drop(rx);
        assert!(!tx.send(publish(1)).await, "the handler is gone");
    }
}
