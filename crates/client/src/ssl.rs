//! `client.ssl()`: SSL verification and certificate packs of a zone.

use crate::client::{ApiRequest, Client};
use crate::error::{Error, Result};
use crate::pagination::ListStream;
use serde::de::DeserializeOwned;
use zonecert_api::{
    CertificateAuthority, CertificatePack, CertificatePackQuota, DeletedCertificatePack,
    EditCertificatePack, EditVerification, EditVerificationResult, Envelope, ListCertificatePacks,
    OrderCertificatePack, PackType, ValidationMethod, Verification,
};

/// Takes the `result` out of an envelope; a success without one is a decode error.
pub(crate) fn into_result<T>(envelope: Envelope<T>) -> Result<T> {
    envelope.result.ok_or_else(|| Error::Decode {
        status: 200,
        message: "the answer has no result".into(),
        body: String::new(),
    })
}

pub(crate) async fn fetch<T: DeserializeOwned>(client: &Client, request: ApiRequest) -> Result<T> {
    into_result(client.request(&request).await?)
}

/// The SSL resources of the API: [`Ssl::verification`] and [`Ssl::certificate_packs`].
#[derive(Debug, Clone, Copy)]
pub struct Ssl<'a> {
    pub(crate) client: &'a Client,
}

impl<'a> Ssl<'a> {
    /// `/zones/{zone_id}/ssl/verification`: the verification state of a zone's packs.
    pub fn verification(&self) -> VerificationResource<'a> {
        VerificationResource {
            client: self.client,
        }
    }

    /// `/zones/{zone_id}/ssl/certificate_packs`: ordering and managing packs.
    pub fn certificate_packs(&self) -> CertificatePacks<'a> {
        CertificatePacks {
            client: self.client,
        }
    }
}

/// SSL verification: what must exist for each pack of a zone to validate, and
/// whether it does.
#[derive(Debug, Clone, Copy)]
pub struct VerificationResource<'a> {
    client: &'a Client,
}

impl VerificationResource<'_> {
    /// `GET /zones/{zone_id}/ssl/verification`: the verification state of every
    /// certificate pack of the zone (with zonecert, one item per host of each pack).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), zonecert_client::Error> {
    /// use zonecert_client::{Client, VerificationGetParams};
    ///
    /// let client = Client::from_env()?;
    /// // Ask the server to check the records again before answering.
    /// let params = VerificationGetParams::new("023e105f4ecef8ad9ca31a8372d0c353").retry(true);
    /// for v in client.ssl().verification().get(params).await? {
    ///     println!("{:?} {}", v.hostname, v.certificate_status);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn get(&self, params: impl Into<VerificationGetParams>) -> Result<Vec<Verification>> {
        fetch(self.client, params.into().to_request()).await
    }

    /// `PATCH /zones/{zone_id}/ssl/verification/{certificate_pack_id}`: switch a pack
    /// to another validation method, or, with the same method, check it again now.
    ///
    /// Refused on an active pack. Retried like a GET: setting the same method twice
    /// leaves the same state as setting it once.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), zonecert_client::Error> {
    /// use zonecert_client::{Client, ValidationMethod, VerificationEditParams};
    ///
    /// let client = Client::from_env()?;
    /// let result = client
    ///     .ssl()
    ///     .verification()
    ///     .edit(VerificationEditParams::new(
    ///         "023e105f4ecef8ad9ca31a8372d0c353",
    ///         "a77f8bd7-3b47-46b4-a6f1-75cf98109948",
    ///         ValidationMethod::Http,
    ///     ))
    ///     .await?;
    /// println!("{:?}", result.status);
    /// # Ok(()) }
    /// ```
    pub async fn edit(&self, params: VerificationEditParams) -> Result<EditVerificationResult> {
        fetch(self.client, params.to_request()).await
    }
}

/// Parameters of [`VerificationResource::get`]. A zone id converts into them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerificationGetParams {
    /// The zone's id (32 hex characters).
    pub zone_id: String,
    /// `true` asks the server to check the pending records now (`?retry=true`).
    pub retry: bool,
}

impl VerificationGetParams {
    /// The parameters for a zone, without `retry`.
    pub fn new(zone_id: impl Into<String>) -> Self {
        VerificationGetParams {
            zone_id: zone_id.into(),
            retry: false,
        }
    }

    /// Sets `retry`.
    pub fn retry(mut self, retry: bool) -> Self {
        self.retry = retry;
        self
    }

    /// The request these parameters make, for [`Client::request`].
    pub fn to_request(&self) -> ApiRequest {
        let request = ApiRequest::get(["zones", &self.zone_id, "ssl", "verification"]);
        if self.retry {
            request.query("retry", "true")
        } else {
            request
        }
    }
}

impl From<&str> for VerificationGetParams {
    fn from(zone_id: &str) -> Self {
        Self::new(zone_id)
    }
}

impl From<String> for VerificationGetParams {
    fn from(zone_id: String) -> Self {
        Self::new(zone_id)
    }
}

impl From<&String> for VerificationGetParams {
    fn from(zone_id: &String) -> Self {
        Self::new(zone_id.as_str())
    }
}

/// Parameters of [`VerificationResource::edit`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerificationEditParams {
    /// The zone's id.
    pub zone_id: String,
    /// The certificate pack's id (a UUID).
    pub certificate_pack_id: String,
    /// The method to validate with from now on.
    pub validation_method: ValidationMethod,
}

impl VerificationEditParams {
    /// The parameters for a pack of a zone.
    pub fn new(
        zone_id: impl Into<String>,
        certificate_pack_id: impl Into<String>,
        validation_method: ValidationMethod,
    ) -> Self {
        VerificationEditParams {
            zone_id: zone_id.into(),
            certificate_pack_id: certificate_pack_id.into(),
            validation_method,
        }
    }

    /// The request these parameters make, for [`Client::request`].
    pub fn to_request(&self) -> ApiRequest {
        ApiRequest::patch([
            "zones",
            &self.zone_id,
            "ssl",
            "verification",
            &self.certificate_pack_id,
        ])
        .json(&EditVerification {
            validation_method: self.validation_method.clone(),
        })
        .idempotent(true)
    }
}

/// Certificate packs: order, list, get, edit, delete, quota.
#[derive(Debug, Clone, Copy)]
pub struct CertificatePacks<'a> {
    client: &'a Client,
}

impl CertificatePacks<'_> {
    /// `POST /zones/{zone_id}/ssl/certificate_packs/order`: orders an advanced pack.
    ///
    /// Never retried once it may have reached the server (after a timeout, a dropped
    /// connection or a 5xx other than 503), so a pack is never ordered twice.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), zonecert_client::Error> {
    /// use zonecert_client::{CertificatePackCreateParams, Client, ValidationMethod};
    ///
    /// let client = Client::from_env()?;
    /// let params = CertificatePackCreateParams::new(
    ///     "023e105f4ecef8ad9ca31a8372d0c353",
    ///     ["example.com", "*.example.com"],
    /// )
    /// .validation_method(ValidationMethod::Txt);
    /// let pack = client.ssl().certificate_packs().create(params).await?;
    /// println!("ordered {}", pack.id);
    /// # Ok(()) }
    /// ```
    pub async fn create(&self, params: CertificatePackCreateParams) -> Result<CertificatePack> {
        fetch(self.client, params.to_request()).await
    }

    /// `GET /zones/{zone_id}/ssl/certificate_packs`: every pack of the zone, fetched a
    /// page at a time as the stream is read. See [`ListStream`].
    pub fn list(
        &self,
        params: impl Into<CertificatePackListParams>,
    ) -> ListStream<CertificatePack> {
        self.list_as(params)
    }

    /// Like [`CertificatePacks::list`], decoding each item as `T` (e.g.
    /// `serde_json::Value` to keep the API's JSON unchanged).
    pub fn list_as<T: DeserializeOwned + Send + 'static>(
        &self,
        params: impl Into<CertificatePackListParams>,
    ) -> ListStream<T> {
        let params = params.into();
        ListStream::new(
            self.client.clone(),
            params.to_request(),
            params.query.page.unwrap_or(1),
        )
    }

    /// `GET /zones/{zone_id}/ssl/certificate_packs/{id}`: one pack.
    pub async fn get(&self, params: CertificatePackParams) -> Result<CertificatePack> {
        fetch(self.client, params.get_request()).await
    }

    /// `PATCH /zones/{zone_id}/ssl/certificate_packs/{id}`: restarts validation of a
    /// pack whose validation timed out, optionally changing its branding.
    pub async fn edit(&self, params: CertificatePackEditParams) -> Result<CertificatePack> {
        fetch(self.client, params.to_request()).await
    }

    /// `DELETE /zones/{zone_id}/ssl/certificate_packs/{id}`: deletes a pack.
    ///
    /// If the first attempt was applied but its answer lost, the retry answers
    /// [`Error::NotFound`]: the pack is gone either way.
    pub async fn delete(&self, params: CertificatePackParams) -> Result<DeletedCertificatePack> {
        fetch(self.client, params.delete_request()).await
    }

    /// `GET /zones/{zone_id}/ssl/certificate_packs/quota`: how many advanced packs the
    /// zone may have and has.
    pub async fn quota(&self, zone_id: &str) -> Result<CertificatePackQuota> {
        fetch(self.client, quota_request(zone_id)).await
    }
}

/// The request of [`CertificatePacks::quota`], for [`Client::request`].
pub fn quota_request(zone_id: &str) -> ApiRequest {
    ApiRequest::get(["zones", zone_id, "ssl", "certificate_packs", "quota"])
}

/// Parameters of [`CertificatePacks::create`]: the zone and the order.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CertificatePackCreateParams {
    /// The zone's id.
    pub zone_id: String,
    /// The order sent as the body.
    pub order: OrderCertificatePack,
}

impl CertificatePackCreateParams {
    /// An advanced pack for these hosts (the zone apex among them), validated by TXT
    /// record, valid 90 days, from Let's Encrypt.
    pub fn new<H: Into<String>>(
        zone_id: impl Into<String>,
        hosts: impl IntoIterator<Item = H>,
    ) -> Self {
        CertificatePackCreateParams {
            zone_id: zone_id.into(),
            order: OrderCertificatePack {
                pack_type: PackType::Advanced,
                hosts: hosts.into_iter().map(Into::into).collect(),
                validation_method: ValidationMethod::Txt,
                validity_days: 90,
                certificate_authority: CertificateAuthority::LetsEncrypt,
                cloudflare_branding: None,
            },
        }
    }

    /// Sets how domain control is validated (`txt`, `http` or `email`).
    pub fn validation_method(mut self, method: ValidationMethod) -> Self {
        self.order.validation_method = method;
        self
    }

    /// Sets the validity: 14, 30, 90 or 365 days.
    pub fn validity_days(mut self, days: u32) -> Self {
        self.order.validity_days = days;
        self
    }

    /// Sets the certificate authority.
    pub fn certificate_authority(mut self, ca: CertificateAuthority) -> Self {
        self.order.certificate_authority = ca;
        self
    }

    /// Sets whether a Cloudflare-branded common name is added.
    pub fn cloudflare_branding(mut self, branding: bool) -> Self {
        self.order.cloudflare_branding = Some(branding);
        self
    }

    /// The request these parameters make, for [`Client::request`].
    pub fn to_request(&self) -> ApiRequest {
        ApiRequest::post(["zones", &self.zone_id, "ssl", "certificate_packs", "order"])
            .json(&self.order)
    }
}

/// Parameters of [`CertificatePacks::list`]. A zone id converts into them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CertificatePackListParams {
    /// The zone's id.
    pub zone_id: String,
    /// `page` is where the stream starts (1 by default); `per_page` (5 to 50) and
    /// `status` (`all` for packs of every status) are sent as they are.
    pub query: ListCertificatePacks,
}

impl CertificatePackListParams {
    /// Every pack of the zone, 20 a page.
    pub fn new(zone_id: impl Into<String>) -> Self {
        CertificatePackListParams {
            zone_id: zone_id.into(),
            query: ListCertificatePacks::default(),
        }
    }

    /// Sets the page size (5 to 50).
    pub fn per_page(mut self, per_page: u64) -> Self {
        self.query.per_page = Some(per_page);
        self
    }

    /// Sets the `status` filter (`all` includes packs of every status).
    pub fn status(mut self, status: impl Into<String>) -> Self {
        self.query.status = Some(status.into());
        self
    }

    /// The request of the first page, for [`Client::request`].
    pub fn to_request(&self) -> ApiRequest {
        let mut request = ApiRequest::get(["zones", &self.zone_id, "ssl", "certificate_packs"]);
        request = request.query("page", self.query.page.unwrap_or(1).to_string());
        if let Some(per_page) = self.query.per_page {
            request = request.query("per_page", per_page.to_string());
        }
        if let Some(status) = &self.query.status {
            request = request.query("status", status.clone());
        }
        request
    }
}

impl From<&str> for CertificatePackListParams {
    fn from(zone_id: &str) -> Self {
        Self::new(zone_id)
    }
}

impl From<String> for CertificatePackListParams {
    fn from(zone_id: String) -> Self {
        Self::new(zone_id)
    }
}

/// Parameters naming one pack: [`CertificatePacks::get`] and [`CertificatePacks::delete`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CertificatePackParams {
    /// The zone's id.
    pub zone_id: String,
    /// The pack's id (a UUID).
    pub certificate_pack_id: String,
}

impl CertificatePackParams {
    /// The pack `certificate_pack_id` of zone `zone_id`.
    pub fn new(zone_id: impl Into<String>, certificate_pack_id: impl Into<String>) -> Self {
        CertificatePackParams {
            zone_id: zone_id.into(),
            certificate_pack_id: certificate_pack_id.into(),
        }
    }

    fn path(&self) -> [&str; 5] {
        [
            "zones",
            &self.zone_id,
            "ssl",
            "certificate_packs",
            &self.certificate_pack_id,
        ]
    }

    /// The request of [`CertificatePacks::get`], for [`Client::request`].
    pub fn get_request(&self) -> ApiRequest {
        ApiRequest::get(self.path())
    }

    /// The request of [`CertificatePacks::delete`], for [`Client::request`].
    pub fn delete_request(&self) -> ApiRequest {
        ApiRequest::delete(self.path())
    }
}

/// Parameters of [`CertificatePacks::edit`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CertificatePackEditParams {
    /// The pack.
    pub pack: CertificatePackParams,
    /// The body (`cloudflare_branding`).
    pub body: EditCertificatePack,
}

impl CertificatePackEditParams {
    /// Restarts validation of the pack, leaving its branding as it is.
    pub fn new(zone_id: impl Into<String>, certificate_pack_id: impl Into<String>) -> Self {
        CertificatePackEditParams {
            pack: CertificatePackParams::new(zone_id, certificate_pack_id),
            body: EditCertificatePack::default(),
        }
    }

    /// Sets whether a Cloudflare-branded common name is added.
    pub fn cloudflare_branding(mut self, branding: bool) -> Self {
        self.body.cloudflare_branding = Some(branding);
        self
    }

    /// The request these parameters make, for [`Client::request`].
    ///
    /// Counted as idempotent: a second restart of a pack already restarted changes nothing.
    pub fn to_request(&self) -> ApiRequest {
        ApiRequest::patch(self.pack.path())
            .json(&self.body)
            .idempotent(true)
    }
}
