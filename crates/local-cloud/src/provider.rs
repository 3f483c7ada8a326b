//! The simulated payment provider (`crates/payment-provider`) as a process of the local cloud.
//!
//! The provider binds a free port itself and prints `payment-provider listening on http://ADDR` once bound, so
//! [`PaymentProvider::start`] learns its URL without a choose-then-bind race.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long the provider may take to bind and say so.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`PaymentProvider::stop`] waits after SIGTERM before it kills the process.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long dropping a provider waits for the killed process to be reaped.
const REAP_TIMEOUT: Duration = Duration::from_secs(2);
/// What the provider prints before its URL.
const LISTENING_ON: &str = "payment-provider listening on ";

/// A running `payment-provider` process; dropping it kills the process.
#[derive(Debug)]
pub struct PaymentProvider {
    child: Option<Child>,
    url: String,
    http: reqwest::Client,
}

impl PaymentProvider {
    /// Starts `binary` (the `payment-provider` binary) on a free port of 127.0.0.1, declining amounts above
    /// `customer_limit` (the provider's default 10000.00 when `None`), and waits until it listens.
    pub async fn start(binary: &Path, customer_limit: Option<&str>) -> Result<Self> {
        let mut command = Command::new(binary);
        command.args(["--listen", "127.0.0.1:0"]);
        if let Some(limit) = customer_limit {
            command.args(["--customer-limit", limit]);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stdout = child.stdout.take().context("the provider's stdout is piped")?;
        let mut lines = BufReader::new(stdout).lines();
        let first = match tokio::time::timeout(START_TIMEOUT, lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) => {
                let status = child.wait().await.context("waiting for the provider that closed its stdout")?;
                bail!("{} exited before it listened ({status})", binary.display());
            }
            Ok(Err(err)) => return Err(err).context("reading the provider's stdout"),
            Err(_) => bail!("{} did not say where it listens within {START_TIMEOUT:?}", binary.display()),
        };
        let url = first
            .strip_prefix(LISTENING_ON)
            .ok_or_else(|| anyhow!("the provider's first line is not {LISTENING_ON:?}...: {first:?}"))?
            .to_owned();
        // It prints nothing else; a line it would print anyway goes to the log instead of filling the pipe.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!(line, "payment-provider stdout");
            }
        });
        tracing::debug!(url, "payment provider listening");
        Ok(Self { child: Some(child), url, http: reqwest::Client::new() })
    }

    /// The provider's base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The provider's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// `GET /v1/stats`: how many calls the provider received and what they did.
    pub async fn stats(&self) -> Result<serde_json::Value> {
        let url = format!("{}/v1/stats", self.url);
        let response = self.http.get(&url).send().await.with_context(|| format!("GET {url}"))?;
        let response = response.error_for_status().with_context(|| format!("GET {url}"))?;
        response.json().await.with_context(|| format!("GET {url}: reading the stats"))
    }

    /// Stops the provider: SIGTERM, then SIGKILL if it has not exited within a grace period. `Err` when it did
    /// not exit cleanly.
    pub async fn stop(mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else { return Ok(()) };
        if let Some(pid) = child.id() {
            let pid = Pid::from_raw(i32::try_from(pid).context("pid out of range")?);
            kill(pid, Signal::SIGTERM).context("sending SIGTERM to the provider")?;
        }
        let status = match tokio::time::timeout(STOP_GRACE, child.wait()).await {
            Ok(status) => status.context("waiting for the provider to exit")?,
            Err(_) => {
                child.kill().await.context("killing the provider")?;
                bail!("the provider did not stop within {STOP_GRACE:?} of SIGTERM and was killed");
            }
        };
        if !status.success() {
            bail!("the provider exited with {status}");
        }
        Ok(())
    }
}

impl Drop for PaymentProvider {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        if let Err(err) = child.start_kill() {
            eprintln!("killing the payment provider at {}: {err}", self.url);
            return;
        }
        // Reap it here, so it is gone (not a zombie) once the drop returns; SIGKILL makes this short.
        let deadline = std::time::Instant::now() + REAP_TIMEOUT;
        while matches!(child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
