//! The x402 payer (client side of x402 v2, and the v1 body form): makes the agent's request, reads
//! a `402`'s requirements, chooses the one for this chain's USDC ("exact"), has the payments use
//! cases decide, hold and sign, and retries with the signed payment. Outbound requests are guarded:
//! private, loopback and link-local targets are refused (checked on the URL, after DNS resolution
//! and on every redirect, which is followed by hand), responses are bounded in size and time, and
//! nothing of Bursar's own (its credentials) is forwarded. Uses only `payments` and `domain`.

use crate::domain::{AgentId, Amount, CredentialId, IdempotencyKey};
use crate::payments::x402::{X402Authorized, X402Offer};
use crate::payments::{Payments, PaymentsError};
use base64::Engine;
use serde_json::Value;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// The largest seller response read, body included.
pub const MAX_RESPONSE_BYTES: usize = 2 * 1024 * 1024;
/// How long one outbound request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Redirects followed (each target checked) before giving up.
const MAX_REDIRECTS: usize = 5;
/// Headers the agent may not set: they are the protocol's or the transport's.
const RESERVED_HEADERS: [&str; 9] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "payment-signature",
    "x-payment",
    "upgrade",
    "te",
    "proxy-authorization",
];

#[derive(Debug, thiserror::Error)]
pub enum X402Error {
    /// The caller's request is wrong: `field` names what.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// The target is not allowed (private, loopback, link-local).
    #[error("target refused: {0}")]
    TargetRefused(String),
    /// The seller's answer could not be used (malformed 402, nothing payable, too large, down).
    #[error("seller: {0}")]
    Seller(String),
    /// No requirement of the 402 can be paid here (other chain, asset or scheme).
    #[error("no payable requirement: {0}")]
    Unpayable(String),
    /// The seller asks more than the caller's `max_amount`.
    #[error("the seller asks {asked} USDC, more than max_amount {max}")]
    AboveMax { asked: Amount, max: Amount },
    #[error(transparent)]
    Payments(#[from] PaymentsError),
}

/// An outbound request the agent asks Bursar to make.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FetchRequest {
    pub url: String,
    pub method: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    pub max_amount: Option<Amount>,
    /// The spending scope the payment belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope_id: Option<String>,
}

/// A seller's answer: status, headers and body (text when UTF-8, else base64).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SellerResponse {
    pub status: u16,
    pub headers: serde_json::Map<String, Value>,
    pub body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
}

/// What `fetch` did: the seller's final answer and, if a payment was involved, its outcome.
#[derive(Debug)]
pub struct Fetched {
    pub response: Option<SellerResponse>,
    pub authorized: Option<X402Authorized>,
}

/// The x402 payer: an HTTP client with the target guard, over the payments use cases.
#[derive(Clone)]
pub struct Payer {
    payments: Payments,
    client: reqwest::Client,
    allow_private: bool,
}

impl std::fmt::Debug for Payer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Payer(allow_private: {})", self.allow_private)
    }
}

impl Payer {
    pub fn new(payments: Payments, allow_private: bool) -> Payer {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            .dns_resolver(Arc::new(GuardedResolver { allow_private }))
            .build()
            .expect("the outbound HTTP client builds");
        Payer {
            payments,
            client,
            allow_private,
        }
    }

    /// `POST /v1/x402/fetch`: the request; on `402`, the payment; the retry with it.
    pub async fn fetch(
        &self,
        agent_id: &AgentId,
        credential_id: &CredentialId,
        key: &IdempotencyKey,
        request: &FetchRequest,
    ) -> Result<Fetched, X402Error> {
        // The same key again after the seller answered: its answer and the payment, as stored.
        let hash = request_hash(request);
        if let Some((payment, stored)) =
            self.payments.x402_replay(credential_id, key, &hash).await?
        {
            let response: SellerResponse = serde_json::from_value(stored)
                .map_err(|_| X402Error::Seller("the stored answer is unreadable".into()))?;
            return Ok(Fetched {
                response: Some(response),
                authorized: Some(X402Authorized {
                    payment,
                    header_value: None,
                    replayed: true,
                }),
            });
        }
        let first = self.send(request, None).await?;
        if first.status != 402 {
            return Ok(Fetched {
                response: Some(first.into_response()),
                authorized: None,
            });
        }
        let (chain_id, usdc) = self.payments.x402_chain();
        let offer = choose(&first.payment_required()?, &request.url, chain_id, usdc)?;
        if let Some(max) = request.max_amount
            && offer.amount > max
        {
            return Err(X402Error::AboveMax {
                asked: offer.amount,
                max,
            });
        }
        let authorized = self
            .payments
            .authorize_x402(
                agent_id,
                credential_id,
                key,
                &offer,
                hash,
                request.scope_id.as_deref(),
            )
            .await?;
        let Some(header) = authorized.header_value.clone() else {
            // Rejected by policy, or waiting for a human: nothing was signed or sent.
            return Ok(Fetched {
                response: None,
                authorized: Some(authorized),
            });
        };
        let header_name = if offer.version == 1 {
            "X-PAYMENT"
        } else {
            "PAYMENT-SIGNATURE"
        };
        let paid = self.send(request, Some((header_name, &header))).await?;
        let settled = paid.settled_transaction();
        let status = paid.status;
        let response = paid.into_response();
        let stored = serde_json::to_value(&response).unwrap_or_default();
        let payment = self
            .payments
            .record_x402_response(&authorized.payment.id, status, settled.as_deref(), &stored)
            .await?;
        Ok(Fetched {
            response: Some(response),
            authorized: Some(X402Authorized {
                payment,
                ..authorized
            }),
        })
    }

    /// `POST /v1/x402/authorize`: the same decision, hold and signature for an agent that makes
    /// its own request; `payment_required` is the 402's JSON (decoded header or v1 body).
    pub async fn authorize(
        &self,
        agent_id: &AgentId,
        credential_id: &CredentialId,
        key: &IdempotencyKey,
        payment_required: &Value,
        scope_id: Option<&str>,
    ) -> Result<(X402Authorized, &'static str), X402Error> {
        let (chain_id, usdc) = self.payments.x402_chain();
        let resource = payment_required
            .pointer("/resource/url")
            .or_else(|| payment_required.pointer("/accepts/0/resource"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let offer = choose(payment_required, &resource, chain_id, usdc).map_err(|e| match e {
            X402Error::Seller(message) => X402Error::Invalid {
                field: "payment_required".into(),
                message,
            },
            other => other,
        })?;
        let hash = hex_sha256(&format!("{payment_required}{scope_id:?}"));
        let authorized = self
            .payments
            .authorize_x402(agent_id, credential_id, key, &offer, hash, scope_id)
            .await?;
        let name = if offer.version == 1 {
            "X-PAYMENT"
        } else {
            "PAYMENT-SIGNATURE"
        };
        Ok((authorized, name))
    }

    /// One request, following redirects by hand (each target checked; the payment header and
    /// the agent's `Authorization` go only to the original origin).
    async fn send(
        &self,
        request: &FetchRequest,
        payment: Option<(&str, &str)>,
    ) -> Result<Raw, X402Error> {
        let method = reqwest::Method::from_bytes(request.method.to_uppercase().as_bytes())
            .map_err(|_| X402Error::Invalid {
                field: "method".into(),
                message: "not an HTTP method".into(),
            })?;
        let mut url = reqwest::Url::parse(&request.url).map_err(|_| X402Error::Invalid {
            field: "url".into(),
            message: "not an absolute http(s) URL".into(),
        })?;
        let origin = url.origin();
        for hop in 0..=MAX_REDIRECTS {
            self.check_target(&url)?;
            let same_origin = url.origin() == origin;
            let mut builder = self.client.request(method.clone(), url.clone());
            for (name, value) in &request.headers {
                if !same_origin && name.eq_ignore_ascii_case("authorization") {
                    continue;
                }
                builder = builder.header(name, value);
            }
            if let Some((name, value)) = payment
                && same_origin
            {
                builder = builder.header(name, value);
            }
            if let Some(body) = &request.body {
                builder = builder.body(body.clone());
            }
            let response = builder.send().await.map_err(|e| {
                if e.is_timeout() {
                    X402Error::Seller("the seller did not answer in time".into())
                } else if e.is_connect() {
                    X402Error::Seller(format!(
                        "could not connect to {}",
                        url.host_str().unwrap_or_default()
                    ))
                } else {
                    X402Error::Seller("the request to the seller failed".into())
                }
            })?;
            if response.status().is_redirection()
                && let Some(location) = response.headers().get(reqwest::header::LOCATION)
            {
                if hop == MAX_REDIRECTS {
                    return Err(X402Error::Seller("too many redirects".into()));
                }
                let location = location.to_str().map_err(|_| {
                    X402Error::Seller("a redirect to an unreadable location".into())
                })?;
                url = url
                    .join(location)
                    .map_err(|_| X402Error::Seller("a redirect to an invalid location".into()))?;
                continue;
            }
            return Raw::read(response).await;
        }
        Err(X402Error::Seller("too many redirects".into()))
    }

    fn check_target(&self, url: &reqwest::Url) -> Result<(), X402Error> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(X402Error::Invalid {
                field: "url".into(),
                message: "must be an http:// or https:// URL".into(),
            });
        }
        let refused = match url.host() {
            None => {
                return Err(X402Error::Invalid {
                    field: "url".into(),
                    message: "has no host".into(),
                });
            }
            Some(url::Host::Ipv4(ip)) => !self.allow_private && is_private(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => !self.allow_private && is_private(IpAddr::V6(ip)),
            Some(url::Host::Domain(name)) => {
                !self.allow_private
                    && (name.eq_ignore_ascii_case("localhost")
                        || name.to_ascii_lowercase().ends_with(".localhost"))
            }
        };
        if refused {
            return Err(X402Error::TargetRefused(format!(
                "{} is a private, loopback or link-local address",
                url.host_str().unwrap_or_default()
            )));
        }
        Ok(())
    }
}

/// Resolves names and refuses the answer if any address is private (a name that points inside
/// the network is refused after resolution, so DNS cannot be used to reach it).
struct GuardedResolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        let allow_private = self.allow_private;
        Box::pin(async move {
            let addresses: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if !allow_private && addresses.iter().any(|a| is_private(a.ip())) {
                return Err(format!("{host} resolves to a private address").into());
            }
            Ok(Box::new(addresses.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Private, loopback, link-local, unspecified, shared (CGNAT), multicast and broadcast
/// addresses, IPv4-mapped IPv6 included.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

/// A seller response read within the bounds.
struct Raw {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Raw {
    async fn read(mut response: reqwest::Response) -> Result<Raw, X402Error> {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        if response
            .content_length()
            .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
        {
            return Err(X402Error::Seller(format!(
                "the response is larger than {MAX_RESPONSE_BYTES} bytes"
            )));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|_| X402Error::Seller("the seller's response broke off".into()))?
        {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(X402Error::Seller(format!(
                    "the response is larger than {MAX_RESPONSE_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Raw {
            status,
            headers,
            body,
        })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The 402's requirements: the v2 `PAYMENT-REQUIRED` header, else the JSON body (v1).
    fn payment_required(&self) -> Result<Value, X402Error> {
        if let Some(encoded) = self.header("payment-required") {
            return decode_header(encoded).ok_or_else(|| {
                X402Error::Seller("the PAYMENT-REQUIRED header is not base64 JSON".into())
            });
        }
        serde_json::from_slice(&self.body).map_err(|_| {
            X402Error::Seller("a 402 with neither a PAYMENT-REQUIRED header nor a JSON body".into())
        })
    }

    /// The transaction the seller's `PAYMENT-RESPONSE` (or v1 `X-PAYMENT-RESPONSE`) names.
    fn settled_transaction(&self) -> Option<String> {
        let value = decode_header(
            self.header("payment-response")
                .or_else(|| self.header("x-payment-response"))?,
        )?;
        if value.get("success").and_then(Value::as_bool) == Some(false) {
            return None;
        }
        let hash = value.get("transaction")?.as_str()?;
        let valid = hash.len() == 66
            && hash.starts_with("0x")
            && hash[2..].bytes().all(|b| b.is_ascii_hexdigit());
        valid.then(|| hash.to_ascii_lowercase())
    }

    fn into_response(self) -> SellerResponse {
        let headers = self
            .headers
            .iter()
            .filter_map(|(name, value)| {
                Some((
                    name.to_string(),
                    Value::String(value.to_str().ok()?.to_string()),
                ))
            })
            .collect();
        let (body, body_base64) = match String::from_utf8(self.body) {
            Ok(text) => (Some(text), None),
            Err(error) => (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(error.into_bytes())),
            ),
        };
        SellerResponse {
            status: self.status,
            headers,
            body,
            body_base64,
        }
    }
}

fn decode_header(encoded: &str) -> Option<Value> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Chooses the requirement Bursar can pay: scheme "exact", this chain (`eip155:<id>` in v2,
/// the network's name in v1), this chain's USDC, with an EIP-712 domain in `extra`.
pub fn choose(
    payment_required: &Value,
    resource: &str,
    chain_id: u64,
    usdc: crate::domain::Address,
) -> Result<X402Offer, X402Error> {
    let version = match payment_required.get("x402Version").and_then(Value::as_u64) {
        Some(1) => 1u8,
        Some(2) => 2,
        _ => {
            return Err(X402Error::Seller(
                "the 402 names no x402Version this payer speaks (1 or 2)".into(),
            ));
        }
    };
    let accepts = payment_required
        .get("accepts")
        .and_then(Value::as_array)
        .ok_or_else(|| X402Error::Seller("the 402 lists no requirements (accepts)".into()))?;
    let network = if version == 2 {
        format!("eip155:{chain_id}")
    } else {
        v1_network_name(chain_id).unwrap_or_default().to_string()
    };
    let mut reasons = Vec::new();
    for requirement in accepts {
        let text = |key: &str| requirement.get(key).and_then(Value::as_str);
        if text("scheme") != Some("exact") {
            reasons.push(format!("scheme {:?}", text("scheme").unwrap_or_default()));
            continue;
        }
        if text("network") != Some(network.as_str()) {
            reasons.push(format!("network {:?}", text("network").unwrap_or_default()));
            continue;
        }
        let asset = text("asset").and_then(|a| crate::domain::Address::parse(a).ok());
        if asset != Some(usdc) {
            reasons.push(format!("asset {:?}", text("asset").unwrap_or_default()));
            continue;
        }
        let amount_key = if version == 2 {
            "amount"
        } else {
            "maxAmountRequired"
        };
        let Some(amount) = text(amount_key)
            .and_then(|a| a.parse::<u128>().ok())
            .filter(|units| *units > 0)
            .and_then(|units| Amount::from_base_units(units).ok())
        else {
            return Err(X402Error::Seller(format!(
                "the requirement's {amount_key} is not a positive whole number of base units within limits"
            )));
        };
        let Some(pay_to) = text("payTo").and_then(|a| crate::domain::Address::parse(a).ok()) else {
            return Err(X402Error::Seller(
                "the requirement's payTo is not an address".into(),
            ));
        };
        let (Some(name), Some(domain_version)) = (
            requirement.pointer("/extra/name").and_then(Value::as_str),
            requirement
                .pointer("/extra/version")
                .and_then(Value::as_str),
        ) else {
            return Err(X402Error::Seller(
                "the requirement names no EIP-712 domain (extra.name, extra.version)".into(),
            ));
        };
        let max_timeout_seconds = requirement
            .get("maxTimeoutSeconds")
            .and_then(Value::as_u64)
            .unwrap_or(60);
        return Ok(X402Offer {
            version,
            resource: resource.to_string(),
            requirements: requirement.clone(),
            resource_info: (version == 2)
                .then(|| payment_required.get("resource").cloned())
                .flatten(),
            pay_to,
            amount,
            asset: usdc,
            max_timeout_seconds,
            domain_name: name.to_string(),
            domain_version: domain_version.to_string(),
        });
    }
    Err(X402Error::Unpayable(format!(
        "Bursar pays \"exact\" in USDC on {network}; the seller offers {}",
        if reasons.is_empty() {
            "nothing".to_string()
        } else {
            reasons.join(", ")
        }
    )))
}

/// x402 v1 names networks instead of CAIP-2 ids.
fn v1_network_name(chain_id: u64) -> Option<&'static str> {
    match chain_id {
        8453 => Some("base"),
        84532 => Some("base-sepolia"),
        _ => None,
    }
}

/// Validates the agent's outbound headers: no reserved names, no Bursar credential.
pub fn check_headers(
    headers: &[(String, String)],
    caller_secret: Option<&str>,
) -> Result<(), X402Error> {
    for (name, value) in headers {
        let field = format!("headers.{name}");
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err()
            || reqwest::header::HeaderValue::from_str(value).is_err()
        {
            return Err(X402Error::Invalid {
                field,
                message: "not a valid HTTP header".into(),
            });
        }
        if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(X402Error::Invalid {
                field,
                message: "is set by Bursar, not by the caller".into(),
            });
        }
        if caller_secret.is_some_and(|secret| value.contains(secret)) {
            return Err(X402Error::Invalid {
                field,
                message: "carries your Bursar credential, which is never sent to a seller".into(),
            });
        }
    }
    Ok(())
}

fn request_hash(request: &FetchRequest) -> String {
    hex_sha256(&serde_json::to_string(request).unwrap_or_default())
}

fn hex_sha256(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

impl Fetched {
    pub fn payment_status(&self) -> Option<crate::domain::PaymentStatus> {
        self.authorized.as_ref().map(|a| a.payment.status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Address;

    fn usdc() -> Address {
        Address::parse("0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913").unwrap()
    }

    fn requirement(network: &str, asset: &str, amount_key: &str) -> Value {
        serde_json::json!({
            "scheme": "exact", "network": network, amount_key: "250000",
            "payTo": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "asset": asset,
            "maxTimeoutSeconds": 60, "extra": {"name": "USD Coin", "version": "2"},
        })
    }

    #[test]
    fn private_loopback_and_link_local_addresses_are_private() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn the_exact_usdc_requirement_of_this_chain_is_chosen() {
        let other_asset = "0x0000000000000000000000000000000000000001";
        let required = serde_json::json!({"x402Version": 2, "resource": {"url": "https://x/y"}, "accepts": [
            requirement("eip155:84532", &usdc().to_string(), "amount"),
            requirement("eip155:8453", other_asset, "amount"),
            requirement("eip155:8453", &usdc().to_string().to_lowercase(), "amount"),
        ]});
        let offer = choose(&required, "https://x/y", 8453, usdc()).unwrap();
        assert_eq!(offer.amount.to_string(), "0.25");
        assert_eq!(offer.version, 2);
        assert_eq!(
            offer.requirements, required["accepts"][2],
            "echoed verbatim"
        );
        assert_eq!(offer.resource_info, Some(required["resource"].clone()));
        assert_eq!(
            (offer.domain_name.as_str(), offer.domain_version.as_str()),
            ("USD Coin", "2")
        );

        let v1 = serde_json::json!({"x402Version": 1, "accepts": [
            requirement("base", &usdc().to_string(), "maxAmountRequired")]});
        assert_eq!(choose(&v1, "u", 8453, usdc()).unwrap().version, 1);

        let none = serde_json::json!({"x402Version": 2, "accepts": [
            requirement("eip155:1", &usdc().to_string(), "amount")]});
        assert!(matches!(
            choose(&none, "u", 8453, usdc()),
            Err(X402Error::Unpayable(_))
        ));
        let mut zero = requirement("eip155:8453", &usdc().to_string(), "amount");
        zero["amount"] = "0".into();
        let zero = serde_json::json!({"x402Version": 2, "accepts": [zero]});
        assert!(matches!(
            choose(&zero, "u", 8453, usdc()),
            Err(X402Error::Seller(_))
        ));
        assert!(matches!(
            choose(&serde_json::json!({"x402Version": 3}), "u", 8453, usdc()),
            Err(X402Error::Seller(_))
        ));
    }

    #[test]
    fn headers_may_not_carry_the_credential_or_protocol_headers() {
        let ok = vec![("x-api-key".to_string(), "seller-key".to_string())];
        assert!(check_headers(&ok, Some("bsr_secret")).is_ok());
        let leak = vec![("x-note".to_string(), "token bsr_secret".to_string())];
        assert!(check_headers(&leak, Some("bsr_secret")).is_err());
        let reserved = vec![("PAYMENT-SIGNATURE".to_string(), "x".to_string())];
        assert!(check_headers(&reserved, None).is_err());
    }
}
