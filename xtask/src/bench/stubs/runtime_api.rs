//! A Runtime API that only timestamps: every request is noted with the instant its bytes arrived and left
//! unanswered, so a process under test stays in its first poll (never gets an event) until it is killed.
//!
//! hyper parses the requests; a thread of its own accepts each connection and waits, blocking, for its first
//! bytes, so the instant is the arrival itself: tokio's wake-up path, unoptimized in xtask's dev build, notices
//! readable bytes ~0.25 ms later (a blocking read: ~0.05 ms), and a constant added to every init time would pull
//! the init ratios toward 1.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::body::Body;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::mpsc;

/// What a runtime asks first: its next event.
const NEXT_INVOCATION: &str = "GET /2018-06-01/runtime/invocation/next";
/// How long a connection may stay silent before the stub gives up on it (and on the processes after it: one
/// connection is waited for at a time).
const SILENCE_LIMIT: Duration = Duration::from_secs(10);

/// A request to the stub.
#[derive(Debug)]
pub struct Poll {
    /// When its connection's first bytes arrived: the request's arrival (the stub answers none, so a connection
    /// carries one request).
    pub at: Instant,
    /// Method and path, e.g. `GET /2018-06-01/runtime/invocation/next`.
    pub request: String,
}

impl Poll {
    /// Whether it asks for the next event.
    pub fn is_next_invocation(&self) -> bool {
        self.request == NEXT_INVOCATION
    }
}

pub struct RuntimeApiStub {
    addr: SocketAddr,
    polls: mpsc::UnboundedReceiver<Poll>,
}

impl RuntimeApiStub {
    /// Listens on `127.0.0.1:<ephemeral>`; the connections are served on the current tokio runtime.
    pub fn start() -> Result<Self> {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding the Runtime API stub")?;
        let addr = listener.local_addr().context("the Runtime API stub's address")?;
        let runtime = Handle::current();
        let (sender, polls) = mpsc::unbounded_channel();
        // Blocks in accept; ends at the first connection after the stub is dropped.
        std::thread::spawn(move || {
            let _runtime = runtime.enter();
            for stream in listener.incoming() {
                if sender.is_closed() {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let Some(at) = first_bytes(&stream) else { continue };
                let Ok(stream) = stream.set_nonblocking(true).and_then(|()| TcpStream::from_std(stream)) else {
                    continue;
                };
                tokio::spawn(serve(stream, at, sender.clone()));
            }
        });
        Ok(Self { addr, polls })
    }

    /// Where a runtime reaches it (`AWS_LAMBDA_RUNTIME_API` is this without the scheme).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Forgets the requests received so far, so that the next poll is the next process's.
    pub fn forget_polls(&mut self) {
        while self.polls.try_recv().is_ok() {}
    }

    /// The next request, if one comes within `deadline`.
    pub async fn next_poll(&mut self, deadline: Duration) -> Option<Poll> {
        tokio::time::timeout(deadline, self.polls.recv()).await.ok().flatten()
    }
}

/// Waits for the connection's first bytes (leaving them to be read) and returns when they arrived; `None` when
/// the connection closes, fails or stays silent for [`SILENCE_LIMIT`].
fn first_bytes(stream: &std::net::TcpStream) -> Option<Instant> {
    stream.set_read_timeout(Some(SILENCE_LIMIT)).ok()?;
    let arrived = matches!(stream.peek(&mut [0]), Ok(1..));
    let at = Instant::now();
    stream.set_read_timeout(None).ok()?;
    arrived.then_some(at)
}

/// Notes the connection's request and never answers it: the connection stays open until the process closes it.
async fn serve(stream: TcpStream, at: Instant, polls: mpsc::UnboundedSender<Poll>) {
    let service = service_fn(move |request: Request<Incoming>| {
        // The stub is gone when nobody receives: nothing left to note.
        let _ = polls.send(Poll { at, request: format!("{} {}", request.method(), request.uri()) });
        std::future::pending::<Result<Response<Body>, Infallible>>()
    });
    // Ends when the process closes the connection (or is killed): an error of no interest here.
    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn a_poll_is_noted_and_left_unanswered() {
        let mut stub = RuntimeApiStub::start().unwrap();
        let url = format!("http://{}/2018-06-01/runtime/invocation/next", stub.addr());
        let sent = Instant::now();
        let request = tokio::spawn(async move { reqwest::get(url).await });

        let poll = stub.next_poll(WAIT).await.expect("the stub notes the poll");
        assert!(poll.is_next_invocation(), "{}", poll.request);
        assert!(poll.at >= sent);
        let unanswered = tokio::time::timeout(Duration::from_millis(200), request).await;
        assert!(unanswered.is_err(), "the poll was answered: {unanswered:?}");
    }

    #[tokio::test]
    async fn any_other_request_is_noted_as_what_it_is() {
        let mut stub = RuntimeApiStub::start().unwrap();
        let url = format!("http://{}/2018-06-01/runtime/init/error", stub.addr());
        tokio::spawn(async move { reqwest::Client::new().post(url).body("{}").send().await });

        let poll = stub.next_poll(WAIT).await.expect("the stub notes the request");
        assert_eq!(poll.request, "POST /2018-06-01/runtime/init/error");
        assert!(!poll.is_next_invocation());
    }
}
