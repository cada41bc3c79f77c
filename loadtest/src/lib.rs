//! Fanout's simulated world: the synthetic origin that stands in for a
//! video packager, and simulated viewers that load any HTTP target the way
//! a live audience does.
//!
//! Owns: [`origin`] (HLS live and VOD, static objects, fault injection,
//! request counts), [`scenario`] (playing a `kind: scenario` file: open-loop
//! arrivals, live/VOD/static viewers, fault steps, reports with charts) and
//! [`flash`] (the flash-crowd benchmark). Speaks only HTTP to the system
//! under test, so the same load runs against Fanout, Varnish or NGINX.

mod client;
pub mod flash;
mod h1;
pub mod origin;
pub mod scenario;
