//! [`NatsCluster`]: three (or more) real nats-server processes with JetStream, clustered over
//! loopback routes, for the tests that only a cluster shows (replicas, leader changes). A
//! cluster of one is a single server without routes.
//!
//! Every node has its own name, client, route and monitoring ports and store directory, kept
//! across restarts. A node can be killed (SIGKILL), paused (SIGSTOP) and resumed (SIGCONT),
//! always by the process id this fixture started; every process still running is killed when
//! the cluster is dropped, also when the test fails. It needs the `nats-server` binary on
//! `PATH` (a container or an external URL cannot be clustered by a test).
//!
//! [`NatsCluster::start_partitionable`] routes every link between two nodes through a
//! [`RouteProxy`], so that a node can be cut off from the others ([`NatsCluster::isolate`])
//! while it keeps running and serving its clients.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::proxy::RouteProxy;

/// How long a cluster may take to form (or a restarted node to rejoin) before the test fails.
const READY_WITHIN: Duration = Duration::from_mins(1);

struct Node {
    name: String,
    client_port: u16,
    route_port: u16,
    monitor_port: u16,
    store: PathBuf,
    child: Option<Child>,
}

/// A running cluster of nats-server processes, stopped on drop.
pub struct NatsCluster {
    nodes: Vec<Node>,
    /// `links[from][to]`: the proxy node `from` dials to reach node `to`'s route port; `None`
    /// from a node to itself, and everywhere when the routes are direct.
    links: Vec<Vec<Option<RouteProxy>>>,
    /// A configuration file every server reads; the flags override what they also set.
    config: Option<PathBuf>,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("a local address").port()
}

impl NatsCluster {
    /// Starts `size` clustered servers on loopback and waits until JetStream is ready on
    /// each.
    ///
    /// # Panics
    /// When the binary is not on `PATH`, or the cluster does not form in time.
    pub fn start(size: usize) -> NatsCluster {
        NatsCluster::start_with(size, false, None)
    }

    /// [`NatsCluster::start`] with `jetstream { sync_interval: always }` in every server's
    /// configuration: each write is flushed to disk before it is acknowledged.
    ///
    /// # Panics
    /// As [`NatsCluster::start`].
    pub fn start_sync_always(size: usize) -> NatsCluster {
        NatsCluster::start_with(size, false, Some("jetstream { sync_interval: always }\n"))
    }

    /// [`NatsCluster::start`] with every route through a proxy of this fixture, so that
    /// [`NatsCluster::isolate`] can partition a node from the others.
    ///
    /// # Panics
    /// As [`NatsCluster::start`].
    pub fn start_partitionable(size: usize) -> NatsCluster {
        NatsCluster::start_with(size, true, None)
    }

    fn start_with(size: usize, proxied: bool, config: Option<&str>) -> NatsCluster {
        assert!(size >= 1, "a cluster has at least one node");
        // A free port can be taken by another test's server between our probe and the node's
        // bind; that node then exits. Such a cluster is stopped and started again on new ports.
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("a temp dir for the cluster");
            let config = config.map(|text| {
                let path = dir.path().join("server.conf");
                std::fs::write(&path, text).expect("write the servers' configuration");
                path
            });
            let prefix = format!("wfstate-test-{}", std::process::id());
            let nodes = (0..size)
                .map(|n| Node {
                    name: format!("{prefix}-n{n}-{}", free_port()),
                    client_port: free_port(),
                    route_port: free_port(),
                    monitor_port: free_port(),
                    store: dir.path().join(format!("n{n}")),
                    child: None,
                })
                .collect::<Vec<Node>>();
            let links = (0..size)
                .map(|from| {
                    (0..size)
                        .map(|to| {
                            (proxied && from != to).then(|| RouteProxy::start(nodes[to].route_port))
                        })
                        .collect()
                })
                .collect();
            let mut cluster = NatsCluster {
                nodes,
                links,
                config,
                _dir: dir,
            };
            for n in 0..size {
                cluster.spawn(n);
            }
            if cluster.ready_within(READY_WITHIN) {
                return cluster;
            }
        }
        panic!("a cluster of {size} nats-server nodes did not form in 5 attempts");
    }

    /// Waits until every running node is healthy; `false` at once when one has exited, or
    /// after `limit`.
    fn ready_within(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        for n in 0..self.nodes.len() {
            loop {
                let node = &mut self.nodes[n];
                let Some(child) = node.child.as_mut() else {
                    break;
                };
                if healthy(node.monitor_port) {
                    break;
                }
                if !matches!(child.try_wait(), Ok(None)) || Instant::now() >= deadline {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        true
    }

    fn spawn(&mut self, n: usize) {
        let routes: Vec<String> = (0..self.nodes.len())
            .filter(|other| *other != n)
            .map(|other| {
                let port = self.links[n][other]
                    .as_ref()
                    .map_or(self.nodes[other].route_port, RouteProxy::port);
                format!("nats://127.0.0.1:{port}")
            })
            .collect();
        let proxied = self.links[n].iter().any(Option::is_some);
        let node = &mut self.nodes[n];
        let mut command = Command::new("nats-server");
        if let Some(config) = &self.config {
            command.arg("-c").arg(config);
        }
        if proxied {
            // Servers tell each other the route addresses they know of and dial the ones they
            // are not connected to; that would bypass the proxies. Every node advertises a
            // port nothing listens on, so such dials fail and only the proxies carry routes.
            command.args(["--cluster_advertise", "127.0.0.1:1"]);
        }
        command
            .args(["-js", "-a", "127.0.0.1", "-n", &node.name])
            .args(["-p", &node.client_port.to_string()])
            .args(["-m", &node.monitor_port.to_string()]);
        // A cluster of one is a single server: no routes, as a user would run it.
        if !routes.is_empty() {
            command
                .args(["--cluster_name", "wfstate-test"])
                .args([
                    "--cluster",
                    &format!("nats://127.0.0.1:{}", node.route_port),
                ])
                .args(["--routes", &routes.join(",")]);
        }
        let child = command
            .arg("-sd")
            .arg(&node.store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("a cluster test needs the nats-server binary on PATH: {error}")
            });
        node.child = Some(child);
    }

    /// Waits until every running node answers its health check.
    ///
    /// # Panics
    /// When one exits, or is not ready within a minute.
    pub fn wait_ready(&mut self) {
        assert!(
            self.ready_within(READY_WITHIN),
            "the cluster is not ready after {READY_WITHIN:?}"
        );
    }

    /// The client URLs of every node, comma-separated.
    pub fn urls(&self) -> String {
        (0..self.nodes.len())
            .map(|n| self.url(n))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The client URL of node `n`.
    pub fn url(&self, n: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[n].client_port)
    }

    /// The body of node `n`'s monitoring page `path` (`/varz`, `/jsz`, ...), if it answers.
    pub fn monitor(&self, n: usize, path: &str) -> Option<String> {
        let answer = http_get(self.nodes[n].monitor_port, path)?;
        answer
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
    }

    /// The server name of node `n` (as JetStream names stream leaders).
    pub fn name(&self, n: usize) -> &str {
        &self.nodes[n].name
    }

    /// Kills node `n` with SIGKILL and waits for it to exit; whether it was running.
    pub fn kill(&mut self, n: usize) -> bool {
        let running = self.running(n);
        if let Some(mut child) = self.nodes[n].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        running
    }

    /// Whether node `n`'s process is running (started, and not exited since).
    pub fn running(&mut self, n: usize) -> bool {
        self.nodes[n]
            .child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Starts node `n` again (same name, ports and store) and waits until it is ready.
    pub fn restart(&mut self, n: usize) {
        let _ = self.kill(n);
        self.spawn(n);
        self.wait_ready();
    }

    /// Stops node `n` with SIGSTOP (a long pause: it holds its sockets and answers nothing);
    /// whether it was running to be paused (a node that is not is left as it is).
    pub fn pause(&mut self, n: usize) -> bool {
        self.running(n) && self.try_signal(n, "-STOP")
    }

    /// Resumes node `n` after [`NatsCluster::pause`].
    pub fn resume(&self, n: usize) {
        self.signal(n, "-CONT");
    }

    /// Cuts every link between node `n` and the others (both ways): a partition with both
    /// sides running. [`NatsCluster::heal`] undoes it.
    ///
    /// # Panics
    /// When the cluster was not started with [`NatsCluster::start_partitionable`].
    pub fn isolate(&self, n: usize) {
        for other in (0..self.nodes.len()).filter(|other| *other != n) {
            for (from, to) in [(n, other), (other, n)] {
                self.links[from][to]
                    .as_ref()
                    .expect("a partitionable cluster")
                    .cut();
            }
        }
    }

    /// Delays every byte sent to node `n` from the node `from` by `delay` (a slow link, one
    /// way). [`NatsCluster::heal`] undoes it.
    ///
    /// # Panics
    /// When the cluster was not started with [`NatsCluster::start_partitionable`].
    pub fn slow_link(&self, from: usize, n: usize, delay: Duration) {
        // Either node may have dialled the routes the two use: both proxies are slowed, each
        // in the direction towards `n`.
        let link = |a: usize, b: usize| self.links[a][b].as_ref().expect("a partitionable cluster");
        link(from, n).delay(true, delay);
        link(n, from).delay(false, delay);
    }

    /// Heals every cut link.
    pub fn heal(&self) {
        for proxy in self.links.iter().flatten().flatten() {
            proxy.heal();
        }
    }

    /// The process id of node `n`, while it runs.
    pub fn pid(&self, n: usize) -> Option<u32> {
        self.nodes[n].child.as_ref().map(Child::id)
    }

    /// The number of nodes.
    pub fn size(&self) -> usize {
        self.nodes.len()
    }

    fn signal(&self, n: usize, signal: &str) {
        assert!(self.try_signal(n, signal), "kill {signal} of node {n}");
    }

    /// Sends `signal` to node `n` if it runs; whether it was delivered.
    fn try_signal(&self, n: usize, signal: &str) -> bool {
        let Some(child) = &self.nodes[n].child else {
            return true;
        };
        Command::new("kill")
            .arg(signal)
            .arg(child.id().to_string())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for n in 0..self.nodes.len() {
            // A paused node must be resumed to die of SIGKILL promptly and release its ports;
            // one that has exited already (a failed start) cannot be, which is fine here.
            self.try_signal(n, "-CONT");
            let _ = self.kill(n);
        }
    }
}

/// Whether the node's monitoring port answers its health check with 200 (with JetStream, that
/// includes a known meta leader and current streams).
fn healthy(monitor_port: u16) -> bool {
    http_get(monitor_port, "/healthz").is_some_and(|answer| {
        answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200")
    })
}

/// The whole answer (status line, headers, body) to `GET path` on a loopback port.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut answer = String::new();
    let _ = stream.take(1 << 20).read_to_string(&mut answer);
    Some(answer)
}
