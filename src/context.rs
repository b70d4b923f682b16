//! What one request carries down to its upstream besides the message: for whom it is made.
//! Built once at the edge (`downstream`), handed to federation through its `SessionSource`,
//! and passed explicitly to the upstream client and its credentials, including into the
//! tasks a call spawns (bridged rounds, cancellation), so that no code path depends on
//! which task it happens to run in.

use crate::config::Secret;
use std::sync::Arc;

/// The authenticated user a request is made for, as per-user credentials need it.
#[derive(Clone)]
pub struct OnBehalfOf {
    /// A stable digest of issuer and subject (the cache key; never the token).
    pub binding: String,
    /// The subject, as the IdP names the user.
    pub subject: String,
    /// The issuer of the user's token.
    pub issuer: String,
    /// The token the client presented, when it can be exchanged (not an API key).
    pub subject_token: Option<Secret>,
}

/// The context of one request towards upstreams. Cheap to clone.
#[derive(Clone, Default)]
pub struct CallContext {
    user: Option<Arc<OnBehalfOf>>,
}

impl CallContext {
    /// The gateway acting for itself (listings for the catalog, health checks, unprotected
    /// servers): no user.
    pub fn gateway() -> Self {
        CallContext::default()
    }

    /// A request made for `who`, or for nobody on an unprotected server.
    pub fn for_user(who: Option<OnBehalfOf>) -> Self {
        CallContext {
            user: who.map(Arc::new),
        }
    }

    /// The user the request is made for, if any.
    pub fn user(&self) -> Option<&OnBehalfOf> {
        self.user.as_deref()
    }
}
