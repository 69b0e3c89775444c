//! zonecert's own certificate authority: an ECDSA P-256 root kept in the data directory, with
//! an RSA issuing CA below it for RSA leaves.

use std::fmt;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256, RsaKeySize, SanType,
    SerialNumber,
};
use time::{Duration, OffsetDateTime, UtcOffset};
use x509_parser::certificate::X509Certificate;
use x509_parser::oid_registry::{OID_PKCS1_SHA256WITHRSA, OID_SIG_ECDSA_WITH_SHA256};

use super::IssuanceError;
use super::atomic_file::{StagedDir, lock_dir, sync_dir, write_atomic};
use super::leaf::{
    IssueRequest, IssuedLeaf, KeyType, PrivateKeyPem, SIGNATURE_ECDSA_SHA256, SIGNATURE_RSA_SHA256,
    check_hosts,
};
use super::leaf_key::LeafKey;

const CA_DIR: &str = "ca";
const ROOT_CERT: &str = "ca.pem";
const ROOT_KEY: &str = "ca-key.pem";
const RSA_CERT: &str = "rsa-issuer.pem";
const RSA_KEY: &str = "rsa-issuer-key.pem";
/// The CA's files, in the order a creation writes them.
const CA_FILES: [&str; 4] = [ROOT_CERT, ROOT_KEY, RSA_CERT, RSA_KEY];
/// Serialises the processes that create or check the CA; in the data directory, because
/// `ca/` itself appears in one rename.
const DATA_DIR_LOCK_FILE: &str = ".ca.lock";

/// About ten years: the root outlives any leaf (at most 365 days) many times over.
const CA_LIFETIME: Duration = Duration::days(3652);
/// CA certificates start a little in the past so clients with a slow clock accept leaves
/// issued right after the CA was created.
const CA_BACKDATE: Duration = Duration::hours(1);
/// The RFC 5280 upper bound of a common name; longer first hosts go only in the SANs.
const MAX_COMMON_NAME: usize = 64;

/// The built-in CA, loaded into memory once so issuing a certificate costs one key generation
/// and one signature.
///
/// Its files live in `<data_dir>/ca/`: `ca.pem` (the root to trust, what `zonecert ca export`
/// prints), `ca-key.pem`, and the RSA issuing CA `rsa-issuer.pem` / `rsa-issuer-key.pem`. Key
/// files have mode 0600 and the directory 0700 when zonecert creates it.
pub struct BuiltinCa {
    dir: PathBuf,
    root: Authority,
    rsa: Authority,
    /// PEM of the CA certificates that follow an ECDSA leaf in its chain (the root).
    ecdsa_chain_tail: String,
    /// PEM of the CA certificates that follow an RSA leaf (the RSA issuer, then the root).
    rsa_chain_tail: String,
}

/// One CA certificate with its parsed signing key.
struct Authority {
    cert_pem: String,
    common_name: String,
    not_after: OffsetDateTime,
    signer: rcgen::Issuer<'static, KeyPair>,
}

impl fmt::Debug for BuiltinCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BuiltinCa")
            .field("dir", &self.dir)
            .field("name", &self.root.common_name)
            .field("not_after", &self.root.not_after)
            .field("rsa_issuer", &self.rsa.common_name)
            .finish_non_exhaustive()
    }
}

impl BuiltinCa {
    /// Loads the CA from `<data_dir>/ca/`, creating it there first if it does not exist.
    ///
    /// Several processes or threads may call this at once on the same directory: an exclusive
    /// lock on `<data_dir>/.ca.lock` serialises them, so exactly one creates the CA and the
    /// others load it. A new CA is built whole in a temporary directory (every file written
    /// and fsynced) and renamed to `ca/` in one step, so `ca/` holds the whole CA or does
    /// not exist, and any partial CA found there is damage: see [`BuiltinCa::load_existing`].
    pub fn load_or_create(data_dir: &Path) -> Result<Self, IssuanceError> {
        match Self::open(data_dir, true)? {
            Some(ca) => Ok(ca),
            None => Err(IssuanceError::CaUnusable {
                dir: data_dir.join(CA_DIR),
                reason: "it was not created".into(),
            }),
        }
    }

    /// Loads the CA from `<data_dir>/ca/` if there is one (`None` when there is no `ca/`),
    /// creating nothing: what a server checks at start, whether or not its lifecycle runs.
    ///
    /// A CA is never silently replaced, since clients may already trust it: a certificate
    /// without its key or a key without its certificate, a key that does not belong to its
    /// certificate, or an RSA issuing CA not signed by the root is an error naming the
    /// files. (A root without any RSA issuer files is a CA from before the RSA issuer: the
    /// issuer is then created under that root, which replaces nothing.)
    pub fn load_existing(data_dir: &Path) -> Result<Option<Self>, IssuanceError> {
        Self::open(data_dir, false)
    }

    fn open(data_dir: &Path, create: bool) -> Result<Option<Self>, IssuanceError> {
        let dir = data_dir.join(CA_DIR);
        if !create && !exists(&dir)? {
            return Ok(None);
        }
        let lock = lock_dir(data_dir, 0o700, DATA_DIR_LOCK_FILE)?;
        let files = CA_FILES.map(|name| exists(&dir.join(name)).map(|there| (name, there)));
        let files = files.into_iter().collect::<Result<Vec<_>, _>>()?;
        let present: Vec<&str> = files.iter().filter(|f| f.1).map(|f| f.0).collect();
        let (root, rsa) = match present.as_slice() {
            [] if !create => return Ok(None),
            [] => create_ca(data_dir, &dir)?,
            [ROOT_CERT, ROOT_KEY] => {
                let root = load_authority(&dir, ROOT_CERT, ROOT_KEY)?;
                let rsa = create_rsa_issuer(&dir, &root)?;
                (root, rsa)
            }
            [ROOT_CERT, ROOT_KEY, RSA_CERT, RSA_KEY] => {
                let root = load_authority(&dir, ROOT_CERT, ROOT_KEY)?;
                let rsa = load_authority(&dir, RSA_CERT, RSA_KEY)?;
                check_signed_by_root(&dir, &rsa, &root)?;
                (root, rsa)
            }
            _ => return Err(partial_ca(&dir, &files)),
        };
        drop(lock);

        let ecdsa_chain_tail = root.cert_pem.clone();
        let rsa_chain_tail = format!("{}{}", rsa.cert_pem, root.cert_pem);
        Ok(Some(BuiltinCa {
            dir,
            root,
            rsa,
            ecdsa_chain_tail,
            rsa_chain_tail,
        }))
    }

    /// The root certificate, PEM: what clients must trust.
    pub fn certificate_pem(&self) -> &str {
        &self.root.cert_pem
    }

    /// The root's common name, "zonecert built-in CA (<id>)".
    pub fn name(&self) -> &str {
        &self.root.common_name
    }

    /// The RSA issuing CA's certificate, PEM (signed by the root; part of RSA chains).
    pub fn rsa_issuer_pem(&self) -> &str {
        &self.rsa.cert_pem
    }

    /// When the root expires.
    pub fn not_after(&self) -> OffsetDateTime {
        self.root.not_after
    }

    /// The directory holding the CA's files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Generates a key pair of `req.key_type` and signs a server certificate for `req.hosts`.
    ///
    /// ECDSA leaves are signed by the ECDSA root, RSA leaves by the RSA issuing CA, so the
    /// leaf's signature algorithm matches its key type, as with public CAs (Let's Encrypt's E
    /// and R intermediates).
    pub fn issue(&self, req: &IssueRequest) -> Result<IssuedLeaf, IssuanceError> {
        check_hosts(&req.hosts)?;
        let not_before = whole_second_utc(req.not_before)?;
        let not_after = whole_second_utc(req.not_after)?;
        if not_after <= not_before {
            return Err(IssuanceError::InvalidRequest(format!(
                "not_after ({not_after}) must be later than not_before ({not_before})"
            )));
        }

        let (authority, chain_tail) = match req.key_type {
            KeyType::EcdsaP256 => (&self.root, &self.ecdsa_chain_tail),
            KeyType::Rsa2048 => (&self.rsa, &self.rsa_chain_tail),
        };
        let key = LeafKey::generate(req.key_type)?;
        if not_after > authority.not_after {
            return Err(IssuanceError::InvalidRequest(format!(
                "not_after ({not_after}) is past the expiry of {} ({})",
                authority.common_name, authority.not_after
            )));
        }

        let mut params = CertificateParams::default();
        params.not_before = not_before;
        params.not_after = not_after;
        params.serial_number = Some(random_serial());
        params.distinguished_name = DistinguishedName::new();
        if let Some(first) = req.hosts.first().filter(|h| h.len() <= MAX_COMMON_NAME) {
            params
                .distinguished_name
                .push(DnType::CommonName, first.as_str());
        }
        params.subject_alt_names = req
            .hosts
            .iter()
            .map(|h| Ok(SanType::DnsName(h.as_str().try_into()?)))
            .collect::<Result<_, rcgen::Error>>()?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = match req.key_type {
            KeyType::EcdsaP256 => vec![KeyUsagePurpose::DigitalSignature],
            // RSA key exchange (TLS 1.2 without forward secrecy) encrypts to the key.
            KeyType::Rsa2048 => vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ],
        };
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;

        let cert = params.signed_by(&key, &authority.signer)?;
        let (_, x509) = x509_parser::parse_x509_certificate(cert.der()).map_err(|e| {
            IssuanceError::Generation(format!("the new certificate does not parse: {e}"))
        })?;
        let leaf_pem = cert.pem();
        let chain_pem = format!("{leaf_pem}{chain_tail}");
        Ok(IssuedLeaf {
            serial_hex: hex(x509.raw_serial()),
            hosts: req.hosts.clone(),
            chain_pem,
            leaf_pem,
            key_pem: PrivateKeyPem::new(key.private_key_pem()?),
            not_before: x509.validity().not_before.to_datetime(),
            not_after: x509.validity().not_after.to_datetime(),
            signature: signature_name(&x509)?,
            issuer: common_name(&x509, false),
        })
    }
}

/// Whether `path` exists (a dangling symlink counts: it is something to explain).
fn exists(path: &Path) -> Result<bool, IssuanceError> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(IssuanceError::io("look up", path, e)),
    }
}

/// The error for a CA directory holding some of the CA's files but not a usable set.
fn partial_ca(dir: &Path, files: &[(&str, bool)]) -> IssuanceError {
    let list = |there: bool| {
        files
            .iter()
            .filter(|f| f.1 == there)
            .map(|f| f.0)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (present, missing) = (list(true), list(false));
    let cert_without_key = [(ROOT_CERT, ROOT_KEY), (RSA_CERT, RSA_KEY)]
        .iter()
        .find(|(cert, key)| {
            files.iter().any(|f| f.0 == *cert && f.1) && files.iter().any(|f| f.0 == *key && !f.1)
        })
        .map(|(cert, key)| format!("{cert} exists but its key {key} is missing; "))
        .unwrap_or_default();
    IssuanceError::CaUnusable {
        dir: dir.to_path_buf(),
        reason: format!(
            "{cert_without_key}it holds {present} but not {missing}, so it is incomplete. \
             zonecert creates a CA whole or not at all, and never replaces one that clients \
             may trust: restore the missing files from a backup, or move the directory \
             away to create a new CA (clients must then trust the new ca.pem)"
        ),
    }
}

/// Reads a CA certificate and its key, both of which exist.
fn load_authority(dir: &Path, cert_file: &str, key_file: &str) -> Result<Authority, IssuanceError> {
    let cert_path = dir.join(cert_file);
    let cert_pem = std::fs::read_to_string(&cert_path)
        .map_err(|e| IssuanceError::io("read", &cert_path, e))?;
    let key_path = dir.join(key_file);
    let key_pem =
        std::fs::read_to_string(&key_path).map_err(|e| IssuanceError::io("read", &key_path, e))?;
    parse_authority(dir, cert_file, cert_pem, &key_pem)
}

/// The RSA issuing CA must be signed by the root's key: one signed by an earlier root
/// (the root replaced behind zonecert's back) would make every RSA chain fail to verify
/// against the `ca.pem` clients trust.
fn check_signed_by_root(
    dir: &Path,
    rsa: &Authority,
    root: &Authority,
) -> Result<(), IssuanceError> {
    let der = |pem: &str, file: &str| {
        x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .map(|(_, pem)| pem.contents)
            .map_err(|e| IssuanceError::CaUnusable {
                dir: dir.to_path_buf(),
                reason: format!("{file} is not a PEM certificate: {e}"),
            })
    };
    let (rsa_der, root_der) = (
        der(&rsa.cert_pem, RSA_CERT)?,
        der(&root.cert_pem, ROOT_CERT)?,
    );
    let parsed = x509_parser::parse_x509_certificate(&rsa_der)
        .and_then(|(_, rsa)| Ok((rsa, x509_parser::parse_x509_certificate(&root_der)?.1)));
    let signed =
        parsed.is_ok_and(|(rsa, root)| rsa.verify_signature(Some(root.public_key())).is_ok());
    if signed {
        Ok(())
    } else {
        Err(IssuanceError::CaUnusable {
            dir: dir.to_path_buf(),
            reason: format!(
                "{RSA_CERT} is not signed by the root {ROOT_CERT} (was {ROOT_CERT} or its key \
                 {ROOT_KEY} replaced?): RSA certificates would not verify against {ROOT_CERT}; \
                 restore the root from a backup, or move the directory away to create a new \
                 CA (clients must then trust the new ca.pem)"
            ),
        })
    }
}

/// Removes a `ca/` that holds none of the CA's files, only what earlier versions left
/// there (their lock file, temporary files of an interrupted creation), so the new CA
/// can be renamed into its place. Anything else in it is the operator's: an error.
fn remove_leftovers(dir: &Path) -> Result<(), IssuanceError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(IssuanceError::io("read directory", dir, e)),
    };
    let mut leftovers = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| IssuanceError::io("read directory", dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name != "ca.lock" && !name.contains(".tmp-") {
            return Err(IssuanceError::CaUnusable {
                dir: dir.to_path_buf(),
                reason: format!(
                    "it holds {name} but none of the CA's files ({}); move it away",
                    CA_FILES.join(", ")
                ),
            });
        }
        leftovers.push(entry.path());
    }
    for path in leftovers {
        std::fs::remove_file(&path).map_err(|e| IssuanceError::io("remove", &path, e))?;
    }
    std::fs::remove_dir(dir).map_err(|e| IssuanceError::io("remove directory", dir, e))
}

/// Creates a whole new CA: built in a temporary directory beside `dir` and renamed to it.
fn create_ca(data_dir: &Path, dir: &Path) -> Result<(Authority, Authority), IssuanceError> {
    remove_leftovers(dir)?;
    let mut staged = StagedDir::create(dir, 0o700)?;
    let (root_key, root_cert) = new_root()?;
    let root_key_pem = root_key.serialize_pem();
    staged.write(ROOT_KEY, root_key_pem.as_bytes(), 0o600)?;
    staged.write(ROOT_CERT, root_cert.as_bytes(), 0o644)?;
    let root = parse_authority(dir, ROOT_CERT, root_cert, &root_key_pem)?;
    let (rsa_key, rsa_cert) = new_rsa_issuer(&root)?;
    let rsa_key_pem = rsa_key.serialize_pem();
    staged.write(RSA_KEY, rsa_key_pem.as_bytes(), 0o600)?;
    staged.write(RSA_CERT, rsa_cert.as_bytes(), 0o644)?;
    let rsa = parse_authority(dir, RSA_CERT, rsa_cert, &rsa_key_pem)?;
    if !staged.commit()? {
        return Err(IssuanceError::CaUnusable {
            dir: dir.to_path_buf(),
            reason: "it appeared while a new CA was being created (another zonecert \
                     version, which locks differently?); start again"
                .into(),
        });
    }
    sync_dir(data_dir)?;
    Ok((root, rsa))
}

fn parse_authority(
    dir: &Path,
    cert_file: &str,
    cert_pem: String,
    key_pem: &str,
) -> Result<Authority, IssuanceError> {
    let unusable = |reason: String| IssuanceError::CaUnusable {
        dir: dir.to_path_buf(),
        reason,
    };
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
        .map_err(|e| unusable(format!("{cert_file} is not a PEM certificate: {e}")))?;
    let x509 = pem
        .parse_x509()
        .map_err(|e| unusable(format!("{cert_file} does not parse as X.509: {e}")))?;
    if !x509.is_ca() {
        return Err(unusable(format!("{cert_file} is not a CA certificate")));
    }
    // The error of a key that does not parse is not shown: it could quote key bytes.
    let key = KeyPair::from_pem(key_pem).map_err(|_| {
        unusable(format!(
            "the key of {cert_file} is not a usable private key"
        ))
    })?;
    if key.public_key_raw() != x509.public_key().subject_public_key.data.as_ref() {
        return Err(unusable(format!(
            "the key file does not belong to {cert_file}"
        )));
    }
    let common_name = common_name(&x509, true);
    let not_after = x509.validity().not_after.to_datetime();
    let signer = rcgen::Issuer::from_ca_cert_der(&pem.contents.as_slice().into(), key)
        .map_err(|e| unusable(format!("{cert_file} cannot be used to sign: {e}")))?;
    Ok(Authority {
        cert_pem,
        common_name,
        not_after,
        signer,
    })
}

/// A new self-signed root: its key and certificate (PEM).
fn new_root() -> Result<(KeyPair, String), IssuanceError> {
    let id = hex(&rand::random::<[u8; 4]>());
    let name = format!("zonecert built-in CA ({id})");
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    // Path length 1: the root signs ECDSA leaves directly and the RSA issuer below it.
    let params = ca_params(&name, BasicConstraints::Constrained(1))?;
    let cert = params.self_signed(&key)?;
    Ok((key, cert.pem()))
}

/// A new RSA issuing CA signed by `root`: its key and certificate (PEM).
fn new_rsa_issuer(root: &Authority) -> Result<(KeyPair, String), IssuanceError> {
    let name = match root
        .common_name
        .replacen("built-in CA", "built-in RSA issuer", 1)
    {
        same if same == root.common_name => format!("{} RSA issuer", root.common_name),
        renamed => renamed,
    };
    let key = KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048)?;
    let mut params = ca_params(&name, BasicConstraints::Constrained(0))?;
    params.not_after = root.not_after;
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, &root.signer)?;
    Ok((key, cert.pem()))
}

/// Adds an RSA issuing CA to a CA from before it existed (a root and no issuer files).
fn create_rsa_issuer(dir: &Path, root: &Authority) -> Result<Authority, IssuanceError> {
    let (key, cert) = new_rsa_issuer(root)?;
    persist(dir, RSA_CERT, RSA_KEY, cert, &key)
}

fn ca_params(
    name: &str,
    constraints: BasicConstraints,
) -> Result<CertificateParams, IssuanceError> {
    let now = whole_second_utc(OffsetDateTime::now_utc())?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "zonecert");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(constraints);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = now - CA_BACKDATE;
    params.not_after = now + CA_LIFETIME;
    params.serial_number = Some(random_serial());
    Ok(params)
}

/// Writes the key first, then the certificate: the certificate's presence means "complete".
/// The result is parsed back from the written text so a created CA and a loaded one are the
/// same thing.
fn persist(
    dir: &Path,
    cert_file: &str,
    key_file: &str,
    cert_pem: String,
    key: &KeyPair,
) -> Result<Authority, IssuanceError> {
    let key_pem = key.serialize_pem();
    write_atomic(&dir.join(key_file), key_pem.as_bytes(), 0o600)?;
    write_atomic(&dir.join(cert_file), cert_pem.as_bytes(), 0o644)?;
    parse_authority(dir, cert_file, cert_pem, &key_pem)
}

/// 16 random bytes with the top bit clear, so the DER integer is positive and always 16 bytes
/// long (RFC 5280 allows 20; the CA/Browser Forum asks for at least 64 random bits).
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] = (bytes[0] & 0x7f).max(1);
    SerialNumber::from_slice(&bytes)
}

fn whole_second_utc(at: OffsetDateTime) -> Result<OffsetDateTime, IssuanceError> {
    at.to_offset(UtcOffset::UTC)
        .replace_nanosecond(0)
        .map_err(|e| IssuanceError::InvalidRequest(format!("bad time {at}: {e}")))
}

pub(crate) fn signature_name(x509: &X509Certificate<'_>) -> Result<&'static str, IssuanceError> {
    let oid = &x509.signature_algorithm.algorithm;
    if *oid == OID_SIG_ECDSA_WITH_SHA256 {
        Ok(SIGNATURE_ECDSA_SHA256)
    } else if *oid == OID_PKCS1_SHA256WITHRSA {
        Ok(SIGNATURE_RSA_SHA256)
    } else {
        Err(IssuanceError::Generation(format!(
            "the certificate was signed with {oid}, which the wire format cannot name"
        )))
    }
}

/// The subject's (or issuer's) common name, or the whole name when it has none.
pub(crate) fn common_name(x509: &X509Certificate<'_>, subject: bool) -> String {
    let name = if subject {
        x509.subject()
    } else {
        x509.issuer()
    };
    name.iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map_or_else(|| name.to_string(), str::to_owned)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
