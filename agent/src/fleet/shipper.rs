//! Ships the telemetry queue: one zstd batch at a time, oldest first, resent until the controller acks
//! it; only acked records are deleted. A reconnect after hours offline drains the backlog batch by batch.

use crate::link::Link;
use crate::telemetry::queue::TelemetryQueue;
use outpost_protocol::messages::Message;
use outpost_protocol::topics::Up;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How long to wait for an ack before sending the same batch again (the controller de-duplicates).
pub const ACK_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn ship(
    link: Link,
    queue: Arc<TelemetryQueue>,
    mut online: watch::Receiver<bool>,
    mut acked: watch::Receiver<u64>,
    max_bytes: usize,
) {
    loop {
        while !*online.borrow() {
            if online.changed().await.is_err() {
                return;
            }
        }
        let after = queue.acked_up_to().unwrap_or(0);
        let batch = match queue.batch_after(after, max_bytes) {
            Ok(Some(b)) => b,
            Ok(None) => {
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the telemetry queue");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let last = batch.last_seq;
        if let Err(e) = link.publish(Up::Telemetry, &Message::Telemetry(batch), true).await {
            tracing::debug!(error = %e, "telemetry batch not sent");
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        let timed_out = tokio::time::timeout(ACK_TIMEOUT, acked.wait_for(|a| *a >= last)).await.is_err();
        let up_to = *acked.borrow();
        if up_to > after
            && let Err(e) = queue.ack(up_to)
        {
            tracing::error!(error = %e, "cannot delete acked telemetry");
        }
        if timed_out {
            tracing::debug!(last, "no ack for a telemetry batch; sending again");
        }
    }
}
