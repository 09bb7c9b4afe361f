//! A UDP socket that mangles packets, for tests: loss, duplication, delay (and so reordering),
//! and a black hole that drops everything both ways (a killed or cut-off node, in-process).
//! This kernel has no `tc netem`; quinn's [`quinn::AsyncUdpSocket`] seam is where a test can
//! put these faults between two endpoints. Nothing in a node uses it.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The faults applied to packets sent, changeable while the socket runs.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// The probability that a packet is dropped.
    pub loss: f64,
    /// The probability that a packet is sent twice.
    pub duplicate: f64,
    /// Each packet is held back a random time up to this (packets overtake each other).
    pub max_delay: Duration,
    /// Drop every packet sent and received.
    pub black_hole: bool,
}

struct State {
    faults: Faults,
    rng: StdRng,
}

/// A handle that changes the faults of a [`FaultSocket`].
#[derive(Clone)]
pub struct FaultHandle(Arc<Mutex<State>>);

impl FaultHandle {
    /// Replaces the faults.
    pub fn set(&self, faults: Faults) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).faults = faults;
    }
}

/// The mangling socket.
pub struct FaultSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for FaultSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultSocket").finish_non_exhaustive()
    }
}

impl FaultSocket {
    /// Wraps `inner`; `seed` makes the choices of drops, duplicates and delays repeatable.
    pub fn wrap(inner: Arc<dyn AsyncUdpSocket>, seed: u64) -> (Arc<Self>, FaultHandle) {
        let state = Arc::new(Mutex::new(State {
            faults: Faults::default(),
            rng: StdRng::seed_from_u64(seed),
        }));
        (
            Arc::new(Self {
                inner,
                state: state.clone(),
            }),
            FaultHandle(state),
        )
    }
}

impl AsyncUdpSocket for FaultSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        let delays = {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let f = s.faults.clone();
            if f.black_hole || s.rng.random_bool(f.loss.clamp(0.0, 1.0)) {
                return Ok(());
            }
            let copies = if s.rng.random_bool(f.duplicate.clamp(0.0, 1.0)) {
                2
            } else {
                1
            };
            (0..copies)
                .map(|_| {
                    if f.max_delay.is_zero() {
                        Duration::ZERO
                    } else {
                        f.max_delay.mul_f64(s.rng.random::<f64>())
                    }
                })
                .collect::<Vec<Duration>>()
        };
        for delay in delays {
            if delay.is_zero() {
                self.inner.try_send(transmit)?;
                continue;
            }
            let inner = self.inner.clone();
            let destination = transmit.destination;
            let contents = transmit.contents.to_vec();
            let src_ip = transmit.src_ip;
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let t = Transmit {
                    destination,
                    ecn: None,
                    contents: &contents,
                    segment_size: None,
                    src_ip,
                };
                // A full buffer drops the packet, as the network would.
                let _ = inner.try_send(&t);
            });
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        loop {
            match self.inner.poll_recv(cx, bufs, meta) {
                Poll::Ready(Ok(_))
                    if self
                        .state
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .faults
                        .black_hole => {}
                other => return other,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    // One datagram per send, so a copy or a delay is one packet.
    fn max_transmit_segments(&self) -> usize {
        1
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}
