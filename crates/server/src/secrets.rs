//! API secrets: minting, hashing and comparing. Secrets are shown once when minted and
//! stored only as SHA-256 hashes; comparisons run in constant time.

use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// SHA-256 of a secret, the form it is stored and looked up in.
pub fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Whether two hashes are equal, in constant time.
pub fn hashes_match(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.ct_eq(b).into()
}

/// A fresh API token secret: 40 characters of `[A-Za-z0-9_-]`, like Cloudflare's.
pub fn mint_token() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
    let mut rng = rand::rng();
    (0..40)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// A fresh global API key: 37 lower-case hex characters, like Cloudflare's.
pub fn mint_global_key() -> String {
    let mut rng = rand::rng();
    (0..37)
        .map(|_| char::from_digit(rng.random_range(0..16), 16).unwrap_or('0'))
        .collect()
}

/// A fresh 32-hex-character object id.
pub fn mint_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A request id: 128 bits from the thread's generator, as 32 lower-case hex
/// characters. Not a secret, so it skips the operating system's random source that
/// `mint_id` uses. Bytes, without an allocation or `format!`: the front door makes one
/// for every request.
pub fn mint_request_id() -> [u8; 32] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bits = rand::rng().random::<u128>();
    let mut out = [0u8; 32];
    for (i, c) in out.iter_mut().enumerate() {
        let nibble = (bits >> (4 * (31 - i))) & 0xf;
        *c = HEX[nibble as usize];
    }
    out
}

/// Whether `s` has the shape of a token secret (so a malformed header is told apart
/// from an unknown token).
pub fn looks_like_token(s: &str) -> bool {
    !s.is_empty() && s.len() <= 256 && s.bytes().all(|b| TOKEN_BYTES[usize::from(b)])
}

/// The bytes of a token's shape (`[A-Za-z0-9_-]`), by value: one load per byte where
/// the three range checks took 15 instructions (600 for a token, on every request;
/// callgrind).
static TOKEN_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
        b += 1;
    }
    table
};

/// Whether `s` has the shape of a global key (hex, 32 to 64 characters).
pub fn looks_like_global_key(s: &str) -> bool {
    (32..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether `s` has the shape of an e-mail address.
pub fn looks_like_email(s: &str) -> bool {
    s.len() <= 254
        && s.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.')
        })
        && !s
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_secrets_have_their_shapes() {
        let t = mint_token();
        assert_eq!(t.len(), 40);
        assert!(looks_like_token(&t));
        let k = mint_global_key();
        assert_eq!(k.len(), 37);
        assert!(looks_like_global_key(&k));
        assert_ne!(mint_token(), mint_token());
        let id = mint_request_id();
        assert!(
            id.iter()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
        );
        assert_ne!(id, mint_request_id());
    }

    #[test]
    fn shapes() {
        assert!(looks_like_global_key("144c9defac04969c7bfad8efaa8ea194"));
        assert!(!looks_like_global_key("xyz"));
        assert!(looks_like_email("user@example.com"));
        assert!(!looks_like_email("user"));
        assert!(!looks_like_email("us er@example.com"));
        assert!(!looks_like_token("has space"));
        assert!(hashes_match(&hash("a"), &hash("a")));
        assert!(!hashes_match(&hash("a"), &hash("b")));
    }
}
