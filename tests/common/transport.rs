//! The in-process scripted transport for integration tests: the library's
//! own [`Scripted`] (src/transport.rs, `transport::script`) behind a
//! [`Connector`], so a [`mailhop::deliver::Deliverer`] delivers whole jobs
//! without a socket. Each connection plays the next script and records
//! what the client wrote.
//!
//! Contract: no I/O and no waiting; a connection beyond the scripts is
//! refused with 4.4.1, as a closed port would be.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mailhop::connect::{ConnectOptions, Connector, Endpoint};
use mailhop::dsn::Dsn;
use mailhop::transport::Transport;
use mailhop::transport::script::{Scripted, Step};

/// A scripted transport whose writes are also copied to a shared record.
struct Recorded {
    inner: Scripted,
    written: Wire,
}

impl Read for Recorded {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

impl Write for Recorded {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Ok(mut written) = self.written.lock() {
            written.extend_from_slice(buf.get(..n).unwrap_or(buf));
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Transport for Recorded {
    fn set_recv_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.inner.set_recv_timeout(timeout)
    }

    fn set_send_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.inner.set_send_timeout(timeout)
    }
}

/// What the client wrote on one connection, shared with its transport.
type Wire = Arc<Mutex<Vec<u8>>>;

/// A [`Connector`] that hands out one scripted connection per script.
#[derive(Default)]
pub struct ScriptedNet {
    scripts: Mutex<VecDeque<Vec<Step>>>,
    connections: Mutex<Vec<(String, Wire)>>,
}

impl ScriptedNet {
    /// Connections play `scripts` in order.
    pub fn new(scripts: Vec<Vec<Step>>) -> Arc<Self> {
        Arc::new(Self {
            scripts: Mutex::new(scripts.into()),
            connections: Mutex::default(),
        })
    }

    /// For each connection made: the `host[addr]` it was made to and what
    /// the client wrote on it.
    pub fn written(&self) -> Vec<(String, String)> {
        self.connections
            .lock()
            .map(|list| {
                list.iter()
                    .map(|(display, bytes)| {
                        let bytes = bytes.lock().map(|b| b.clone()).unwrap_or_default();
                        (
                            display.clone(),
                            String::from_utf8_lossy(&bytes).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The [`Connector`] of a shared [`ScriptedNet`] (the test keeps the other
/// handle to read what was written).
pub struct Shared(pub Arc<ScriptedNet>);

impl Connector for Shared {
    fn connect(
        &self,
        _endpoint: &Endpoint,
        display: &str,
        _options: &ConnectOptions,
    ) -> Result<Box<dyn Transport>, Dsn> {
        let script = self.0.scripts.lock().ok().and_then(|mut s| s.pop_front());
        let Some(steps) = script else {
            return Err(Dsn::new(
                mailhop::dsn::CONNECT_FAILED,
                format!("connect to {display}: Connection refused"),
            ));
        };
        let written = Arc::new(Mutex::new(Vec::new()));
        if let Ok(mut list) = self.0.connections.lock() {
            list.push((display.to_string(), Arc::clone(&written)));
        }
        Ok(Box::new(Recorded {
            inner: Scripted::new(steps),
            written,
        }))
    }
}
