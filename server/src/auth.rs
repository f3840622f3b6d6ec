//! Staff accounts: argon2id passwords, server-side sessions (tower-sessions over our store),
//! API keys, and who a request comes from.

use crate::comment::Audience;
use crate::store::{Store, StoreError, UserRow, now_ms};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Argon2, password_hash::rand_core::OsRng};
use sha2::{Digest, Sha256};
use std::sync::OnceLock;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};

/// The session key holding the signed-in user's id.
pub const USER_ID_KEY: &str = "user_id";

/// Hashes a password with argon2id and a fresh salt (PHC string).
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        // Only an absurd parameter set fails; the defaults never do.
        .expect("argon2 hashing with default parameters")
}

/// Checks a password against a stored hash.
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A hash to verify against when the user does not exist, so an unknown name costs as much
/// time as a wrong password and sign-in timing does not reveal which names exist.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_password("not the password of anyone"))
}

/// Checks credentials; the same work is done whether or not the user exists.
async fn check_credentials(
    store: &Store,
    username: &str,
    password: &str,
) -> Result<Option<UserRow>, StoreError> {
    let user = store.user_by_name(username).await?;
    let hash = user
        .as_ref()
        .map(|u| u.password_hash.clone())
        .unwrap_or_else(|| dummy_hash().to_owned());
    let password = password.to_owned();
    // argon2 takes tens of milliseconds of CPU: keep it off the async workers.
    let ok = tokio::task::spawn_blocking(move || verify_password(&hash, &password))
        .await
        .unwrap_or(false);
    Ok(user.filter(|_| ok))
}

/// Creates a new API key: the key to show once, and the hash to store.
pub fn new_api_key() -> (String, String) {
    let key = format!("mod_{}", crate::token::random_token(32));
    let hash = api_key_hash(&key);
    (key, hash)
}

/// The stored form of an API key.
pub fn api_key_hash(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Proof that the caller is staff. Its fields are private to this module, so outside it a
/// `Staff` can only come from [`Viewer::staff`] of a viewer this module authenticated (or from
/// [`Staff::operator`] for the command line): a use case that takes a `&Staff` cannot be
/// reached by a handler that forgot to check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Staff {
    id: i64,
    name: String,
}

impl Staff {
    /// The person at the server's console (the `moderato` CLI has the database anyway).
    pub fn operator() -> Staff {
        Staff {
            id: 0,
            name: "operator".into(),
        }
    }

    /// The proof for a staff account that was checked to be staff just now (a signed staff
    /// action link's account).
    pub(crate) fn of_user(id: i64, name: String) -> Staff {
        Staff { id, name }
    }

    /// The staff member's user name, as the audit log records it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The user id (0 for the operator).
    pub fn id(&self) -> i64 {
        self.id
    }
}

/// Who is looking: what a page or a comment shows depends on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Viewer {
    /// Anonymous.
    Reader,
    /// Signed in, not staff: sees what readers see.
    User { id: i64, name: String },
    /// Signed in staff.
    Staff(Staff),
}

impl Viewer {
    /// The staff proof, when the viewer is staff.
    pub fn staff(&self) -> Option<&Staff> {
        match self {
            Viewer::Staff(s) => Some(s),
            _ => None,
        }
    }

    /// True for staff.
    pub fn is_staff(&self) -> bool {
        matches!(self, Viewer::Staff(_))
    }

    /// The signed-in user's name.
    pub fn name(&self) -> Option<&str> {
        match self {
            Viewer::Reader => None,
            Viewer::User { name, .. } => Some(name),
            Viewer::Staff(s) => Some(&s.name),
        }
    }

    /// What this viewer may see of a comment.
    pub fn audience(&self) -> Audience {
        if self.is_staff() {
            Audience::Staff
        } else {
            Audience::Reader
        }
    }
}

/// The viewer a signed-in user is.
fn viewer_of(user: UserRow) -> Viewer {
    if user.is_staff != 0 {
        Viewer::Staff(Staff {
            id: user.id,
            name: user.username,
        })
    } else {
        Viewer::User {
            id: user.id,
            name: user.username,
        }
    }
}

/// How a request says who it is: an API key, or the user id its session holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    /// The `Authorization` header, when there is one.
    pub authorization: Option<String>,
    /// The signed-in user id from the session.
    pub session_user: Option<i64>,
}

/// Why credentials were refused (a 401).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error("unsupported Authorization scheme (use Bearer)")]
    Scheme,
    #[error("unknown API key")]
    UnknownKey,
}

/// Who sent a request: an API key in `Authorization: Bearer`, else the session's user.
/// A bearer token that matches no key is an error rather than an anonymous request.
pub async fn viewer(
    store: &Store,
    creds: &Credentials,
) -> Result<Result<Viewer, CredentialsError>, StoreError> {
    if let Some(auth) = &creds.authorization {
        let Some(key) = auth.strip_prefix("Bearer ") else {
            return Ok(Err(CredentialsError::Scheme));
        };
        return Ok(
            match store.user_by_api_key(&api_key_hash(key.trim())).await? {
                Some(user) => Ok(viewer_of(user)),
                None => Err(CredentialsError::UnknownKey),
            },
        );
    }
    Ok(Ok(match creds.session_user {
        Some(id) => match store.user_by_id(id).await? {
            Some(user) => viewer_of(user),
            None => Viewer::Reader,
        },
        None => Viewer::Reader,
    }))
}

/// Checks credentials and returns the viewer they make, or `None`.
pub async fn sign_in(
    store: &Store,
    username: &str,
    password: &str,
) -> Result<Option<(i64, Viewer)>, StoreError> {
    Ok(check_credentials(store, username, password)
        .await?
        .map(|u| (u.id, viewer_of(u))))
}

/// tower-sessions records kept in our own database (SQLite or PostgreSQL alike).
#[derive(Clone, Debug)]
pub struct DbSessionStore {
    store: Store,
}

impl DbSessionStore {
    /// Sessions in this store's `sessions` table.
    pub fn new(store: Store) -> Self {
        DbSessionStore { store }
    }
}

fn backend(e: StoreError) -> session_store::Error {
    session_store::Error::Backend(e.to_string())
}

fn encode(record: &Record) -> Result<(String, i64), session_store::Error> {
    let data =
        serde_json::to_string(record).map_err(|e| session_store::Error::Encode(e.to_string()))?;
    let expires = (record.expiry_date.unix_timestamp_nanos() / 1_000_000) as i64;
    Ok((data, expires))
}

#[async_trait::async_trait]
impl SessionStore for DbSessionStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        // Ids are random; on the rare collision, draw another instead of overwriting.
        loop {
            let (data, expires) = encode(record)?;
            if self
                .store
                .session_create(&record.id.to_string(), &data, expires)
                .await
                .map_err(backend)?
            {
                return Ok(());
            }
            record.id = Id::default();
        }
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let (data, expires) = encode(record)?;
        self.store
            .session_save(&record.id.to_string(), &data, expires)
            .await
            .map_err(backend)
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let Some(data) = self
            .store
            .session_load(&id.to_string(), now_ms())
            .await
            .map_err(backend)?
        else {
            return Ok(None);
        };
        serde_json::from_str(&data)
            .map(Some)
            .map_err(|e| session_store::Error::Decode(e.to_string()))
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        self.store
            .session_delete(&id.to_string())
            .await
            .map_err(backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let h = hash_password("correct horse");
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password(&h, "correct horse"));
        assert!(!verify_password(&h, "wrong"));
        assert!(!verify_password("not a hash", "x"));
    }

    #[test]
    fn api_keys_are_stored_hashed() {
        let (key, hash) = new_api_key();
        assert!(key.starts_with("mod_"));
        assert_eq!(hash, api_key_hash(&key));
        assert_ne!(hash, key);
        assert_eq!(hash.len(), 64);
    }
}
