//! Listings for a user who has not connected a per-user upstream (`user_oauth`) yet. Clients
//! list first and treat a failed listing as fatal ("failed to list tools"), so a listing never
//! asks for consent: the member's items come from the catalog's approved definitions (the
//! same definitions a connected user is served), or the member is left out, and the link is
//! asked for at the first call that needs the member.

use super::{CacheHints, FederationError, ListKind, SessionSource, VirtualServer};
use std::sync::Mutex;

/// One member's page: its items (as their JSON text), the upstream's next cursor, and its
/// caching hints.
pub(super) type Page = (Vec<super::RawItem>, Option<String>, CacheHints);

/// What a page served in a member's stead may be cached as: it is this user's (the member is
/// theirs to connect) and changes as soon as they connect it.
const STAND_IN: CacheHints = CacheHints {
    ttl_ms: 0,
    public: false,
};

/// Members a listing left out because their user must connect them first, in member order.
#[derive(Default)]
pub(super) struct LeftOut(Mutex<Vec<usize>>);

impl LeftOut {
    fn note(&self, member: usize) {
        let mut v = self.0.lock().expect("lock");
        if !v.contains(&member) {
            v.push(member);
            v.sort_unstable();
        }
    }

    /// The first member left out, if any.
    pub(super) fn first(&self) -> Option<usize> {
        self.0.lock().expect("lock").first().copied()
    }
}

impl VirtualServer {
    /// Lists member `i`; when the user must connect it first, its approved definitions instead
    /// (no cursor: the catalog serves them in one page), or nothing.
    pub(super) async fn list_member_or_catalog(
        &self,
        src: &dyn SessionSource,
        i: usize,
        kind: ListKind,
        cursor: Option<&str>,
        left_out: Option<&LeftOut>,
    ) -> Result<Page, FederationError> {
        let e = match self.list_member(src, i, kind, cursor).await {
            Err(e) if e.needs_consent() => e,
            other => return other,
        };
        if let Some(l) = left_out {
            l.note(i);
        }
        let upstream = &self.members[i].upstream;
        tracing::debug!(server = %self.name, %upstream, error = %e, "{} without a member the user has not connected: served from the catalog", kind.method());
        // A later page of an upstream's own cursor has nothing the catalog's single page lacks.
        if cursor.is_some() {
            return Ok((Vec::new(), None, STAND_IN));
        }
        let Some(catalog) = &self.catalog else {
            return Ok((Vec::new(), None, STAND_IN));
        };
        match catalog.approved(upstream, kind.definition()).await {
            Ok(items) => Ok((super::items::raw(items), None, STAND_IN)),
            Err(err) => {
                // The member is left out rather than failing the whole listing.
                tracing::warn!(server = %self.name, %upstream, error = %err, "catalog: cannot read the approved definitions");
                Ok((Vec::new(), None, STAND_IN))
            }
        }
    }
}
