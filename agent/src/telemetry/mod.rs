//! Telemetry on the device: window aggregates, update events and device health are appended to a durable
//! queue whether or not the device is online, shipped in bounded batches when it is, and deleted only
//! once the controller acks them.
//!
//! Architecture invariant: nothing the queue acknowledged as written is lost on `kill -9` or power loss,
//! nothing is deleted before the controller acks it (or the size cap drops it, which the data itself then
//! says), and every record carries a sequence number that is never reused, so the controller de-duplicates
//! by `(device, sequence)`.

pub mod queue;
