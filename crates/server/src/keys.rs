//! Private keys at rest: sealed with ChaCha20-Poly1305 under the key-encryption key
//! (KEK) of `--secret-key-file`, so the database holds no key in the clear and any node
//! with the same KEK can deploy any certificate.
//!
//! The KEK file holds 64 hex characters (32 bytes). A sealed key is
//! `"zk1" || fingerprint(8) || nonce(12) || ciphertext+tag`, the pack id its associated
//! data (a sealed key copied onto another pack does not open). The fingerprint names the
//! KEK it was sealed under, so a rotation can tell what it still has to reseal and a
//! wrong KEK is reported as such rather than as a damaged key.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::Rng;
use sha2::{Digest, Sha256};
use std::fmt;
use std::io::Write;
use std::path::Path;

const MAGIC: &[u8; 3] = b"zk1";
const FINGERPRINT: usize = 8;
const NONCE: usize = 12;

/// A key-encryption key.
#[derive(Clone)]
pub struct Kek {
    key: [u8; 32],
    fingerprint: [u8; FINGERPRINT],
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Kek({})", self.fingerprint_hex())
    }
}

/// Why a KEK could not be had, or a sealed key not opened.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The KEK file could not be read or written.
    #[error("secret key file {path}: {error}")]
    File {
        /// The file.
        path: String,
        /// What failed.
        error: String,
    },
    /// The sealed key was sealed under another KEK.
    #[error("the key was sealed under key-encryption key {sealed_under}, not {current}")]
    OtherKek {
        /// The fingerprint it names.
        sealed_under: String,
        /// This KEK's.
        current: String,
    },
    /// The sealed key is damaged (or belongs to another pack).
    #[error("the sealed key does not open: damaged, or not this pack's")]
    Damaged,
}

fn file_error(path: &Path, error: impl fmt::Display) -> KeyError {
    KeyError::File {
        path: path.display().to_string(),
        error: error.to_string(),
    }
}

impl Kek {
    /// A KEK from its 32 bytes.
    pub fn from_bytes(key: [u8; 32]) -> Kek {
        let digest = Sha256::new()
            .chain_update(b"zonecert key-encryption key")
            .chain_update(key)
            .finalize();
        let mut fingerprint = [0; FINGERPRINT];
        fingerprint.copy_from_slice(&digest[..FINGERPRINT]);
        Kek { key, fingerprint }
    }

    /// A fresh random KEK.
    pub fn generate() -> Kek {
        let mut key = [0; 32];
        rand::rng().fill(&mut key);
        Kek::from_bytes(key)
    }

    /// Reads the KEK in `path` (64 hex characters, surrounding white space ignored).
    pub fn load(path: &Path) -> Result<Kek, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|e| file_error(path, e))?;
        let hex = text.trim();
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(file_error(
                path,
                "must hold 64 hex characters (32 bytes; `openssl rand -hex 32` makes one)",
            ));
        }
        let mut key = [0; 32];
        for (i, k) in key.iter_mut().enumerate() {
            *k = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                .map_err(|_| file_error(path, "not hex"))?;
        }
        Ok(Kek::from_bytes(key))
    }

    /// Reads the KEK in `path`, or creates the file (mode 0600, never replacing one) with
    /// a fresh KEK when there is none.
    pub fn load_or_create(path: &Path) -> Result<Kek, KeyError> {
        if path.exists() {
            return Kek::load(path);
        }
        let kek = Kek::generate();
        kek.write_new(path)?;
        Ok(kek)
    }

    /// Writes this KEK to `path`, a new file of mode 0600 (an existing one is an error).
    pub fn write_new(&self, path: &Path) -> Result<(), KeyError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| file_error(path, e))?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(|e| file_error(path, e))?;
        let hex: String = self.key.iter().map(|b| format!("{b:02x}")).collect();
        file.write_all(format!("{hex}\n").as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| file_error(path, e))
    }

    /// The KEK's fingerprint, hex: names it in logs and errors without revealing it.
    pub fn fingerprint_hex(&self) -> String {
        self.fingerprint
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Whether `sealed` was sealed under this KEK.
    pub fn sealed_this(&self, sealed: &[u8]) -> bool {
        sealed.len() > MAGIC.len() + FINGERPRINT
            && &sealed[..MAGIC.len()] == MAGIC
            && sealed[MAGIC.len()..MAGIC.len() + FINGERPRINT] == self.fingerprint
    }

    /// Seals `secret` (a private key's PEM) for the pack `pack_id`.
    pub fn seal(&self, pack_id: &str, secret: &[u8]) -> Vec<u8> {
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&self.key));
        let mut nonce = [0u8; NONCE];
        rand::rng().fill(&mut nonce);
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: secret,
                    aad: pack_id.as_bytes(),
                },
            )
            // Encrypting fails only past ChaCha20's 256 GiB message limit.
            .unwrap_or_default();
        let mut out = Vec::with_capacity(MAGIC.len() + FINGERPRINT + NONCE + sealed.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.fingerprint);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens what [`Kek::seal`] sealed for `pack_id`.
    pub fn open(&self, pack_id: &str, sealed: &[u8]) -> Result<String, KeyError> {
        let head = MAGIC.len() + FINGERPRINT + NONCE;
        if sealed.len() < head || &sealed[..MAGIC.len()] != MAGIC {
            return Err(KeyError::Damaged);
        }
        if !self.sealed_this(sealed) {
            let named = &sealed[MAGIC.len()..MAGIC.len() + FINGERPRINT];
            return Err(KeyError::OtherKek {
                sealed_under: named.iter().map(|b| format!("{b:02x}")).collect(),
                current: self.fingerprint_hex(),
            });
        }
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&self.key));
        let plain = cipher
            .decrypt(
                Nonce::from_slice(&sealed[MAGIC.len() + FINGERPRINT..head]),
                Payload {
                    msg: &sealed[head..],
                    aad: pack_id.as_bytes(),
                },
            )
            .map_err(|_| KeyError::Damaged)?;
        String::from_utf8(plain).map_err(|_| KeyError::Damaged)
    }
}

/// Why a certificate could not be exported.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// No such pack, or it has no certificate, or its key is not kept.
    #[error("{0}")]
    Missing(String),
    /// The key does not open under this KEK.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// A pack's certificate chain and private key (PEM), from the database.
pub struct Exported {
    /// The chain, leaf first.
    pub chain_pem: String,
    /// The private key (PKCS#8 PEM).
    pub key_pem: String,
}

impl fmt::Debug for Exported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Exported { key_pem: [redacted], .. }")
    }
}

/// The pack's current certificate and its key, opened with `kek`.
pub async fn export(
    store: &crate::store::Store,
    kek: &Kek,
    pack: &crate::model::PackId,
) -> Result<Exported, ExportError> {
    let found = store
        .pack_by_id(pack)
        .await?
        .ok_or_else(|| ExportError::Missing(format!("no certificate pack {}", pack.as_str())))?;
    let cert = found.certificate.ok_or_else(|| {
        ExportError::Missing(format!(
            "certificate pack {} has no certificate yet ({})",
            pack.as_str(),
            found.state.as_str()
        ))
    })?;
    let key = store
        .certificate_key(pack)
        .await?
        .filter(|k| k.serial == cert.id)
        .ok_or_else(|| {
            ExportError::Missing(format!(
                "the key of certificate {} (pack {}) is not in the database: it was issued \
                 before keys were kept there; it is in the deploy directory of the node \
                 that issued it",
                cert.id,
                pack.as_str()
            ))
        })?;
    let key_pem = kek.open(pack.as_str(), &key.sealed)?;
    Ok(Exported {
        chain_pem: cert.chain_pem,
        key_pem,
    })
}

/// What a rotation did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rotated {
    /// Keys resealed under the new KEK.
    pub resealed: usize,
    /// Keys already under the new KEK.
    pub already: usize,
    /// Keys that changed while being resealed (a renewal): left to the next run.
    pub raced: usize,
}

/// Reseals every kept key (certificates' keys, shared ACME accounts) from `old` to `new`. Safe to run again (keys under `new` are
/// skipped), and to run while nodes work: a key replaced meanwhile is left alone.
pub async fn rotate(
    store: &crate::store::Store,
    old: &Kek,
    new: &Kek,
) -> Result<Rotated, ExportError> {
    let mut rotated = Rotated::default();
    for key in store.certificate_keys().await? {
        if new.sealed_this(&key.sealed) {
            rotated.already += 1;
            continue;
        }
        let opened = old.open(key.pack.as_str(), &key.sealed)?;
        let resealed = new.seal(key.pack.as_str(), opened.as_bytes());
        if store.reseal_certificate_key(&key, &resealed).await? {
            rotated.resealed += 1;
        } else {
            rotated.raced += 1;
        }
    }
    // The ACME accounts the nodes share (`issuance::acme`), sealed the same way.
    for (directory, sealed) in store.acme_accounts().await? {
        if new.sealed_this(&sealed) {
            rotated.already += 1;
            continue;
        }
        let aad = crate::issuance::acme::account_aad(&directory);
        let opened = old.open(&aad, &sealed)?;
        let resealed = new.seal(&aad, opened.as_bytes());
        if store
            .reseal_acme_account(&directory, &sealed, &resealed)
            .await?
        {
            rotated.resealed += 1;
        } else {
            rotated.raced += 1;
        }
    }
    Ok(rotated)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEM: &str = "-----BEGIN PRIVATE KEY-----\nMIG...\n-----END PRIVATE KEY-----\n";

    #[test]
    fn a_sealed_key_opens_for_its_pack_under_its_kek_only() {
        let kek = Kek::generate();
        let sealed = kek.seal("pack-a", PEM.as_bytes());
        assert!(!sealed.windows(10).any(|w| w == &PEM.as_bytes()[..10]));
        assert!(kek.sealed_this(&sealed));
        assert_eq!(kek.open("pack-a", &sealed).unwrap(), PEM);
        assert!(matches!(
            kek.open("pack-b", &sealed),
            Err(KeyError::Damaged)
        ));
        let other = Kek::generate();
        assert!(matches!(
            other.open("pack-a", &sealed),
            Err(KeyError::OtherKek { .. })
        ));
        let mut flipped = sealed.clone();
        if let Some(last) = flipped.last_mut() {
            *last ^= 1;
        }
        assert!(matches!(
            kek.open("pack-a", &flipped),
            Err(KeyError::Damaged)
        ));
        assert!(format!("{kek:?}").starts_with("Kek(") && !format!("{kek:?}").contains("key"));
    }

    #[test]
    fn the_file_is_made_once_with_mode_0600_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        let made = Kek::load_or_create(&path).unwrap();
        let again = Kek::load_or_create(&path).unwrap();
        assert_eq!(made.fingerprint_hex(), again.fingerprint_hex());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(made.write_new(&path).is_err());
        std::fs::write(&path, "short").unwrap();
        assert!(Kek::load(&path).is_err());
    }
}
