//! Fanout's simulated world: the synthetic origin that stands in for a
//! video packager, and simulated viewers that load any HTTP target the way
//! a live audience does.
//!
//! Owns: [`origin`] (HLS live and VOD, static objects, fault injection,
//! request counts) and [`live`] (live HLS viewers and the summary of what
//! they saw). Speaks only HTTP to the system under test, so the same load
//! runs against Fanout, Varnish or NGINX.

mod client;
pub mod flash;
pub mod live;
pub mod origin;
pub mod playlist;
pub mod scenario;
