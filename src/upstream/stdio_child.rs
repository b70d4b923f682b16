//! What a stdio child gets and gives besides JSON-RPC: the environment it starts with (only
//! what the configuration allows, none of the gateway's own secrets) and its stderr, forwarded
//! to the log with every line bounded.

use std::ffi::OsString;
use tokio::io::{AsyncBufReadExt, BufReader};

/// The variables of `from` that `allowed` names (exactly, or by a prefix ending in `*`).
pub(super) fn inherited(
    allowed: &[String],
    from: impl Iterator<Item = (OsString, OsString)>,
) -> Vec<(OsString, OsString)> {
    from.filter(|(name, _)| {
        let Some(name) = name.to_str() else {
            return false;
        };
        allowed.iter().any(|a| match a.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == a,
        })
    })
    .collect()
}

/// Longest part of one stderr line forwarded to the log. The rest of a longer line is read and
/// dropped, and the log says so, so that a child writing one endless line costs the gateway
/// this much memory and no more.
const MAX_STDERR_LINE_BYTES: usize = 4096;

/// Forwards the child's stderr to the log, line by line, each cut at [`MAX_STDERR_LINE_BYTES`].
/// Bytes that are not UTF-8 are shown as U+FFFD rather than ending the forwarding (a child
/// whose stderr is no longer read would block once the pipe fills).
pub(super) async fn log_stderr(upstream: String, stderr: tokio::process::ChildStderr) {
    let mut reader = BufReader::new(stderr);
    let mut line: Vec<u8> = Vec::with_capacity(256);
    // Set once the current line has reached the cap and been logged: drop until its end.
    let mut dropping = false;
    loop {
        let buf = match reader.fill_buf().await {
            Ok([]) | Err(_) => break,
            Ok(buf) => buf,
        };
        let newline = buf.iter().position(|&b| b == b'\n');
        let chunk = &buf[..newline.unwrap_or(buf.len())];
        if !dropping {
            let take = chunk.len().min(MAX_STDERR_LINE_BYTES - line.len());
            line.extend_from_slice(&chunk[..take]);
            if take < chunk.len() {
                tracing::warn!(
                    upstream = %upstream,
                    "stderr (line longer than {MAX_STDERR_LINE_BYTES} bytes, the rest is dropped): {}",
                    String::from_utf8_lossy(&line)
                );
                line.clear();
                dropping = true;
            }
        }
        let consumed = newline.map_or(buf.len(), |i| i + 1);
        reader.consume(consumed);
        if newline.is_some() {
            if !dropping {
                log_stderr_line(&upstream, &line);
            }
            line.clear();
            dropping = false;
        }
    }
    if !line.is_empty() {
        log_stderr_line(&upstream, &line);
    }
}

fn log_stderr_line(upstream: &str, line: &[u8]) {
    let text = String::from_utf8_lossy(line);
    tracing::info!(upstream = %upstream, "stderr: {}", text.trim_end_matches('\r'));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allowed_names_and_prefixes_are_inherited() {
        let from = [
            ("PATH", "/bin"),
            ("PATHOLOGY", "no"),
            ("LC_ALL", "C"),
            ("LC_TIME", "C"),
            ("GATEHOUSE_SESSION_KEY", "secret"),
        ]
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let allowed = ["PATH".to_owned(), "LC_*".to_owned()];
        let got: Vec<_> = inherited(&allowed, from.into_iter())
            .into_iter()
            .map(|(k, _)| k.into_string().unwrap())
            .collect();
        assert_eq!(got, ["PATH", "LC_ALL", "LC_TIME"]);
    }
}
