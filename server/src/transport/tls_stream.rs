//! A server-side TLS stream over rustls's unbuffered API, holding no buffer while idle.
//!
//! `tokio_rustls` (rustls's buffered connection) keeps a 4 KiB receive buffer for the whole life
//! of a connection; with tens of thousands of mostly idle WebSocket connections that was over a
//! quarter of a TLS connection's memory. Here the connection's buffers (TLS bytes received,
//! plaintext not yet read, TLS bytes not yet sent) are ordinary vectors that are released as soon
//! as they are empty, so an idle connection keeps only rustls's session state.
//!
//! Longer than 600 lines because it is one state machine over rustls's unbuffered API: the
//! handshake, reads and writes share its three buffers and one invariant (a buffer is freed
//! the moment it empties), and split into files the states would no longer read together.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use rustls::ServerConfig;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// How much is read from the socket at a time.
const READ_CHUNK: usize = 4096;

/// Above this many encrypted bytes waiting for the socket, writes wait (backpressure).
const MAX_PENDING_OUT: usize = 64 * 1024;

/// Bound on encrypted bytes queued when reading makes us answer. rustls itself keeps this to a
/// few records (one key-update answer at a time, sent with our next write; 32 key updates at
/// most between two data records; a handful of warning alerts), which the test
/// `key_updates_from_a_peer_that_reads_nothing_queue_nothing` checks; this bound keeps the
/// stream safe should a later rustls answer more: what writes may leave queued, plus room.
const MAX_PENDING_OUT_FROM_READS: usize = 2 * MAX_PENDING_OUT + MAX_WRITE_CHUNK;

/// Plaintext taken per `poll_write`: a few full records, so that one call stays cheap.
const MAX_WRITE_CHUNK: usize = 4 * 16 * 1024;

/// Where the TLS session stands after the received bytes were processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The handshake needs more bytes from the peer.
    Handshaking,
    /// Application data may flow.
    Open,
    /// The session is over (both sides sent close_notify).
    Closed,
}

/// A TLS session over a TCP stream, for the WebSocket listener.
pub struct TlsStream {
    tcp: TcpStream,
    conn: UnbufferedServerConnection,
    /// TLS bytes received and not yet processed (at most one partial record plus a read).
    incoming: Vec<u8>,
    /// Decrypted bytes not yet read, from `plain_pos`.
    plaintext: Vec<u8>,
    plain_pos: usize,
    /// TLS bytes not yet written to the socket, from `out_pos`.
    outgoing: Vec<u8>,
    out_pos: usize,
    /// The peer sent close_notify or closed its side: reads see the end of the stream.
    read_closed: bool,
    /// We queued our close_notify.
    close_sent: bool,
}

impl std::fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("tcp", &self.tcp)
            .field("incoming", &self.incoming.len())
            .field("plaintext", &(self.plaintext.len() - self.plain_pos))
            .field("outgoing", &(self.outgoing.len() - self.out_pos))
            .finish_non_exhaustive()
    }
}

fn tls_error(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}"))
}

/// Runs the server side of the handshake on `tcp`.
pub async fn accept(config: Arc<ServerConfig>, tcp: TcpStream) -> io::Result<TlsStream> {
    let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
    let mut stream = TlsStream {
        tcp,
        conn,
        incoming: Vec::new(),
        plaintext: Vec::new(),
        plain_pos: 0,
        outgoing: Vec::new(),
        out_pos: 0,
        read_closed: false,
        close_sent: false,
    };
    loop {
        let phase = stream.process(None)?.0;
        std::future::poll_fn(|cx| stream.poll_flush_out(cx)).await?;
        match phase {
            Phase::Open => return Ok(stream),
            Phase::Closed => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "TLS: closed during the handshake",
                ));
            }
            Phase::Handshaking => {
                let n = std::future::poll_fn(|cx| stream.poll_read_tls(cx)).await?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "TLS: connection closed during the handshake",
                    ));
                }
            }
        }
    }
}

impl TlsStream {
    /// Feeds the received bytes to rustls until it needs more: decrypted data goes to
    /// `plaintext`, handshake and alert records to `outgoing`; `send`, if given, is encrypted
    /// into `outgoing` once the session allows it. Returns the phase and how much of `send`
    /// was taken.
    fn process(&mut self, send: Option<&[u8]>) -> io::Result<(Phase, usize)> {
        loop {
            let UnbufferedStatus { mut discard, state } =
                self.conn.process_tls_records(&mut self.incoming);
            let state = state.map_err(tls_error)?;
            let outcome = match state {
                ConnectionState::ReadTraffic(mut traffic) => {
                    while let Some(record) = traffic.next_record() {
                        let record = record.map_err(tls_error)?;
                        discard += record.discard;
                        self.plaintext.extend_from_slice(record.payload);
                    }
                    None
                }
                // rustls accepts 0-RTT data only when the config allows it, and ours does not.
                ConnectionState::ReadEarlyData(_) => {
                    return Err(tls_error("unexpected early data"));
                }
                ConnectionState::EncodeTlsData(mut encode) => {
                    let start = self.outgoing.len();
                    let mut room = 1024;
                    loop {
                        self.outgoing.resize(start + room, 0);
                        match encode.encode(&mut self.outgoing[start..]) {
                            Ok(written) => {
                                self.outgoing.truncate(start + written);
                                break;
                            }
                            Err(EncodeError::InsufficientSize(need)) => room = need.required_size,
                            Err(e) => {
                                self.outgoing.truncate(start);
                                return Err(tls_error(e));
                            }
                        }
                    }
                    None
                }
                // Everything encoded goes out through `outgoing`, in order, before any later
                // byte: queued counts as transmitted.
                ConnectionState::TransmitTlsData(transmit) => {
                    transmit.done();
                    None
                }
                ConnectionState::BlockedHandshake => Some((Phase::Handshaking, 0)),
                ConnectionState::PeerClosed => {
                    self.read_closed = true;
                    None
                }
                ConnectionState::Closed => {
                    self.read_closed = true;
                    Some((Phase::Closed, 0))
                }
                ConnectionState::WriteTraffic(mut traffic) => {
                    let taken = match send {
                        Some(data) if !data.is_empty() => {
                            let data = &data[..data.len().min(MAX_WRITE_CHUNK)];
                            let start = self.outgoing.len();
                            // Room for the data and every record's header and tag.
                            let mut room = data.len() + (data.len() / 16_384 + 1) * 64;
                            loop {
                                self.outgoing.resize(start + room, 0);
                                match traffic.encrypt(data, &mut self.outgoing[start..]) {
                                    Ok(written) => {
                                        self.outgoing.truncate(start + written);
                                        break data.len();
                                    }
                                    Err(EncryptError::InsufficientSize(need)) => {
                                        room = need.required_size;
                                    }
                                    Err(e) => {
                                        self.outgoing.truncate(start);
                                        return Err(tls_error(e));
                                    }
                                }
                            }
                        }
                        _ => 0,
                    };
                    Some((Phase::Open, taken))
                }
                _ => return Err(tls_error("unexpected connection state")),
            };
            self.discard(discard);
            if let Some(done) = outcome {
                return Ok(done);
            }
        }
    }

    fn discard(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        if n >= self.incoming.len() {
            // Empty: give the memory back (an idle connection keeps no buffer).
            self.incoming = Vec::new();
        } else {
            self.incoming.copy_within(n.., 0);
            self.incoming.truncate(self.incoming.len() - n);
        }
    }

    /// Reads what the socket has into `incoming`; `Ok(0)` is the end of the stream.
    fn poll_read_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        loop {
            // Readiness first: a connection waiting for its peer allocates nothing.
            ready!(self.tcp.poll_read_ready(cx))?;
            let start = self.incoming.len();
            self.incoming.resize(start + READ_CHUNK, 0);
            let read = self.tcp.try_read(&mut self.incoming[start..]);
            let n = *read.as_ref().unwrap_or(&0);
            self.incoming.truncate(start + n);
            if self.incoming.is_empty() {
                self.incoming = Vec::new();
            }
            match read {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Writes `outgoing` to the socket until it is empty (then released) or the socket is full.
    fn poll_flush_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_pos < self.outgoing.len() {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.outgoing[self.out_pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_pos += n;
        }
        self.release_out();
        Poll::Ready(Ok(()))
    }

    /// Writes what the socket takes now, without waiting.
    fn try_flush_out(&mut self) -> io::Result<()> {
        while self.out_pos < self.outgoing.len() {
            match self.tcp.try_write(&self.outgoing[self.out_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        self.release_out();
        Ok(())
    }

    /// Everything was sent: the buffer goes back (an idle connection keeps none).
    fn release_out(&mut self) {
        self.outgoing = Vec::new();
        self.out_pos = 0;
    }

    fn pending_out(&self) -> usize {
        self.outgoing.len() - self.out_pos
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.plain_pos < this.plaintext.len() {
                let n = buf.remaining().min(this.plaintext.len() - this.plain_pos);
                buf.put_slice(&this.plaintext[this.plain_pos..this.plain_pos + n]);
                this.plain_pos += n;
                if this.plain_pos == this.plaintext.len() {
                    this.plaintext = Vec::new();
                    this.plain_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.read_closed {
                return Poll::Ready(Ok(()));
            }
            this.process(None)?;
            // Reading can call for writing (a key update's answer, an alert). Sent without
            // registering this task for write readiness (the socket keeps one writer waker, and
            // it belongs to the writer half); if the socket is full the writer half sends it
            // with its next write.
            if this.pending_out() > 0 {
                this.try_flush_out()?;
                // Writes wait above MAX_PENDING_OUT, so only answers to reads could pass
                // this, and rustls bounds those (see MAX_PENDING_OUT_FROM_READS).
                if this.pending_out() > MAX_PENDING_OUT_FROM_READS {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "TLS: the peer asks for answers it does not read",
                    )));
                }
            }
            if this.plain_pos < this.plaintext.len() || this.read_closed {
                continue;
            }
            if ready!(this.poll_read_tls(cx))? == 0 {
                if !this.incoming.is_empty() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "TLS: connection closed inside a record",
                    )));
                }
                // Closed without close_notify: the end of the stream all the same (the
                // WebSocket layer above has its own close handshake to tell a clean end).
                this.read_closed = true;
            }
        }
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.pending_out() >= MAX_PENDING_OUT {
            ready!(this.poll_flush_out(cx))?;
        }
        if this.close_sent {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let (phase, taken) = this.process(Some(buf))?;
        if phase != Phase::Open && !buf.is_empty() {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        // Send now if the socket takes it; what it does not take waits for the next call.
        if let Poll::Ready(Err(e)) = this.poll_flush_out(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(taken))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_flush_out(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_sent {
            this.close_sent = true;
            let UnbufferedStatus { discard, state } =
                this.conn.process_tls_records(&mut this.incoming);
            if let Ok(ConnectionState::WriteTraffic(mut traffic)) = state {
                let start = this.outgoing.len();
                this.outgoing.resize(start + 64, 0);
                match traffic.queue_close_notify(&mut this.outgoing[start..]) {
                    Ok(written) => this.outgoing.truncate(start + written),
                    Err(_) => this.outgoing.truncate(start),
                }
            }
            this.discard(discard);
        }
        ready!(this.poll_flush_out(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use rustls::pki_types::{CertificateDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    struct Pki {
        server: Arc<ServerConfig>,
        client: Arc<rustls::ClientConfig>,
    }

    fn pki() -> Pki {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let der = CertificateDer::from(cert.cert.der().to_vec());
        let key =
            rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![der.clone()], key)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Pki {
            server: Arc::new(server),
            client: Arc::new(client),
        }
    }

    async fn listen() -> (TcpListener, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (listener, addr)
    }

    async fn client(pki: &Pki, addr: SocketAddr) -> tokio_rustls::client::TlsStream<TcpStream> {
        let tcp = TcpStream::connect(addr).await.unwrap();
        tokio_rustls::TlsConnector::from(pki.client.clone())
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap()
    }

    /// Accepts one connection and runs only the handshake.
    fn handshake_only(
        config: Arc<ServerConfig>,
        listener: TcpListener,
    ) -> tokio::task::JoinHandle<io::Result<()>> {
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await?;
            accept(config, tcp).await.map(|_| ())
        })
    }

    /// Accepts one connection and reads it to the end (or the error that ends it).
    fn read_all(
        config: Arc<ServerConfig>,
        listener: TcpListener,
    ) -> tokio::task::JoinHandle<io::Result<usize>> {
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await?;
            let mut tls = accept(config, tcp).await?;
            let mut buf = Vec::new();
            tls.read_to_end(&mut buf).await
        })
    }

    /// An echo server: everything read is written back until the end of the stream.
    async fn echo(config: Arc<ServerConfig>, listener: TcpListener) -> io::Result<TlsStream> {
        let (tcp, _) = listener.accept().await?;
        let mut tls = accept(config, tcp).await?;
        let mut buf = vec![0; 10_000];
        loop {
            let n = tls.read(&mut buf).await?;
            if n == 0 {
                tls.shutdown().await?;
                return Ok(tls);
            }
            tls.write_all(&buf[..n]).await?;
            tls.flush().await?;
        }
    }

    #[tokio::test]
    async fn echoes_small_and_multi_record_payloads_both_ways() {
        let pki = pki();
        let (listener, addr) = listen().await;
        let server = tokio::spawn(echo(pki.server.clone(), listener));
        let mut tls = client(&pki, addr).await;
        for len in [1usize, 100, 16_384, 16_385, 200_000] {
            let sent: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let (mut rd, mut wr) = tokio::io::split(&mut tls);
            let writing = async {
                wr.write_all(&sent).await.unwrap();
                wr.flush().await.unwrap();
            };
            let mut got = vec![0; len];
            let (_, read) = tokio::join!(writing, rd.read_exact(&mut got));
            read.unwrap();
            assert_eq!(got, sent, "payload of {len} bytes");
        }
        tls.shutdown().await.unwrap();
        let mut rest = Vec::new();
        tls.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        let server = server.await.unwrap().unwrap();
        // Nothing is kept once everything is read and sent.
        assert_eq!(server.incoming.capacity(), 0);
        assert_eq!(server.plaintext.capacity(), 0);
        assert_eq!(server.outgoing.capacity(), 0);
    }

    #[tokio::test]
    async fn a_key_update_from_the_client_is_answered() {
        let pki = pki();
        let (listener, addr) = listen().await;
        let server = tokio::spawn(echo(pki.server.clone(), listener));
        let mut tls = client(&pki, addr).await;
        for round in 0..3u8 {
            tls.get_mut().1.refresh_traffic_keys().unwrap();
            tls.write_all(&[round; 300]).await.unwrap();
            tls.flush().await.unwrap();
            let mut got = [0; 300];
            tls.read_exact(&mut got).await.unwrap();
            assert_eq!(got, [round; 300]);
        }
        tls.shutdown().await.unwrap();
        server.await.unwrap().unwrap();
    }

    /// Reading alone never makes the node queue output for a peer: rustls keeps at most one
    /// key-update answer and emits it with our next write, and refuses a 33rd key update with
    /// no application data between.
    #[tokio::test]
    async fn key_updates_from_a_peer_that_reads_nothing_queue_nothing() {
        let pki = pki();
        let (listener, addr) = listen().await;
        let config = pki.server.clone();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await?;
            let mut tls = accept(config, tcp).await?;
            let mut got = [0; 1000];
            tls.read_exact(&mut got).await?;
            io::Result::Ok((tls, got))
        });
        let mut tls = client(&pki, addr).await;
        for _ in 0..1000 {
            tls.get_mut().1.refresh_traffic_keys().unwrap();
            tls.write_all(b"k").await.unwrap();
            tls.flush().await.unwrap();
        }
        let (mut server, got) = tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(got, [b'k'; 1000]);
        assert_eq!(server.pending_out(), 0);
        assert_eq!(server.outgoing.capacity(), 0);
        // Our next write carries the one queued answer; the client decrypts it with new keys.
        server.write_all(b"answer").await.unwrap();
        server.flush().await.unwrap();
        let mut answer = [0; 6];
        tls.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"answer");

        // Key updates with no data between: refused after rustls's allowance of 32.
        let (listener, addr) = listen().await;
        let server = read_all(pki.server.clone(), listener);
        let mut tls = client(&pki, addr).await;
        for _ in 0..40 {
            tls.get_mut().1.refresh_traffic_keys().unwrap();
        }
        tls.flush().await.unwrap();
        let err = tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .unwrap()
            .unwrap()
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    }

    #[tokio::test]
    async fn garbage_instead_of_a_client_hello_is_refused() {
        let pki = pki();
        let (listener, addr) = listen().await;
        let server = handshake_only(pki.server.clone(), listener);
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let err = server.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    }

    #[tokio::test]
    async fn a_peer_leaving_mid_handshake_or_mid_record_is_an_error_not_data() {
        let pki = pki();
        let (listener, addr) = listen().await;
        let server = handshake_only(pki.server.clone(), listener);
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        // The first bytes of a handshake record header, then nothing.
        tcp.write_all(&[0x16, 0x03, 0x01, 0x00]).await.unwrap();
        drop(tcp);
        let err = server.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");

        let (listener, addr) = listen().await;
        let server = read_all(pki.server.clone(), listener);
        let mut tls = client(&pki, addr).await;
        tls.write_all(b"hello").await.unwrap();
        tls.flush().await.unwrap();
        // A record header promising more than follows, straight on the TCP stream.
        let (tcp, _) = tls.get_mut();
        tcp.write_all(&[0x17, 0x03, 0x03, 0x01, 0x00, 1, 2, 3])
            .await
            .unwrap();
        tcp.shutdown().await.unwrap();
        let err = server.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
    }
}
