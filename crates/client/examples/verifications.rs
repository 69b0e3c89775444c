//! Prints the SSL verification state of a zone, like the seed's TypeScript example.
//!
//! `CLOUDFLARE_API_TOKEN=... cargo run -p zonecert-client --example verifications -- ZONE_ID`
//! (add `CLOUDFLARE_BASE_URL=http://127.0.0.1:PORT/client/v4` for a zonecert server).

use zonecert_client::Client;

#[tokio::main]
async fn main() -> Result<(), zonecert_client::Error> {
    let zone_id = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "023e105f4ecef8ad9ca31a8372d0c353".to_owned());
    let client = Client::from_env()?;
    let verifications = client.ssl().verification().get(zone_id).await?;
    println!("{verifications:#?}");
    Ok(())
}
