//! Webhooks (Standard Webhooks, <https://www.standardwebhooks.com/>): the lifecycle's
//! events told to the operator's endpoints, signed, durable and retried.
//!
//! - `events.rs`: which events a transition causes (from the model's `Event`s) and the
//!   body each is delivered with; written to the store's outbox in the transaction of
//!   the transition (`store::apply_transition`, the deletions).
//! - `sign.rs`: the `whsec_` secrets and the `webhook-signature` HMAC.
//! - `target.rs`: the address rules (public addresses only, as HTTP DCV, unless the
//!   endpoint allows private ones).
//! - `deliver.rs`: the delivery worker (its own thread; one task per endpoint).

pub mod deliver;
pub mod events;
pub mod sign;
pub mod target;

pub use deliver::{DeliveryConfig, DeliveryHandle, start};
pub use events::{EVENT_TYPES, outbox_events};
