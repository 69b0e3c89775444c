//! Where deliveries may go: webhook URLs are held to HTTP DCV's address rules
//! (`dcv/address.rs`): only public unicast addresses, unless the endpoint allows private
//! ones. The check is made when the endpoint is added and again on every connection
//! (the resolver below drops non-public addresses), so a name that later resolves to
//! a private address is refused too.

use crate::dcv::address::reserved_kind;
use std::net::{IpAddr, SocketAddr};

/// Checks a webhook URL: `http` or `https`, a host, no credentials, and (unless
/// `allow_private`) not a literal non-public address.
pub fn check_url(raw: &str, allow_private: bool) -> Result<url::Url, String> {
    let url = url::Url::parse(raw).map_err(|e| format!("{raw:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "webhook URLs are http or https, not {}",
            url.scheme()
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("a webhook URL carries no credentials (the signature authenticates)".into());
    }
    let ip = match url.host() {
        None => return Err(format!("{raw:?} has no host")),
        Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
        Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
        Some(url::Host::Domain(_)) => None,
    };
    if let Some(ip) = ip {
        refuse_reserved(ip, allow_private)?;
    }
    Ok(url)
}

/// Refuses a non-public address unless allowed.
pub fn refuse_reserved(ip: IpAddr, allow_private: bool) -> Result<(), String> {
    match reserved_kind(ip) {
        Some(kind) if !allow_private => Err(format!(
            "{ip} is a {kind}: webhooks go to public addresses only (add the endpoint with \
             --allow-private to allow it)"
        )),
        _ => Ok(()),
    }
}

/// reqwest's resolver for deliveries: the system's lookup, keeping public addresses only.
#[derive(Debug)]
pub struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| reserved_kind(a.ip()).is_none())
                .collect();
            if public.is_empty() {
                let why = found
                    .first()
                    .and_then(|a| reserved_kind(a.ip()).map(|k| format!("{} is a {k}", a.ip())))
                    .unwrap_or_else(|| "no address".into());
                return Err(format!(
                    "{host} resolves to no public address ({why}): webhooks go to public \
                     addresses only unless the endpoint allows private ones"
                )
                .into());
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_like_dcv_targets() {
        assert!(check_url("https://hooks.example.com/x", false).is_ok());
        assert!(check_url("ftp://hooks.example.com/", false).is_err());
        assert!(check_url("http://127.0.0.1:8080/", false).is_err());
        assert!(check_url("http://[::ffff:10.0.0.1]/", false).is_err());
        assert!(check_url("http://127.0.0.1:8080/", true).is_ok());
        assert!(check_url("http://user:pw@hooks.example.com/", false).is_err());
        assert!(check_url("not a url", false).is_err());
    }
}
