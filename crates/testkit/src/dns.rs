//! An in-process authoritative DNS server on loopback whose records tests change at will.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CAA, CNAME, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::{CancellationToken, DropGuard};

/// TTL put on every answer. Deliberately long: a client that caches would see stale records,
/// which is what the "changes are seen at once" tests must be able to catch.
const ANSWER_TTL: u32 = 300;
/// How many CNAME hops the server follows inside its own data before leaving the rest to the client.
const MAX_CNAME_HOPS: usize = 8;
/// Largest UDP answer when the query carries no EDNS (RFC 1035).
const CLASSIC_UDP_LIMIT: usize = 512;
/// Largest UDP answer this server sends whatever the client advertises (the DNS flag day value).
const EDNS_UDP_LIMIT: usize = 1232;

/// A real DNS server (UDP and TCP on the same loopback port) that answers authoritatively from
/// records set by the test. Names without records answer NXDOMAIN, except names that are
/// ancestors of names with records (empty non-terminals), which answer NOERROR with no data,
/// as a real zone would. Stops when dropped.
#[derive(Debug)]
pub struct DnsServer {
    addr: SocketAddr,
    zone: Arc<Zone>,
    _stop: DropGuard,
}

#[derive(Debug, Default)]
struct Zone {
    data: RwLock<ZoneData>,
    queries: AtomicU64,
    tcp_queries: AtomicU64,
}

#[derive(Debug, Default)]
struct ZoneData {
    /// Records per lower-case name without the trailing dot. Never holds an empty list.
    records: HashMap<String, Vec<RData>>,
    /// For every proper ancestor of a name in `records`: how many such names it has.
    ancestors: HashMap<String, usize>,
    servfail: HashSet<String>,
    delays: HashMap<String, Duration>,
    /// Names under these suffixes are asked of another server (as a recursive resolver
    /// would follow a delegation): `(suffix, server)`.
    forwards: Vec<(String, SocketAddr)>,
}

impl DnsServer {
    /// Binds UDP and TCP on the same free port of 127.0.0.1 and starts answering.
    ///
    /// # Panics
    /// When no port can be bound (a test-environment failure).
    pub async fn start() -> DnsServer {
        // The UDP port is picked by the kernel; TCP must then bind the same number, which can
        // (rarely) be taken, so retry with a new UDP port.
        let mut last_error = None;
        for _ in 0..20 {
            let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
                .await
                .unwrap_or_else(|e| panic!("binding a UDP socket on 127.0.0.1: {e}"));
            let addr = udp
                .local_addr()
                .unwrap_or_else(|e| panic!("UDP local address: {e}"));
            match TcpListener::bind(addr).await {
                Ok(tcp) => return Self::serve(udp, tcp, addr),
                Err(e) => last_error = Some(e),
            }
        }
        panic!("no port free for both UDP and TCP on 127.0.0.1: {last_error:?}");
    }

    fn serve(udp: UdpSocket, tcp: TcpListener, addr: SocketAddr) -> DnsServer {
        let zone = Arc::new(Zone::default());
        let stop = CancellationToken::new();
        tokio::spawn(serve_udp(Arc::new(udp), zone.clone(), stop.clone()));
        tokio::spawn(serve_tcp(tcp, zone.clone(), stop.clone()));
        DnsServer {
            addr,
            zone,
            _stop: stop.drop_guard(),
        }
    }

    /// The address (127.0.0.1 and a port) to send queries to, over UDP or TCP.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the TXT records at `name` (each value one record, as one character-string
    /// split every 255 bytes). A CNAME at the name is removed.
    pub fn set_txt(&self, name: &str, values: &[&str]) {
        let records = values
            .iter()
            .map(|v| {
                let chunks: Vec<&[u8]> = v.as_bytes().chunks(255).collect();
                RData::TXT(TXT::from_bytes(chunks))
            })
            .collect();
        self.replace_type(name, RecordType::TXT, records);
    }

    /// Makes `name` an alias of `target`, removing every other record at `name`.
    pub fn set_cname(&self, name: &str, target: &str) {
        let target = parse_name(target);
        self.zone
            .write()
            .put(key(name), vec![RData::CNAME(CNAME(target))]);
    }

    /// Replaces the A records at `name` with one address.
    pub fn set_a(&self, name: &str, addr: Ipv4Addr) {
        self.replace_type(name, RecordType::A, vec![RData::A(A(addr))]);
    }

    /// Replaces the AAAA records at `name` with one address.
    pub fn set_aaaa(&self, name: &str, addr: Ipv6Addr) {
        self.replace_type(name, RecordType::AAAA, vec![RData::AAAA(AAAA(addr))]);
    }

    /// Replaces the CAA records at `name`; each entry is (flags, tag, value) as in zone files,
    /// e.g. `(0, "issue", "letsencrypt.org")` or `(128, "tbs", "x")`.
    pub fn set_caa(&self, name: &str, entries: &[(u8, &str, &str)]) {
        let records = entries
            .iter()
            .map(|(flags, tag, value)| {
                let mut caa = CAA::new_issue(false, None, Vec::new());
                caa.issuer_critical = flags & 0b1000_0000 != 0;
                caa.reserved_flags = flags & 0b0111_1111;
                caa.tag = (*tag).to_owned();
                caa.value = value.as_bytes().to_vec();
                RData::CAA(caa)
            })
            .collect();
        self.replace_type(name, RecordType::CAA, records);
    }

    /// Removes every record at `name` (the SERVFAIL and delay settings stay).
    pub fn remove(&self, name: &str) {
        self.zone.write().put(key(name), Vec::new());
    }

    /// Makes every query for `name` answer SERVFAIL until [`DnsServer::clear_servfail`].
    pub fn set_servfail(&self, name: &str) {
        self.zone.write().servfail.insert(key(name));
    }

    /// Undoes [`DnsServer::set_servfail`].
    pub fn clear_servfail(&self, name: &str) {
        self.zone.write().servfail.remove(&key(name));
    }

    /// Answers names under `suffix` (also at the end of a CNAME chain) with what the DNS
    /// server at `server` answers, as a recursive resolver follows a delegation: e.g.
    /// zonecert's own responder for `dcv.<service-domain>`.
    pub fn forward(&self, suffix: &str, server: SocketAddr) {
        self.zone.write().forwards.push((key(suffix), server));
    }

    /// Delays every answer for `name` by `delay` (a zero duration removes the delay).
    pub fn set_delay(&self, name: &str, delay: Duration) {
        let mut data = self.zone.write();
        if delay.is_zero() {
            data.delays.remove(&key(name));
        } else {
            data.delays.insert(key(name), delay);
        }
    }

    /// Queries answered so far (UDP and TCP).
    pub fn query_count(&self) -> u64 {
        self.zone.queries.load(Ordering::Relaxed)
    }

    /// Queries answered over TCP so far.
    pub fn tcp_query_count(&self) -> u64 {
        self.zone.tcp_queries.load(Ordering::Relaxed)
    }

    fn replace_type(&self, name: &str, record_type: RecordType, new: Vec<RData>) {
        let key = key(name);
        let mut data = self.zone.write();
        let mut records: Vec<RData> = data
            .records
            .get(&key)
            .map(|existing| {
                existing
                    .iter()
                    .filter(|r| {
                        r.record_type() != record_type && r.record_type() != RecordType::CNAME
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        records.extend(new);
        data.put(key, records);
    }
}

impl Zone {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, ZoneData> {
        // A panic while holding the lock can only come from a bug in this file; the data
        // itself is still consistent, so keep serving.
        self.data.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, ZoneData> {
        self.data.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Builds the answer to one query, and how long to hold it back.
    /// With a [`Forward`] when the rest of the answer is another server's to give.
    fn answer(&self, query: &Message) -> (Message, Option<Duration>, Option<Forward>) {
        self.queries.fetch_add(1, Ordering::Relaxed);
        let mut response = Message::response(query.metadata.id, query.metadata.op_code);
        response.metadata.recursion_desired = query.metadata.recursion_desired;
        response.metadata.recursion_available = true;
        if let Some(edns) = &query.edns {
            let mut ours = Edns::new();
            ours.set_max_payload(edns.max_payload().max(CLASSIC_UDP_LIMIT as u16));
            response.set_edns(ours);
        }
        let [question] = query.queries.as_slice() else {
            response.metadata.response_code = ResponseCode::FormErr;
            return (response, None, None);
        };
        response.add_query(question.clone());
        if query.metadata.op_code != OpCode::Query {
            response.metadata.response_code = ResponseCode::NotImp;
            return (response, None, None);
        }

        let data = self.read();
        let qkey = key(&question.name().to_ascii());
        let delay = data.delays.get(&qkey).copied();
        if data.servfail.contains(&qkey) {
            response.metadata.response_code = ResponseCode::ServFail;
            return (response, delay, None);
        }
        response.metadata.authoritative = true;
        let qtype = question.query_type();
        let mut owner = question.name().clone();
        let mut current = qkey;
        let mut forward = None;
        for hop in 0..=MAX_CNAME_HOPS {
            if let Some((_, server)) = data
                .forwards
                .iter()
                .find(|(suffix, _)| current == *suffix || current.ends_with(&format!(".{suffix}")))
            {
                forward = Some(Forward {
                    server: *server,
                    name: owner.clone(),
                    qtype,
                });
                break;
            }
            let Some(records) = data.records.get(&current) else {
                if hop == 0 && !data.ancestors.contains_key(&current) {
                    response.metadata.response_code = ResponseCode::NXDomain;
                }
                break;
            };
            let alias = records.iter().find_map(|r| match r {
                RData::CNAME(CNAME(target)) if qtype != RecordType::CNAME => Some(target.clone()),
                _ => None,
            });
            if let Some(target) = alias {
                response.add_answer(Record::from_rdata(
                    owner.clone(),
                    ANSWER_TTL,
                    RData::CNAME(CNAME(target.clone())),
                ));
                current = key(&target.to_ascii());
                owner = target;
                continue;
            }
            for rdata in records
                .iter()
                .filter(|r| qtype == RecordType::ANY || r.record_type() == qtype)
            {
                response.add_answer(Record::from_rdata(owner.clone(), ANSWER_TTL, rdata.clone()));
            }
            break;
        }
        (response, delay, forward)
    }
}

/// A name whose answer another server gives (see [`DnsServer::forward`]).
#[derive(Debug)]
struct Forward {
    server: SocketAddr,
    name: Name,
    qtype: RecordType,
}

impl Forward {
    /// Adds `server`'s answers (and its response code) to `response`: SERVFAIL when it
    /// gave none within 2 seconds.
    async fn complete(self, response: &mut Message) {
        let answered = tokio::time::timeout(Duration::from_secs(2), self.ask()).await;
        match answered {
            Ok(Some(answer)) => {
                response.metadata.response_code = answer.metadata.response_code;
                for record in answer.answers {
                    response.add_answer(record);
                }
            }
            _ => response.metadata.response_code = ResponseCode::ServFail,
        }
    }

    async fn ask(&self) -> Option<Message> {
        let mut query = Message::query();
        query.add_query(hickory_proto::op::Query::query(
            self.name.clone(),
            self.qtype,
        ));
        let bytes = query.to_vec().ok()?;
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.ok()?;
        socket.send_to(&bytes, self.server).await.ok()?;
        let mut buf = vec![0_u8; 4096];
        loop {
            let (len, from) = socket.recv_from(&mut buf).await.ok()?;
            if from != self.server {
                continue;
            }
            let answer = Message::from_vec(&buf[..len]).ok()?;
            if answer.metadata.id == query.metadata.id {
                return Some(answer);
            }
        }
    }
}

impl ZoneData {
    fn put(&mut self, key: String, records: Vec<RData>) {
        let existed = self.records.contains_key(&key);
        if records.is_empty() {
            if existed {
                self.records.remove(&key);
                for ancestor in ancestors(&key) {
                    if let Some(count) = self.ancestors.get_mut(ancestor) {
                        *count -= 1;
                        if *count == 0 {
                            self.ancestors.remove(ancestor);
                        }
                    }
                }
            }
            return;
        }
        if !existed {
            for ancestor in ancestors(&key) {
                *self.ancestors.entry(ancestor.to_owned()).or_default() += 1;
            }
        }
        self.records.insert(key, records);
    }
}

/// A loopback address whose port is free for both UDP and TCP (bound then released:
/// the caller binds it again at once), e.g. for zonecert's `--dns-listen`.
///
/// # Panics
/// When no such port is found (a test-environment failure).
pub fn free_dns_addr() -> SocketAddr {
    for _ in 0..20 {
        let Ok(udp) = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)) else {
            continue;
        };
        let Ok(addr) = udp.local_addr() else {
            continue;
        };
        if std::net::TcpListener::bind(addr).is_ok() {
            return addr;
        }
    }
    panic!("no port free for both UDP and TCP on 127.0.0.1");
}

/// Lower-case, without the trailing dot: the form names are stored and looked up in.
fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Proper ancestors of a stored name, nearest first ("a.b.c" -> "b.c", "c").
fn ancestors(key: &str) -> impl Iterator<Item = &str> {
    key.match_indices('.').map(move |(i, _)| &key[i + 1..])
}

fn parse_name(name: &str) -> Name {
    let mut parsed =
        Name::from_utf8(name).unwrap_or_else(|e| panic!("invalid DNS name {name:?}: {e}"));
    parsed.set_fqdn(true);
    parsed
}

fn encode(message: &Message) -> Option<Vec<u8>> {
    message.to_vec().ok()
}

/// Encodes an answer for UDP: an answer that does not fit is replaced by an empty one with TC set,
/// so the client retries over TCP.
fn encode_for_udp(query: &Message, response: &Message) -> Option<Vec<u8>> {
    let limit = match &query.edns {
        Some(edns) => usize::from(edns.max_payload()).clamp(CLASSIC_UDP_LIMIT, EDNS_UDP_LIMIT),
        None => CLASSIC_UDP_LIMIT,
    };
    let bytes = encode(response)?;
    if bytes.len() <= limit {
        return Some(bytes);
    }
    let mut truncated = response.truncate();
    truncated.metadata.message_type = MessageType::Response;
    encode(&truncated)
}

async fn serve_udp(socket: Arc<UdpSocket>, zone: Arc<Zone>, stop: CancellationToken) {
    let mut buf = vec![0_u8; 4096];
    loop {
        let (len, peer) = tokio::select! {
            () = stop.cancelled() => return,
            received = socket.recv_from(&mut buf) => match received {
                Ok(received) => received,
                // ICMP errors from earlier sends surface here on some systems; keep serving.
                Err(_) => continue,
            },
        };
        let Ok(query) = Message::from_vec(&buf[..len]) else {
            continue;
        };
        let (mut response, delay, forward) = zone.answer(&query);
        if let Some(forward) = forward {
            // Answered in its own task: the other server may be slow (or be this process).
            let socket = socket.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = async {
                        forward.complete(&mut response).await;
                        if let Some(delay) = delay {
                            tokio::time::sleep(delay).await;
                        }
                        if let Some(bytes) = encode_for_udp(&query, &response) {
                            let _ = socket.send_to(&bytes, peer).await;
                        }
                    } => {}
                }
            });
            continue;
        }
        let Some(bytes) = encode_for_udp(&query, &response) else {
            continue;
        };
        match delay {
            None => {
                let _ = socket.send_to(&bytes, peer).await;
            }
            Some(delay) => {
                let socket = socket.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = tokio::time::sleep(delay) => {
                            let _ = socket.send_to(&bytes, peer).await;
                        }
                    }
                });
            }
        }
    }
}

async fn serve_tcp(listener: TcpListener, zone: Arc<Zone>, stop: CancellationToken) {
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        let zone = zone.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = serve_tcp_connection(stream, &zone) => {}
            }
        });
    }
}

async fn serve_tcp_connection(mut stream: TcpStream, zone: &Zone) {
    loop {
        let Ok(len) = stream.read_u16().await else {
            return;
        };
        let mut buf = vec![0_u8; usize::from(len)];
        if stream.read_exact(&mut buf).await.is_err() {
            return;
        }
        let Ok(query) = Message::from_vec(&buf) else {
            return;
        };
        zone.tcp_queries.fetch_add(1, Ordering::Relaxed);
        let (mut response, delay, forward) = zone.answer(&query);
        if let Some(forward) = forward {
            forward.complete(&mut response).await;
        }
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        let Some(bytes) = encode(&response) else {
            return;
        };
        let Ok(len) = u16::try_from(bytes.len()) else {
            return;
        };
        let mut framed = Vec::with_capacity(bytes.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&bytes);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
}
