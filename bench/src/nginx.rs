//! The zero-work proxy measured beside Gatehouse in the same run: Debian's nginx (`nginx-light`)
//! started on loopback with a generated configuration that forwards to the same fixtures the
//! direct rows use. Gatehouse's figures are then read as ratios of what a proxy that does no work
//! of its own costs on this machine, at this moment, rather than against figures from another day.

use crate::procs;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Where Debian and source builds put the binary when it is not on `PATH` (root's `PATH`
/// has `/usr/sbin`, a user's often does not).
const USUAL_PLACES: &[&str] = &[
    "/usr/sbin/nginx",
    "/usr/local/sbin/nginx",
    "/usr/local/nginx/sbin/nginx",
];

/// How long nginx may take to accept connections after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Idle upstream connections kept per upstream: above the highest concurrency the bench runs
/// (64), so that no cell opens a connection per request.
const UPSTREAM_IDLE: usize = 128;

/// The most an error message quotes from nginx's error log.
const LOG_QUOTE: usize = 2000;

#[derive(Debug, thiserror::Error)]
pub enum NginxError {
    #[error("nginx is not installed (`apt-get install nginx-light`, or scripts/setup.sh)")]
    NotInstalled,
    #[error("cannot prepare nginx's directory: {0}")]
    Dir(io::Error),
    #[error("cannot start {binary}: {source}")]
    Spawn { binary: String, source: io::Error },
    #[error("nginx exited ({status}): {log}")]
    Exited { status: ExitStatus, log: String },
    #[error("nginx did not accept connections on {0} within {START_TIMEOUT:?}")]
    NotListening(SocketAddr),
    #[error("not a loopback http:// URL the generated configuration can forward to: {0}")]
    Upstream(String),
}

/// One location nginx serves: requests to `path` go to `upstream` (a fixture's URL).
pub struct Route<'a> {
    pub path: &'a str,
    pub upstream: &'a str,
}

/// A running nginx, killed (and its directory removed) on drop.
pub struct Nginx {
    child: Child,
    dir: PathBuf,
    /// `http://127.0.0.1:PORT`; a route's URL is this plus its path.
    pub base: String,
    pub version: String,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // `master_process off`: this one process is all of nginx, so killing it leaves nothing.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Nginx {
    /// Starts nginx (`binary`, or the one found on this machine) under `parent` serving `routes`.
    pub fn start(
        binary: Option<&Path>,
        parent: &Path,
        routes: &[Route],
    ) -> Result<Nginx, NginxError> {
        let binary = match binary {
            Some(b) => b.to_owned(),
            None => find().ok_or(NginxError::NotInstalled)?,
        };
        let build =
            Command::new(&binary)
                .arg("-V")
                .output()
                .map_err(|source| NginxError::Spawn {
                    binary: binary.display().to_string(),
                    source,
                })?;
        // `nginx -V` prints to stderr: the version line, then the configure arguments.
        let build = String::from_utf8_lossy(&build.stderr).into_owned();
        let version = build
            .lines()
            .next()
            .and_then(|l| l.rsplit_once(": "))
            .map_or("nginx", |(_, v)| v)
            .to_owned();
        let dir = parent.join("nginx");
        std::fs::create_dir_all(&dir).map_err(NginxError::Dir)?;
        // A port picked here may be taken before nginx binds it; another one is tried then.
        let mut last = None;
        for _ in 0..3 {
            let port = free_port().map_err(NginxError::Dir)?;
            let conf = dir.join("nginx.conf");
            std::fs::write(&conf, config(&dir, port, routes, &build)?).map_err(NginxError::Dir)?;
            match launch(&binary, &dir, &conf, port) {
                Ok(child) => {
                    return Ok(Nginx {
                        child,
                        dir,
                        base: format!("http://127.0.0.1:{port}"),
                        version,
                    });
                }
                Err(e @ NginxError::Exited { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("three attempts"))
    }

    /// User + system CPU seconds nginx has used so far.
    pub fn cpu_seconds(&self) -> f64 {
        procs::cpu_seconds(self.child.id())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// The nginx binary on `PATH` or in the usual places.
pub fn find() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("nginx"));
    on_path
        .chain(USUAL_PLACES.iter().map(PathBuf::from))
        .find(|p| p.is_file())
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn launch(binary: &Path, dir: &Path, conf: &Path, port: u16) -> Result<Child, NginxError> {
    let log = dir.join("error.log");
    let stderr = std::fs::File::create(dir.join("stderr.log")).map_err(NginxError::Dir)?;
    // `-e`: the error log before the configuration is read (the compiled-in one may be a
    // root-owned path); `-p`: relative paths resolve under our directory.
    let mut child = Command::new(binary)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(conf)
        .arg("-e")
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .map_err(|source| NginxError::Spawn {
            binary: binary.display().to_string(),
            source,
        })?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let mut text = std::fs::read_to_string(&log).unwrap_or_default();
            text.push_str(&std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default());
            let start = text.len().saturating_sub(LOG_QUOTE);
            let start = (start..text.len())
                .find(|&i| text.is_char_boundary(i))
                .unwrap_or(text.len());
            return Err(NginxError::Exited {
                status,
                log: text[start..].trim().to_owned(),
            });
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return Ok(child);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(NginxError::NotListening(addr));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `host:port` and path of a fixture URL (`http://127.0.0.1:PORT/mcp`).
fn split_upstream(url: &str) -> Result<(&str, &str), NginxError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| NginxError::Upstream(url.to_owned()))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let safe = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".:/-_[]".contains(&b))
    };
    if !safe(authority) || !(path.is_empty() || safe(path)) {
        return Err(NginxError::Upstream(url.to_owned()));
    }
    Ok((authority, if path.is_empty() { "/" } else { path }))
}

/// The generated configuration: one process (`master_process off`, so its CPU is the whole
/// proxy's and it needs no root-owned pid, lock or temp path), no access log, HTTP/1.1 with
/// keep-alive to each upstream, and no response buffering so that SSE events pass as they come.
/// `build` is `nginx -V`'s output: temp paths are set only for the modules compiled in.
fn config(dir: &Path, port: u16, routes: &[Route], build: &str) -> Result<String, NginxError> {
    let d = dir.display();
    let mut c = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nlock_file {d}/nginx.lock;\nerror_log {d}/error.log warn;\nevents {{ worker_connections 4096; }}\nhttp {{\n  access_log off;\n  keepalive_requests 1000000;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n"
    );
    for module in ["fastcgi", "uwsgi", "scgi"] {
        if !build.contains(&format!("--without-http_{module}_module")) {
            c.push_str(&format!("  {module}_temp_path {d}/{module};\n"));
        }
    }
    for (i, r) in routes.iter().enumerate() {
        let (authority, _) = split_upstream(r.upstream)?;
        c.push_str(&format!(
            "  upstream u{i} {{ server {authority}; keepalive {UPSTREAM_IDLE}; keepalive_requests 1000000; }}\n"
        ));
    }
    c.push_str(&format!("  server {{\n    listen 127.0.0.1:{port};\n"));
    for (i, r) in routes.iter().enumerate() {
        let (authority, path) = split_upstream(r.upstream)?;
        // The fixture refuses a Host that is not loopback (DNS-rebinding check), so the
        // upstream's own authority is sent rather than the upstream block's name.
        // `proxy_buffer_size` bounds one read from the upstream when buffering is off: 64 KiB
        // so that 1 MiB results are not relayed in page-sized pieces (`proxy_buffers` only
        // so that the derived busy-buffers size stays valid; unused without buffering).
        c.push_str(&format!(
            "    location = {} {{\n      proxy_pass http://u{i}{path};\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_set_header Host {authority};\n      proxy_buffering off;\n      proxy_buffer_size 64k;\n      proxy_buffers 4 64k;\n    }}\n",
            r.path
        ));
    }
    c.push_str("  }\n}\n");
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_forwards_each_route_with_keepalive_and_loopback_host() {
        let routes = [
            Route {
                path: "/json",
                upstream: "http://127.0.0.1:4001/mcp",
            },
            Route {
                path: "/sse",
                upstream: "http://127.0.0.1:4002/mcp",
            },
        ];
        let c = config(
            Path::new("/tmp/x"),
            9000,
            &routes,
            "--without-http_scgi_module",
        )
        .unwrap();
        assert!(c.contains("upstream u0 { server 127.0.0.1:4001; keepalive 128;"));
        assert!(c.contains("location = /sse {\n      proxy_pass http://u1/mcp;"));
        assert!(c.contains("proxy_set_header Host 127.0.0.1:4002;"));
        assert!(c.contains("listen 127.0.0.1:9000;"));
        assert!(c.contains("fastcgi_temp_path /tmp/x/fastcgi;"));
        assert!(!c.contains("scgi_temp_path"));
    }

    #[test]
    fn upstreams_outside_the_generated_grammar_are_refused() {
        assert!(split_upstream("https://127.0.0.1:1/mcp").is_err());
        assert!(split_upstream("http://127.0.0.1:1/mcp; evil").is_err());
        assert_eq!(
            split_upstream("http://127.0.0.1:1").unwrap(),
            ("127.0.0.1:1", "/")
        );
    }
}
