//! The second floor of bench/verification.sh (issue 15): a bare axum route serving, for
//! any zone, the bytes of one zonecert verification answer (read from `--body`), with
//! the content type zonecert sends. No middleware, no authentication, no store: what is
//! left is the HTTP server, the routing and the write of the same bytes, so zonecert's
//! ratio to it is the cost of everything zonecert does per request.
//!
//! Usage: zonecert-bare-floor --body FILE [--listen 127.0.0.1:0]; prints
//! `listening on http://ADDR`.

use anyhow::Context;
use axum::body::Bytes;
use axum::http::header;
use clap::Parser;
use std::path::PathBuf;

#[derive(Parser)]
struct Args {
    /// The answer's body, served as it is.
    #[arg(long)]
    body: PathBuf,
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let body = Bytes::from(
        std::fs::read(&args.body).with_context(|| format!("reading {}", args.body.display()))?,
    );
    let app = axum::Router::new().route(
        "/client/v4/zones/{zone_id}/ssl/verification",
        axum::routing::get(move || {
            let body = body.clone();
            async move { ([(header::CONTENT_TYPE, "application/json")], body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
