//! Access tokens: HS256 JWTs (RFC 7519) signed with `--api-secret`. Claims: `room` (a room name,
//! or `*` for every room), `sub` (identity), optional `name`, `grants` {`publish`, `subscribe`,
//! `admin`} and `exp` (seconds since the Unix epoch). With no secret configured every request is
//! allowed (the server then refuses non-loopback addresses unless `--insecure`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, header};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The room of a client-address voucher ([`Auth::vouch`]): not a valid room name, so no API
/// token has it and a voucher opens no room.
const VOUCHER_ROOM: &str = "@client";
/// How long a voucher is valid (it travels with one proxied call).
const VOUCHER_TTL: Duration = Duration::from_secs(60);

/// What a token allows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    /// Send audio/video into the room.
    #[serde(default)]
    pub publish: bool,
    /// Receive the composite and the mix.
    #[serde(default)]
    pub subscribe: bool,
    /// Control the room: layout, mute, kick, create, end, recordings.
    #[serde(default)]
    pub admin: bool,
}

/// The claims of a Tessera token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Room name, or `*` for every room.
    pub room: String,
    /// Identity of the holder.
    pub sub: String,
    /// Display name; overrides `?name=` when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What it allows.
    pub grants: Grants,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

impl Claims {
    /// Whether the token is for `room`.
    pub fn covers(&self, room: &str) -> bool {
        self.room == "*" || self.room == room
    }
}

/// Why a request was refused: 401 (no usable token) or 403 (a token that does not allow it).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthError {
    /// 401: no `Authorization: Bearer` header.
    #[error("missing token: send Authorization: Bearer <JWT>")]
    Missing,
    /// 401: the token does not verify or decode.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// 401: the token has expired.
    #[error("token expired")]
    Expired,
    /// 403: the token is for another room.
    #[error("token is for room {token:?}, not {room:?}")]
    WrongRoom {
        /// The token's room.
        token: String,
        /// The room asked for.
        room: String,
    },
    /// 403: the token lacks a grant.
    #[error("token lacks the {0} grant")]
    Forbidden(&'static str),
}

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Any valid token for the room.
    Member,
    /// The `publish` grant.
    Publish,
    /// The `subscribe` grant.
    Subscribe,
    /// The `admin` grant.
    Admin,
}

/// Verifies and makes tokens; `None` secret means no authentication.
#[derive(Clone)]
pub struct Auth {
    keys: Option<(EncodingKey, DecodingKey)>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Auth({})", if self.keys.is_some() { "HS256" } else { "off" })
    }
}

impl Auth {
    /// Authentication with `secret`, or none.
    pub fn new(secret: Option<&str>) -> Self {
        Self { keys: secret.map(|s| (EncodingKey::from_secret(s.as_bytes()), DecodingKey::from_secret(s.as_bytes()))) }
    }

    /// Whether tokens are required.
    pub fn enabled(&self) -> bool {
        self.keys.is_some()
    }

    /// Signs a token for `room` and `identity` valid for `ttl`.
    ///
    /// # Panics
    /// When authentication is off (there is no secret to sign with).
    pub fn mint(&self, room: &str, identity: &str, name: Option<&str>, grants: Grants, ttl: Duration) -> String {
        let (enc, _) = self.keys.as_ref().expect("minting needs a secret");
        let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() + ttl.as_secs();
        let claims = Claims { room: room.into(), sub: identity.into(), name: name.map(str::to_string), grants, exp };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, enc).expect("HS256 signing cannot fail")
    }

    /// A voucher for the address of the client a node forwards a call for (`X-Tessera-Client`,
    /// `forward.rs`): a token for the room `@client` (a name no API token can
    /// have) whose subject is `client`, valid for a minute; `None` when authentication is off
    /// (nothing to sign with: the owner then counts the forwarding node's address).
    pub fn vouch(&self, node: &str, client: std::net::IpAddr) -> Option<String> {
        self.enabled().then(|| self.mint(VOUCHER_ROOM, &client.to_string(), Some(node), Grants::default(), VOUCHER_TTL))
    }

    /// The client address a voucher from [`Auth::vouch`] names; `None` when it is not one, is
    /// expired, or is signed with another secret.
    pub fn vouched(&self, voucher: &str) -> Option<std::net::IpAddr> {
        let (_, dec) = self.keys.as_ref()?;
        let data = jsonwebtoken::decode::<Claims>(voucher, dec, &Validation::new(Algorithm::HS256)).ok()?;
        (data.claims.room == VOUCHER_ROOM).then(|| data.claims.sub.parse().ok()).flatten()
    }

    /// Checks the request's bearer token against `room` (`None`: a server-wide call, which needs a
    /// `*` token) and `need`. Returns the claims, or `None` when authentication is off.
    ///
    /// # Errors
    /// [`AuthError`]: 401 for a missing, invalid or expired token; 403 for the wrong room or a
    /// missing grant.
    pub fn check(&self, headers: &HeaderMap, room: Option<&str>, need: Need) -> Result<Option<Claims>, AuthError> {
        let Some((_, dec)) = &self.keys else { return Ok(None) };
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .ok_or(AuthError::Missing)?;
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = 5;
        v.required_spec_claims = ["exp", "sub"].iter().map(|s| s.to_string()).collect();
        let claims = jsonwebtoken::decode::<Claims>(token, dec, &v)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid(e.to_string()),
            })?
            .claims;
        let room = room.unwrap_or("*");
        if !claims.covers(room) {
            return Err(AuthError::WrongRoom { token: claims.room, room: room.into() });
        }
        let g = claims.grants;
        match need {
            Need::Member => {}
            Need::Publish if !(g.publish || g.admin) => return Err(AuthError::Forbidden("publish")),
            Need::Subscribe if !(g.subscribe || g.admin) => return Err(AuthError::Forbidden("subscribe")),
            Need::Admin if !g.admin => return Err(AuthError::Forbidden("admin")),
            _ => {}
        }
        Ok(Some(claims))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(t: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, format!("Bearer {t}").parse().unwrap());
        h
    }

    const MEMBER: Grants = Grants { publish: true, subscribe: true, admin: false };

    #[test]
    fn a_client_voucher_names_the_client_and_opens_nothing() {
        let a = Auth::new(Some("s3cret"));
        let ip: std::net::IpAddr = "203.0.113.7".parse().unwrap();
        let v = a.vouch("node-b", ip).unwrap();
        assert_eq!(a.vouched(&v), Some(ip));
        assert_eq!(Auth::new(Some("other")).vouched(&v), None, "signed with another secret");
        assert_eq!(a.vouched("junk"), None);
        let member = a.mint("r", "ann", None, MEMBER, Duration::from_secs(60));
        assert_eq!(a.vouched(&member), None, "a room token is no voucher");
        assert!(a.check(&bearer(&v), Some("r"), Need::Member).is_err(), "a voucher opens no room");
        assert!(a.check(&bearer(&v), None, Need::Member).is_err(), "nor the server");
        assert_eq!(Auth::new(None).vouch("node-b", ip), None, "nothing to sign with");
    }

    #[test]
    fn tokens_are_checked() {
        let a = Auth::new(Some("s3cret"));
        let t = a.mint("r1", "alice", Some("Alice"), MEMBER, Duration::from_secs(60));
        let c = a.check(&bearer(&t), Some("r1"), Need::Publish).unwrap().unwrap();
        assert_eq!((c.sub.as_str(), c.name.as_deref()), ("alice", Some("Alice")));
        assert_eq!(a.check(&HeaderMap::new(), Some("r1"), Need::Member), Err(AuthError::Missing));
        assert!(matches!(a.check(&bearer(&t), Some("r2"), Need::Member), Err(AuthError::WrongRoom { .. })));
        assert_eq!(a.check(&bearer(&t), Some("r1"), Need::Admin), Err(AuthError::Forbidden("admin")));
        assert!(matches!(a.check(&bearer("x.y.z"), Some("r1"), Need::Member), Err(AuthError::Invalid(_))));
        let other = Auth::new(Some("other")).mint("r1", "eve", None, MEMBER, Duration::from_secs(60));
        assert!(matches!(a.check(&bearer(&other), Some("r1"), Need::Member), Err(AuthError::Invalid(_))));
        // Expired a minute ago (beyond the 5 s leeway).
        let (enc, _) = a.keys.as_ref().unwrap();
        let old = Claims { room: "r1".into(), sub: "bob".into(), name: None, grants: MEMBER, exp: 1_000_000 };
        let t = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &old, enc).unwrap();
        assert_eq!(a.check(&bearer(&t), Some("r1"), Need::Member), Err(AuthError::Expired));
        // A `*` admin token covers every room and server-wide calls.
        let admin =
            a.mint("*", "ops", None, Grants { publish: false, subscribe: false, admin: true }, Duration::from_secs(60));
        assert!(a.check(&bearer(&admin), None, Need::Admin).is_ok());
        assert!(a.check(&bearer(&admin), Some("any"), Need::Subscribe).is_ok());
        assert_eq!(Auth::new(None).check(&HeaderMap::new(), None, Need::Admin), Ok(None));
    }
}
