//! The socket transport's reader is edge-triggered on epoll (loop-net's
//! `stream/input.rs`): a report means "became readable", so these are the
//! cases where no new report comes and the transport must read on its own.
//! On the other backends the reader is level-triggered and the same tests
//! must pass.

use std::io::{self, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::rc::Rc;

use crate::net_util::*;
use crate::util::*;
use aioloop::prelude::*;

/// A connected TCP pair: (the peer we drive, the accepted side).
fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (ours, _) = listener.accept().unwrap();
    (peer, ours)
}

/// Hands `sock` to the loop as a stream transport recording into `rec`.
async fn adopt(lp: &EventLoop, sock: OwnedFd, rec: &Rc<Recorder>) -> Transport {
    let r = rec.clone();
    let (t, _) = lp
        .connect_accepted_socket(move || RecordingProtocol::new(&r, Hooks::keep_open()), sock)
        .await
        .unwrap();
    t
}

/// Data and the peer's EOF, both queued before the transport exists, come
/// in one report: the one `recv` that reads the data does not see the EOF,
/// and no new report would come for it.
#[test]
fn data_and_eof_queued_together_are_both_delivered() {
    on_loop(|lp| async move {
        let (mut tcp_peer, tcp_ours) = tcp_pair();
        let (mut unix_peer, unix_ours) = UnixStream::pair().unwrap();
        for (peer, ours) in [
            (&mut tcp_peer as &mut dyn PeerEnd, OwnedFd::from(tcp_ours)),
            (&mut unix_peer as &mut dyn PeerEnd, OwnedFd::from(unix_ours)),
        ] {
            peer.send_and_shut(b"hello, then EOF");
            let rec = Recorder::new();
            let t = adopt(&lp, ours, &rec).await;
            rec.until(|r| r.saw_eof()).await;
            assert_eq!(rec.bytes(), b"hello, then EOF");
            t.close();
            rec.until_lost().await;
            rec.assert_clean_life();
        }
    });
}

/// More bytes than one `recv` takes (64 KiB), all queued before the
/// transport exists, while the peer sends nothing more: every byte is read
/// though no new report comes after the first.
#[test]
fn a_backlog_larger_than_one_read_is_read_without_new_data() {
    on_loop(|lp| async move {
        let (peer, ours) = UnixStream::pair().unwrap();
        // Room for the backlog in the socket (AF_UNIX queues at the receiver
        // what the sender's buffer allows).
        rustix::net::sockopt::set_socket_send_buffer_size(&peer, 1 << 20).unwrap();
        peer.set_nonblocking(true).unwrap();
        let data = pattern(400 * 1024, 7);
        let mut sent = 0;
        while sent < data.len() {
            match (&peer).write(&data[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("write: {e}"),
            }
        }
        assert!(
            sent > 3 * 64 * 1024,
            "the socket took only {sent} bytes: not a backlog of several reads"
        );
        let rec = Recorder::new();
        let t = adopt(&lp, ours.into(), &rec).await;
        rec.until_data(sent).await;
        assert_eq!(rec.bytes(), &data[..sent]);
        t.close();
        rec.until_lost().await;
        rec.assert_clean_life();
        drop(peer);
    });
}

/// The peer's end of a test connection.
trait PeerEnd {
    /// Writes `data` and shuts down writing (the peer's EOF).
    fn send_and_shut(&mut self, data: &[u8]);
}

impl PeerEnd for TcpStream {
    fn send_and_shut(&mut self, data: &[u8]) {
        self.write_all(data).unwrap();
        self.shutdown(Shutdown::Write).unwrap();
    }
}

impl PeerEnd for UnixStream {
    fn send_and_shut(&mut self, data: &[u8]) {
        self.write_all(data).unwrap();
        self.shutdown(Shutdown::Write).unwrap();
    }
}
