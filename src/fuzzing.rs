//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz) into readers of hostile input
//! that are not public API of their own. Everything else the targets drive (the JSON-RPC
//! envelope, SSE, the passthrough rewriter, sealed session ids, URI templates, the
//! configuration) is public already. Hidden from the documentation: not for other callers.

use crate::auth::AuthError;
use serde_json::Value;

/// The JWT reader that runs on every bearer credential before any signature check: the
/// shape test, the raw `alg` sniffing and the header and unverified claims. Returns the
/// header's algorithm name and the claims.
pub fn jwt_read_unverified(token: &str) -> Result<(String, Value), AuthError> {
    let _ = crate::auth::looks_like_jwt(token);
    let _ = crate::auth::raw_alg(token);
    crate::auth::read_jwt_unverified(token).map(|(h, claims)| (format!("{:?}", h.alg), claims))
}
