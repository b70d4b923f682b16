//! Starting and watching the processes under test.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process, killed on drop.
pub struct Proc {
    pub child: Child,
    pub ready_line: String,
    /// Lines printed before the ready line.
    pub earlier: Vec<String>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Starts `cmd` and waits for a stdout line starting with `prefix`.
    pub fn start(mut cmd: Command, prefix: &str) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut earlier = Vec::new();
        let line = loop {
            match lines.next() {
                Some(Ok(l)) if l.starts_with(prefix) => break l[prefix.len()..].trim().to_owned(),
                Some(Ok(l)) => earlier.push(l),
                _ => panic!("{cmd:?} exited before printing {prefix:?}"),
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Proc {
            child,
            ready_line: line,
            earlier,
        }
    }

    /// The gateway's operations listener, from the line it prints before the main one.
    pub fn ops_base(&self) -> String {
        self.earlier
            .iter()
            .find_map(|l| l.strip_prefix("gatehouse ops listening on "))
            .expect("the gateway prints its ops address")
            .trim()
            .to_owned()
    }

    /// A value from /proc/PID/status in KiB (VmRSS, VmHWM).
    pub fn status_kib(&self, key: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// User + system CPU seconds used so far.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.child.id())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Waits until the gateway whose operations listener is `ops_base` answers `/readyz`, for at
/// most `within`.
pub async fn wait_ready(client: &reqwest::Client, ops_base: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while !client
        .get(format!("{ops_base}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(
            Instant::now() < deadline,
            "the gateway at {ops_base} did not become ready within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The fixture upstreams every bench configuration points at: one answering in JSON, one in
/// SSE, and ten (JSON) for the federating server.
pub struct Fixtures {
    pub json: Proc,
    pub sse: Proc,
    pub fed: Vec<Proc>,
}

impl Fixtures {
    /// Starts them from the fixture binary `bin`.
    pub fn start(bin: &Path) -> Fixtures {
        let fixture = |extra: &[&str]| {
            let mut c = Command::new(bin);
            c.args(["http", "--port", "0"]).args(extra);
            Proc::start(c, "READY ")
        };
        Fixtures {
            json: fixture(&["--json-response"]),
            sse: fixture(&[]),
            fed: (0..10).map(|_| fixture(&["--json-response"])).collect(),
        }
    }

    /// The federated members' URLs.
    pub fn fed_urls(&self) -> Vec<String> {
        self.fed.iter().map(|p| p.ready_line.clone()).collect()
    }
}

/// User + system CPU seconds process `pid` has used so far (0 once it is gone).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields after the command: state is 0, utime is 11, stime is 12.
    (ticks(11) + ticks(12)) / 100.0
}

/// A binary next to this one (the workspace's target directory), or as given.
pub fn sibling(name: &str, given: Option<&Path>) -> PathBuf {
    if let Some(p) = given {
        return p.to_owned();
    }
    let me = std::env::current_exe().expect("current exe");
    let path = me.with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: cargo build --release --workspace",
        path.display()
    );
    path
}
