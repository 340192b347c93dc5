//! An edition-2024 program (what `cargo new` makes) that glob-imports
//! aioloop's prelude and writes `impl Future<Output = ...>`: the prelude
//! must leave std's `Future` trait (in the 2024 prelude) its name. With the
//! default feature it also serves and connects through the prelude alone,
//! printing the peer address and mixing I/O and loop errors with `?`.

use aioloop::prelude::*;
use std::time::Duration;

/// A value after a short sleep: an `impl Future` written in the signature,
/// as edition-2024 code does.
fn later(lp: &EventLoop, value: u32) -> impl Future<Output = Result<u32, LoopError>> + 'static {
    let lp = lp.clone();
    async move {
        lp.sleep(Duration::from_millis(1)).await?;
        Ok(value)
    }
}

/// A streams echo through the prelude: returns what came back and the
/// server's address as the client's transport prints it.
#[cfg(feature = "full")]
fn echo(lp: &EventLoop) -> impl Future<Output = Result<(Vec<u8>, String), LoopError>> + 'static {
    let server = lp.start_server(
        |reader: StreamReader, writer: StreamWriter| async move {
            let line = reader.readline().await?;
            writer.write(&line)?;
            writer.drain().await
        },
        &["127.0.0.1"],
        0,
        ServerOptions::default(),
    );
    let lp = lp.clone();
    async move {
        let server = server.await?;
        let port = server.sockets()[0].as_inet().map_or(0, |a| a.port());
        let (reader, writer) = lp.open_connection("127.0.0.1", port).await?;
        let peer = writer
            .get_extra_info("peername")
            .map(|p| p.to_string())
            .unwrap_or_default();
        writer.write(b"ping\n")?;
        let line = reader.readline().await?;
        writer.close();
        server.close();
        server.wait_closed().await;
        let _: SockAddr = SockAddr::from(std::path::Path::new("/unused"));
        let _ = SIGINT;
        Ok((line, peer))
    }
}

fn run() -> Result<(), LoopError> {
    let lp = EventLoop::new()?;
    let value = lp.run_until_complete(later(&lp, 41))??;
    assert_eq!(value, 41);
    println!("later: {value}");
    #[cfg(feature = "full")]
    {
        let (line, peer) = lp.run_until_complete(echo(&lp))??;
        assert_eq!(line, b"ping\n");
        assert!(peer.starts_with("127.0.0.1:"), "{peer}");
        println!("echoed {:?} from {peer}", String::from_utf8_lossy(&line));
    }
    lp.close()
}

fn main() -> Result<(), LoopError> {
    run()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_program_runs() {
        super::run().unwrap();
    }
}
