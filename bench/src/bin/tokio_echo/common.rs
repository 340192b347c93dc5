//! What both tokio echo servers share (`tokio-echo`, `tokio-echo-full`): the
//! echo of one stream, and the end of the run, shaped as the echo_server
//! example's: a thread reads stdin to EOF, or SIGINT/SIGTERM comes.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::signal::unix::{signal, SignalKind};

/// Echoes every byte of `s` back until EOF or an error (a 64 KiB buffer per
/// connection, as tokio's own examples and `bench-net server --system tokio`).
pub async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if s.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Resolves when stdin reaches EOF (read by a helper thread, as the example
/// does) or SIGINT or SIGTERM arrives.
pub async fn until_shutdown() {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        let _ = tx.send(());
    });
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = rx => {}
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}

/// Runs `body` on a current-thread runtime until it ends or
/// [`until_shutdown`] resolves.
pub fn run<F: std::future::Future<Output = ()>>(body: F) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        tokio::select! {
            _ = body => {}
            _ = until_shutdown() => {}
        }
    });
}
