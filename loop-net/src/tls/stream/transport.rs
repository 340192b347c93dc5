//! The TLS transport's `Transport` methods (a child module of
//! `tls_stream`), and what `get_extra_info` reports about the session.

use loop_core::{ErrorKind, EventLoop, LoopError};
use rustls::ProtocolVersion;

use crate::protocol::AnyProtocol;
use crate::stream::{socket_extra_info, socket_transport_methods};
use crate::tls::CipherInfo;
use crate::transport::{ExtraInfo, TransportImpl};
use crate::write_buffer::WriteBufferLimits;

use super::{State, TlsStream};

impl TlsStream {
    fn version(&self) -> Option<ProtocolVersion> {
        self.conn.borrow().protocol_version()
    }
}

fn version_name(v: ProtocolVersion) -> String {
    match v {
        ProtocolVersion::TLSv1_3 => "TLSv1.3".to_string(),
        ProtocolVersion::TLSv1_2 => "TLSv1.2".to_string(),
        other => format!("{other:?}"),
    }
}

impl TransportImpl for TlsStream {
    socket_transport_methods!();

    fn write_eof(&self) -> Result<(), LoopError> {
        match self.state() {
            State::Open if !self.eof.get() && !self.dead() => {}
            State::Handshaking => {
                return Err(LoopError::new(
                    ErrorKind::InvalidState,
                    "write_eof(): the TLS handshake has not completed",
                ))
            }
            _ => return Ok(()),
        }
        if self.version() != Some(ProtocolVersion::TLSv1_3) {
            return Err(LoopError::new(
                ErrorKind::InvalidState,
                "write_eof() needs TLS 1.3: TLS 1.2 has no half-close",
            ));
        }
        self.eof.set(true);
        self.conn.borrow_mut().send_close_notify();
        let me = self.rc();
        if me.flush_tls() && me.out_pending() == 0 {
            me.shutdown_write();
        }
        Ok(())
    }

    fn can_write_eof(&self) -> bool {
        self.version() == Some(ProtocolVersion::TLSv1_3)
    }

    fn close(&self) {
        self.rc().close_impl()
    }

    fn abort(&self) {
        self.rc().force_close(None)
    }

    fn is_closing(&self) -> bool {
        self.life.lost_claimed()
            || matches!(
                self.state(),
                State::Closing | State::ShuttingDown | State::Lost
            )
    }

    fn pause_reading(&self) {
        if matches!(self.state(), State::Open | State::Handshaking) && !self.dead() {
            self.app_paused.set(true);
            if self.state() == State::Open {
                self.stop_reading();
            }
        }
    }

    fn resume_reading(&self) {
        if self.app_paused.replace(false) && !self.dead() && self.state() == State::Open {
            self.rc().schedule_kick();
        }
    }

    fn is_reading(&self) -> bool {
        matches!(self.state(), State::Open | State::Handshaking)
            && !self.dead()
            && !self.app_paused.get()
            && !self.peer_closed.get()
            && !self.tcp_eof.get()
    }

    fn write_buffer_size(&self) -> usize {
        self.write_buffer_len()
    }

    fn extra_info(&self, name: &str) -> Option<ExtraInfo> {
        if let Some(info) = socket_extra_info(name, &self.peername, &self.sockname, &self.fd) {
            return info;
        }
        match name {
            "sslcontext" => Some(ExtraInfo::TlsConfig(self.config.clone())),
            "server_hostname" => self.server_hostname.clone().map(ExtraInfo::Text),
            _ => {
                let conn = self.conn.borrow();
                if conn.is_handshaking() {
                    return None;
                }
                match name {
                    "peercert" => conn
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| ExtraInfo::Bytes(c.as_ref().to_vec())),
                    "peercert_chain" => conn.peer_certificates().map(|c| {
                        ExtraInfo::Certificates(c.iter().map(|c| c.as_ref().to_vec()).collect())
                    }),
                    "cipher" => conn.negotiated_cipher_suite().map(|s| {
                        let suite = s.suite();
                        let name = suite
                            .as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| format!("{suite:?}"));
                        let secret_bits = if name.contains("AES_128") { 128 } else { 256 };
                        ExtraInfo::Cipher(CipherInfo {
                            name,
                            protocol: version_name(s.version().version),
                            secret_bits,
                        })
                    }),
                    "version" | "protocol" => conn
                        .protocol_version()
                        .map(|v| ExtraInfo::Text(version_name(v))),
                    "alpn_protocol" => conn.alpn_protocol().map(|a| ExtraInfo::Bytes(a.to_vec())),
                    _ => None,
                }
            }
        }
    }
}
