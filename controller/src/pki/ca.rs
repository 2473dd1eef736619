//! The device CA: one ECDSA P-256 key and self-signed certificate in the controller's data directory
//! (`<data>/ca/ca.key`, mode 0600, and `ca.pem`). It issues device client certificates (CN = device id),
//! the controller's client certificate (CN = `outpost-controller`) and the broker's server certificate,
//! logs every issue to `issued.jsonl`, and writes the revocation list `crl.pem` for the broker.

use super::csr::{CheckedCsr, key_fingerprint};
use super::{CONTROLLER_CN, PkiError};
use crate::files;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, RevokedCertParams, SerialNumber,
};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

const DAY: i64 = 86_400;
/// The CA outlives every certificate it issues.
const CA_DAYS: i64 = 20 * 365;
/// The broker's and the controller's certificates: installed by hand, so they last.
const LEAF_DAYS: i64 = 10 * 365;
/// A device certificate's default lifetime. Devices renew theirs in the second half of it (the agent
/// asks from two thirds on), so a stolen certificate stops working within a year even unrevoked.
pub const DEVICE_LIFETIME_SECS: u64 = 365 * 86_400;
/// Certificates start up to an hour back (a tenth of a short lifetime): a device or broker whose clock
/// lags still accepts them.
const BACKDATE: i64 = 3600;

/// One line of `issued.jsonl`: which serial went to which subject, so revoking a device revokes every
/// certificate it ever got, whether the daemon or `outpost certs issue` made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedCert {
    pub serial: String,
    pub subject: String,
    pub kind: String,
    pub at: u64,
    /// SHA-256 of the certificate's public key (hex; the same fingerprint enrollment binds an id to), so
    /// the daemon knows the key of a certificate `outpost certs issue` made. Absent in older lines.
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub not_before: Option<u64>,
    /// Absent in older lines (10-year certificates).
    #[serde(default)]
    pub not_after: Option<u64>,
}

pub struct Ca {
    dir: PathBuf,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
    device_lifetime: u64,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").field("dir", &self.dir).finish_non_exhaustive()
    }
}

fn at(unix: i64) -> Result<OffsetDateTime, PkiError> {
    OffsetDateTime::from_unix_timestamp(unix).map_err(|e| PkiError::Invalid(format!("time {unix}: {e}")))
}

fn x509(what: &str, e: rcgen::Error) -> PkiError {
    PkiError::X509(format!("{what}: {e}"))
}

fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| PkiError::Invalid(format!("no OS randomness for a serial: {e}")))?;
    bytes[0] &= 0x7f; // positive, as RFC 5280 asks
    bytes[0] |= 0x01; // and 16 bytes long, never shortened by leading zeros
    Ok(SerialNumber::from_slice(&bytes))
}

/// A fresh ECDSA P-256 key (PKCS#8 PEM through `serialize_pem`).
pub fn new_key() -> Result<KeyPair, PkiError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| x509("key generation", e))
}

/// The three kinds of leaf certificate the CA issues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leaf {
    /// A device: CN = device id, client authentication only.
    Device(outpost_protocol::DeviceId),
    /// The controller's client identity at the broker.
    Controller,
    /// The broker: a server certificate for a DNS name or IP address.
    Server(String),
}

impl Leaf {
    fn kind(&self) -> &'static str {
        match self {
            Leaf::Device(_) => "device",
            Leaf::Controller => "controller",
            Leaf::Server(_) => "server",
        }
    }

    fn subject(&self) -> String {
        match self {
            Leaf::Device(id) => id.to_string(),
            Leaf::Controller => CONTROLLER_CN.to_owned(),
            Leaf::Server(host) => host.clone(),
        }
    }

    fn params(&self, now: i64, device_lifetime: u64) -> Result<CertificateParams, PkiError> {
        let mut p = match self {
            Leaf::Server(host) => CertificateParams::new(vec![host.clone()])
                .map_err(|e| PkiError::Invalid(format!("server name {host:?}: {e}")))?,
            _ => CertificateParams::default(),
        };
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, self.subject());
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![match self {
            Leaf::Server(_) => ExtendedKeyUsagePurpose::ServerAuth,
            _ => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        p.use_authority_key_identifier_extension = true;
        let lifetime = match self {
            Leaf::Device(_) => i64::try_from(device_lifetime).unwrap_or(i64::MAX / 2).max(1),
            _ => LEAF_DAYS * DAY,
        };
        p.not_before = at(now - BACKDATE.min(lifetime / 10))?;
        p.not_after = at(now.saturating_add(lifetime))?;
        p.serial_number = Some(random_serial()?);
        Ok(p)
    }
}

/// A certificate the CA just issued.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub serial: String,
    pub not_before: u64,
    pub not_after: u64,
}

impl Ca {
    pub fn key_path(dir: &Path) -> PathBuf {
        dir.join("ca.key")
    }
    pub fn cert_path(dir: &Path) -> PathBuf {
        dir.join("ca.pem")
    }
    pub fn crl_path(dir: &Path) -> PathBuf {
        dir.join("crl.pem")
    }

    pub fn exists(dir: &Path) -> bool {
        Ca::key_path(dir).exists() && Ca::cert_path(dir).exists()
    }

    /// Makes a new CA in `dir` (key 0600, certificate, empty CRL). Refuses if one is there: replacing a
    /// CA silently would cut off every enrolled device.
    pub fn init(dir: &Path, now: u64) -> Result<Ca, PkiError> {
        if Ca::key_path(dir).exists() || Ca::cert_path(dir).exists() {
            return Err(PkiError::Invalid(format!("{} already holds a CA; refusing to replace it", dir.display())));
        }
        std::fs::create_dir_all(dir).map_err(|source| files::FileError { path: dir.to_owned(), source })?;
        let now = now as i64;
        let key = new_key()?;
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, "Outpost device CA");
        // pathlen 0: this CA signs leaves only, never another CA.
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        p.not_before = at(now - BACKDATE)?;
        p.not_after = at(now + CA_DAYS * DAY)?;
        p.serial_number = Some(random_serial()?);
        let cert = p.self_signed(&key).map_err(|e| x509("CA certificate", e))?;
        files::write_atomic(&Ca::key_path(dir), key.serialize_pem().as_bytes(), Some(0o600))?;
        files::write_atomic(&Ca::cert_path(dir), cert.pem().as_bytes(), None)?;
        let ca = Ca {
            dir: dir.to_owned(),
            cert_pem: cert.pem(),
            issuer: Issuer::new(p, key),
            device_lifetime: DEVICE_LIFETIME_SECS,
        };
        ca.write_crl(&[], now as u64)?;
        Ok(ca)
    }

    pub fn open(dir: &Path) -> Result<Ca, PkiError> {
        let key_path = Ca::key_path(dir);
        let key_pem = files::read_string(&key_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| x509(&key_path.display().to_string(), e))?;
        let cert_pem = files::read_string(&Ca::cert_path(dir))?;
        let issuer =
            Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| x509(&Ca::cert_path(dir).display().to_string(), e))?;
        Ok(Ca { dir: dir.to_owned(), cert_pem, issuer, device_lifetime: DEVICE_LIFETIME_SECS })
    }

    /// Opens the CA in `dir`, making it at first need.
    pub fn open_or_init(dir: &Path, now: u64) -> Result<Ca, PkiError> {
        if Ca::exists(dir) { Ca::open(dir) } else { Ca::init(dir, now) }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Sets how long device certificates last from now on (`[enroll] cert_lifetime`, `certs issue
    /// --lifetime`).
    pub fn with_device_lifetime(mut self, secs: u64) -> Ca {
        self.device_lifetime = secs.max(1);
        self
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a certificate for a device whose CSR passed `csr::check` (its key never left the device).
    pub fn issue_for_csr(
        &self,
        device: &outpost_protocol::DeviceId,
        csr: &CheckedCsr,
        now: u64,
    ) -> Result<Issued, PkiError> {
        self.issue(&Leaf::Device(device.clone()), &csr.public_key, now)
    }

    /// Issues a certificate of `leaf` for `public_key`, and logs it.
    pub fn issue(&self, leaf: &Leaf, public_key: &impl PublicKeyData, now: u64) -> Result<Issued, PkiError> {
        let params = leaf.params(now as i64, self.device_lifetime)?;
        let serial = hex::encode(params.serial_number.as_ref().expect("set above").to_bytes());
        let (not_before, not_after) =
            (params.not_before.unix_timestamp() as u64, params.not_after.unix_timestamp() as u64);
        let cert = params.signed_by(public_key, &self.issuer).map_err(|e| x509("certificate", e))?;
        self.log(&IssuedCert {
            serial: serial.clone(),
            subject: leaf.subject(),
            kind: leaf.kind().into(),
            at: now,
            key: Some(key_fingerprint(public_key.der_bytes())),
            not_before: Some(not_before),
            not_after: Some(not_after),
        })?;
        Ok(Issued { cert_pem: cert.pem(), serial, not_before, not_after })
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("issued.jsonl")
    }

    /// Holds `issued.lock` exclusively: the daemon and `outpost certs` append to the log, and compaction
    /// rewrites it, possibly at the same time.
    fn locked(&self) -> Result<std::fs::File, PkiError> {
        let path = self.dir.join("issued.lock");
        let err = |source| files::FileError { path: path.clone(), source };
        let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(err)?;
        f.lock().map_err(err)?;
        Ok(f)
    }

    fn log(&self, entry: &IssuedCert) -> Result<(), PkiError> {
        let _lock = self.locked()?;
        let path = self.log_path();
        let err = |source| files::FileError { path: path.clone(), source };
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(err)?;
        let mut line = serde_json::to_vec(entry).expect("serializable");
        line.push(b'\n');
        f.write_all(&line).map_err(err)?;
        f.sync_all().map_err(err)?;
        Ok(())
    }

    /// Drops the lines of certificates that expired before `now` (they need no revocation: TLS refuses
    /// them anyway), so the log holds at most the live certificates; returns how many were dropped.
    /// Renewals add a line per device per half lifetime, and this keeps that from adding up.
    pub fn compact(&self, now: u64) -> Result<usize, PkiError> {
        let _lock = self.locked()?;
        let all = self.issued()?;
        let live: Vec<&IssuedCert> = all.iter().filter(|c| c.not_after.is_none_or(|t| t > now)).collect();
        let dropped = all.len() - live.len();
        if dropped > 0 {
            let mut text = Vec::new();
            for c in live {
                text.extend(serde_json::to_vec(c).expect("serializable"));
                text.push(b'\n');
            }
            files::write_atomic(&self.log_path(), &text, None)?;
        }
        Ok(dropped)
    }

    /// Every certificate this CA issued (lines that do not parse are skipped: the log only grows).
    pub fn issued(&self) -> Result<Vec<IssuedCert>, PkiError> {
        let path = self.log_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => return Err(files::FileError { path, source }.into()),
        };
        Ok(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
    }

    /// Writes `crl.pem` listing every certificate ever issued to a revoked device; returns its path.
    /// `revoked` is (device id, when it was revoked).
    pub fn write_crl(&self, revoked: &[(String, u64)], now: u64) -> Result<PathBuf, PkiError> {
        let issued = self.issued()?;
        let mut revoked_certs = Vec::new();
        for (subject, when) in revoked {
            let live = |c: &&IssuedCert| c.not_after.is_none_or(|t| t > now);
            for c in issued.iter().filter(|c| c.kind == "device" && &c.subject == subject).filter(live) {
                let bytes =
                    hex::decode(&c.serial).map_err(|e| PkiError::Invalid(format!("serial {}: {e}", c.serial)))?;
                revoked_certs.push(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&bytes),
                    revocation_time: at(*when as i64)?,
                    reason_code: None,
                    invalidity_date: None,
                });
            }
        }
        let now = now as i64;
        let params = CertificateRevocationListParams {
            this_update: at(now - 60)?,
            // OpenSSL (so mosquitto) refuses every client once the CRL is past its next update: the controller
            // rewrites it on every start and revocation, and it stays valid for the CA's lifetime meanwhile.
            next_update: at(now + CA_DAYS * DAY)?,
            crl_number: SerialNumber::from(now as u64),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.issuer).map_err(|e| x509("CRL", e))?;
        let path = Ca::crl_path(&self.dir);
        files::write_atomic(&path, crl.pem().map_err(|e| x509("CRL", e))?.as_bytes(), None)?;
        Ok(path)
    }
}
