//! The dashboard at `/` on the HTTP door: static assets built into the binary (no CDN, no
//! network at run time) and the browser session that stands in for the bearer token.
//!
//! The token is accepted once, in the URL (`/?token=...`); the answer sets a session cookie
//! (HttpOnly, SameSite=Strict, Path=/) and redirects to `/` without the token, so it leaves
//! the address bar and the history. A session is `NONCE.MAC`, MAC = HMAC-SHA256(token,
//! "session:" NONCE): nothing is stored, and another token (a daemon started with another
//! file) ends every session. Requests that change state also carry `X-Governor-CSRF`,
//! HMAC-SHA256(token, "csrf:" NONCE), which the page reads from its own HTML: another site
//! can make the browser send the cookie (not with SameSite=Strict, but defence in depth) yet
//! cannot read the page to learn the header.

use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;

pub const INDEX: &str = include_str!("dashboard/index.html");
pub const SCRIPT: &str = include_str!("dashboard/dashboard.js");
pub const STYLE: &str = include_str!("dashboard/dashboard.css");

/// The session cookie's name.
pub const COOKIE: &str = "governor_session";
/// The header a state-changing request from the page carries.
pub const CSRF_HEADER: &str = "x-governor-csrf";
/// What the page may load and connect to: this origin only, no inline script.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// A browser session, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub nonce: String,
    pub csrf: String,
}

fn mac(key: &str, purpose: &str, nonce: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key.as_bytes()) else {
        return String::new();
    };
    mac.update(purpose.as_bytes());
    mac.update(b":");
    mac.update(nonce.as_bytes());
    hex(&mac.finalize().into_bytes())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A new session for a browser that presented `token`: the cookie's value and the session.
pub fn open(token: &str) -> Option<(String, Session)> {
    let mut random = [0u8; 16];
    // SAFETY: getrandom(2) writes at most `len` bytes into the buffer.
    let filled = unsafe { libc::getrandom(random.as_mut_ptr().cast(), random.len(), 0) };
    if usize::try_from(filled).ok() != Some(random.len()) {
        return None;
    }
    let nonce = hex(&random);
    let cookie = format!("{nonce}.{}", mac(token, "session", &nonce));
    let csrf = mac(token, "csrf", &nonce);
    Some((cookie, Session { nonce, csrf }))
}

/// The session a cookie value proves, under `token`.
pub fn check(token: &str, cookie: &str) -> Option<Session> {
    let (nonce, presented) = cookie.split_once('.')?;
    if nonce.len() != 32 || !nonce.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return None;
    }
    let expected = mac(token, "session", nonce);
    if expected.is_empty() || !same(expected.as_bytes(), presented.as_bytes()) {
        return None;
    }
    Some(Session { nonce: nonce.to_owned(), csrf: mac(token, "csrf", nonce) })
}

/// Whether `presented` is the session's CSRF token.
pub fn csrf_ok(session: &Session, presented: Option<&str>) -> bool {
    presented.is_some_and(|presented| same(session.csrf.as_bytes(), presented.trim().as_bytes()))
}

/// The value of cookie `name` in a `Cookie:` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').map(str::trim).find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

/// `Set-Cookie` for a new session.
pub fn set_cookie(value: &str) -> String {
    format!("{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/")
}

/// The page for `session`: the CSRF token in its `<meta>` (hex, nothing to escape).
pub fn page(session: &Session) -> String {
    INDEX.replace("{{CSRF}}", &session.csrf)
}

/// What a browser without a session is told.
pub const LOGIN: &str = "<!doctype html><meta charset=utf-8><title>governor</title>\
    <p>Open this page as <code>/?token=TOKEN</code> with the token of <code>--http-token-file</code>; \
    it is kept in a session cookie and removed from the address.</p>";

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_session_holds_only_under_its_token() {
        let (cookie, session) = open(TOKEN).unwrap_or_else(|| panic!("no randomness"));
        assert_eq!(check(TOKEN, &cookie), Some(session.clone()));
        assert_eq!(check("another-token-of-some-length", &cookie), None);
        let (nonce, mac) = cookie.split_once('.').unwrap_or_default();
        let forged = format!("{nonce}.{}", mac.replace(&mac[..1], if &mac[..1] == "0" { "1" } else { "0" }));
        assert_eq!(check(TOKEN, &forged), None);
        assert_eq!(check(TOKEN, "not-a-cookie"), None);
        assert!(csrf_ok(&session, Some(&session.csrf)));
        assert!(!csrf_ok(&session, Some("guess")));
        assert!(!csrf_ok(&session, None));
        let (other, _) = open(TOKEN).unwrap_or_else(|| panic!("no randomness"));
        assert_ne!(cookie, other, "every session has its own nonce");
    }

    #[test]
    fn the_page_carries_its_csrf_token_and_loads_nothing_from_elsewhere() {
        let (_, session) = open(TOKEN).unwrap_or_else(|| panic!("no randomness"));
        let page = page(&session);
        assert!(page.contains(&format!("content=\"{}\"", session.csrf)));
        for asset in [INDEX, SCRIPT, STYLE] {
            assert!(!asset.contains("http://") || asset.contains("http://www.w3.org/2000/svg"), "no remote URL");
            assert!(!asset.contains("https://"), "no remote URL");
        }
        assert!(!SCRIPT.contains("innerHTML"), "store text is set as textContent only");
    }

    #[test]
    fn cookies_are_found_by_name() {
        assert_eq!(cookie("a=1; governor_session=x.y; b=2", COOKIE), Some("x.y"));
        assert_eq!(cookie("governor_sessionx=1", COOKIE), None);
        assert!(set_cookie("v").contains("HttpOnly") && set_cookie("v").contains("SameSite=Strict"));
    }
}
