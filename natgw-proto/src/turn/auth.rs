//! STUN long-term credentials for TURN (RFC 8489 §9.2): the key, MESSAGE-INTEGRITY
//! checked and written over the raw message, stateless nonces, and where passwords
//! come from (a static user list, or coturn's shared-secret "REST API" scheme).
//!
//! - Key: `MD5(username ":" realm ":" password)` (RFC 8489 §9.2.2), usernames and
//!   passwords taken as given (no SASLprep/OpaqueString: natgw's credentials are
//!   ASCII in practice; a client that prepares a non-ASCII password differently fails
//!   with 401, never worse).
//! - MESSAGE-INTEGRITY: HMAC-SHA1 over the message up to the attribute, with the
//!   length field counting up to and including it (RFC 8489 §14.5). Checked in
//!   constant time.
//! - Nonces are stateless: `hex(issued unix seconds) || hex(HMAC-SHA1(secret, issued
//!   || client address))[..24]`. Nothing is stored per client; a nonce from another
//!   client address, or forged, fails the MAC; one older than the nonce lifetime is
//!   stale (438, RFC 8489 §9.2.4).
//! - coturn's `use-auth-secret` (draft-uberti-behave-turn-rest): the username holds an
//!   expiry time, `EXPIRY[:id]` (or `id:EXPIRY`, which coturn also accepts: the part
//!   that is all digits is the time), and the password is
//!   `base64(HMAC-SHA1(secret, username))`. An expired or unreadable time → 401.
//!
//! All cryptography is RustCrypto's (`hmac`, `sha1`, `md-5`) and `base64`.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use md5::{Digest as _, Md5};
use sha1::Sha1;

use crate::stun::wire::{attr, crc32, Packet, ATTR_HEADER_LEN, FINGERPRINT_XOR, HEADER_LEN};

type HmacSha1 = Hmac<Sha1>;

/// The long-term key (an MD5 digest).
pub type Key = [u8; 16];

/// Length of a MESSAGE-INTEGRITY value.
pub const INTEGRITY_LEN: usize = 20;

/// `MD5(username ":" realm ":" password)` (RFC 8489 §9.2.2).
#[must_use]
pub fn long_term_key(username: &str, realm: &str, password: &str) -> Key {
    let mut md5 = Md5::new();
    md5.update(username.as_bytes());
    md5.update(b":");
    md5.update(realm.as_bytes());
    md5.update(b":");
    md5.update(password.as_bytes());
    md5.finalize().into()
}

fn hmac_sha1(key: &[u8]) -> HmacSha1 {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    <HmacSha1 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC accepts any key"))
}

/// HMAC-SHA1 of `data` under `key`: what the engine derives unguessable values
/// (reservation tokens, Data indications' transaction IDs) from.
#[must_use]
pub fn hmac_sha1_tag(key: &[u8], data: &[u8]) -> [u8; 20] {
    let mut mac = hmac_sha1(key);
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// What a message's MESSAGE-INTEGRITY says about a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Integrity {
    /// The message has no MESSAGE-INTEGRITY (or is not a STUN message).
    Absent,
    /// It matches the key.
    Valid,
    /// It does not.
    Invalid,
}

/// Offset of the first MESSAGE-INTEGRITY attribute's header in a checked message.
fn integrity_offset(message: &[u8]) -> Option<usize> {
    let packet = Packet::new_checked(message).ok()?;
    let mut attributes = packet.attributes();
    attributes
        .find_map(|a| match a {
            Ok(a) if a.kind == attr::MESSAGE_INTEGRITY && a.value.len() == INTEGRITY_LEN => {
                Some(Some(a.offset))
            }
            Ok(_) => None,
            Err(_) => Some(None),
        })
        .flatten()
}

/// The HMAC over `message[..offset]` with the length field set to count up to the end
/// of a MESSAGE-INTEGRITY attribute at `offset` (RFC 8489 §14.5).
fn integrity_mac(message: &[u8], offset: usize, key: &[u8]) -> HmacSha1 {
    let length = offset + ATTR_HEADER_LEN + INTEGRITY_LEN - HEADER_LEN;
    let length = u16::try_from(length).unwrap_or(u16::MAX);
    let mut mac = hmac_sha1(key);
    mac.update(&message[..2]);
    mac.update(&length.to_be_bytes());
    mac.update(&message[4..offset]);
    mac
}

/// Checks a message's MESSAGE-INTEGRITY against `key`, in constant time.
#[must_use]
pub fn check_integrity(message: &[u8], key: &[u8]) -> Integrity {
    let Some(offset) = integrity_offset(message) else {
        return Integrity::Absent;
    };
    let value = offset + ATTR_HEADER_LEN;
    let tag = &message[value..value + INTEGRITY_LEN];
    match integrity_mac(message, offset, key).verify_slice(tag) {
        Ok(()) => Integrity::Valid,
        Err(_) => Integrity::Invalid,
    }
}

/// Fills in the MESSAGE-INTEGRITY of an emitted message (whose value was written as
/// a placeholder) and then its FINGERPRINT, if it ends with one. Returns whether the
/// message had a MESSAGE-INTEGRITY to fill.
pub fn sign(message: &mut [u8], key: &[u8]) -> bool {
    let Some(offset) = integrity_offset(message) else {
        return false;
    };
    let tag = integrity_mac(message, offset, key).finalize().into_bytes();
    let value = offset + ATTR_HEADER_LEN;
    message[value..value + INTEGRITY_LEN].copy_from_slice(&tag);
    let len = message.len();
    if len >= HEADER_LEN + 8 && message[len - 8..len - 6] == attr::FINGERPRINT.to_be_bytes() {
        let crc = crc32(&message[..len - 8]) ^ FINGERPRINT_XOR;
        message[len - 4..].copy_from_slice(&crc.to_be_bytes());
    }
    true
}

/// Hex digits of the issue time in a nonce.
const NONCE_TIME_LEN: usize = 16;
/// Bytes of the MAC kept in a nonce (hex: twice as many characters).
const NONCE_MAC_LEN: usize = 12;
/// Length of a nonce.
pub const NONCE_LEN: usize = NONCE_TIME_LEN + 2 * NONCE_MAC_LEN;

/// What a nonce is worth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonceCheck {
    /// Issued by this server to this client, within its lifetime.
    Fresh,
    /// Issued by this server to this client, but too long ago (or in the future).
    Stale,
    /// Not one of this server's nonces for this client.
    Forged,
}

/// Issues and checks stateless nonces: a timestamp and a MAC of it with the client's
/// address under a server secret.
#[derive(Clone)]
pub struct Nonces {
    secret: [u8; 32],
    lifetime_secs: u64,
}

impl fmt::Debug for Nonces {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Nonces")
            .field("lifetime_secs", &self.lifetime_secs)
            .finish_non_exhaustive()
    }
}

impl Nonces {
    /// Nonces under `secret`, valid for `lifetime_secs` after they are issued.
    #[must_use]
    pub const fn new(secret: [u8; 32], lifetime_secs: u64) -> Self {
        Self {
            secret,
            lifetime_secs,
        }
    }

    fn mac(&self, issued: u64, client: SocketAddr) -> [u8; NONCE_MAC_LEN] {
        let mut mac = hmac_sha1(&self.secret);
        mac.update(&issued.to_be_bytes());
        mac.update(client.to_string().as_bytes());
        let full = mac.finalize().into_bytes();
        let mut out = [0; NONCE_MAC_LEN];
        out.copy_from_slice(&full[..NONCE_MAC_LEN]);
        out
    }

    /// A nonce for `client`, issued at `unix_secs`.
    #[must_use]
    pub fn issue(&self, unix_secs: u64, client: SocketAddr) -> String {
        let mut nonce = format!("{unix_secs:016x}");
        for b in self.mac(unix_secs, client) {
            nonce.push_str(&format!("{b:02x}"));
        }
        nonce
    }

    /// Checks a nonce `client` sent at `unix_secs`.
    #[must_use]
    pub fn check(&self, nonce: &str, unix_secs: u64, client: SocketAddr) -> NonceCheck {
        // Only the exact form `issue` writes: lowercase hex. `from_str_radix` would
        // also take uppercase, so one nonce would have many spellings (found by the
        // fuzzer).
        let lower_hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
        if nonce.len() != NONCE_LEN || !nonce.bytes().all(lower_hex) {
            return NonceCheck::Forged;
        }
        let (time, mac) = nonce.split_at(NONCE_TIME_LEN);
        let Ok(issued) = u64::from_str_radix(time, 16) else {
            return NonceCheck::Forged;
        };
        let mut tag = [0; NONCE_MAC_LEN];
        for (i, byte) in tag.iter_mut().enumerate() {
            match u8::from_str_radix(&mac[2 * i..2 * i + 2], 16) {
                Ok(b) => *byte = b,
                Err(_) => return NonceCheck::Forged,
            }
        }
        let mut expected = hmac_sha1(&self.secret);
        expected.update(&issued.to_be_bytes());
        expected.update(client.to_string().as_bytes());
        if expected.verify_truncated_left(&tag).is_err() {
            return NonceCheck::Forged;
        }
        if issued > unix_secs || unix_secs - issued >= self.lifetime_secs {
            NonceCheck::Stale
        } else {
            NonceCheck::Fresh
        }
    }
}

/// Why credentials were refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No such user.
    UnknownUser,
    /// A shared-secret username whose time has passed.
    Expired,
    /// A shared-secret username without a readable time.
    BadTimestamp,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::UnknownUser => "unknown user",
            Self::Expired => "credentials expired",
            Self::BadTimestamp => "username holds no expiry time",
        })
    }
}

/// A line of a static user list that is not `USER:PASSWORD`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid TURN user `{0}`: expected USER:PASSWORD with a non-empty user")]
pub struct UserError(String);

/// Where passwords come from.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// A fixed list of users and their passwords.
    Static(HashMap<String, String>),
    /// coturn's `use-auth-secret`: passwords derived from the username with any of
    /// these secrets (several, so a secret can be rotated).
    SharedSecret(Vec<String>),
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print passwords or secrets.
        match self {
            Self::Static(users) => write!(f, "Static({} users)", users.len()),
            Self::SharedSecret(secrets) => write!(f, "SharedSecret({} secrets)", secrets.len()),
        }
    }
}

impl Credentials {
    /// A static list from `USER:PASSWORD` entries (the password may contain `:`).
    ///
    /// # Errors
    /// The first entry without a `:` or with an empty user.
    pub fn from_users<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Self, UserError> {
        let mut users = HashMap::new();
        for entry in entries {
            match entry.split_once(':') {
                Some((user, password)) if !user.is_empty() => {
                    users.insert(user.to_owned(), password.to_owned());
                }
                _ => return Err(UserError(entry.to_owned())),
            }
        }
        Ok(Self::Static(users))
    }

    /// The keys `username` may sign with in `realm` at `unix_secs` (more than one while
    /// shared secrets are being rotated).
    ///
    /// # Errors
    /// Why the username is refused.
    pub fn keys(&self, username: &str, realm: &str, unix_secs: u64) -> Result<Vec<Key>, Refusal> {
        match self {
            Self::Static(users) => users
                .get(username)
                .map(|password| vec![long_term_key(username, realm, password)])
                .ok_or(Refusal::UnknownUser),
            Self::SharedSecret(secrets) => {
                let expiry = rest_expiry(username).ok_or(Refusal::BadTimestamp)?;
                if expiry < unix_secs {
                    return Err(Refusal::Expired);
                }
                Ok(secrets
                    .iter()
                    .map(|secret| long_term_key(username, realm, &rest_password(secret, username)))
                    .collect())
            }
        }
    }
}

/// The expiry time in a shared-secret username: the whole username, or whichever
/// side of the first `:` is all digits (coturn reads `EXPIRY:id` and `id:EXPIRY`).
#[must_use]
pub fn rest_expiry(username: &str) -> Option<u64> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let time = match username.split_once(':') {
        None => username,
        Some((first, _)) if digits(first) => first,
        Some((_, rest)) => rest,
    };
    if !digits(time) {
        return None;
    }
    time.parse().ok()
}

/// coturn's shared-secret password: `base64(HMAC-SHA1(secret, username))`.
#[must_use]
pub fn rest_password(secret: &str, username: &str) -> String {
    let mut mac = hmac_sha1(secret.as_bytes());
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stun::wire::{Attribute, Class, Repr, MAGIC_COOKIE};

    /// RFC 5769 §2.4: a Binding request with long-term credentials. Username
    /// "マトリックス", password "TheMatrIX" (after SASLprep), realm "example.org",
    /// nonce "f//499k954d6OL34oL9FSTvy64sA"; no FINGERPRINT.
    static LONG_TERM_REQUEST: [u8; 116] = [
        0x00, 0x01, 0x00, 0x60, 0x21, 0x12, 0xa4, 0x42, 0x78, 0xad, 0x34, 0x33, 0xc6, 0xad, 0x72,
        0xc0, 0x29, 0xda, 0x41, 0x2e, 0x00, 0x06, 0x00, 0x12, 0xe3, 0x83, 0x9e, 0xe3, 0x83, 0x88,
        0xe3, 0x83, 0xaa, 0xe3, 0x83, 0x83, 0xe3, 0x82, 0xaf, 0xe3, 0x82, 0xb9, 0x00, 0x00, 0x00,
        0x15, 0x00, 0x1c, 0x66, 0x2f, 0x2f, 0x34, 0x39, 0x39, 0x6b, 0x39, 0x35, 0x34, 0x64, 0x36,
        0x4f, 0x4c, 0x33, 0x34, 0x6f, 0x4c, 0x39, 0x46, 0x53, 0x54, 0x76, 0x79, 0x36, 0x34, 0x73,
        0x41, 0x00, 0x14, 0x00, 0x0b, 0x65, 0x78, 0x61, 0x6d, 0x70, 0x6c, 0x65, 0x2e, 0x6f, 0x72,
        0x67, 0x00, 0x00, 0x08, 0x00, 0x14, 0xf6, 0x70, 0x24, 0x65, 0x6d, 0xd6, 0x4a, 0x3e, 0x02,
        0xb8, 0xe0, 0x71, 0x2e, 0x85, 0xc9, 0xa2, 0x8c, 0xa8, 0x96, 0x66,
    ];
    const MATRIX: &str = "\u{30de}\u{30c8}\u{30ea}\u{30c3}\u{30af}\u{30b9}";

    #[test]
    fn rfc5769_long_term_sample_verifies() {
        // rfc5769 §2.4
        let repr = Repr::parse(&Packet::new_checked(&LONG_TERM_REQUEST[..]).unwrap()).unwrap();
        assert!(repr.attributes.contains(&Attribute::Username(MATRIX)));
        assert!(repr.attributes.contains(&Attribute::Realm("example.org")));
        assert!(repr
            .attributes
            .contains(&Attribute::Nonce("f//499k954d6OL34oL9FSTvy64sA")));
        let key = long_term_key(MATRIX, "example.org", "TheMatrIX");
        // MD5("マトリックス:example.org:TheMatrIX"), by Python's hashlib.
        assert_eq!(
            key,
            [
                0xe8, 0xca, 0x7a, 0xd5, 0x9d, 0x5e, 0xb0, 0x51, 0x8e, 0x31, 0x29, 0x11, 0xd2, 0xda,
                0xb2, 0xa9
            ]
        );
        assert_eq!(check_integrity(&LONG_TERM_REQUEST, &key), Integrity::Valid);
        let wrong = long_term_key(MATRIX, "example.org", "TheMatrix");
        assert_eq!(
            check_integrity(&LONG_TERM_REQUEST, &wrong),
            Integrity::Invalid
        );
        // A flipped bit in the signed part breaks it.
        let mut bytes = LONG_TERM_REQUEST;
        bytes[60] ^= 1;
        assert_eq!(check_integrity(&bytes, &key), Integrity::Invalid);
    }

    #[test]
    fn rfc5769_long_term_sample_is_signed_byte_for_byte() {
        // Re-emitting the parsed sample with a placeholder and signing it gives the
        // RFC's bytes (its padding is zeros, as natgw writes it).
        let repr = Repr::parse(&Packet::new_checked(&LONG_TERM_REQUEST[..]).unwrap()).unwrap();
        let mut unsigned = repr.clone();
        for a in &mut unsigned.attributes {
            if let Attribute::MessageIntegrity(_) = a {
                *a = Attribute::MessageIntegrity(&[0; INTEGRITY_LEN]);
            }
        }
        let mut bytes = unsigned.to_bytes();
        assert!(sign(
            &mut bytes,
            &long_term_key(MATRIX, "example.org", "TheMatrIX")
        ));
        assert_eq!(bytes, LONG_TERM_REQUEST);
    }

    #[test]
    fn signing_refreshes_the_fingerprint_and_attributes_after_integrity_are_unsigned() {
        let key = long_term_key("alice", "natgw", "wonderland");
        let repr = Repr {
            class: Class::Success,
            method: 0x003,
            cookie: MAGIC_COOKIE,
            transaction_id: [4; 12],
            attributes: vec![
                Attribute::Lifetime(600),
                Attribute::MessageIntegrity(&[0; INTEGRITY_LEN]),
                Attribute::Fingerprint,
            ],
        };
        let mut bytes = repr.to_bytes();
        assert!(sign(&mut bytes, &key));
        // The FINGERPRINT was recomputed over the signed message: it parses.
        let parsed = Repr::parse(&Packet::new_checked(&bytes[..]).unwrap()).unwrap();
        assert_eq!(parsed.attributes.last(), Some(&Attribute::Fingerprint));
        assert_eq!(check_integrity(&bytes, &key), Integrity::Valid);
        // FINGERPRINT is outside what MESSAGE-INTEGRITY covers (rfc8489 §14.5).
        let n = bytes.len();
        bytes[n - 1] ^= 0xff;
        assert_eq!(check_integrity(&bytes, &key), Integrity::Valid);
        // Without MESSAGE-INTEGRITY there is nothing to sign or check.
        let mut plain = Repr {
            attributes: vec![Attribute::Lifetime(1)],
            ..repr
        }
        .to_bytes();
        assert!(!sign(&mut plain, &key));
        assert_eq!(check_integrity(&plain, &key), Integrity::Absent);
        assert_eq!(check_integrity(&[1, 2, 3], &key), Integrity::Absent);
    }

    #[test]
    fn long_term_key_is_md5_of_user_realm_password() {
        // python3: hashlib.md5(b"alice:natgw:wonderland").hexdigest()
        assert_eq!(
            long_term_key("alice", "natgw", "wonderland"),
            [
                0xe0, 0x4c, 0x5c, 0x00, 0xb2, 0xfa, 0xab, 0x95, 0x99, 0xe2, 0x19, 0x55, 0x95, 0x92,
                0x55, 0xf5
            ]
        );
    }

    #[test]
    fn coturn_shared_secret_password_matches_an_independent_computation() {
        // python3 -c 'import hmac,hashlib,base64; print(base64.b64encode(hmac.new(
        //   b"north", b"1733318400:alice", hashlib.sha1).digest()).decode())'
        assert_eq!(
            rest_password("north", "1733318400:alice"),
            "SPch30c5XC4OXf1J/LwEmlU0ZKc="
        );
        assert_eq!(
            rest_password("north", "alice:1733318400"),
            "Dfs7CH//bpnEgEGlbJ7hlh30eYM="
        );
        assert_eq!(rest_expiry("1733318400:alice"), Some(1_733_318_400));
        assert_eq!(rest_expiry("alice:1733318400"), Some(1_733_318_400));
        assert_eq!(rest_expiry("1733318400"), Some(1_733_318_400));
        assert_eq!(rest_expiry("alice"), None);
        assert_eq!(rest_expiry("alice:bob"), None);
        assert_eq!(rest_expiry(":"), None);
        assert_eq!(rest_expiry("99999999999999999999999:a"), None);
    }

    #[test]
    fn shared_secret_keys_expire_and_rotate() {
        let creds = Credentials::SharedSecret(vec!["north".into(), "south".into()]);
        let user = "1733318400:alice";
        let keys = creds.keys(user, "natgw", 1_733_318_400).unwrap();
        assert_eq!(
            keys,
            [
                long_term_key(user, "natgw", "SPch30c5XC4OXf1J/LwEmlU0ZKc="),
                long_term_key(user, "natgw", &rest_password("south", user)),
            ]
        );
        assert_eq!(
            creds.keys(user, "natgw", 1_733_318_401),
            Err(Refusal::Expired)
        );
        assert_eq!(creds.keys("alice", "natgw", 0), Err(Refusal::BadTimestamp));
    }

    #[test]
    fn static_users_parse_and_look_up() {
        let creds = Credentials::from_users(["alice:wonder:land", "bob:"]).unwrap();
        assert_eq!(
            creds.keys("alice", "r", 0),
            Ok(vec![long_term_key("alice", "r", "wonder:land")])
        );
        assert_eq!(
            creds.keys("bob", "r", 0),
            Ok(vec![long_term_key("bob", "r", "")])
        );
        assert_eq!(creds.keys("carol", "r", 0), Err(Refusal::UnknownUser));
        assert!(Credentials::from_users(["nocolon"]).is_err());
        assert!(Credentials::from_users([":pw"]).is_err());
        assert_eq!(format!("{creds:?}"), "Static(2 users)");
    }

    #[test]
    fn nonces_are_bound_to_the_client_and_expire() {
        let nonces = Nonces::new([7; 32], 600);
        let client: SocketAddr = "198.51.100.1:5000".parse().unwrap();
        let other: SocketAddr = "198.51.100.1:5001".parse().unwrap();
        let nonce = nonces.issue(1000, client);
        assert_eq!(nonce.len(), NONCE_LEN);
        assert_eq!(nonces.check(&nonce, 1000, client), NonceCheck::Fresh);
        assert_eq!(nonces.check(&nonce, 1599, client), NonceCheck::Fresh);
        assert_eq!(nonces.check(&nonce, 1600, client), NonceCheck::Stale);
        assert_eq!(nonces.check(&nonce, 999, client), NonceCheck::Stale);
        assert_eq!(nonces.check(&nonce, 1000, other), NonceCheck::Forged);
        // Another server secret, a changed time, garbage.
        assert_eq!(
            Nonces::new([8; 32], 600).check(&nonce, 1000, client),
            NonceCheck::Forged
        );
        let mut later = nonce.clone().into_bytes();
        later[15] = b'9';
        let later = String::from_utf8(later).unwrap();
        assert_eq!(nonces.check(&later, 1000, client), NonceCheck::Forged);
        assert_eq!(nonces.check("x", 1000, client), NonceCheck::Forged);
        // One spelling only: the same nonce in uppercase is not it.
        assert_ne!(nonce, nonce.to_uppercase());
        assert_eq!(
            nonces.check(&nonce.to_uppercase(), 1000, client),
            NonceCheck::Forged
        );
        let plus = format!("+{}", &nonce[1..]);
        assert_eq!(nonces.check(&plus, 1000, client), NonceCheck::Forged);
        assert_eq!(
            nonces.check(&"é".repeat(20), 1000, client),
            NonceCheck::Forged
        );
    }
}
