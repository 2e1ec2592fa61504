//! A TCP proxy in front of one replica that can cut the network: all of it
//! (the replica is isolated) or only connections from given source
//! addresses (another replica, which dials from the address it listens on).

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

#[derive(Default)]
struct State {
    down: AtomicBool,
    blocked: Mutex<HashSet<IpAddr>>,
    /// Open connections by source address, to cut them.
    open: Mutex<Vec<(IpAddr, AbortHandle)>>,
}

/// A running proxy; dropping it stops it.
pub struct Proxy {
    /// Where it listens (what other processes are told to dial).
    pub addr: String,
    state: Arc<State>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `target`.
    pub async fn start(target: String) -> anyhow::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let state = Arc::new(State::default());
        let accept = tokio::spawn(accept_loop(listener, target, state.clone()));
        Ok(Proxy { addr, state, accept })
    }

    /// Cuts every connection and refuses new ones.
    pub fn isolate(&self) {
        self.state.down.store(true, Ordering::SeqCst);
        for (_, task) in self.state.open.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// Cuts connections from `source` and refuses new ones from it.
    pub fn block(&self, source: IpAddr) {
        self.state.blocked.lock().unwrap().insert(source);
        self.state.open.lock().unwrap().retain(|(ip, task)| {
            if *ip == source {
                task.abort();
            }
            *ip != source
        });
    }

    /// Lets everything through again.
    pub fn heal(&self) {
        self.state.down.store(false, Ordering::SeqCst);
        self.state.blocked.lock().unwrap().clear();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.isolate();
    }
}

async fn accept_loop(listener: TcpListener, target: String, state: Arc<State>) {
    while let Ok((inbound, peer)) = listener.accept().await {
        let refused = state.down.load(Ordering::SeqCst) || state.blocked.lock().unwrap().contains(&peer.ip());
        if refused {
            continue; // dropped: the dialler sees the connection reset
        }
        let target = target.clone();
        let task = tokio::spawn(async move {
            if let Ok(mut outbound) = TcpStream::connect(&target).await {
                let mut inbound = inbound;
                let _ = outbound.set_nodelay(true);
                let _ = inbound.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
        let mut open = state.open.lock().unwrap();
        open.retain(|(_, t)| !t.is_finished());
        open.push((peer.ip(), task.abort_handle()));
    }
}
