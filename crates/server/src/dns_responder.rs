//! The authoritative DNS responder for `dcv.<service-domain>` (`--dns-listen`, off by
//! default): delegated (cname) validation points `_acme-challenge.<host>` at
//! `<host>.<zone-dcv-id>.dcv.<service-domain>`, and an ACME CA then asks that name for
//! the dns-01 TXT value. The answer is read from the store at each query (the pack whose
//! host has that CNAME target, its stored ACME order's challenge for the host), so every
//! node on one database answers the same. Built on hickory-server (UDP and TCP).

use std::net::SocketAddr;
use std::time::Duration;

use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::rdata::TXT;
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use crate::store::Store;

/// Seconds a resolver may keep an answer: short, the challenge changes per order.
const TTL: u32 = 60;

/// A running responder; stops when dropped or [`DnsResponder::stop`]ped.
pub struct DnsResponder {
    server: Server<Answers>,
}

impl std::fmt::Debug for DnsResponder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsResponder").finish_non_exhaustive()
    }
}

impl DnsResponder {
    /// Serves `dcv.<service_domain>` on `addr` (UDP and TCP) from `store`.
    pub async fn start(
        addr: SocketAddr,
        service_domain: &str,
        store: Store,
    ) -> std::io::Result<DnsResponder> {
        let zone = Name::from_ascii(format!("dcv.{service_domain}."))
            .map_err(|e| std::io::Error::other(format!("the service domain: {e}")))?;
        let udp = tokio::net::UdpSocket::bind(addr).await?;
        // Port 0 picks UDP's port; TCP then listens on the same one.
        let tcp = tokio::net::TcpListener::bind(udp.local_addr()?).await?;
        tracing::info!(addr = %udp.local_addr()?, zone = %zone, "answering DNS");
        let mut server = Server::new(Answers {
            store,
            zone: LowerName::from(zone),
        });
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 4096);
        Ok(DnsResponder { server })
    }

    /// Stops answering.
    pub async fn stop(mut self) {
        let _ = self.server.shutdown_gracefully().await;
    }
}

/// Answers queries for the zone from the store.
#[derive(Debug)]
struct Answers {
    store: Store,
    zone: LowerName,
}

/// What the store says of a name in the zone.
enum Found {
    /// Some pack delegates a host to the name: the challenges' values (none when no
    /// ACME order is pending for it).
    Delegated(Vec<String>),
    /// Nothing is delegated to the name, but to names under it (an empty non-terminal:
    /// NOERROR without data, so a resolver minimising its queries goes on).
    Above,
    /// Nothing at or under the name.
    Nothing,
}

impl Answers {
    /// What the zone holds at `name` (lower case, under the zone); an error when the
    /// store could not be read.
    async fn lookup(&self, name: &LowerName) -> Result<Found, ()> {
        let target = name.to_string().trim_end_matches('.').to_ascii_lowercase();
        let failed = |e: crate::store::StoreError| {
            tracing::warn!(error = %e, %target, "dns responder: reading the store");
        };
        let packs = self
            .store
            .packs_with_cname_target(&target)
            .await
            .map_err(failed)?;
        let mut found = false;
        let mut values = Vec::new();
        for pack in &packs {
            for host in &pack.hosts {
                let crate::model::DcvRecord::Cname { target: t, .. } = &host.record else {
                    continue;
                };
                if !t.eq_ignore_ascii_case(&target) {
                    continue;
                }
                found = true;
                if let Some(value) = pack
                    .order_ref
                    .as_deref()
                    .and_then(|r| crate::issuance::acme_dns_value(r, host.hostname.as_str()))
                    && !values.contains(&value)
                {
                    values.push(value);
                }
            }
        }
        if found {
            return Ok(Found::Delegated(values));
        }
        if *name == self.zone
            || self
                .store
                .has_cname_target_under(&target)
                .await
                .map_err(failed)?
        {
            return Ok(Found::Above);
        }
        Ok(Found::Nothing)
    }
}

#[async_trait::async_trait]
impl RequestHandler for Answers {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let builder = MessageResponseBuilder::from_message_request(request);
        let mut metadata = Metadata::response_from_request(&request.metadata);
        if request.metadata.op_code != OpCode::Query {
            let response = builder.error_msg(&request.metadata, ResponseCode::NotImp);
            return sent(response_handle.send_response(response).await, &metadata);
        }
        let info = match request.request_info() {
            Ok(info) => info,
            Err(_) => {
                let response = builder.error_msg(&request.metadata, ResponseCode::FormErr);
                return sent(response_handle.send_response(response).await, &metadata);
            }
        };
        let name = info.query.name().clone();
        if !self.zone.zone_of(&name) {
            // Not ours: an authoritative server refuses rather than pretends.
            let response = builder.error_msg(&request.metadata, ResponseCode::Refused);
            return sent(response_handle.send_response(response).await, &metadata);
        }
        let found = match self.lookup(&name).await {
            Ok(found) => found,
            Err(()) => {
                let response = builder.error_msg(&request.metadata, ResponseCode::ServFail);
                return sent(response_handle.send_response(response).await, &metadata);
            }
        };
        metadata.authoritative = true;
        metadata.recursion_available = false;
        let records: Vec<Record> = match found {
            Found::Nothing => {
                metadata.response_code = ResponseCode::NXDomain;
                Vec::new()
            }
            Found::Above => Vec::new(),
            Found::Delegated(values) => match info.query.query_type() {
                RecordType::TXT | RecordType::ANY => values
                    .into_iter()
                    .map(|v| {
                        Record::from_rdata(
                            Name::from(name.clone()),
                            TTL,
                            RData::TXT(TXT::new(vec![v])),
                        )
                    })
                    .collect(),
                _ => Vec::new(),
            },
        };
        let response = builder.build(metadata, records.iter(), [], [], []);
        sent(response_handle.send_response(response).await, &metadata)
    }
}

/// The response's header, or SERVFAIL's when it could not be sent.
fn sent(
    result: Result<ResponseInfo, hickory_server::net::NetError>,
    metadata: &Metadata,
) -> ResponseInfo {
    match result {
        Ok(info) => info,
        Err(e) => {
            tracing::warn!(error = %e, "dns responder: sending an answer");
            let mut metadata = *metadata;
            metadata.response_code = ResponseCode::ServFail;
            ResponseInfo::from(Header {
                metadata,
                counts: HeaderCounts::default(),
            })
        }
    }
}
