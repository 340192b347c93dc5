//! An HTTP server with hyper on aioloop: `GET /` answers "hello", `POST
//! /echo` sends the request body back. HTTP/1.1 with keep-alive, or
//! HTTP/2 with prior knowledge (`--h2`).
//!
//! ```text
//! cargo run --example http_server --features hyper -- 127.0.0.1:8080
//! curl http://127.0.0.1:8080/ http://127.0.0.1:8080/          # one connection, two requests
//! curl --data-binary @some-file http://127.0.0.1:8080/echo
//! cargo run --example http_server --features hyper -- 127.0.0.1:8080 --h2
//! curl --http2-prior-knowledge http://127.0.0.1:8080/
//! ```
//!
//! It prints `listening on <address>` once it accepts connections.

use std::convert::Infallible;
use std::net::SocketAddr;

use aioloop::hyper::{serve_http1, serve_http2};
use aioloop::prelude::*;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let response = match (req.method(), req.uri().path()) {
        (&Method::GET, "/") => Response::new(Full::new(Bytes::from_static(b"hello\n"))),
        (&Method::POST, "/echo") => match req.into_body().collect().await {
            Ok(body) => Response::new(Full::new(body.to_bytes())),
            Err(e) => status(StatusCode::BAD_REQUEST, format!("{e}\n")),
        },
        _ => status(StatusCode::NOT_FOUND, "not found\n".into()),
    };
    Ok(response)
}

fn status(code: StatusCode, text: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(text)));
    *r.status_mut() = code;
    r
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args.next().as_deref().unwrap_or("127.0.0.1:8080").parse()?;
    let h2 = args.any(|a| a == "--h2");
    let lp = EventLoop::new()?;
    let l = lp.clone();
    lp.run_until_complete(async move {
        let service = hyper::service::service_fn(handle);
        let server = if h2 {
            serve_http2(&l, addr, service).await?
        } else {
            serve_http1(&l, addr, service).await?
        };
        if let Some(bound) = server.sockets().first().and_then(|a| a.as_inet()) {
            println!("listening on {bound}");
        }
        server.serve_forever().await?;
        Ok::<(), Box<dyn std::error::Error>>(())
    })??;
    Ok(())
}
