//! The consent flows in progress, in memory: one per link handed to a user, bounded in number
//! (per user and in total) and in time. A link opens once; each step's `state` is accepted
//! once; every step after the first must come from the browser that opened the link (a cookie
//! whose digest the flow keeps), so that a flow started by one person cannot be finished by
//! another (the account-linking attack: an attacker's half-done flow sent to a victim would
//! otherwise connect the victim's account to the attacker's user, or the reverse).

use super::OnBehalfOf;
use http::{HeaderMap, HeaderValue};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// Most consent flows kept at once (expired ones are swept first).
pub(super) const MAX_FLOWS: usize = 10_000;
/// Most flows one user has at once; a new one replaces that user's oldest.
pub(super) const MAX_FLOWS_PER_USER: usize = 8;
/// Most cookies of ours read from one request.
const MAX_COOKIES: usize = 32;
/// The cookies binding a flow to the browser that opened its link: this prefix, then part of
/// the value's digest, so that two flows at once in one browser do not overwrite each other.
const BROWSER_COOKIE: &str = "gatehouse_connect_";

/// A change to the browser's flow cookies that goes with a page.
#[derive(Debug)]
pub enum BrowserCookie {
    /// Set a cookie with this value (the link was opened).
    Set(String),
    /// Remove the cookie with this value (the flow ended).
    Clear(String),
}

/// The values of the flow cookies a request carries (at most [`MAX_COOKIES`]).
pub(super) fn browser_cookies(headers: &HeaderMap) -> Vec<String> {
    crate::oauth::cookies::values(headers, BROWSER_COOKIE, MAX_COOKIES)
}

/// The `Set-Cookie` value for a cookie change: HttpOnly, SameSite=Lax (the callbacks are
/// top-level navigations from other sites), living `ttl` (as long as a link), and over https
/// `__Host-` and Secure.
pub(super) fn set_cookie(
    https: bool,
    ttl: Duration,
    change: &BrowserCookie,
) -> Option<HeaderValue> {
    let (value, max_age) = match change {
        BrowserCookie::Set(v) => (v, ttl.as_secs().max(1)),
        BrowserCookie::Clear(v) => (v, 0),
    };
    crate::oauth::cookies::set(BROWSER_COOKIE, value, max_age, https)
}

/// Where a flow is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
    /// The link was handed out and not opened yet.
    Issued,
    /// The browser is at the enterprise IdP.
    SigningIn {
        state: String,
        verifier: String,
        nonce: String,
    },
    /// The browser is at the service's authorization server.
    Authorizing {
        state: String,
        verifier: String,
        /// Sent when `openid` is asked for: the service's ID token must carry it.
        nonce: Option<String>,
    },
}

/// One flow: for whom, towards which upstream, and how far it got.
#[derive(Debug, Clone)]
pub(super) struct Flow {
    pub binding: String,
    pub subject: String,
    pub issuer: String,
    pub upstream: String,
    created: Instant,
    /// Creation order (two flows may share an `Instant`).
    seq: u64,
    pub step: Step,
    /// Digest of the cookie set on the browser that opened the link.
    browser: Option<String>,
    /// Who signed in at the IdP (for the final page).
    pub signed_in_as: Option<String>,
}

/// Why a flow step was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum FlowError {
    /// No such link, or it expired.
    #[error("This link is unknown or has expired. Call the tool again to get a new one.")]
    Unknown,
    /// The link was opened before.
    #[error(
        "This link was already opened; a link works once. Call the tool again to get a new one."
    )]
    Used,
    /// No flow waits for this `state` at this step.
    #[error(
        "This answer does not belong to a connection in progress (it was already used, has expired, or was never started here)."
    )]
    NotInProgress,
    /// The browser is not the one that opened the link.
    #[error(
        "This connection was started in another browser (or this browser's cookie for it is gone), so it cannot be finished here. Nothing was connected; open the link from your MCP client in this browser."
    )]
    OtherBrowser,
    /// [`MAX_FLOWS`] are open.
    #[error("too many consent flows are open; try again later")]
    TooMany,
}

impl FlowError {
    /// The HTTP status of the page that says so.
    pub(super) fn status(&self) -> u16 {
        match self {
            FlowError::Unknown => 404,
            FlowError::Used | FlowError::NotInProgress => 400,
            FlowError::OtherBrowser => 403,
            FlowError::TooMany => 503,
        }
    }
}

/// A flow taken out of the table for its next step.
pub(super) struct Taken<T> {
    pub id: String,
    pub flow: Flow,
    pub picked: T,
    /// The cookie value that matched (to be removed when the flow ends).
    pub cookie: String,
}

/// The table.
pub(super) struct Flows {
    inner: Mutex<HashMap<String, Flow>>,
    next_seq: AtomicU64,
    ttl: Duration,
    max: usize,
    per_user: usize,
}

/// Hex SHA-256: what a flow keeps of its browser's cookie.
pub(super) fn digest(s: &str) -> String {
    crate::hex::encode(&Sha256::digest(s.as_bytes()))
}

impl Flows {
    pub(super) fn new(ttl: Duration, max: usize, per_user: usize) -> Flows {
        Flows {
            inner: Mutex::new(HashMap::new()),
            next_seq: AtomicU64::new(0),
            ttl,
            max,
            per_user,
        }
    }

    /// The id of an unopened link for `who` at `upstream`: the one already handed out, or a
    /// new one (replacing the user's oldest flow when they have [`MAX_FLOWS_PER_USER`]).
    pub(super) fn link(&self, who: &OnBehalfOf, upstream: &str) -> Result<String, FlowError> {
        let mut flows = self.inner.lock().expect("consent lock");
        let ttl = self.ttl;
        flows.retain(|_, f| f.created.elapsed() < ttl);
        if let Some((id, _)) = flows.iter().find(|(_, f)| {
            f.binding == who.binding && f.upstream == upstream && f.step == Step::Issued
        }) {
            return Ok(id.clone());
        }
        let mut mine: Vec<(String, u64)> = flows
            .iter()
            .filter(|(_, f)| f.binding == who.binding)
            .map(|(id, f)| (id.clone(), f.seq))
            .collect();
        if mine.len() >= self.per_user {
            mine.sort_by_key(|(_, seq)| *seq);
            for (id, _) in mine.iter().take(mine.len() + 1 - self.per_user) {
                flows.remove(id);
            }
        }
        if flows.len() >= self.max {
            return Err(FlowError::TooMany);
        }
        let id = super::consent::random_token();
        flows.insert(
            id.clone(),
            Flow {
                binding: who.binding.clone(),
                subject: who.subject.clone(),
                issuer: who.issuer.clone(),
                upstream: upstream.to_owned(),
                created: Instant::now(),
                seq: self.next_seq.fetch_add(1, Ordering::Relaxed),
                step: Step::Issued,
                browser: None,
                signed_in_as: None,
            },
        );
        Ok(id)
    }

    /// Opens link `id` (once): binds it to the browser whose cookie has `browser_digest` and
    /// moves it to `step`. Returns the flow.
    pub(super) fn open(
        &self,
        id: &str,
        browser_digest: String,
        step: Step,
    ) -> Result<Flow, FlowError> {
        let mut flows = self.inner.lock().expect("consent lock");
        let flow = flows
            .get_mut(id)
            .filter(|f| f.created.elapsed() < self.ttl)
            .ok_or(FlowError::Unknown)?;
        if flow.step != Step::Issued {
            return Err(FlowError::Used);
        }
        flow.browser = Some(browser_digest);
        flow.step = step;
        Ok(flow.clone())
    }

    /// Takes out the flow waiting for `state` at the step `pick` accepts (`pick` returns the
    /// step's state and what the caller needs of it). The flow leaves the table whatever
    /// happens next, so a state works once; it is returned only if one of `cookies` is the
    /// one set on the browser that opened the link.
    pub(super) fn take<T>(
        &self,
        state: Option<&str>,
        cookies: &[String],
        pick: impl Fn(&Step) -> Option<(String, T)>,
    ) -> Result<Taken<T>, FlowError> {
        let state = state.ok_or(FlowError::NotInProgress)?;
        let mut flows = self.inner.lock().expect("consent lock");
        let (id, picked) = flows
            .iter()
            .find_map(|(id, f)| {
                let (expected, picked) = pick(&f.step)?;
                let fits = bool::from(expected.as_bytes().ct_eq(state.as_bytes()));
                (fits && f.created.elapsed() < self.ttl).then(|| (id.clone(), picked))
            })
            .ok_or(FlowError::NotInProgress)?;
        let flow = flows.remove(&id).ok_or(FlowError::NotInProgress)?;
        let Some(expected) = flow.browser.as_deref() else {
            return Err(FlowError::OtherBrowser);
        };
        let cookie = cookies
            .iter()
            .take(MAX_COOKIES)
            .find(|c| bool::from(digest(c).as_bytes().ct_eq(expected.as_bytes())))
            .ok_or(FlowError::OtherBrowser)?
            .clone();
        Ok(Taken {
            id,
            flow,
            picked,
            cookie,
        })
    }

    /// Puts a taken flow back, at its next step.
    pub(super) fn advance(&self, id: String, mut flow: Flow, step: Step) {
        flow.step = step;
        self.inner.lock().expect("consent lock").insert(id, flow);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(sub: &str) -> OnBehalfOf {
        OnBehalfOf {
            binding: format!("b-{sub}"),
            subject: sub.into(),
            issuer: "https://idp.example".into(),
            subject_token: None,
        }
    }

    fn signing_in(state: &str) -> Step {
        Step::SigningIn {
            state: state.into(),
            verifier: "v".into(),
            nonce: "n".into(),
        }
    }

    fn pick_signing_in(s: &Step) -> Option<(String, String)> {
        match s {
            Step::SigningIn { state, nonce, .. } => Some((state.clone(), nonce.clone())),
            _ => None,
        }
    }

    #[test]
    fn a_link_opens_once_and_is_reused_only_until_opened() {
        let flows = Flows::new(Duration::from_secs(60), 100, 8);
        let id = flows.link(&who("alice"), "crm").unwrap();
        assert_eq!(flows.link(&who("alice"), "crm").unwrap(), id);
        assert_ne!(flows.link(&who("bob"), "crm").unwrap(), id);
        flows.open(&id, digest("cookie"), signing_in("s1")).unwrap();
        assert_eq!(
            flows
                .open(&id, digest("other"), signing_in("s2"))
                .unwrap_err(),
            FlowError::Used
        );
        assert_eq!(
            flows.open("nope", digest("c"), Step::Issued).unwrap_err(),
            FlowError::Unknown
        );
        // Once opened, the next call gets a fresh link.
        assert_ne!(flows.link(&who("alice"), "crm").unwrap(), id);
    }

    #[test]
    fn a_state_is_accepted_once_and_only_from_the_browser_that_opened_the_link() {
        let flows = Flows::new(Duration::from_secs(60), 100, 8);
        let cookies = |c: &str| vec!["unrelated".to_owned(), c.to_owned()];
        let id = flows.link(&who("alice"), "crm").unwrap();
        flows.open(&id, digest("mine"), signing_in("s1")).unwrap();
        // Another browser: refused, and the flow is gone (its state does not work again).
        let e = flows
            .take(Some("s1"), &cookies("theirs"), pick_signing_in)
            .err();
        assert_eq!(e, Some(FlowError::OtherBrowser));
        let e = flows
            .take(Some("s1"), &cookies("mine"), pick_signing_in)
            .err();
        assert_eq!(e, Some(FlowError::NotInProgress));

        let id = flows.link(&who("alice"), "crm").unwrap();
        flows.open(&id, digest("mine"), signing_in("s2")).unwrap();
        assert_eq!(
            flows.take(None, &cookies("mine"), pick_signing_in).err(),
            Some(FlowError::NotInProgress)
        );
        let taken = flows
            .take(Some("s2"), &cookies("mine"), pick_signing_in)
            .unwrap();
        assert_eq!(
            (taken.picked.as_str(), taken.cookie.as_str()),
            ("n", "mine")
        );
        let next = Step::Authorizing {
            state: "s3".into(),
            verifier: "v".into(),
            nonce: None,
        };
        flows.advance(taken.id, taken.flow, next);
        // The sign-in state does not work twice; the next step's state works once.
        assert!(
            flows
                .take(Some("s2"), &cookies("mine"), pick_signing_in)
                .is_err()
        );
        let pick_authorizing = |s: &Step| match s {
            Step::Authorizing { state, .. } => Some((state.clone(), ())),
            _ => None,
        };
        assert!(
            flows
                .take(Some("s3"), &cookies("mine"), pick_authorizing)
                .is_ok()
        );
        assert!(
            flows
                .take(Some("s3"), &cookies("mine"), pick_authorizing)
                .is_err()
        );
    }

    #[test]
    fn flows_are_capped_per_user_and_in_total_and_expire() {
        let flows = Flows::new(Duration::from_secs(60), 10, 3);
        let mut opened = Vec::new();
        for i in 0..5 {
            let id = flows.link(&who("alice"), "crm").unwrap();
            flows
                .open(&id, digest("c"), signing_in(&format!("s{i}")))
                .unwrap();
            opened.push(id);
        }
        // Alice's newest flows survive; her oldest were replaced.
        assert_eq!(flows.len(), 3);
        let e = flows.take(Some("s0"), &["c".to_owned()], pick_signing_in);
        assert_eq!(e.err(), Some(FlowError::NotInProgress));
        assert!(
            flows
                .take(Some("s4"), &["c".to_owned()], pick_signing_in)
                .is_ok()
        );
        for i in 0..8 {
            flows.link(&who(&format!("u{i}")), "crm").unwrap();
        }
        assert_eq!(flows.len(), 10);
        assert_eq!(
            flows.link(&who("late"), "crm").unwrap_err(),
            FlowError::TooMany
        );
        let short = Flows::new(Duration::ZERO, 10, 3);
        let id = short.link(&who("alice"), "crm").unwrap();
        assert_eq!(
            short.open(&id, digest("c"), Step::Issued).unwrap_err(),
            FlowError::Unknown
        );
    }
}
