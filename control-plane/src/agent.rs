//! The agent side: how a proxy or cache node follows the control plane.
//!
//! It registers itself as a member (retrying with back-off), then
//! long-polls `/v1/watch` on any control-plane node, failing over between
//! them, and hands every new snapshot to the component. Each snapshot the
//! component accepted is written to the state file (atomically, by rename),
//! so a restart with the whole control plane down starts from it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use tokio_util::sync::CancellationToken;

use fanout_config::{AnyConfig, ClusterConfig, ControlSource};

use crate::api::WatchSnapshot;
use crate::client::ControlClient;
use crate::state::{Member, MemberKind, MemberState};

#[derive(Clone)]
pub struct Agent {
    pub client: ControlClient,
    pub state_file: PathBuf,
    /// Registered at start; `None` to only watch.
    pub me: Option<Member>,
}

/// Requests a proxy or cache node has answered, and how many were cache
/// hits; reported to the control plane for its status page.
#[derive(Debug, Default)]
pub struct Traffic {
    requests: std::sync::atomic::AtomicU64,
    hits: std::sync::atomic::AtomicU64,
}

impl Traffic {
    pub fn count(&self, hit: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        self.requests.fetch_add(1, Relaxed);
        if hit {
            self.hits.fetch_add(1, Relaxed);
        }
    }

    fn read(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.requests.load(Relaxed), self.hits.load(Relaxed))
    }
}

/// How long a stopping part waits for the control plane to record that it
/// left before it closes its listeners anyway.
pub const LEAVE_DEADLINE: Duration = Duration::from_secs(2);

/// The token a part's listeners stop on: cancelled once `shutdown` is and
/// the agent, if there is one, has told the control plane the part is
/// leaving, so proxies stop sending it new requests before it stops
/// accepting them.
pub fn stop_after_leaving(agent: Option<Agent>, shutdown: &CancellationToken) -> CancellationToken {
    let stop = CancellationToken::new();
    let (shutdown, done) = (shutdown.clone(), stop.clone());
    tokio::spawn(async move {
        shutdown.cancelled().await;
        if let Some(agent) = agent {
            agent.leave(LEAVE_DEADLINE).await;
        }
        done.cancel();
    });
    stop
}

/// How often a part reports its traffic.
pub const REPORT_EVERY: Duration = Duration::from_secs(2);

/// The agent of a proxy or cache node: it registers as `id`, reachable at
/// the source's `advertise` address or else at `listen`.
pub fn for_part(
    source: &ControlSource,
    id: &str,
    kind: MemberKind,
    listen: std::net::SocketAddr,
) -> Result<Agent, String> {
    let token = std::fs::read_to_string(&source.token_file)
        .map_err(|e| format!("token file {}: {e}", source.token_file.display()))?
        .trim()
        .to_string();
    let address = source
        .advertise
        .as_ref()
        .map_or(listen.to_string(), ToString::to_string);
    Ok(Agent::new(
        source.servers.iter().map(ToString::to_string).collect(),
        token,
        source.state_file.clone(),
        Some(Member {
            id: id.to_string(),
            kind,
            address,
            zone: source.zone.clone(),
            weight: 1,
            state: MemberState::Active,
        }),
    ))
}

/// The cluster config a control-plane state carries, validated again here:
/// the control plane validated it with its own build of the config crate.
pub fn cluster_config(state: &WatchSnapshot) -> Result<ClusterConfig, String> {
    let yaml = state
        .config
        .as_deref()
        .ok_or("the control plane has no config yet")?;
    match fanout_config::load_str(Path::new("control-plane config"), yaml) {
        Ok(AnyConfig::Cluster(c)) => Ok(c),
        Ok(other) => Err(format!(
            "the control plane's config is a kind: {}",
            other.kind()
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// How long one watch request waits for a change.
const LONG_POLL: Duration = Duration::from_secs(25);
/// Pause before asking again for a first config the server did not have.
const INITIAL_RETRY: Duration = Duration::from_millis(100);

impl Agent {
    pub fn new(
        servers: Vec<String>,
        token: String,
        state_file: PathBuf,
        me: Option<Member>,
    ) -> Agent {
        Agent {
            client: ControlClient::new(servers, Some(token)),
            state_file,
            me,
        }
    }

    /// The state to start from: the control plane's, if it answers within
    /// `wait`, else the state file's. `None` if neither is there.
    ///
    /// A server that answers without a config is asked again until `wait`
    /// is up: a follower serves its own applied state, which can lag the
    /// commit of the first config by a heartbeat, and a part started just
    /// after that commit must not give up on it.
    pub async fn initial(&self, wait: Duration) -> Option<(WatchSnapshot, &'static str)> {
        let started = std::time::Instant::now();
        let mut client = self.client.clone();
        loop {
            client.deadline = wait.saturating_sub(started.elapsed());
            let Ok(a) = client
                .request(
                    Method::GET,
                    "/v1/watch?after=0&purges_after=0&timeout_ms=0",
                    None,
                )
                .await
            else {
                break;
            };
            if let Ok(s) = serde_json::from_slice::<WatchSnapshot>(&a.body) {
                if a.status.is_success() && s.config.is_some() {
                    return Some((s, "control plane"));
                }
            }
            if started.elapsed() + INITIAL_RETRY >= wait {
                break;
            }
            tokio::time::sleep(INITIAL_RETRY).await;
        }
        read_state(&self.state_file).map(|s| (s, "state file"))
    }

    /// Registers `me` until it succeeds or `shutdown`.
    pub async fn register(&self, shutdown: &CancellationToken) {
        let Some(me) = &self.me else { return };
        let Ok(body) = serde_json::to_vec(me) else {
            return;
        };
        let mut pause = Duration::from_millis(100);
        loop {
            let sent = self
                .client
                .request(
                    Method::POST,
                    "/v1/members",
                    Some((Bytes::from(body.clone()), "application/json")),
                )
                .await;
            match sent {
                Ok(a) if a.status.is_success() => {
                    tracing::info!(member = %me.id, "registered with the control plane");
                    return;
                }
                Ok(a) => {
                    tracing::warn!(member = %me.id, status = a.status.as_u16(), error = %a.error_text(), "registration refused; retrying")
                }
                Err(e) => {
                    tracing::warn!(member = %me.id, error = %e, "control plane unreachable; retrying registration")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.cancelled() => return,
            }
            pause = (pause * 2).min(Duration::from_secs(10));
        }
    }

    /// Tells the control plane this part is stopping, so proxies take it
    /// off the ring now instead of when their health checks see it gone.
    /// Best effort within `deadline`: a part that cannot say so is still
    /// found out by the health checks.
    pub async fn leave(&self, deadline: Duration) {
        let Some(me) = &self.me else { return };
        let mut client = self.client.clone();
        client.deadline = deadline;
        let path = format!("/v1/members/{}/leave", me.id);
        match client.request(Method::POST, &path, None).await {
            Ok(a) if a.status.is_success() => {
                tracing::info!(member = %me.id, "left the control plane's membership")
            }
            Ok(a) => {
                tracing::warn!(member = %me.id, status = a.status.as_u16(), error = %a.error_text(), "leaving refused")
            }
            Err(e) => tracing::warn!(member = %me.id, error = %e, "could not say it is leaving"),
        }
    }

    /// Tells the control plane every [`REPORT_EVERY`] how many requests and
    /// hits this part has answered, until `shutdown`. Best effort: a report
    /// that does not arrive is replaced by the next.
    pub async fn report(&self, traffic: std::sync::Arc<Traffic>, shutdown: CancellationToken) {
        let Some(me) = &self.me else { return };
        let mut client = self.client.clone();
        client.deadline = REPORT_EVERY;
        client.attempt_timeout = REPORT_EVERY;
        let mut tick = tokio::time::interval(REPORT_EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            let (requests, hits) = traffic.read();
            // Member ids are validated names: no characters to escape.
            let path = format!("/v1/report?agent={}&requests={requests}&hits={hits}", me.id);
            if let Err(e) = client.request(Method::GET, &path, None).await {
                tracing::debug!(error = %e, "traffic report not delivered");
            }
        }
    }

    /// Follows the control plane from `current` until `shutdown`, calling
    /// `apply` with each newer snapshot. A snapshot `apply` accepts is saved
    /// to the state file.
    pub async fn watch(
        &self,
        mut current: WatchSnapshot,
        mut apply: impl FnMut(&WatchSnapshot) -> Result<(), String>,
        shutdown: CancellationToken,
    ) {
        let mut client = self.client.clone();
        client.deadline = LONG_POLL + Duration::from_secs(5);
        // A long poll may take its whole time; a dead server is noticed by
        // the watch's own timeout instead.
        client.attempt_timeout = client.deadline;
        let me = self.me.as_ref().map_or(String::new(), |m| m.id.clone());
        // Against fanout_control_revision (the group's), this shows how far
        // each proxy and cache node lags.
        let applied = opentelemetry::global::meter("fanout-control-agent")
            .u64_gauge("fanout_control_revision_applied")
            .with_description("Control-plane revision this proxy or cache node has applied")
            .build();
        let attrs = [opentelemetry::KeyValue::new("member", me.clone())];
        applied.record(current.revision, &attrs);
        // Seconds since the control plane last answered a watch: a long
        // poll returns at least every LONG_POLL, so anything well above
        // that means this part is serving a state it cannot refresh.
        let started = std::time::Instant::now();
        let last_answer = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let seen = last_answer.clone();
        let age_attrs = attrs.clone();
        let _age = opentelemetry::global::meter("fanout-control-agent")
            .f64_observable_gauge("fanout_control_contact_age")
            .with_description(
                "Time since the control plane last answered this proxy's or cache node's watch",
            )
            .with_unit("s")
            .with_callback(move |o| {
                let at = seen.load(std::sync::atomic::Ordering::Relaxed);
                let age = started.elapsed().saturating_sub(Duration::from_millis(at));
                o.observe(age.as_secs_f64(), &age_attrs);
            })
            .build();
        loop {
            let path = format!(
                "/v1/watch?after={}&purges_after={}&timeout_ms={}&agent={me}",
                current.revision,
                current.purge_seq,
                LONG_POLL.as_millis()
            );
            let answer = tokio::select! {
                a = client.request(Method::GET, &path, None) => a,
                _ = shutdown.cancelled() => return,
            };
            let next = match answer {
                Ok(a) if a.status.is_success() => {
                    last_answer.store(
                        started.elapsed().as_millis() as u64,
                        std::sync::atomic::Ordering::Relaxed,
                    );
                    match serde_json::from_slice::<WatchSnapshot>(&a.body) {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::warn!(error = %e, "unreadable watch answer");
                            continue;
                        }
                    }
                }
                Ok(a) => {
                    tracing::warn!(status = a.status.as_u16(), error = %a.error_text(), "watch refused");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                Err(e) => {
                    // The client already tried every server until its deadline.
                    tracing::warn!(error = %e, "control plane unreachable; serving the last state");
                    continue;
                }
            };
            if next.revision <= current.revision {
                continue;
            }
            match apply(&next) {
                Ok(()) => {
                    applied.record(next.revision, &attrs);
                    if let Err(e) = write_state(&self.state_file, &next) {
                        tracing::warn!(file = %self.state_file.display(), error = %e, "cannot save the control-plane state");
                    }
                    current = next;
                }
                Err(e) => {
                    tracing::error!(revision = next.revision, error = %e, "control-plane state not applied; keeping the previous one");
                    // Do not ask for the same revision in a tight loop.
                    current.revision = next.revision;
                }
            }
        }
    }
}

pub fn read_state(file: &Path) -> Option<WatchSnapshot> {
    let bytes = std::fs::read(file).ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub fn write_state(file: &Path, state: &WatchSnapshot) -> std::io::Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(state)?)?;
    std::fs::rename(tmp, file)
}
