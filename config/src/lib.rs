//! The typed model of every Fanout YAML file, and its validation.
//!
//! Owns: the cluster config (sites, origins, cache policy, hashing, health
//! checks) that the control plane distributes; the per-process files
//! (`kind: proxy`, `cache`, `origin`, `up`, `control`, `scenario`); and the rules that turn a file
//! into these types or into errors of the form
//! `file:line:column: field.path: what is wrong; allowed: what would be
//! accepted`, after `${NAME}` environment references are replaced. It also owns the pure functions that interpret a site's
//! policy, which proxies and cache nodes must agree on: which site a request
//! belongs to ([`SiteTable`]) and its cache key ([`CacheKey`]).
//!
//! Does not own: any I/O beyond reading a file, anything async, networking.

mod cache_key;
mod cluster;
mod control;
mod edge;
mod env;
mod error;
mod load;
mod origin;
mod positions;
mod process;
pub mod ring;
mod scenario;
pub mod schema;
mod site_table;
mod telemetry;
mod units;
mod up;
mod validate;

pub use cache_key::CacheKey;
pub use cluster::{
    CachePolicy, ClusterConfig, Hashing, HealthCheck, HostPattern, HostPort, OriginPool, Prefetch,
    QueryMode, QueryPolicy, Scheme, SetCookiePolicy, Site,
};
pub use control::{ControlConfig, ControlPeer};
pub use edge::{
    ClientLimits, ControlSource, EdgeCertificate, EdgeSettings, EdgeTls, FailOpen, HotTier,
    Overload, RetryPolicy,
};
pub use error::{ConfigError, ConfigErrors, Location};
pub use load::{
    load_any, load_cache_node, load_cluster, load_control, load_origin, load_proxy, load_scenario,
    load_str, load_up, read_expanded, AnyConfig, FileKind,
};
pub use origin::{
    Fault, LiveStream, ObjectGroup, OriginConfig, PathGlob, Rendition, TlsFiles, VodLibrary,
};
pub use process::{CacheNodeConfig, CacheNodeRef, ProxyConfig};
pub use scenario::{
    FaultAction, FaultStep, HttpFault, Limits, Phase, ScenarioConfig, SignalFault, Target,
    ViewerModel,
};
pub use site_table::SiteTable;
pub use telemetry::Telemetry;
pub use units::{Size, Span};
pub use up::{Demo, UpCacheNode, UpConfig, UpControlPlane, UpProxy};
