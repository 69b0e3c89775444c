//! `client.zones()` and `client.user()`: the endpoints around the SSL API that a
//! zonecert server offers (and Cloudflare too).

use crate::client::{ApiRequest, Client};
use crate::error::Result;
use crate::pagination::ListStream;
use crate::ssl::fetch;
use serde::{Deserialize, Serialize};
use zonecert_api::{CreateZone, TokenStatus, Zone};

/// Zones: create, list, get, delete.
#[derive(Debug, Clone, Copy)]
pub struct Zones<'a> {
    pub(crate) client: &'a Client,
}

impl Zones<'_> {
    /// `POST /zones`: adds a zone. Not retried once it may have been applied.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), zonecert_client::Error> {
    /// let client = zonecert_client::Client::from_env()?;
    /// let zone = client.zones().create("example.com").await?;
    /// println!("{} {}", zone.id, zone.name);
    /// # Ok(()) }
    /// ```
    pub async fn create(&self, name: impl Into<String>) -> Result<Zone> {
        let request = ApiRequest::post(["zones"]).json(&CreateZone { name: name.into() });
        fetch(self.client, request).await
    }

    /// `GET /zones`: every zone the credentials can see, a page at a time.
    pub fn list(&self, params: ZoneListParams) -> ListStream<Zone> {
        let mut request = ApiRequest::get(["zones"]);
        if let Some(name) = &params.name {
            request = request.query("name", name.clone());
        }
        if let Some(per_page) = params.per_page {
            request = request.query("per_page", per_page.to_string());
        }
        ListStream::new(self.client.clone(), request, 1)
    }

    /// `GET /zones/{zone_id}`: one zone.
    pub async fn get(&self, zone_id: &str) -> Result<Zone> {
        fetch(self.client, ApiRequest::get(["zones", zone_id])).await
    }

    /// `DELETE /zones/{zone_id}`: removes a zone and its packs.
    pub async fn delete(&self, zone_id: &str) -> Result<DeletedZone> {
        fetch(self.client, ApiRequest::delete(["zones", zone_id])).await
    }
}

/// Filters of [`Zones::list`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ZoneListParams {
    /// Only the zone with this name.
    pub name: Option<String>,
    /// Page size.
    pub per_page: Option<u64>,
}

impl ZoneListParams {
    /// Every zone.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only the zone with this name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets the page size.
    pub fn per_page(mut self, per_page: u64) -> Self {
        self.per_page = Some(per_page);
        self
    }
}

/// Result of [`Zones::delete`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletedZone {
    /// The deleted zone's id.
    pub id: String,
}

/// The user the credentials belong to.
#[derive(Debug, Clone, Copy)]
pub struct User<'a> {
    pub(crate) client: &'a Client,
}

impl<'a> User<'a> {
    /// The user's API tokens.
    pub fn tokens(&self) -> Tokens<'a> {
        Tokens {
            client: self.client,
        }
    }
}

/// API tokens of the user.
#[derive(Debug, Clone, Copy)]
pub struct Tokens<'a> {
    client: &'a Client,
}

impl Tokens<'_> {
    /// `GET /user/tokens/verify`: whether the client's token is valid and active.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), zonecert_client::Error> {
    /// let client = zonecert_client::Client::from_env()?;
    /// let token = client.user().tokens().verify().await?;
    /// assert_eq!(token.status, "active");
    /// # Ok(()) }
    /// ```
    pub async fn verify(&self) -> Result<TokenStatus> {
        fetch(self.client, ApiRequest::get(["user", "tokens", "verify"])).await
    }
}
