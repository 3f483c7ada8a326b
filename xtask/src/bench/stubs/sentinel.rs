//! The endpoint the processes' AWS clients are given at init: a listener that serves nothing and counts who
//! connects to it, since nothing may connect before the first event.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, TcpListener};

use anyhow::{Context, Result};

pub struct Sentinel {
    listener: TcpListener,
}

impl Sentinel {
    pub fn start() -> Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding the sentinel listener")?;
        // Counting accepts what is queued and never waits.
        listener.set_nonblocking(true)?;
        Ok(Self { listener })
    }

    pub fn url(&self) -> Result<String> {
        Ok(format!("http://{}", self.listener.local_addr()?))
    }

    /// Connections made to it since the last call.
    pub fn connections(&self) -> Result<usize> {
        let mut count = 0;
        loop {
            match self.listener.accept() {
                Ok(_) => count += 1,
                Err(err) if err.kind() == ErrorKind::WouldBlock => return Ok(count),
                Err(err) => return Err(err).context("accepting on the sentinel listener"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpStream;

    use super::*;

    #[test]
    fn counts_the_connections_made_since_the_last_call() {
        let sentinel = Sentinel::start().unwrap();
        let addr = sentinel.listener.local_addr().unwrap();
        assert_eq!(sentinel.connections().unwrap(), 0);

        // A loopback connect returns once the handshake is done: the connection is queued by then.
        let _first = TcpStream::connect(addr).unwrap();
        let _second = TcpStream::connect(addr).unwrap();
        assert_eq!(sentinel.connections().unwrap(), 2);
        assert_eq!(sentinel.connections().unwrap(), 0);
    }
}
