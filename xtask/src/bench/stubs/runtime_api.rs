//! A Runtime API that only timestamps: every request is noted with the instant its head was read and left
//! unanswered, so a process under test stays in its first poll (never gets an event) until it is killed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Result;
use axum::Router;
use axum::extract::State;
use axum::http::{Method, Uri};
use tokio::sync::mpsc;

use super::Server;

/// What a runtime asks first: its next event.
const NEXT_INVOCATION: &str = "GET /2018-06-01/runtime/invocation/next";

/// A request to the stub.
pub struct Poll {
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
    server: Server,
    polls: mpsc::UnboundedReceiver<Poll>,
}

impl RuntimeApiStub {
    pub async fn start() -> Result<Self> {
        let (sender, polls) = mpsc::unbounded_channel();
        let server = Server::start("Runtime API stub", Router::new().fallback(hold).with_state(sender)).await?;
        Ok(Self { server, polls })
    }

    /// Where a runtime reaches it (`AWS_LAMBDA_RUNTIME_API` is this without the scheme).
    pub fn addr(&self) -> SocketAddr {
        self.server.addr
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

/// Notes the request and never answers: the connection stays open until the process closes it.
async fn hold(State(polls): State<mpsc::UnboundedSender<Poll>>, method: Method, uri: Uri) -> Infallible {
    let at = Instant::now();
    // The stub is gone when nobody receives: nothing left to note.
    let _ = polls.send(Poll { at, request: format!("{method} {uri}") });
    std::future::pending().await
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn a_poll_is_noted_and_left_unanswered() {
        let mut stub = RuntimeApiStub::start().await.unwrap();
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
        let mut stub = RuntimeApiStub::start().await.unwrap();
        let url = format!("http://{}/2018-06-01/runtime/init/error", stub.addr());
        tokio::spawn(async move { reqwest::Client::new().post(url).body("{}").send().await });

        let poll = stub.next_poll(WAIT).await.expect("the stub notes the request");
        assert_eq!(poll.request, "POST /2018-06-01/runtime/init/error");
        assert!(!poll.is_next_invocation());
    }
}
