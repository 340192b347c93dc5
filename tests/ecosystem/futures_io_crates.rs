//! futures-io crates over the loop's streams (`StreamPair`,
//! `StreamWriter`): futures-lite's `io::copy`, async-compression (gzip),
//! async-tungstenite; and `poll_flush`'s contract that they rely on: `Ok`
//! when nothing is buffered and after a close started here, an error only
//! when buffered bytes could not be delivered. `drain()` keeps asyncio's
//! semantics (it fails once the connection is lost).
#![cfg(feature = "net")]

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::rc::Rc;

use crate::net_util::*;
use crate::util::*;
use aioloop::prelude::*;
use async_compression::futures::bufread::GzipDecoder;
use async_compression::futures::write::GzipEncoder;
use futures_lite::future::poll_fn;
use futures_lite::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use futures_lite::StreamExt;

fn on_loop<F: Future<Output = ()> + 'static>(test: impl FnOnce(EventLoop) -> F) {
    let lp = new_loop();
    let seen = record_exceptions(&lp);
    run(&lp, test(lp.clone()));
    finish(&lp, &seen);
}

fn port_of(server: &Server) -> u16 {
    server.sockets()[0].as_inet().unwrap().port()
}

/// Where a server's client tasks record how they ended.
#[derive(Default)]
struct Outcomes {
    list: RefCell<Vec<Result<(), String>>>,
    changed: Notify,
}

impl Outcomes {
    fn push(&self, outcome: Result<(), String>) {
        self.list.borrow_mut().push(outcome);
        self.changed.wake();
    }

    /// The outcomes, once there are `n` (the client tasks may end after
    /// their connections do).
    async fn wait_for(&self, n: usize) -> Vec<Result<(), String>> {
        self.changed.until(|| self.list.borrow().len() >= n).await;
        self.list.borrow().clone()
    }
}

async fn start<C, Fut>(l: &EventLoop, client: C) -> Server
where
    C: Fn(StreamPair) -> Fut + 'static,
    Fut: Future<Output = ()> + 'static,
{
    l.start_server(
        move |r, w| client(StreamPair::new(r, w)),
        &["127.0.0.1"],
        0,
        ServerOptions::default(),
    )
    .await
    .unwrap()
}

async fn flush<W: AsyncWrite + Unpin>(w: &mut W) -> io::Result<()> {
    poll_fn(|cx| std::pin::Pin::new(&mut *w).poll_flush(cx)).await
}

#[test]
fn flush_is_ok_after_a_local_close_and_drain_still_fails() {
    on_loop(|l| async move {
        let server = start(&l, |mut pair| async move {
            let mut sink = Vec::new();
            let _ = pair.read_to_end(&mut sink).await;
        })
        .await;
        let port = port_of(&server);
        // poll_close, then flush (what hyper and tungstenite do).
        let mut pair: StreamPair = l.open_connection("127.0.0.1", port).await.unwrap().into();
        pair.write_all(b"some bytes").await.unwrap();
        flush(&mut pair).await.unwrap();
        pair.close().await.unwrap();
        assert!(pair.writer().flow_control().is_connection_lost());
        flush(&mut pair).await.unwrap();
        // asyncio's drain is unchanged: the connection is lost.
        let err = pair.writer().drain().await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);

        // StreamWriter::close (a close started here), flushed before and
        // after connection_lost.
        let (_r, mut w) = l.open_connection("127.0.0.1", port).await.unwrap();
        w.write_all(&pattern(200_000, 3)).await.unwrap();
        w.close();
        flush(&mut w).await.unwrap();
        w.wait_closed().await.unwrap();
        flush(&mut w).await.unwrap();
        server.close();
        server.wait_closed().await;
    });
}

#[test]
fn flush_fails_when_an_abort_drops_buffered_bytes() {
    on_loop(|l| async move {
        // A peer that accepts and never reads: the bytes stay buffered.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (_r, mut w) = l.open_connection("127.0.0.1", port).await.unwrap();
        let (_peer, _) = listener.accept().unwrap();
        w.write(&pattern(16 << 20, 1)).unwrap();
        assert!(w.transport().get_write_buffer_size() > 0);
        w.transport().abort();
        let err = flush(&mut w).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
        w.wait_closed().await.unwrap();
        assert!(flush(&mut w).await.is_err(), "still undelivered");

        // Aborted with nothing buffered: nothing was lost.
        let (_r, mut w) = l.open_connection("127.0.0.1", port).await.unwrap();
        let (_peer2, _) = listener.accept().unwrap();
        w.write_all(b"small").await.unwrap();
        assert_eq!(w.transport().get_write_buffer_size(), 0);
        w.transport().abort();
        flush(&mut w).await.unwrap();
    });
}

#[test]
fn futures_lite_copy_then_close_and_flush() {
    on_loop(|l| async move {
        let outcomes: Rc<Outcomes> = Rc::default();
        let o = outcomes.clone();
        let server = start(&l, move |pair| {
            let o = o.clone();
            async move {
                let (reader, writer) = pair.into_parts();
                let mut writer = writer;
                let copied = async {
                    futures_lite::io::copy(reader, &mut writer).await?;
                    AsyncWriteExt::close(&mut writer).await?;
                    writer.flush().await
                };
                o.push(copied.await.map_err(|e| e.to_string()));
            }
        })
        .await;
        let data = pattern(900_000, 4);
        let (r, w) = l
            .open_connection("127.0.0.1", port_of(&server))
            .await
            .unwrap();
        let mut pair = StreamPair::new(r, w);
        pair.write_all(&data).await.unwrap();
        pair.writer().write_eof().unwrap();
        let mut echo = Vec::new();
        pair.read_to_end(&mut echo).await.unwrap();
        assert!(echo == data, "the echo differs");
        server.close();
        server.wait_closed().await;
        assert_eq!(outcomes.wait_for(1).await, [Ok(())]);
    });
}

#[test]
fn gzip_with_async_compression_over_a_stream_pair() {
    on_loop(|l| async move {
        let text: Vec<u8> = (0..20_000)
            .flat_map(|i| format!("line {i} of a compressible text\n").into_bytes())
            .collect();
        let outcomes: Rc<Outcomes> = Rc::default();
        let (o, t) = (outcomes.clone(), text.clone());
        let server = start(&l, move |pair| {
            let (o, t) = (o.clone(), t.clone());
            async move {
                // Compress onto the connection; close() finishes the gzip
                // stream, flushes and closes the connection.
                let mut gz = GzipEncoder::new(pair);
                let done = async {
                    gz.write_all(&t).await?;
                    gz.close().await
                };
                o.push(done.await.map_err(|e| e.to_string()));
            }
        })
        .await;
        let pair: StreamPair = l
            .open_connection("127.0.0.1", port_of(&server))
            .await
            .unwrap()
            .into();
        let mut plain = Vec::new();
        GzipDecoder::new(BufReader::new(pair))
            .read_to_end(&mut plain)
            .await
            .unwrap();
        assert!(plain == text, "the decompressed text differs");
        server.close();
        server.wait_closed().await;
        assert_eq!(outcomes.wait_for(1).await, [Ok(())]);
    });
}

#[test]
fn websocket_close_handshake_ends_cleanly_on_both_sides() {
    use async_tungstenite::tungstenite::{Error, Message};
    on_loop(|l| async move {
        let outcomes: Rc<Outcomes> = Rc::default();
        let o = outcomes.clone();
        let server = start(&l, move |pair| {
            let o = o.clone();
            async move {
                let served = async {
                    let mut ws = async_tungstenite::accept_async(pair).await?;
                    while let Some(msg) = ws.next().await {
                        let msg = msg?;
                        if msg.is_text() || msg.is_binary() {
                            ws.send(msg).await?;
                        }
                    }
                    Ok::<(), Error>(())
                };
                o.push(served.await.map_err(|e| e.to_string()));
            }
        })
        .await;
        let port = port_of(&server);
        let pair: StreamPair = l.open_connection("127.0.0.1", port).await.unwrap().into();
        let (mut ws, _) = async_tungstenite::client_async(format!("ws://127.0.0.1:{port}/"), pair)
            .await
            .unwrap();
        ws.send(Message::text("hi")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hi"));
        ws.close(None).await.unwrap();
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_))) => {}
                None | Some(Err(Error::ConnectionClosed)) => break,
                other => panic!("{other:?}"),
            }
        }
        server.close();
        server.wait_closed().await;
        // The server's side saw the close handshake end, not an I/O error.
        assert_eq!(outcomes.wait_for(1).await, [Ok(())]);
    });
}
