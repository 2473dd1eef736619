//! `outpost certs init | issue --device ID | server --host NAME | controller`: the device CA in the
//! controller's data directory and the certificates operators install on the broker, the controller and
//! (without enrollment) devices. All keys are ECDSA P-256; private keys are written mode 0600.

use super::{Failure, Output};
use crate::pki::{self, Ca, Leaf, PkiError};
use outpost_protocol::DeviceId;
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
    /// Where `outpost serve` keeps its data; the CA is in its `ca/` folder.
    #[arg(long = "data-dir", default_value = "outpost-data", global = true)]
    data_dir: PathBuf,
    /// table for people, json for scripts (documented shapes: docs/cli-json.md).
    #[arg(short = 'o', long = "output", value_enum, default_value_t, global = true)]
    output: Output,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Make the device CA (ca/ca.key mode 0600, ca/ca.pem, ca/crl.pem). Other commands make it at first need.
    ///
    /// Example: outpost certs init --data-dir outpost-data
    Init,
    /// Issue a device's client certificate (CN = device id): DIR/ID.key and DIR/ID.crt, or only DIR/ID.crt
    /// for a CSR made on the device (--csr).
    ///
    /// Example: outpost certs issue --device edge-eu-01 --out certs
    Issue {
        /// The device id (the certificate's CN).
        #[arg(long)]
        device: String,
        /// The directory to write into.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// A PKCS#10 request (PEM or DER) made on the device; its subject must be CN=<device>.
        #[arg(long)]
        csr: Option<PathBuf>,
        /// How long the certificate lasts (e.g. 365d). The controller learns its key from the CA's issued
        /// log, so the id is bound to it: enrollment with another key is refused, and the device may renew
        /// it over the enrollment endpoint in the second half of this lifetime.
        #[arg(long, default_value = "365d")]
        lifetime: String,
    },
    /// Issue the broker's server certificate for a DNS name or IP address: DIR/server.{key,crt}.
    ///
    /// Example: outpost certs server --host broker.example.com --out /etc/mosquitto/outpost
    Server {
        /// The broker's DNS name or IP address, as devices connect to it.
        #[arg(long)]
        host: String,
        /// The directory to write into.
        #[arg(long)]
        out: PathBuf,
    },
    /// Issue the controller's client certificate (CN = outpost-controller): DIR/controller.{key,crt}.
    ///
    /// Example: outpost certs controller --out pki
    Controller {
        /// The directory to write into.
        #[arg(long)]
        out: PathBuf,
    },
}

fn err(e: impl std::fmt::Display) -> Failure {
    Failure::Error(e.to_string())
}

fn now() -> u64 {
    crate::release::now()
}

fn ca(data_dir: &Path) -> Result<Ca, Failure> {
    let dir = data_dir.join("ca");
    if !Ca::exists(&dir) {
        let ca = Ca::init(&dir, now()).map_err(err)?;
        eprintln!("made the device CA in {}", dir.display());
        return Ok(ca);
    }
    Ca::open(&dir).map_err(err)
}

/// Reads a CSR file, PEM (`CERTIFICATE REQUEST`) or DER.
fn read_csr(path: &Path) -> Result<Vec<u8>, Failure> {
    use rustls_pki_types::CertificateSigningRequestDer;
    use rustls_pki_types::pem::PemObject;
    let bytes = crate::files::read(path).map_err(err)?;
    if bytes.starts_with(b"-----BEGIN") {
        return CertificateSigningRequestDer::from_pem_slice(&bytes)
            .map(|d| d.as_ref().to_vec())
            .map_err(|e| Failure::Error(format!("{}: not a PEM certificate request ({e})", path.display())));
    }
    Ok(bytes)
}

fn print_written(what: &str, paths: &[PathBuf], output: Output) {
    let list: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    match output {
        Output::Json => super::json::print(&serde_json::json!({"what": what, "files": list})),
        Output::Table => println!("{what}: {}", list.join(", ")),
    }
}

pub fn run(a: Args) -> Result<(), Failure> {
    match a.command {
        Command::Init => {
            let dir = a.data_dir.join("ca");
            Ca::init(&dir, now()).map_err(err)?;
            let (key, cert, crl) = (Ca::key_path(&dir), Ca::cert_path(&dir), Ca::crl_path(&dir));
            match a.output {
                Output::Json => super::json::print(&serde_json::json!({
                    "key": key.display().to_string(), "certificate": cert.display().to_string(),
                    "crl": crl.display().to_string(),
                })),
                Output::Table => println!(
                    "device CA: {} (private, mode 0600), {}, revocation list {}",
                    key.display(),
                    cert.display(),
                    crl.display()
                ),
            }
            Ok(())
        }
        Command::Issue { device, out, csr, lifetime } => {
            let lifetime = crate::duration::parse(&lifetime).map_err(|e| Failure::Error(format!("--lifetime: {e}")))?;
            let id = DeviceId::new(device.clone()).map_err(|e| Failure::Error(format!("--device {device:?}: {e}")))?;
            if id.as_str() == pki::CONTROLLER_CN {
                return Err(Failure::Error(format!(
                    "--device {device:?} is the controller's identity; use `outpost certs controller`"
                )));
            }
            let ca = ca(&a.data_dir)?.with_device_lifetime(lifetime.as_secs());
            let written = match csr {
                Some(path) => {
                    let checked = pki::csr::check(&read_csr(&path)?, &id)
                        .map_err(|e| Failure::Error(format!("{}: {e}", path.display())))?;
                    let issued = ca.issue_for_csr(&id, &checked, now()).map_err(err)?;
                    pki::files::write_identity(&out, id.as_str(), None, &issued.cert_pem, ca.cert_pem())
                }
                None => issue_with_key(&ca, &Leaf::Device(id.clone()), &out, id.as_str()),
            }
            .map_err(err)?;
            print_written(&format!("device {id}"), &written, a.output);
            Ok(())
        }
        Command::Server { host, out } => {
            let ca = ca(&a.data_dir)?;
            let written = issue_with_key(&ca, &Leaf::Server(host.clone()), &out, "server").map_err(err)?;
            print_written(&format!("broker server certificate for {host}"), &written, a.output);
            Ok(())
        }
        Command::Controller { out } => {
            let ca = ca(&a.data_dir)?;
            let written = issue_with_key(&ca, &Leaf::Controller, &out, "controller").map_err(err)?;
            print_written(&format!("controller identity ({})", pki::CONTROLLER_CN), &written, a.output);
            Ok(())
        }
    }
}

fn issue_with_key(ca: &Ca, leaf: &Leaf, out: &Path, name: &str) -> Result<Vec<PathBuf>, PkiError> {
    // Refuse before issuing: a certificate whose key could not be written is a wasted serial in the log.
    for p in [out.join(format!("{name}.key")), out.join(format!("{name}.crt"))] {
        if p.exists() {
            return Err(PkiError::Invalid(format!("{} exists; refusing to overwrite it", p.display())));
        }
    }
    let key = pki::ca::new_key()?;
    let issued = ca.issue(leaf, &key, now())?;
    pki::files::write_identity(out, name, Some(&key.serialize_pem()), &issued.cert_pem, ca.cert_pem())
}
