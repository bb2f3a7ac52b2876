//! Syslog sink: RFC 5424 messages over UDP (RFC 5426), TCP (RFC 6587 octet counting) or TLS (RFC 5425, which
//! uses the same octet-counting framing).
//!
//! One message per row (RFC 5424 §6):
//! `<PRI>1 TIMESTAMP HOSTNAME kubehero PROCID AUDIT [kubehero@32473 seq=… event_id=… key_id=… mac=… action=…
//! actor=… outcome=…] <export line JSON>`. PRI is facility authpriv (10) × 8 + severity notice (5) for `ok`,
//! warning (4) for `denied` and `error`, alert (1) for a `breakglass.use` (§6.2.1). TIMESTAMP is the event's time (§6.2.3). SD-PARAM values
//! escape `"`, `\` and `]` (§6.3.3). The MSG is the row's export line, so a SIEM can verify the MAC.
//!
//! Delivery: TCP and TLS keep one connection, write each batch with one `write_all` and flush. Syslog has no
//! acknowledgement, so "delivered" means "accepted by the kernel on a live connection": before each batch the
//! connection is polled once and a peer that has closed it is detected, so a restarted receiver does not
//! swallow a batch; a receiver that dies with unread data in its socket can still lose that batch. UDP is
//! fire-and-forget by nature. Use the webhook or S3 sinks where loss must be impossible.

use super::{ForwardError, ForwardOptions, RowFields, SinkSpec, SyslogTransport};
use kubehero_core::AuditOutcome;
use kubehero_store::StoredAuditRow;
use std::io::Write as _;
use std::pin::Pin;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UdpSocket};

/// RFC 5424 §6.2.1: facility 10, security/authorization messages (private).
const FACILITY_AUTHPRIV: u8 = 10;
/// A break-glass use: someone took emergency owner access.
const SEVERITY_ALERT: u8 = 1;
const SEVERITY_WARNING: u8 = 4;
const SEVERITY_NOTICE: u8 = 5;
/// The SD-ID: `name@<private enterprise number>` (RFC 5424 §7.2.2).
const SD_ID: &str = "kubehero@32473";
/// Largest UDP payload over IPv4 (65535 − 8 UDP − 20 IP header bytes), RFC 5426 §3.2.
const MAX_UDP_PAYLOAD: usize = 65_507;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

enum Conn {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Udp(UdpSocket),
}

pub(crate) struct SyslogSink {
    name: String,
    transport: SyslogTransport,
    host: String,
    port: u16,
    tls: Option<tokio_rustls::TlsConnector>,
    conn: Option<Conn>,
    hostname: String,
    procid: u32,
    buf: Vec<u8>,
    msg: Vec<u8>,
}

impl SyslogSink {
    pub(crate) fn new(spec: &SinkSpec, opts: &ForwardOptions) -> Result<SyslogSink, ForwardError> {
        let SinkSpec::Syslog { transport, host, port } = spec else {
            return Err(ForwardError::Config("not a syslog sink".into()));
        };
        let tls = match transport {
            SyslogTransport::Tls => {
                Some(tokio_rustls::TlsConnector::from(super::tls::client_config(opts.ca_file.as_deref())?))
            }
            _ => None,
        };
        if tls.is_some() {
            server_name(host)?;
        }
        Ok(SyslogSink {
            name: spec.name(),
            transport: *transport,
            host: host.clone(),
            port: *port,
            tls,
            conn: None,
            hostname: local_hostname(),
            procid: std::process::id(),
            buf: Vec::with_capacity(1 << 20),
            msg: Vec::with_capacity(4096),
        })
    }

    pub(crate) fn reset(&mut self) {
        self.conn = None;
    }

    fn connect_err(&self, reason: impl std::fmt::Display) -> ForwardError {
        ForwardError::Connect { sink: self.name.clone(), reason: reason.to_string() }
    }

    fn send_err(&self, reason: impl std::fmt::Display) -> ForwardError {
        ForwardError::Send { sink: self.name.clone(), reason: reason.to_string() }
    }

    async fn connect(&self) -> Result<Conn, ForwardError> {
        let addr = (self.host.as_str(), self.port);
        match self.transport {
            SyslogTransport::Udp => {
                let target = tokio::net::lookup_host(addr)
                    .await
                    .map_err(|e| self.connect_err(e))?
                    .next()
                    .ok_or_else(|| self.connect_err("the host name has no address"))?;
                let local = if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
                let sock = UdpSocket::bind(local).await.map_err(|e| self.connect_err(e))?;
                sock.connect(target).await.map_err(|e| self.connect_err(e))?;
                Ok(Conn::Udp(sock))
            }
            SyslogTransport::Tcp | SyslogTransport::Tls => {
                let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
                    .await
                    .map_err(|_| self.connect_err("timed out"))?
                    .map_err(|e| self.connect_err(e))?;
                let _ = tcp.set_nodelay(true);
                match &self.tls {
                    None => Ok(Conn::Tcp(tcp)),
                    Some(tls) => {
                        let sn = server_name(&self.host)?;
                        let s = tokio::time::timeout(CONNECT_TIMEOUT, tls.connect(sn, tcp))
                            .await
                            .map_err(|_| self.connect_err("TLS handshake timed out"))?
                            .map_err(|e| self.connect_err(format!("TLS handshake: {e}")))?;
                        Ok(Conn::Tls(Box::new(s)))
                    }
                }
            }
        }
    }

    /// Sends every row of `rows` as one batch.
    pub(crate) async fn deliver(&mut self, rows: &[StoredAuditRow]) -> Result<usize, ForwardError> {
        // A stream whose peer has closed it (receiver restarted) would accept one more write into the void.
        let alive = match &mut self.conn {
            Some(Conn::Tcp(s)) => stream_alive(s).await,
            Some(Conn::Tls(s)) => stream_alive(s.as_mut()).await,
            Some(Conn::Udp(_)) => true,
            None => false,
        };
        if !alive {
            self.conn = None;
            self.conn = Some(self.connect().await?);
        }
        self.buf.clear();
        let mut datagrams = 0usize;
        for row in rows {
            self.msg.clear();
            write_rfc5424(&mut self.msg, row, &self.hostname, self.procid);
            match self.transport {
                SyslogTransport::Udp => {
                    // One datagram per row. A datagram cannot exceed 65 507 bytes: a longer message is cut
                    // at a UTF-8 boundary, so its JSON is incomplete but the structured data (seq, event_id,
                    // mac) that comes first still identifies the row; audit rows are far below this size.
                    let mut end = self.msg.len().min(MAX_UDP_PAYLOAD);
                    while end > 0 && end < self.msg.len() && (self.msg[end] & 0xC0) == 0x80 {
                        end -= 1;
                    }
                    let Some(Conn::Udp(sock)) = &self.conn else { return Err(self.send_err("not connected")) };
                    sock.send(&self.msg[..end]).await.map_err(|e| self.send_err(e))?;
                    // Let the receiver (often on the same host) drain its socket now and then.
                    datagrams += 1;
                    if datagrams == 64 {
                        datagrams = 0;
                        tokio::task::yield_now().await;
                    }
                }
                SyslogTransport::Tcp | SyslogTransport::Tls => {
                    // RFC 6587 §3.4.1 octet counting: MSG-LEN SP SYSLOG-MSG.
                    let _ = write!(self.buf, "{} ", self.msg.len());
                    self.buf.extend_from_slice(&self.msg);
                }
            }
        }
        if !self.buf.is_empty() {
            let res = match &mut self.conn {
                Some(Conn::Tcp(s)) => write_flush(s, &self.buf).await,
                Some(Conn::Tls(s)) => write_flush(s.as_mut(), &self.buf).await,
                _ => Err(std::io::Error::other("not connected")),
            };
            if let Err(e) = res {
                self.conn = None;
                return Err(self.send_err(e));
            }
        }
        Ok(rows.len())
    }
}

async fn write_flush<S: AsyncWrite + Unpin>(s: &mut S, buf: &[u8]) -> std::io::Result<()> {
    tokio::time::timeout(WRITE_TIMEOUT, async {
        s.write_all(buf).await?;
        s.flush().await
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "write timed out"))?
}

/// Polls the stream for reading once: a syslog receiver never sends, so end-of-stream or an error means the
/// peer closed the connection. Pending (nothing to read) means alive; TLS records (session tickets) are
/// consumed by the TLS layer and are not end-of-stream.
async fn stream_alive<S: AsyncRead + Unpin>(s: &mut S) -> bool {
    let mut scratch = [0u8; 512];
    std::future::poll_fn(|cx| {
        let mut rb = ReadBuf::new(&mut scratch);
        match Pin::new(&mut *s).poll_read(cx, &mut rb) {
            std::task::Poll::Pending => std::task::Poll::Ready(true),
            std::task::Poll::Ready(Ok(())) => std::task::Poll::Ready(!rb.filled().is_empty()),
            std::task::Poll::Ready(Err(_)) => std::task::Poll::Ready(false),
        }
    })
    .await
}

fn server_name(host: &str) -> Result<rustls_pki_types::ServerName<'static>, ForwardError> {
    rustls_pki_types::ServerName::try_from(host.to_string())
        .map_err(|_| ForwardError::Config(format!("{host:?} is not a valid TLS server name")))
}

/// The HOSTNAME field (RFC 5424 §6.2.4): the kernel's host name if it is printable ASCII, else `-`.
fn local_hostname() -> String {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let h = h.trim();
    if h.is_empty() || h.len() > 255 || !h.bytes().all(|b| (33..=126).contains(&b)) {
        "-".to_string()
    } else {
        h.to_string()
    }
}

/// An SD-PARAM value with `"`, `\` and `]` escaped (RFC 5424 §6.3.3).
fn push_param_value(out: &mut Vec<u8>, v: &str) {
    for b in v.bytes() {
        if matches!(b, b'"' | b'\\' | b']') {
            out.push(b'\\');
        }
        out.push(b);
    }
}

fn push_param(out: &mut Vec<u8>, name: &str, v: &str) {
    out.push(b' ');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"=\"");
    push_param_value(out, v);
    out.push(b'"');
}

/// Appends the RFC 5424 message for `row` to `out` (no framing).
pub(crate) fn write_rfc5424(out: &mut Vec<u8>, row: &StoredAuditRow, hostname: &str, procid: u32) {
    let fields = RowFields::of(row);
    let outcome = fields.as_ref().map_or(AuditOutcome::Error, |f| f.result.outcome);
    let breakglass = fields.as_ref().is_some_and(|f| f.action == "breakglass.use");
    let severity = match outcome {
        AuditOutcome::Ok if breakglass => SEVERITY_ALERT,
        AuditOutcome::Ok => SEVERITY_NOTICE,
        AuditOutcome::Denied | AuditOutcome::Error => SEVERITY_WARNING,
    };
    let pri = FACILITY_AUTHPRIV * 8 + severity;
    let time = fields.as_ref().map_or("-", |f| f.time.as_ref());
    let _ = write!(out, "<{pri}>1 {time} {hostname} kubehero {procid} AUDIT [{SD_ID}");
    push_param(out, "seq", &row.seq.to_string());
    push_param(out, "event_id", fields.as_ref().map_or("", |f| f.event_id.as_ref()));
    push_param(out, "key_id", &row.key_id);
    push_param(out, "mac", &row.mac);
    push_param(out, "action", fields.as_ref().map_or("", |f| f.action.as_ref()));
    push_param(out, "actor", fields.as_ref().map_or("", |f| f.actor.sub.as_ref()));
    push_param(out, "outcome", outcome.as_str());
    out.extend_from_slice(b"] ");
    // The export line, built in place: the record with "mac" appended.
    let body = row.body.strip_suffix('}').unwrap_or(&row.body);
    out.extend_from_slice(body.as_bytes());
    out.extend_from_slice(b",\"mac\":\"");
    out.extend_from_slice(row.mac.as_bytes());
    out.extend_from_slice(b"\"}");
}

/// The RFC 5424 message for `row` (what one datagram or one octet-counted frame carries).
pub fn format_rfc5424(row: &StoredAuditRow, hostname: &str, procid: u32) -> String {
    let mut v = Vec::new();
    write_rfc5424(&mut v, row, hostname, procid);
    String::from_utf8_lossy(&v).into_owned()
}

#[async_trait::async_trait]
impl super::Sink for SyslogSink {
    async fn deliver(&mut self, _: &dyn kubehero_store::Store, rows: &[StoredAuditRow]) -> Result<usize, ForwardError> {
        SyslogSink::deliver(self, rows).await
    }

    fn reset(&mut self) {
        SyslogSink::reset(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_sd_param_values() {
        let mut out = Vec::new();
        push_param_value(&mut out, r#"a"b\c]d"#);
        assert_eq!(String::from_utf8(out).unwrap(), r#"a\"b\\c\]d"#);
    }

    #[test]
    fn formats_an_rfc5424_message() {
        let body = r#"{"v":1,"seq":7,"key_id":"k1","event_id":"e7","time":"2026-01-02T03:04:05.006Z","time_ms":1767323045006,"actor":{"sub":"al\"ice]","email":null,"groups":[],"kind":"person","auth_method":"jwt"},"action":"policy.arm","target":{"kind":null,"id":null,"cluster":null,"namespace":null},"result":{"outcome":"denied","code":"permission_denied","status":403},"request_id":"r","source":null,"user_agent":null}"#;
        let row =
            StoredAuditRow { seq: 7, key_id: "k1".into(), mac: "ab".repeat(32), body: body.into(), columns: None };
        let m = format_rfc5424(&row, "host1", 42);
        assert!(m.starts_with(
            "<84>1 2026-01-02T03:04:05.006Z host1 kubehero 42 AUDIT [kubehero@32473 seq=\"7\" event_id=\"e7\" key_id=\"k1\""
        ));
        assert!(m.contains(r#"actor="al\"ice\]" outcome="denied"] {"v":1"#), "{m}");
        assert!(m.ends_with(&format!(",\"mac\":\"{}\"}}", "ab".repeat(32))));
        assert_eq!(m.split_once("] ").unwrap().1, crate::export_line(&row));
    }
}
