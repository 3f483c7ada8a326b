//! The endpoints the measured processes talk to instead of AWS, served in the bench's own process so that a
//! figure measures the function, not an emulator: [`RuntimeApiStub`] (init), [`Sentinel`] (init) and
//! [`DynamoStub`] (memory). Each listens on `127.0.0.1:<ephemeral>`, bound before any process is given its
//! address, so a process can connect from its first instruction on. The HTTP ones run on hyper: the DynamoDB stub
//! as an axum router ([`Server`]), as local-lambda's servers are; the Runtime API stub serves each connection with
//! hyper itself, after timestamping its arrival.

mod dynamodb;
mod runtime_api;
mod sentinel;

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::{Context, Result};
use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use dynamodb::DynamoStub;
pub use runtime_api::RuntimeApiStub;
pub use sentinel::Sentinel;

/// An HTTP server on the loopback, serving a router until it is dropped.
struct Server {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Server {
    /// Binds `127.0.0.1:0` and serves `app` on what was bound; `name` says which stub failed to bind.
    async fn start(name: &str, app: Router) -> Result<Self> {
        let listener =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.with_context(|| format!("binding the {name}"))?;
        let addr = listener.local_addr().with_context(|| format!("the {name}'s address"))?;
        let name = name.to_owned();
        let task = tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app).await {
                eprintln!("the {name} stopped: {err}");
            }
        });
        Ok(Self { addr, task })
    }
}

impl Drop for Server {
    /// Stops accepting; a connection still open ends when its process closes it.
    fn drop(&mut self) {
        self.task.abort();
    }
}
