//! One TLS 1.3 session: rustls runs the handshake, then our own record layer moves
//! the data.
//!
//! rustls' buffered connection reads 4 KiB at a time and copies every record twice
//! after opening it; at gigabytes per second those copies cost more than AES-GCM
//! itself. Once the handshake is over we take the traffic keys from rustls (its
//! kernel-TLS interface, which keeps key updates working) and read and write records
//! ourselves: large socket reads, records opened in place, up to 256 KiB of sealed
//! records per write. The records are RFC 8446's, so the peer can be any TLS 1.3
//! implementation.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::kernel::KernelConnection;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncodeTlsData, InsufficientSizeError, UnbufferedStatus,
};
use rustls::{CommonState, ConnectionTrafficSecrets};

/// Most plaintext one record carries (RFC 8446 §5.1).
const RECORD_PLAINTEXT_MAX: usize = 1 << 14;
/// Largest record body a peer may send: plaintext, content type, padding and tag (§5.2).
const RECORD_BODY_MAX: usize = RECORD_PLAINTEXT_MAX + 256;
const HEADER_BYTES: usize = 5;
const TAG_BYTES: usize = 16;
/// Room for socket reads: whole records pile up here and are opened in place. 256 KiB
/// moved no more than 64 KiB on loopback, and every connection holds one.
const READ_BUFFER_BYTES: usize = 64 * 1024;
/// Sealed records waiting for the socket; a writer waits while this much is queued.
const WRITE_BUFFER_BYTES: usize = 256 * 1024;
/// Queued records are written without waiting for a flush once this much is queued.
const WRITE_EAGERLY_AT: usize = 64 * 1024;
/// Post-handshake handshake messages (key updates, tickets) are small.
const HANDSHAKE_MESSAGE_MAX: usize = 64 * 1024;

const CONTENT_ALERT: u8 = 21;
const CONTENT_HANDSHAKE: u8 = 22;
const CONTENT_APPLICATION_DATA: u8 = 23;
const HANDSHAKE_NEW_SESSION_TICKET: u8 = 4;
const HANDSHAKE_KEY_UPDATE: u8 = 24;
const ALERT_CLOSE_NOTIFY: u8 = 0;
const ALERT_UNEXPECTED_MESSAGE: u8 = 10;
const ALERT_BAD_RECORD_MAC: u8 = 20;
const ALERT_RECORD_OVERFLOW: u8 = 22;
const ALERT_DECODE_ERROR: u8 = 50;
const ALERT_INTERNAL_ERROR: u8 = 80;
const ALERT_LEVEL_FATAL: u8 = 2;
const ALERT_LEVEL_WARNING: u8 = 1;
/// Key updates a peer may send in a row without application data, as rustls allows: a
/// peer that only rotates keys is making us work for nothing.
const KEY_UPDATES_WITHOUT_DATA_MAX: u32 = 32;

/// Runs the client side of the handshake on `io`.
pub async fn connect<C>(
    io: C,
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
) -> io::Result<(TlsStream<C>, Vec<CertificateDer<'static>>)>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let conn = UnbufferedClientConnection::new(config, name).map_err(tls_error)?;
    handshake(io, conn).await
}

/// Runs the server side of the handshake on `io`.
pub async fn accept<C>(
    io: C,
    config: Arc<rustls::ServerConfig>,
) -> io::Result<(TlsStream<C>, Vec<CertificateDer<'static>>)>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
    handshake(io, conn).await
}

/// What the handshake needs of either side's unbuffered connection.
trait Side {
    type Data;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data>;
    fn state(&self) -> &CommonState;
    fn into_kernel(self) -> Result<(rustls::ExtractedSecrets, Kernel), rustls::Error>;
}

impl Side for UnbufferedClientConnection {
    type Data = ClientConnectionData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
    fn state(&self) -> &CommonState {
        self
    }
    fn into_kernel(self) -> Result<(rustls::ExtractedSecrets, Kernel), rustls::Error> {
        let (secrets, kernel) = self.dangerous_into_kernel_connection()?;
        Ok((secrets, Kernel::Client(kernel)))
    }
}

impl Side for UnbufferedServerConnection {
    type Data = ServerConnectionData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
    fn state(&self) -> &CommonState {
        self
    }
    fn into_kernel(self) -> Result<(rustls::ExtractedSecrets, Kernel), rustls::Error> {
        let (secrets, kernel) = self.dangerous_into_kernel_connection()?;
        Ok((secrets, Kernel::Server(kernel)))
    }
}

/// What rustls keeps after the handshake: the secrets' next generations.
enum Kernel {
    Client(KernelConnection<ClientConnectionData>),
    Server(KernelConnection<ServerConnectionData>),
}

impl Kernel {
    fn next_tx(&mut self) -> io::Result<Keys> {
        let next = match self {
            Kernel::Client(k) => k.update_tx_secret(),
            Kernel::Server(k) => k.update_tx_secret(),
        };
        next.map_err(tls_error).and_then(Keys::new)
    }

    fn next_rx(&mut self) -> io::Result<Keys> {
        let next = match self {
            Kernel::Client(k) => k.update_rx_secret(),
            Kernel::Server(k) => k.update_rx_secret(),
        };
        next.map_err(tls_error).and_then(Keys::new)
    }

    fn is_client(&self) -> bool {
        matches!(self, Kernel::Client(_))
    }

    /// Records one key may seal before it wears out (AES-GCM: 2^24, RFC 8446 §5.5).
    fn confidentiality_limit(&self) -> u64 {
        let suite = match self {
            Kernel::Client(k) => k.negotiated_cipher_suite(),
            Kernel::Server(k) => k.negotiated_cipher_suite(),
        };
        suite
            .tls13()
            .map_or(u64::MAX, |s| s.common.confidentiality_limit)
    }
}

/// One direction's key, IV and record sequence number.
struct Keys {
    key: LessSafeKey,
    iv: [u8; 12],
    seq: u64,
}

impl Keys {
    fn new((seq, secrets): (u64, ConnectionTrafficSecrets)) -> io::Result<Self> {
        let (algorithm, key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&aead::CHACHA20_POLY1305, key, iv)
            }
            _ => return Err(io::Error::other("TLS negotiated a cipher we cannot run")),
        };
        let key = UnboundKey::new(algorithm, key.as_ref())
            .map_err(|_| io::Error::other("TLS produced a key of the wrong length"))?;
        let iv = iv
            .as_ref()
            .try_into()
            .map_err(|_| io::Error::other("TLS produced an IV of the wrong length"))?;
        Ok(Self {
            key: LessSafeKey::new(key),
            iv,
            seq,
        })
    }

    /// The next record's nonce: the IV XOR the sequence number (RFC 8446 §5.3). A sequence
    /// number must never wrap (§5.3), which would repeat a nonce.
    fn next_nonce(&mut self) -> io::Result<Nonce> {
        let mut nonce = self.iv;
        for (n, s) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *n ^= s;
        }
        self.seq = self
            .seq
            .checked_add(1)
            .ok_or_else(|| io::Error::other("TLS record sequence number exhausted"))?;
        Ok(Nonce::assume_unique_for_key(nonce))
    }
}

/// Drives rustls through the handshake, then hands the keys to a [`TlsStream`].
async fn handshake<C, S>(
    mut io: C,
    mut conn: S,
) -> io::Result<(TlsStream<C>, Vec<CertificateDer<'static>>)>
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: Side,
{
    let mut incoming = vec![0; READ_BUFFER_BYTES + HEADER_BYTES + RECORD_BODY_MAX];
    let (mut start, mut end) = (0, 0);
    let mut outgoing = Vec::new();
    let mut early = Vec::new();
    loop {
        let status = conn.process(&mut incoming[start..end]);
        let mut discard = status.discard;
        let (mut need_bytes, mut may_write) = (false, false);
        match status.state.map_err(tls_error)? {
            ConnectionState::EncodeTlsData(mut data) => encode(&mut data, &mut outgoing)?,
            ConnectionState::TransmitTlsData(data) => {
                io.write_all(&outgoing).await?;
                io.flush().await?;
                outgoing.clear();
                data.done();
            }
            // Data the peer sent right behind its last handshake message.
            ConnectionState::ReadTraffic(mut traffic) => {
                while let Some(record) = traffic.next_record() {
                    let record = record.map_err(tls_error)?;
                    discard += record.discard;
                    early.extend_from_slice(record.payload);
                }
            }
            ConnectionState::WriteTraffic(_) => may_write = true,
            ConnectionState::BlockedHandshake => need_bytes = true,
            ConnectionState::PeerClosed | ConnectionState::Closed => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed the connection during the TLS handshake",
                ));
            }
            other => {
                return Err(io::Error::other(format!(
                    "unexpected TLS state {other:?} during the handshake"
                )));
            }
        }
        start += discard;
        if may_write {
            // A server may write before the client's Finished arrives; the keys are
            // final only once the handshake is over.
            if !conn.state().is_handshaking() {
                break;
            }
            need_bytes = true;
        }
        if need_bytes {
            if end == incoming.len() {
                if start == 0 {
                    return Err(invalid("a TLS handshake message is too large"));
                }
                incoming.copy_within(start..end, 0);
                (start, end) = (0, end - start);
            }
            let n = io.read(&mut incoming[end..]).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed the connection during the TLS handshake",
                ));
            }
            end += n;
        }
    }
    let certificates = conn
        .state()
        .peer_certificates()
        .map(<[_]>::to_vec)
        .unwrap_or_default();
    let (secrets, kernel) = conn.into_kernel().map_err(tls_error)?;
    let tx_limit = kernel.confidentiality_limit().saturating_sub(1024);
    let stream = TlsStream {
        io,
        tx: Keys::new(secrets.tx)?,
        rx: Keys::new(secrets.rx)?,
        kernel,
        tx_limit,
        incoming,
        start,
        end,
        plain: (0, 0),
        early,
        early_read: 0,
        handshake: Vec::new(),
        outgoing: Vec::new(),
        written: 0,
        read_closed: false,
        write_closed: false,
        key_updates: (0, 0),
        key_update_owed: false,
        key_updates_without_data: 0,
        read_failed: None,
    };
    Ok((stream, certificates))
}

/// Encodes one handshake record into `outgoing`, growing it as rustls asks.
fn encode<D>(data: &mut EncodeTlsData<'_, D>, outgoing: &mut Vec<u8>) -> io::Result<()> {
    let at = outgoing.len();
    outgoing.resize(at + 4096, 0);
    loop {
        match data.encode(&mut outgoing[at..]) {
            Ok(n) => {
                outgoing.truncate(at + n);
                return Ok(());
            }
            Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
                outgoing.resize(at + required_size, 0);
            }
            Err(e) => return Err(io::Error::other(e.to_string())),
        }
    }
}

/// An established TLS 1.3 session over `C`.
pub struct TlsStream<C> {
    io: C,
    kernel: Kernel,
    tx: Keys,
    rx: Keys,
    /// Seal this many records with one key, then update it.
    tx_limit: u64,
    /// Received bytes; `start..end` is not yet opened.
    incoming: Vec<u8>,
    start: usize,
    end: usize,
    /// Opened application data in `incoming` not yet read.
    plain: (usize, usize),
    /// Application data rustls opened during the handshake, read first.
    early: Vec<u8>,
    early_read: usize,
    /// A post-handshake handshake message arriving over several records.
    handshake: Vec<u8>,
    /// Sealed records; `written..` is not yet on the socket.
    outgoing: Vec<u8>,
    written: usize,
    read_closed: bool,
    write_closed: bool,
    /// Keys replaced so far, (send, receive).
    key_updates: (u32, u32),
    /// The peer asked for our next key: announced before our next application data, so
    /// that any number of requests while we are silent costs one reply (RFC 8446 §4.6.3)
    /// and reading never queues bytes to send.
    key_update_owed: bool,
    /// Key updates received since the last application data.
    key_updates_without_data: u32,
    /// The fatal error that ended reading: every later read returns it again.
    read_failed: Option<(io::ErrorKind, String)>,
}

impl<C> TlsStream<C> {
    /// The cipher suite both ends agreed on.
    pub fn cipher_suite(&self) -> rustls::CipherSuite {
        match &self.kernel {
            Kernel::Client(k) => k.negotiated_cipher_suite().suite(),
            Kernel::Server(k) => k.negotiated_cipher_suite().suite(),
        }
    }

    /// Opens the next whole record in `incoming`, if there is one. A refusal carries the
    /// alert that tells the peer why (RFC 8446 §6.2).
    fn open_record(&mut self) -> Result<bool, Fatal> {
        let available = &self.incoming[self.start..self.end];
        if available.len() < HEADER_BYTES {
            return Ok(false);
        }
        let header: [u8; HEADER_BYTES] = available[..HEADER_BYTES].try_into().expect("five bytes");
        if header[0] != CONTENT_APPLICATION_DATA {
            return Err(Fatal::new(
                ALERT_UNEXPECTED_MESSAGE,
                format!(
                    "the peer sent a TLS record of type {} after the handshake",
                    header[0]
                ),
            ));
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if !(TAG_BYTES + 1..=RECORD_BODY_MAX).contains(&len) {
            return Err(Fatal::new(
                ALERT_RECORD_OVERFLOW,
                format!("the peer sent a TLS record of {len} bytes"),
            ));
        }
        if available.len() < HEADER_BYTES + len {
            return Ok(false);
        }
        let body = self.start + HEADER_BYTES;
        self.start = body + len;
        let nonce = self.rx.next_nonce().map_err(Fatal::internal)?;
        let opened = self
            .rx
            .key
            .open_in_place(
                nonce,
                Aad::from(header),
                &mut self.incoming[body..body + len],
            )
            .map_err(|_| {
                Fatal::new(
                    ALERT_BAD_RECORD_MAC,
                    "a TLS record failed its integrity check: it was altered on the way",
                )
            })?;
        // Content, content type and padding together stay within 2^14 + 1 bytes (§5.4).
        if opened.len() > RECORD_PLAINTEXT_MAX + 1 {
            return Err(Fatal::new(
                ALERT_RECORD_OVERFLOW,
                format!(
                    "the peer sent a TLS record of {} bytes once opened, over 2^14 + 1",
                    opened.len()
                ),
            ));
        }
        // The content type is the last byte that is not padding.
        let Some(type_at) = opened.iter().rposition(|b| *b != 0) else {
            return Err(Fatal::new(
                ALERT_UNEXPECTED_MESSAGE,
                "the peer sent a TLS record without a content type",
            ));
        };
        let content_type = opened[type_at];
        let content = (body, body + type_at);
        // A handshake message split over records must not be interleaved with others (§5.1).
        if !self.handshake.is_empty() && content_type != CONTENT_HANDSHAKE {
            return Err(Fatal::new(
                ALERT_UNEXPECTED_MESSAGE,
                format!(
                    "the peer sent a TLS record of inner type {content_type} in the middle of a handshake message"
                ),
            ));
        }
        match content_type {
            CONTENT_APPLICATION_DATA => {
                self.plain = content;
                self.key_updates_without_data = 0;
            }
            CONTENT_ALERT => self.alert(content)?,
            CONTENT_HANDSHAKE if content.0 == content.1 => {
                return Err(Fatal::new(
                    ALERT_UNEXPECTED_MESSAGE,
                    "the peer sent an empty TLS handshake record",
                ));
            }
            CONTENT_HANDSHAKE => self.handshake_message(content)?,
            other => {
                return Err(Fatal::new(
                    ALERT_UNEXPECTED_MESSAGE,
                    format!("the peer sent a TLS record of inner type {other}"),
                ));
            }
        }
        Ok(true)
    }

    fn alert(&mut self, (from, to): (usize, usize)) -> Result<(), Fatal> {
        match self.incoming[from..to] {
            [_, ALERT_CLOSE_NOTIFY] => {
                self.read_closed = true;
                Ok(())
            }
            // The peer ended the session itself: nothing to tell it back.
            [_, description] => Err(Fatal {
                alert: None,
                error: io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    format!("the peer ended the TLS session with alert {description}"),
                ),
            }),
            _ => Err(Fatal::new(
                ALERT_DECODE_ERROR,
                "the peer sent a malformed TLS alert",
            )),
        }
    }

    fn handshake_message(&mut self, (from, to): (usize, usize)) -> Result<(), Fatal> {
        if self.handshake.len() + (to - from) > HANDSHAKE_MESSAGE_MAX {
            return Err(Fatal::new(
                ALERT_DECODE_ERROR,
                "the peer sent an oversized TLS handshake message",
            ));
        }
        self.handshake.extend_from_slice(&self.incoming[from..to]);
        while let [kind, a, b, c, ref rest @ ..] = self.handshake[..] {
            let len = u32::from_be_bytes([0, a, b, c]) as usize;
            if rest.len() < len {
                return Ok(());
            }
            match (kind, &rest[..len]) {
                // Resumption is off; a ticket may be ignored (RFC 8446 §4.6.1).
                (HANDSHAKE_NEW_SESSION_TICKET, _) if self.kernel.is_client() => {}
                (HANDSHAKE_KEY_UPDATE, [request]) if *request <= 1 => {
                    // A key change ends the record (§5.1): nothing may follow it.
                    if rest.len() > len {
                        return Err(Fatal::new(
                            ALERT_UNEXPECTED_MESSAGE,
                            "the peer sent data after a TLS key update",
                        ));
                    }
                    self.key_updates_without_data += 1;
                    if self.key_updates_without_data > KEY_UPDATES_WITHOUT_DATA_MAX {
                        return Err(Fatal::new(
                            ALERT_UNEXPECTED_MESSAGE,
                            format!(
                                "the peer sent more than {KEY_UPDATES_WITHOUT_DATA_MAX} TLS key updates without data"
                            ),
                        ));
                    }
                    self.rx = self.kernel.next_rx().map_err(Fatal::internal)?;
                    self.key_updates.1 += 1;
                    tracing::debug!(requested = *request == 1, "TLS peer updated its key");
                    // After our close_notify we send nothing more, a key update included.
                    if *request == 1 && !self.write_closed {
                        self.key_update_owed = true;
                    }
                }
                _ => {
                    return Err(Fatal::new(
                        ALERT_UNEXPECTED_MESSAGE,
                        format!("the peer sent an unexpected TLS handshake message (type {kind})"),
                    ));
                }
            }
            self.handshake.drain(..4 + len);
        }
        Ok(())
    }

    /// Announces our next key and switches to it (RFC 8446 §4.6.3).
    fn update_tx_key(&mut self) -> io::Result<()> {
        self.seal_one(CONTENT_HANDSHAKE, &[HANDSHAKE_KEY_UPDATE, 0, 0, 1, 0])?;
        self.tx = self.kernel.next_tx()?;
        self.key_updates.0 += 1;
        Ok(())
    }

    /// Seals `data` as records of `content_type` onto `outgoing`, announcing a new key
    /// first when the peer asked for one or the current one is worn out.
    fn seal(&mut self, content_type: u8, data: &[u8]) -> io::Result<()> {
        if self.key_update_owed {
            self.key_update_owed = false;
            self.update_tx_key()?;
        }
        for chunk in data.chunks(RECORD_PLAINTEXT_MAX) {
            if self.tx.seq >= self.tx_limit {
                self.update_tx_key()?;
            }
            self.seal_one(content_type, chunk)?;
        }
        Ok(())
    }

    fn seal_one(&mut self, content_type: u8, chunk: &[u8]) -> io::Result<()> {
        let len = chunk.len() + 1 + TAG_BYTES;
        let [hi, lo] = u16::try_from(len)
            .expect("a record fits 16 bits")
            .to_be_bytes();
        let header = [CONTENT_APPLICATION_DATA, 3, 3, hi, lo];
        let at = self.outgoing.len();
        self.outgoing.extend_from_slice(&header);
        self.outgoing.extend_from_slice(chunk);
        self.outgoing.push(content_type);
        let nonce = self.tx.next_nonce()?;
        let tag = self
            .tx
            .key
            .seal_in_place_separate_tag(
                nonce,
                Aad::from(header),
                &mut self.outgoing[at + HEADER_BYTES..],
            )
            .map_err(|_| io::Error::other("TLS sealing failed"))?;
        self.outgoing.extend_from_slice(tag.as_ref());
        Ok(())
    }

    fn queued(&self) -> usize {
        self.outgoing.len() - self.written
    }

    /// Ends reading for good with `fatal`: the alert is queued for the peer (sent by the
    /// next flush or close, which then sends no close_notify), and every later read
    /// returns the same error instead of reading past the bad record.
    fn fail_read(&mut self, fatal: Fatal) -> io::Error {
        if let Some(alert) = fatal.alert
            && !self.write_closed
        {
            self.write_closed = true;
            // Best effort: a failure to seal it changes nothing for us.
            let _ = self.seal_one(CONTENT_ALERT, &[ALERT_LEVEL_FATAL, alert]);
        }
        self.read_failed = Some((fatal.error.kind(), fatal.error.to_string()));
        fatal.error
    }
}

/// A fatal record-layer error and the alert that tells the peer (none when the peer
/// ended the session itself).
struct Fatal {
    alert: Option<u8>,
    error: io::Error,
}

impl Fatal {
    fn new(alert: u8, message: impl Into<String>) -> Fatal {
        Fatal {
            alert: Some(alert),
            error: io::Error::new(io::ErrorKind::InvalidData, message.into()),
        }
    }

    fn internal(error: io::Error) -> Fatal {
        Fatal {
            alert: Some(ALERT_INTERNAL_ERROR),
            error,
        }
    }
}

impl<C: AsyncWrite + Unpin> TlsStream<C> {
    /// Writes queued records until at most `keep` bytes remain queued.
    fn poll_write_queued(&mut self, cx: &mut Context<'_>, keep: usize) -> Poll<io::Result<()>> {
        while self.queued() > keep {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.outgoing[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        if self.written == self.outgoing.len() {
            self.outgoing.clear();
            self.written = 0;
        } else if self.written >= WRITE_BUFFER_BYTES / 2 {
            self.outgoing.drain(..self.written);
            self.written = 0;
        }
        Poll::Ready(Ok(()))
    }
}

impl<C: AsyncRead + Unpin> AsyncRead for TlsStream<C> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            if this.early_read < this.early.len() {
                let n = buf.len().min(this.early.len() - this.early_read);
                buf[..n].copy_from_slice(&this.early[this.early_read..this.early_read + n]);
                this.early_read += n;
                return Poll::Ready(Ok(n));
            }
            let (from, to) = this.plain;
            if from < to {
                let n = buf.len().min(to - from);
                buf[..n].copy_from_slice(&this.incoming[from..from + n]);
                this.plain.0 += n;
                return Poll::Ready(Ok(n));
            }
            if let Some((kind, message)) = &this.read_failed {
                return Poll::Ready(Err(io::Error::new(*kind, message.clone())));
            }
            if this.read_closed || buf.is_empty() {
                return Poll::Ready(Ok(0));
            }
            match this.open_record() {
                Ok(true) => continue,
                Ok(false) => {}
                Err(fatal) => return Poll::Ready(Err(this.fail_read(fatal))),
            }
            // Room for at least one whole record after what is buffered.
            if this.incoming.len() - this.end < HEADER_BYTES + RECORD_BODY_MAX {
                this.incoming.copy_within(this.start..this.end, 0);
                (this.start, this.end) = (0, this.end - this.start);
            }
            let n = ready!(Pin::new(&mut this.io).poll_read(cx, &mut this.incoming[this.end..]))?;
            if n == 0 {
                // Without close_notify an end of stream may be an attacker cutting the
                // data short (RFC 8446 §6.1): not a clean end.
                let message = if this.end > this.start {
                    "the connection closed in the middle of a TLS record"
                } else {
                    "the connection closed without a TLS close_notify"
                };
                let fatal = Fatal {
                    alert: None,
                    error: io::Error::new(io::ErrorKind::UnexpectedEof, message),
                };
                return Poll::Ready(Err(this.fail_read(fatal)));
            }
            this.end += n;
        }
    }
}

impl<C: AsyncWrite + Unpin> AsyncWrite for TlsStream<C> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.write_closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        ready!(this.poll_write_queued(cx, WRITE_BUFFER_BYTES - 1))?;
        let n = buf.len().min(WRITE_BUFFER_BYTES - this.queued());
        this.seal(CONTENT_APPLICATION_DATA, &buf[..n])?;
        if this.queued() >= WRITE_EAGERLY_AT {
            // Progress without waiting for a flush; a full socket just leaves it queued.
            if let Poll::Ready(Err(e)) = this.poll_write_queued(cx, 0) {
                return Poll::Ready(Err(e));
            }
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_queued(cx, 0))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.write_closed {
            this.write_closed = true;
            this.seal_one(CONTENT_ALERT, &[ALERT_LEVEL_WARNING, ALERT_CLOSE_NOTIFY])?;
        }
        ready!(this.poll_write_queued(cx, 0))?;
        Pin::new(&mut this.io).poll_close(cx)
    }
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}"))
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_string())
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use futures::{AsyncReadExt, AsyncWriteExt};
    use libp2p::identity;
    use libp2p::tcp::tokio::TcpStream;

    use super::*;

    fn configs() -> (Arc<rustls::ClientConfig>, Arc<rustls::ServerConfig>) {
        let config =
            super::super::Config::new(&identity::Keypair::generate_ed25519()).expect("config");
        (config.client, config.server)
    }

    fn name() -> ServerName<'static> {
        ServerName::IpAddress(IpAddr::V4(Ipv4Addr::UNSPECIFIED).into())
    }

    async fn sockets() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (dialed, accepted) =
            tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        (
            TcpStream(dialed.expect("connect")),
            TcpStream(accepted.expect("accept").0),
        )
    }

    fn pattern(len: usize, salt: u8) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8 ^ salt).collect()
    }

    /// Sends `data` one way and `back` the other way at once, and checks both arrive.
    async fn exchange<A, B>(a: &mut A, b: &mut B, data: &[u8], back: &[u8])
    where
        A: AsyncRead + AsyncWrite + Unpin,
        B: AsyncRead + AsyncWrite + Unpin,
    {
        let (mut a_read, mut a_write) = a.split();
        let (mut b_read, mut b_write) = b.split();
        let mut at_b = vec![0; data.len()];
        let mut at_a = vec![0; back.len()];
        let (w1, w2, r1, r2) = tokio::join!(
            async {
                a_write.write_all(data).await?;
                a_write.flush().await
            },
            async {
                b_write.write_all(back).await?;
                b_write.flush().await
            },
            b_read.read_exact(&mut at_b),
            a_read.read_exact(&mut at_a),
        );
        for r in [w1, w2, r1, r2] {
            r.expect("exchange");
        }
        assert!(at_b == data, "bytes sent one way came out different");
        assert!(at_a == back, "bytes sent the other way came out different");
    }

    #[tokio::test]
    async fn our_client_talks_to_rustls_through_tickets_key_updates_and_close() {
        let (client, server) = configs();
        // A plain rustls server, with the session tickets a foreign peer may send.
        let mut foreign = (*server).clone();
        foreign.send_tls13_tickets = 2;
        let (c, s) = sockets().await;
        let acceptor = futures_rustls::TlsAcceptor::from(Arc::new(foreign));
        let (ours, theirs) = tokio::join!(connect(c, client, name()), acceptor.accept(s));
        let (mut ours, _) = ours.expect("our client finishes the handshake");
        let mut theirs = theirs.expect("rustls accepts us");
        assert_eq!(
            ours.cipher_suite(),
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
        );

        exchange(
            &mut ours,
            &mut theirs,
            &pattern(1 << 20, 1),
            &pattern(300_000, 2),
        )
        .await;
        assert_eq!(ours.key_updates, (0, 0));
        // rustls asks for new keys both ways; we must follow and answer.
        theirs
            .get_mut()
            .1
            .refresh_traffic_keys()
            .expect("key update");
        exchange(
            &mut ours,
            &mut theirs,
            &pattern(500_000, 3),
            &pattern(700_000, 4),
        )
        .await;
        // Our reply goes before our next data (RFC 8446 §4.6.3), which the exchange may
        // have sent before it read the request: one more round trip carries it.
        exchange(&mut ours, &mut theirs, b"after", b"the update").await;
        // Both keys are new, and data still flows both ways.
        assert_eq!(ours.key_updates, (1, 1));

        ours.close().await.expect("close");
        let mut rest = Vec::new();
        theirs
            .read_to_end(&mut rest)
            .await
            .expect("a clean end after close_notify");
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn our_server_talks_to_a_rustls_client_and_updates_its_own_keys() {
        let (client, server) = configs();
        let (c, s) = sockets().await;
        let connector = futures_rustls::TlsConnector::from(client);
        let (theirs, ours) = tokio::join!(connector.connect(name(), c), accept(s, server));
        let mut theirs = theirs.expect("rustls connects to us");
        let (mut ours, _) = ours.expect("our server finishes the handshake");

        // Wear each key out after a few records: we must update them ourselves.
        ours.tx_limit = 5;
        exchange(
            &mut ours,
            &mut theirs,
            &pattern(1 << 20, 5),
            &pattern(1 << 20, 6),
        )
        .await;
        // 1 MiB is 64 full records at least: a new key every five.
        assert!(ours.key_updates.0 >= 12, "{:?}", ours.key_updates);
        let (sent_updates, _) = ours.key_updates;
        theirs
            .get_mut()
            .1
            .refresh_traffic_keys()
            .expect("key update");
        exchange(
            &mut ours,
            &mut theirs,
            &pattern(100_000, 7),
            &pattern(100_000, 8),
        )
        .await;
        assert_eq!(ours.key_updates.1, 1);
        assert!(ours.key_updates.0 > sent_updates);

        theirs.close().await.expect("close");
        let mut rest = Vec::new();
        ours.read_to_end(&mut rest)
            .await
            .expect("a clean end after close_notify");
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn an_altered_record_is_refused_with_a_clear_error() {
        let (client, server) = configs();
        let (c, s) = sockets().await;
        let (ours, theirs) = tokio::join!(connect(c, client, name()), accept(s, server));
        let (mut sender, _) = ours.expect("client");
        let (mut receiver, _) = theirs.expect("server");
        sender
            .seal(CONTENT_APPLICATION_DATA, b"pay 1 token")
            .expect("seal");
        let last = sender.outgoing.len() - 1;
        sender.outgoing[last - TAG_BYTES] ^= 1;
        sender.flush().await.expect("flush");
        let mut buf = [0; 64];
        let err = receiver
            .read(&mut buf)
            .await
            .expect_err("altered data is refused");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("integrity"), "{err}");
    }

    #[tokio::test]
    async fn an_oversized_record_is_refused_before_it_is_read() {
        let (client, server) = configs();
        let (c, s) = sockets().await;
        let (ours, theirs) = tokio::join!(connect(c, client, name()), accept(s, server));
        let (mut sender, _) = ours.expect("client");
        let (mut receiver, _) = theirs.expect("server");
        // A header announcing 64 KiB, four times what TLS allows, and no body.
        sender
            .io
            .write_all(&[CONTENT_APPLICATION_DATA, 3, 3, 0xff, 0xff])
            .await
            .expect("write");
        let mut buf = [0; 64];
        let err = receiver.read(&mut buf).await.expect_err("refused");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("65535 bytes"), "{err}");
    }

    /// A connected pair of our own sessions, client first.
    async fn pair() -> (TlsStream<TcpStream>, TlsStream<TcpStream>) {
        let (client, server) = configs();
        let (c, s) = sockets().await;
        let (ours, theirs) = tokio::join!(connect(c, client, name()), accept(s, server));
        (ours.expect("client").0, theirs.expect("server").0)
    }

    /// Announce our next key and ask the peer for theirs, as a peer may at any time.
    fn request_key_update(s: &mut TlsStream<TcpStream>) {
        s.seal_one(CONTENT_HANDSHAKE, &[HANDSHAKE_KEY_UPDATE, 0, 0, 1, 1])
            .expect("seal");
        s.tx = s.kernel.next_tx().expect("next key");
    }

    async fn read_err(s: &mut TlsStream<TcpStream>) -> io::Error {
        let mut buf = [0; 64];
        s.read(&mut buf).await.expect_err("refused")
    }

    #[tokio::test]
    async fn key_update_requests_cost_one_reply_and_a_flood_of_them_is_cut_off() {
        let (mut sender, mut receiver) = pair().await;
        for _ in 0..10 {
            request_key_update(&mut sender);
        }
        sender.write_all(b"x").await.expect("write");
        sender.flush().await.expect("flush");
        let mut one = [0; 1];
        receiver
            .read_exact(&mut one)
            .await
            .expect("data after 10 updates");
        assert_eq!(receiver.key_updates.1, 10);
        assert_eq!(receiver.queued(), 0, "reading queued nothing to send");
        receiver.write_all(b"y").await.expect("write");
        receiver.flush().await.expect("flush");
        sender
            .read_exact(&mut one)
            .await
            .expect("the reply and data");
        assert_eq!(&one, b"y");
        assert_eq!(receiver.key_updates.0, 1, "ten requests, one reply");
        assert_eq!(sender.key_updates.1, 1);

        // A peer that only rotates keys, never reading, is refused after 32.
        for _ in 0..=KEY_UPDATES_WITHOUT_DATA_MAX {
            request_key_update(&mut sender);
        }
        sender.flush().await.expect("flush");
        let err = read_err(&mut receiver).await;
        assert!(err.to_string().contains("more than 32"), "{err}");
        let one_alert = HEADER_BYTES + 2 + 1 + TAG_BYTES;
        assert_eq!(receiver.queued(), one_alert, "only the alert is queued");
    }

    #[tokio::test]
    async fn a_bad_record_ends_reading_for_good_and_tells_the_peer_why() {
        let (mut sender, mut receiver) = pair().await;
        sender
            .seal(CONTENT_APPLICATION_DATA, b"pay 1 token")
            .expect("seal");
        let last = sender.outgoing.len() - 1;
        sender.outgoing[last - TAG_BYTES] ^= 1;
        sender
            .seal(CONTENT_APPLICATION_DATA, b"and this one is intact")
            .expect("seal");
        sender.flush().await.expect("flush");
        let first = read_err(&mut receiver).await;
        assert!(first.to_string().contains("integrity"), "{first}");
        let again = read_err(&mut receiver).await;
        assert_eq!(
            (again.kind(), again.to_string()),
            (first.kind(), first.to_string()),
            "the record after the bad one is never read"
        );
        receiver.close().await.expect("close sends the alert");
        let told = read_err(&mut sender).await;
        assert_eq!(told.kind(), io::ErrorKind::ConnectionAborted, "{told}");
        assert!(
            told.to_string().contains("alert 20"),
            "bad_record_mac: {told}"
        );
    }

    #[tokio::test]
    async fn an_end_without_close_notify_is_not_a_clean_end() {
        let (mut sender, mut receiver) = pair().await;
        sender.io.close().await.expect("close the socket only");
        let err = read_err(&mut receiver).await;
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(err.to_string().contains("close_notify"), "{err}");
    }

    #[tokio::test]
    async fn a_record_over_two_to_the_fourteen_plus_one_once_opened_is_refused() {
        let (mut sender, mut receiver) = pair().await;
        sender
            .seal_one(CONTENT_APPLICATION_DATA, &[7; RECORD_PLAINTEXT_MAX + 1])
            .expect("seal");
        sender.flush().await.expect("flush");
        let err = read_err(&mut receiver).await;
        assert!(err.to_string().contains("over 2^14 + 1"), "{err}");
    }

    #[tokio::test]
    async fn a_handshake_message_is_neither_empty_nor_interleaved_with_data() {
        let (mut sender, mut receiver) = pair().await;
        sender.seal_one(CONTENT_HANDSHAKE, &[]).expect("seal");
        sender.flush().await.expect("flush");
        let err = read_err(&mut receiver).await;
        assert!(
            err.to_string().contains("empty TLS handshake record"),
            "{err}"
        );

        let (mut sender, mut receiver) = pair().await;
        // The first half of a key update, then data before its second half.
        sender
            .seal_one(CONTENT_HANDSHAKE, &[HANDSHAKE_KEY_UPDATE, 0, 0])
            .expect("seal");
        sender
            .seal_one(CONTENT_APPLICATION_DATA, b"sneaked in")
            .expect("seal");
        sender.flush().await.expect("flush");
        let err = read_err(&mut receiver).await;
        assert!(
            err.to_string().contains("middle of a handshake message"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn after_close_notify_no_key_update_is_sent() {
        let (mut sender, mut receiver) = pair().await;
        receiver.close().await.expect("close");
        request_key_update(&mut sender);
        sender.write_all(b"late").await.expect("write");
        sender.flush().await.expect("flush");
        let mut late = [0; 4];
        receiver
            .read_exact(&mut late)
            .await
            .expect("read after our close");
        assert!(!receiver.key_update_owed);
        assert_eq!(receiver.queued(), 0);
        assert_eq!(receiver.key_updates.0, 0);
    }

    #[tokio::test]
    async fn a_sequence_number_never_wraps() {
        let (mut sender, _receiver) = pair().await;
        sender.tx.seq = u64::MAX;
        let err = sender
            .seal_one(CONTENT_APPLICATION_DATA, b"x")
            .expect_err("no nonce is reused");
        assert!(err.to_string().contains("exhausted"), "{err}");
    }

    #[tokio::test]
    async fn aes_256_and_chacha20_sessions_talk_to_rustls() {
        for suite in [
            rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_256_GCM_SHA384,
            rustls::crypto::aws_lc_rs::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ] {
            let (client, _) = configs();
            let key = identity::Keypair::generate_ed25519();
            let only = super::super::rustls_server_with_only(&key, suite);
            let (c, s) = sockets().await;
            let acceptor = futures_rustls::TlsAcceptor::from(only);
            let (ours, theirs) = tokio::join!(connect(c, client, name()), acceptor.accept(s));
            let (mut ours, _) = ours.expect("our client finishes the handshake");
            let mut theirs = theirs.expect("rustls accepts us");
            assert_eq!(ours.cipher_suite(), suite.suite());
            exchange(
                &mut ours,
                &mut theirs,
                &pattern(300_000, 9),
                &pattern(200_000, 10),
            )
            .await;
            theirs
                .get_mut()
                .1
                .refresh_traffic_keys()
                .expect("key update");
            exchange(
                &mut ours,
                &mut theirs,
                &pattern(100_000, 11),
                &pattern(100_000, 12),
            )
            .await;
            exchange(&mut ours, &mut theirs, b"after", b"the update").await;
            assert_eq!(ours.key_updates, (1, 1), "{suite:?}");
        }
    }

    mod fuzz {
        use proptest::prelude::*;

        use super::*;

        /// Records to seal (content type, body), then the damage done to them in transit.
        type Sent = (Vec<(u8, Vec<u8>)>, Vec<(usize, u8)>, Option<usize>, Vec<u8>);

        /// Records a peer might send after the handshake: any content type and body,
        /// sealed with the right keys, then damaged in transit.
        fn records() -> impl Strategy<Value = Sent> {
            (
                prop::collection::vec(
                    (
                        prop::sample::select(vec![
                            CONTENT_APPLICATION_DATA,
                            CONTENT_HANDSHAKE,
                            CONTENT_ALERT,
                            0,
                            99,
                        ]),
                        prop::collection::vec(any::<u8>(), 0..300),
                    ),
                    0..6,
                ),
                prop::collection::vec((any::<usize>(), any::<u8>()), 0..4),
                prop::option::of(0usize..2_000),
                prop::collection::vec(any::<u8>(), 0..40),
            )
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

            /// Whatever arrives, reading ends in data, a clean end or an error, never a
            /// panic or a hang; it never yields more bytes than were sent; and an error
            /// stays the answer to every later read.
            #[test]
            fn whatever_a_peer_sends_reading_ends_cleanly((sent, edits, keep, extra) in records()) {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(async {
                    let (mut sender, mut receiver) = pair().await;
                    for (content_type, body) in &sent {
                        sender.seal_one(*content_type, body).expect("seal");
                    }
                    let wire = peergrid_core::codec::damaged(
                        &sender.outgoing,
                        &edits,
                        keep,
                        &extra,
                    );
                    sender.io.write_all(&wire).await.expect("write");
                    sender.io.close().await.expect("close");
                    let mut total = 0usize;
                    let mut buf = [0u8; 4096];
                    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                        loop {
                            match receiver.read(&mut buf).await {
                                Ok(0) => return None,
                                Ok(n) => total += n,
                                Err(e) => return Some(e),
                            }
                        }
                    })
                    .await
                    .expect("reading ends in time");
                    assert!(total <= wire.len(), "{total} bytes read from {} sent", wire.len());
                    if let Some(first) = ended {
                        let again = receiver.read(&mut buf).await.expect_err("the error sticks");
                        assert_eq!(again.to_string(), first.to_string());
                    }
                });
            }
        }
    }
}
