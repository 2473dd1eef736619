//! The controller's device PKI: the CA ([`ca`]) and the pure check of device CSRs ([`csr`]). Devices get
//! a client certificate whose CN is their id; the broker's ACL keys on that CN (`use_identity_as_username`),
//! so a certificate is the device's right to its own topics and nothing else.

pub mod ca;
pub mod csr;
pub mod files;

pub use ca::{Ca, Issued, Leaf};

/// The controller's identity at the broker; the shipped mosquitto ACL grants it every device's topics.
pub const CONTROLLER_CN: &str = "outpost-controller";

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error(transparent)]
    File(#[from] crate::files::FileError),
    #[error("{0}")]
    X509(String),
    #[error("{0}")]
    Invalid(String),
}
