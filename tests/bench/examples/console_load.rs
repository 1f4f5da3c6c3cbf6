//! Load on a running `wfstate serve`: CLIENTS concurrent clients, each on its own keep-alive
//! connection, read case pages (view, a version, a diff) and lists, REQUESTS each; prints each
//! route's p50/p99 next to the static page served by the same process (the server's own
//! cost), the errors, and with the server's process id its peak resident size.
//!
//! Run: `cargo run --release -p wfstate-bench --example console_load -- URL CLIENTS REQUESTS
//! [SERVE_PID]`, URL as `http://127.0.0.1:8080`. It sends only to the address given; every
//! client stops after REQUESTS requests, every request after 30 s.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// One keep-alive connection.
struct Client {
    stream: BufReader<TcpStream>,
    host: String,
}

impl Client {
    async fn connect(host: &str) -> Result<Client, Error> {
        let stream = TcpStream::connect(host).await?;
        stream.set_nodelay(true)?;
        Ok(Client {
            stream: BufReader::new(stream),
            host: host.to_owned(),
        })
    }

    /// `GET path`: the status and the body.
    async fn get(&mut self, path: &str) -> Result<(u16, Vec<u8>), Error> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", self.host);
        self.stream.get_mut().write_all(request.as_bytes()).await?;
        let mut line = String::new();
        self.stream.read_line(&mut line).await?;
        let status: u16 = line.split(' ').nth(1).ok_or("no status line")?.parse()?;
        let mut length = 0;
        // Bounded: at most 100 header lines.
        for _ in 0..100 {
            line.clear();
            self.stream.read_line(&mut line).await?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse()?;
            }
        }
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).await?;
        Ok((status, body))
    }
}

/// The `percent`th percentile of `sorted` (nearest rank).
fn percentile(sorted: &[Duration], percent: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let at = (sorted.len() * percent).div_ceil(100).saturating_sub(1);
    sorted[at.min(sorted.len() - 1)]
}

/// A page of the list: the cases with at least two versions, and how many views it read.
async fn cases_to_read(host: &str) -> Result<(Vec<(String, u64)>, u64), Error> {
    let (status, body) = Client::connect(host)
        .await?
        .get("/api/cases?limit=1000")
        .await?;
    if status != 200 {
        return Err(format!("listing answered {status}").into());
    }
    let listed: serde_json::Value = serde_json::from_slice(&body)?;
    let cases: Vec<(String, u64)> = listed["cases"]
        .as_array()
        .ok_or("no cases listed")?
        .iter()
        .filter_map(|case| {
            Some((
                case["case_id"].as_str()?.to_owned(),
                case["version"].as_u64()?,
            ))
        })
        .filter(|(_, version)| *version >= 2)
        .collect();
    if cases.is_empty() {
        return Err("no case with two versions to read".into());
    }
    Ok((cases, listed["scanned"].as_u64().unwrap_or(0)))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(url), Some(clients), Some(requests)) = (args.first(), args.get(1), args.get(2))
    else {
        return Err("usage: console_load URL CLIENTS REQUESTS [SERVE_PID]".into());
    };
    let host = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let (clients, requests): (usize, usize) = (clients.parse()?, requests.parse()?);
    let (cases, listed) = cases_to_read(&host).await?;
    println!(
        "{clients} clients x {requests} requests on {} cases listed of {}",
        cases.len(),
        listed
    );
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|n| {
            let (host, cases) = (host.clone(), cases.clone());
            tokio::spawn(async move {
                let mut client = Client::connect(&host).await?;
                let mut timed: Vec<(&'static str, Duration, bool)> = Vec::with_capacity(requests);
                for round in 0..requests {
                    let (case, version) = &cases[(n * 7919 + round * 104_729) % cases.len()];
                    let (route, path) = match (n + round) % 5 {
                        0 => ("view", format!("/api/cases/{case}")),
                        1 => (
                            "at-version",
                            format!("/api/cases/{case}/versions/{}", version - 1),
                        ),
                        2 => (
                            "diff",
                            format!("/api/cases/{case}/diff?from={}&to={version}", version - 1),
                        ),
                        3 => ("list", "/api/cases?limit=50&status=done".to_owned()),
                        _ => ("page (baseline)", "/".to_owned()),
                    };
                    let sent = Instant::now();
                    let answer =
                        tokio::time::timeout(Duration::from_secs(30), client.get(&path)).await;
                    let ok = matches!(answer, Ok(Ok((200, _))));
                    timed.push((route, sent.elapsed(), ok));
                    if !matches!(answer, Ok(Ok(_))) {
                        client = Client::connect(&host).await?;
                    }
                }
                Ok::<_, Error>(timed)
            })
        })
        .collect();
    let mut by_route: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    let mut errors = 0;
    for task in tasks {
        for (route, elapsed, ok) in task.await?? {
            by_route.entry(route).or_default().push(elapsed);
            errors += usize::from(!ok);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let total: usize = by_route.values().map(Vec::len).sum();
    println!(
        "{total} requests in {seconds:.2} s ({:.0}/s), {errors} error(s)",
        total as f64 / seconds
    );
    for (route, mut times) in by_route {
        times.sort_unstable();
        println!(
            "  {route:<16} n {:>6}  p50 {:>8.2} ms  p99 {:>8.2} ms",
            times.len(),
            percentile(&times, 50).as_secs_f64() * 1000.0,
            percentile(&times, 99).as_secs_f64() * 1000.0
        );
    }
    if let Some(pid) = args.get(3) {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        if let Some(peak) = status.lines().find(|line| line.starts_with("VmHWM")) {
            println!(
                "serve's peak resident size: {}",
                peak.trim_start_matches("VmHWM:").trim()
            );
        }
    }
    if errors > 0 {
        return Err(format!("{errors} request(s) failed").into());
    }
    Ok(())
}
