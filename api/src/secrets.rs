//! Secrets at rest: the operator's keyring and AES-256-GCM sealing of what
//! tenants hand over as secret (`secure_env` today).
//!
//! The keyring is text, from a file or an environment variable: one key a
//! line, `<key id>:<base64 of 32 random bytes>` (`#` comments and blank
//! lines allowed). The first line's key seals everything new; the others
//! only open what older keys sealed, until `skiff-api secrets reencrypt`
//! has moved it all under the first. Each ciphertext is stored with the id
//! of its key beside it, and sealed with the row it belongs to as
//! associated data (`containers/<id>`), so a ciphertext copied onto another
//! row does not open.
//!
//! Nothing here ever prints a key or a plaintext: `Keyring`'s `Debug` lists
//! key ids, errors name key ids and rows only.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rand::RngCore as _;
use skiff_core::{SecretEnv, SecretFiles};
use std::collections::BTreeMap;
use std::path::Path;
use zeroize::Zeroizing;

/// Length of an AES-256 key.
const KEY_BYTES: usize = 32;
/// Length of a GCM nonce (random per sealing, stored before the ciphertext).
const NONCE_BYTES: usize = 12;
/// Longest key id, and its alphabet: ids are stored in every sealed row.
const MAX_KEY_ID: usize = 64;

/// Why a keyring or a sealed value could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the secrets keyring is not configured: set SKIFF_SECRETS_KEYRING_FILE (a file made with `skiff-api secrets new-key --id ID`) or SKIFF_SECRETS_KEYRING")]
    NoKeyring,
    #[error("reading the secrets keyring {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("secrets keyring line {line}: {why}")]
    BadLine { line: usize, why: &'static str },
    #[error("the secrets keyring has no key")]
    Empty,
    #[error("secrets keyring: key id {0:?} appears twice")]
    DuplicateId(String),
    #[error("secret of {row} was sealed under key id {kid:?}, which is not in the keyring")]
    UnknownKey { row: String, kid: String },
    #[error(
        "secret of {row} does not open under key id {kid:?} (tampered with, or not this row's)"
    )]
    Corrupt { row: String, kid: String },
    #[error("the keyring's key {0:?} is not the key that id sealed with before (regenerated, or mistyped): its stored check does not open")]
    KeyChanged(String),
}

/// One sealed value as stored: the id of the key it was sealed under, and
/// the nonce followed by the ciphertext and its tag.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    pub kid: String,
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealed({}, {} bytes)", self.kid, self.bytes.len())
    }
}

/// The operator's keys: the first seals, all open.
pub struct Keyring {
    keys: Vec<(String, Aes256Gcm)>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("ids", &self.ids().collect::<Vec<_>>())
            .finish()
    }
}

impl Keyring {
    /// Parses the keyring's text (see the module doc).
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let mut keys: Vec<(String, Aes256Gcm)> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why| SecretError::BadLine { line: i + 1, why };
            let (id, key) = line
                .split_once(':')
                .ok_or_else(|| bad("expected <key id>:<base64 key>"))?;
            if !valid_id(id) {
                return Err(bad(
                    "a key id is 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'",
                ));
            }
            let key = Zeroizing::new(
                base64::engine::general_purpose::STANDARD
                    .decode(key.trim())
                    .map_err(|_| bad("the key is not base64"))?,
            );
            if key.len() != KEY_BYTES {
                return Err(bad("the key must be 32 bytes (base64 of 32 random bytes)"));
            }
            if keys.iter().any(|(k, _)| k == id) {
                return Err(SecretError::DuplicateId(id.to_owned()));
            }
            let cipher = Aes256Gcm::new_from_slice(&key).expect("a 32-byte key");
            keys.push((id.to_owned(), cipher));
        }
        if keys.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Self { keys })
    }

    /// The keyring from a file, or else from the text given inline.
    pub fn load(file: Option<&Path>, inline: Option<&str>) -> Result<Self, SecretError> {
        match (file, inline) {
            (Some(path), _) => {
                let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|source| {
                    SecretError::Read {
                        path: path.display().to_string(),
                        source,
                    }
                })?);
                Self::parse(&text)
            }
            (None, Some(text)) => Self::parse(text),
            (None, None) => Err(SecretError::NoKeyring),
        }
    }

    /// A new keyring line with a random key, for `skiff-api secrets new-key`.
    pub fn new_key_line(id: &str) -> Result<String, SecretError> {
        if !valid_id(id) {
            return Err(SecretError::BadLine {
                line: 1,
                why: "a key id is 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'",
            });
        }
        let mut key = Zeroizing::new([0u8; KEY_BYTES]);
        rand::rng().fill_bytes(key.as_mut());
        Ok(format!(
            "{id}:{}",
            base64::engine::general_purpose::STANDARD.encode(key.as_ref())
        ))
    }

    /// The id of the key that seals.
    pub fn current(&self) -> &str {
        &self.keys[0].0
    }

    /// Every key id, the sealing one first.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(id, _)| id.as_str())
    }

    /// Seals `plaintext` under the current key, bound to `row`.
    pub fn seal(&self, plaintext: &[u8], row: &str) -> Sealed {
        self.seal_with(0, plaintext, row)
    }

    /// The value each key seals as its check (see [`Keyring::check_row`]).
    pub const CHECK: &'static [u8] = b"skiff secrets key check";

    /// The row a key's check is bound to.
    pub fn check_row(kid: &str) -> String {
        format!("secret_key_checks/{kid}")
    }

    /// Every key's check, sealed under that key.
    pub fn checks(&self) -> Vec<Sealed> {
        (0..self.keys.len())
            .map(|i| self.seal_with(i, Self::CHECK, &Self::check_row(&self.keys[i].0)))
            .collect()
    }

    /// Whether `stored`, a check sealed earlier under its key id, opens
    /// with this keyring's key of that id.
    pub fn verify_check(&self, stored: &Sealed) -> Result<(), SecretError> {
        match self.open(stored, &Self::check_row(&stored.kid)) {
            Ok(plain) if plain.as_slice() == Self::CHECK => Ok(()),
            Ok(_) | Err(SecretError::Corrupt { .. }) => {
                Err(SecretError::KeyChanged(stored.kid.clone()))
            }
            Err(other) => Err(other),
        }
    }

    fn seal_with(&self, key: usize, plaintext: &[u8], row: &str) -> Sealed {
        let (kid, cipher) = &self.keys[key];
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: row.as_bytes(),
                },
            )
            .expect("AES-GCM sealing of an in-memory buffer");
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&ciphertext);
        Sealed {
            kid: kid.clone(),
            bytes,
        }
    }

    /// Opens what [`Keyring::seal`] sealed for `row`.
    pub fn open(&self, sealed: &Sealed, row: &str) -> Result<Zeroizing<Vec<u8>>, SecretError> {
        let cipher = self
            .keys
            .iter()
            .find(|(id, _)| *id == sealed.kid)
            .map(|(_, c)| c)
            .ok_or_else(|| SecretError::UnknownKey {
                row: row.to_owned(),
                kid: sealed.kid.clone(),
            })?;
        let corrupt = || SecretError::Corrupt {
            row: row.to_owned(),
            kid: sealed.kid.clone(),
        };
        if sealed.bytes.len() < NONCE_BYTES {
            return Err(corrupt());
        }
        let (nonce, ciphertext) = sealed.bytes.split_at(NONCE_BYTES);
        cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: row.as_bytes(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| corrupt())
    }

    /// Seals a row's secrets for `row`; None when there are none (nothing
    /// to keep).
    pub fn seal_secrets(&self, secrets: &Secrets, row: &str) -> Option<Sealed> {
        if secrets.env.0.is_empty() && secrets.files.is_empty() {
            return None;
        }
        let plain = if secrets.files.is_empty() {
            Plain::Env(secrets.env.0.clone())
        } else {
            Plain::Both(Both {
                env: secrets.env.0.clone(),
                files: secrets
                    .files
                    .0
                    .iter()
                    .map(|(volume, files)| {
                        let files = files.iter().map(|(p, b)| (p.clone(), B64.encode(b)));
                        (volume.clone(), files.collect())
                    })
                    .collect(),
            })
        };
        let plaintext = Zeroizing::new(serde_json::to_vec(&plain).expect("string maps serialize"));
        Some(self.seal(&plaintext, row))
    }

    /// Opens a row's secrets stored as key id and bytes (both None: there
    /// are none).
    pub fn open_secrets(
        &self,
        kid: Option<&str>,
        bytes: Option<&[u8]>,
        row: &str,
    ) -> Result<Secrets, SecretError> {
        let (Some(kid), Some(bytes)) = (kid, bytes) else {
            return Ok(Secrets::default());
        };
        let sealed = Sealed {
            kid: kid.to_owned(),
            bytes: bytes.to_vec(),
        };
        let corrupt = || SecretError::Corrupt {
            row: row.to_owned(),
            kid: kid.to_owned(),
        };
        let plaintext = self.open(&sealed, row)?;
        match serde_json::from_slice(&plaintext).map_err(|_| corrupt())? {
            Plain::Env(env) => Ok(Secrets {
                env: SecretEnv(env),
                files: SecretFiles::default(),
            }),
            Plain::Both(both) => {
                let mut files = SecretFiles::default();
                for (volume, encoded) in both.files {
                    let mut decoded = BTreeMap::new();
                    for (path, b64) in encoded {
                        decoded.insert(path, B64.decode(b64).map_err(|_| corrupt())?);
                    }
                    files.0.insert(volume, decoded);
                }
                Ok(Secrets {
                    env: SecretEnv(both.env),
                    files,
                })
            }
        }
    }
}

/// What a row keeps sealed: its secret environment and its secret
/// volumes' files. `Debug` shows keys and paths only.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    pub env: SecretEnv,
    pub files: SecretFiles,
}

/// A sealed plaintext: the environment alone (as every row sealed before
/// secret volumes existed, and still when there are no files), or both.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
enum Plain {
    Both(Both),
    Env(BTreeMap<String, String>),
}

/// Environment and files (volume -> path -> base64). An environment map
/// never parses as this: its values are strings, never maps.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Both {
    env: BTreeMap<String, String>,
    files: BTreeMap<String, BTreeMap<String, String>>,
}

/// The row a container's secrets are bound to.
pub fn container_row(id: uuid::Uuid) -> String {
    format!("containers/{id}")
}

/// The row a job's template secrets are bound to.
pub fn job_row(id: uuid::Uuid) -> String {
    format!("jobs/{id}")
}

/// The row a tenant's stored registry password is bound to.
pub fn registry_credential_row(id: uuid::Uuid) -> String {
    format!("registry_credentials/{id}")
}

/// The row a container's own registry password is bound to (apart from
/// its `secure_env`, so neither opens as the other).
pub fn container_registry_credential_row(id: uuid::Uuid) -> String {
    format!("containers/{id}/registry_credential")
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_KEY_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(ids: &[&str]) -> String {
        ids.iter()
            .map(|id| Keyring::new_key_line(id).unwrap())
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn keyring_text_is_checked_line_by_line() {
        let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let short = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
        let cases: &[(String, Result<Vec<&str>, &str>)] = &[
            (format!("k1:{key}"), Ok(vec!["k1"])),
            (
                format!("# comment\n\nk2:{key}\nk1:{key}\n"),
                Ok(vec!["k2", "k1"]),
            ),
            (String::new(), Err("no key")),
            ("# only a comment".into(), Err("no key")),
            (format!("k1 {key}"), Err("line 1: expected")),
            (format!("bad id:{key}"), Err("line 1: a key id")),
            (format!(":{key}"), Err("line 1: a key id")),
            (
                "k1:not base64!".into(),
                Err("line 1: the key is not base64"),
            ),
            (
                format!("k1:{short}"),
                Err("line 1: the key must be 32 bytes"),
            ),
            (format!("k1:{key}\nk1:{key}"), Err("appears twice")),
        ];
        for (text, want) in cases {
            match (Keyring::parse(text), want) {
                (Ok(ring), Ok(ids)) => assert_eq!(ring.ids().collect::<Vec<_>>(), *ids, "{text}"),
                (Err(err), Err(msg)) => assert!(err.to_string().contains(msg), "{text}: {err}"),
                (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn nothing_secret_is_printed() {
        let text = ring(&["k1"]);
        let keyring = Keyring::parse(&text).unwrap();
        let key = text.split_once(':').unwrap().1;
        let shown = format!("{keyring:?}");
        assert!(shown.contains("k1") && !shown.contains(key), "{shown}");
        let sealed = keyring.seal(b"hunter2", "containers/x");
        assert!(!format!("{sealed:?}").contains("hunter2"));
        let err = Keyring::parse(&format!("k1:{}x", &key[..key.len() - 1])).unwrap_err();
        assert!(!err.to_string().contains(&key[..20]), "{err}");
    }

    #[test]
    fn sealed_values_open_only_for_their_row_and_with_their_key() {
        let keyring = Keyring::parse(&ring(&["k1"])).unwrap();
        let sealed = keyring.seal(b"hunter2", "containers/a");
        assert_eq!(sealed.kid, "k1");
        assert!(!sealed.bytes.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(
            &**keyring.open(&sealed, "containers/a").unwrap(),
            b"hunter2"
        );
        // Random nonces: the same plaintext seals differently each time.
        assert_ne!(keyring.seal(b"hunter2", "containers/a").bytes, sealed.bytes);
        // Another row's associated data, a flipped bit, a cut: refused.
        assert!(matches!(
            keyring.open(&sealed, "containers/b"),
            Err(SecretError::Corrupt { .. })
        ));
        let mut flipped = sealed.clone();
        flipped.bytes[NONCE_BYTES] ^= 1;
        assert!(matches!(
            keyring.open(&flipped, "containers/a"),
            Err(SecretError::Corrupt { .. })
        ));
        let cut = Sealed {
            kid: "k1".into(),
            bytes: sealed.bytes[..5].to_vec(),
        };
        assert!(matches!(
            keyring.open(&cut, "containers/a"),
            Err(SecretError::Corrupt { .. })
        ));
        // A key the keyring does not hold.
        let other = Keyring::parse(&ring(&["k9"])).unwrap();
        let err = other.open(&sealed, "containers/a").unwrap_err();
        assert!(matches!(err, SecretError::UnknownKey { .. }), "{err}");
    }

    #[test]
    fn a_rotated_keyring_opens_the_old_and_seals_under_the_new() {
        let old_line = Keyring::new_key_line("old").unwrap();
        let new_line = Keyring::new_key_line("new").unwrap();
        let before = Keyring::parse(&old_line).unwrap();
        let sealed = before.seal(b"v", "jobs/1");
        let after = Keyring::parse(&format!("{new_line}\n{old_line}")).unwrap();
        assert_eq!(after.current(), "new");
        assert_eq!(&**after.open(&sealed, "jobs/1").unwrap(), b"v");
        assert_eq!(after.seal(b"v", "jobs/1").kid, "new");
    }

    #[test]
    fn secrets_round_trip_and_empty_ones_are_not_stored() {
        let keyring = Keyring::parse(&ring(&["k1"])).unwrap();
        let open = |sealed: &Sealed| {
            keyring
                .open_secrets(Some(&sealed.kid), Some(&sealed.bytes), "containers/a")
                .unwrap()
        };
        assert!(keyring
            .seal_secrets(&Secrets::default(), "containers/a")
            .is_none());
        let env = SecretEnv([("TOKEN".to_string(), "s3cret".to_string())].into());
        let only_env = Secrets {
            env: env.clone(),
            files: SecretFiles::default(),
        };
        let sealed = keyring.seal_secrets(&only_env, "containers/a").unwrap();
        // Without files the plaintext is the environment map, as rows
        // sealed before secret volumes existed hold it.
        assert_eq!(
            &**keyring.open(&sealed, "containers/a").unwrap(),
            br#"{"TOKEN":"s3cret"}"#
        );
        assert_eq!(open(&sealed).env, env);
        assert!(open(&sealed).files.is_empty());
        // Files (any bytes) beside the environment, or alone.
        let files = SecretFiles(
            [(
                "creds".to_string(),
                [("tls/key".to_string(), vec![0u8, 255, 10])].into(),
            )]
            .into(),
        );
        for env in [env, SecretEnv::default()] {
            let both = Secrets {
                env: env.clone(),
                files: files.clone(),
            };
            let opened = open(&keyring.seal_secrets(&both, "containers/a").unwrap());
            assert_eq!((opened.env, opened.files), (env, files.clone()));
        }
        // An environment whose keys look like the combined form's is still one.
        let tricky = SecretEnv(
            [
                ("env".to_string(), "{}".to_string()),
                ("files".to_string(), "{}".to_string()),
            ]
            .into(),
        );
        let sealed = keyring.seal(&serde_json::to_vec(&tricky.0).unwrap(), "containers/a");
        assert_eq!(open(&sealed).env, tricky);
        let none = keyring.open_secrets(None, None, "containers/a").unwrap();
        assert!(none.env.0.is_empty() && none.files.is_empty());
    }

    #[test]
    fn a_key_regenerated_under_a_known_id_fails_its_check() {
        let first = Keyring::parse(&Keyring::new_key_line("k1").unwrap()).unwrap();
        let checks = first.checks();
        assert_eq!(checks.len(), 1);
        assert!(first.verify_check(&checks[0]).is_ok());
        let regenerated = Keyring::parse(&Keyring::new_key_line("k1").unwrap()).unwrap();
        let err = regenerated.verify_check(&checks[0]).unwrap_err();
        assert!(
            matches!(err, SecretError::KeyChanged(ref k) if k == "k1"),
            "{err}"
        );
        // Another id's check: that key is simply not held.
        let other = Keyring::parse(&Keyring::new_key_line("k2").unwrap()).unwrap();
        assert!(matches!(
            other.verify_check(&checks[0]),
            Err(SecretError::UnknownKey { .. })
        ));
    }

    #[test]
    fn new_key_lines_need_a_valid_id() {
        assert!(Keyring::new_key_line("2026-11.k_1").is_ok());
        assert!(Keyring::new_key_line("").is_err());
        assert!(Keyring::new_key_line("a b").is_err());
        assert!(Keyring::new_key_line(&"k".repeat(65)).is_err());
    }
}
