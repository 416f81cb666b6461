//! One gRPC xDS stream per task: connects (TCP or Unix socket), opens the stream, forwards
//! responses to the client task and reconnects with backoff. Holds no protocol state: what
//! to send on a new stream is the client task's decision.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use envoy_types::pb::envoy::service::cluster::v3::cluster_discovery_service_client::ClusterDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::endpoint::v3::endpoint_discovery_service_client::EndpointDiscoveryServiceClient;
use envoy_types::pb::envoy::service::listener::v3::listener_discovery_service_client::ListenerDiscoveryServiceClient;
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Status, Streaming};

use crate::backoff::Backoff;
use crate::{ChannelOptions, Target, XdsError};

/// Largest response accepted. Envoy has no limit of its own; istio-agent uses MaxInt32, and
/// a mesh with thousands of services sends LDS/CDS responses well above tonic's 4 MiB.
pub(crate) const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// HTTP/2 PING interval: istiod answers pings more often than every 15 s with GOAWAY
/// `too_many_pings`, and pings every 30 s itself.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Linux's default idle time before the first keepalive probe, for a `tcp_keepalive` that
/// sets only the interval or the probe count.
const DEFAULT_KEEPALIVE_TIME: Duration = Duration::from_secs(7200);
/// Requests queued for a stream; the client task waits when the stream does not drain them.
pub(crate) const REQUEST_QUEUE: usize = 256;
/// An `authority` for Unix-socket channels, which have none (the connector ignores it).
const UNIX_AUTHORITY: &str = "http://localhost";

/// Which gRPC method a stream uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Service {
    Aggregated,
    Listeners,
    Clusters,
    Endpoints,
    Secrets,
}

/// The request side of an open stream, handed to the client task.
pub(crate) enum Tx {
    Sotw(mpsc::Sender<DiscoveryRequest>),
    Delta(mpsc::Sender<DeltaDiscoveryRequest>),
}

/// What a stream task reports. Events of one stream arrive in order.
pub(crate) enum Event {
    /// A new stream is being opened: queue its initial requests on `tx` now (a control plane
    /// may hold its response headers until it has a request to answer).
    Opening { transport: usize, tx: Tx },
    /// The stream is open (response headers received).
    Up { transport: usize },
    Sotw {
        transport: usize,
        response: Box<DiscoveryResponse>,
    },
    Delta {
        transport: usize,
        response: Box<DeltaDiscoveryResponse>,
    },
    /// The stream ended or could not be opened; a new one follows after a backoff.
    Down { transport: usize, reason: String },
    /// A watched file changed (or was read for the first time).
    File {
        type_index: usize,
        result: Box<Result<crate::file::DiscoveryFile, String>>,
    },
}

pub(crate) fn channel(target: &Target, options: &ChannelOptions) -> Result<Channel, XdsError> {
    // A zero timeout would fail every connect; Envoy's proto requires a positive one.
    let connect_timeout = options.connect_timeout.max(Duration::from_millis(1));
    let bad = |e: tonic::transport::Error| XdsError::Endpoint {
        target: format!("{target:?}"),
        reason: e.to_string(),
    };
    let endpoint = match target {
        Target::Tcp(host_port) => Endpoint::from_shared(format!("http://{host_port}")),
        Target::Unix(_) => Endpoint::from_shared(UNIX_AUTHORITY.to_string()),
    }
    .map_err(bad)?
    .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
    .keep_alive_timeout(KEEPALIVE_TIMEOUT)
    .keep_alive_while_idle(true)
    .connect_timeout(connect_timeout);
    // Only what the cluster sets: without `tcp_keepalive` Envoy leaves the socket's default.
    let endpoint = match &options.tcp_keepalive {
        Some(k) => endpoint
            .tcp_keepalive(Some(k.time.unwrap_or(DEFAULT_KEEPALIVE_TIME)))
            .tcp_keepalive_interval(k.interval)
            .tcp_keepalive_retries(k.probes),
        None => endpoint,
    };
    Ok(match target {
        // Lazy: the first stream attempt connects, and a broken connection is re-made by the
        // next attempt, so the backoff below paces reconnects too.
        Target::Tcp(_) => endpoint.connect_lazy(),
        Target::Unix(path) => {
            let path: PathBuf = path.clone();
            endpoint.connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    let stream = tokio::time::timeout(
                        connect_timeout,
                        tokio::net::UnixStream::connect(path),
                    )
                    .await
                    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timeout"))??;
                    Ok::<_, io::Error>(TokioIo::new(stream))
                }
            }))
        }
    })
}

/// SotW or Delta: the message types and how to open the stream.
pub(crate) trait Flavor: Send + 'static {
    type Req: Send + 'static;
    type Resp: Send + 'static;
    fn tx(sender: mpsc::Sender<Self::Req>) -> Tx;
    fn event(transport: usize, response: Self::Resp) -> Event;
    fn open(
        channel: Channel,
        service: Service,
        requests: ReceiverStream<Self::Req>,
    ) -> impl Future<Output = Result<Streaming<Self::Resp>, Status>> + Send;
}

pub(crate) struct Sotw;
pub(crate) struct Delta;

impl Flavor for Sotw {
    type Req = DiscoveryRequest;
    type Resp = DiscoveryResponse;

    fn tx(sender: mpsc::Sender<DiscoveryRequest>) -> Tx {
        Tx::Sotw(sender)
    }

    fn event(transport: usize, response: DiscoveryResponse) -> Event {
        Event::Sotw {
            transport,
            response: Box::new(response),
        }
    }

    async fn open(
        channel: Channel,
        service: Service,
        requests: ReceiverStream<DiscoveryRequest>,
    ) -> Result<Streaming<DiscoveryResponse>, Status> {
        let m = MAX_RESPONSE_BYTES;
        let response = match service {
            Service::Aggregated => {
                AggregatedDiscoveryServiceClient::new(channel)
                    .max_decoding_message_size(m)
                    .stream_aggregated_resources(requests)
                    .await?
            }
            Service::Listeners => {
                ListenerDiscoveryServiceClient::new(channel)
                    .max_decoding_message_size(m)
                    .stream_listeners(requests)
                    .await?
            }
            Service::Clusters => {
                ClusterDiscoveryServiceClient::new(channel)
                    .max_decoding_message_size(m)
                    .stream_clusters(requests)
                    .await?
            }
            Service::Endpoints => {
                EndpointDiscoveryServiceClient::new(channel)
                    .max_decoding_message_size(m)
                    .stream_endpoints(requests)
                    .await?
            }
            Service::Secrets => {
                SecretDiscoveryServiceClient::new(channel)
                    .max_decoding_message_size(m)
                    .stream_secrets(requests)
                    .await?
            }
        };
        Ok(response.into_inner())
    }
}

impl Flavor for Delta {
    type Req = DeltaDiscoveryRequest;
    type Resp = DeltaDiscoveryResponse;

    fn tx(sender: mpsc::Sender<DeltaDiscoveryRequest>) -> Tx {
        Tx::Delta(sender)
    }

    fn event(transport: usize, response: DeltaDiscoveryResponse) -> Event {
        Event::Delta {
            transport,
            response: Box::new(response),
        }
    }

    async fn open(
        channel: Channel,
        service: Service,
        requests: ReceiverStream<DeltaDiscoveryRequest>,
    ) -> Result<Streaming<DeltaDiscoveryResponse>, Status> {
        let m = MAX_RESPONSE_BYTES;
        let response = match service {
            Service::Aggregated => {
                AggregatedDiscoveryServiceClient::new(channel)
                    .max_decoding_message_size(m)
                    .delta_aggregated_resources(requests)
                    .await?
            }
            Service::Listeners => {
                ListenerDiscoveryServiceClient::new(channel)
                    .max_decoding_message_size(m)
                    .delta_listeners(requests)
                    .await?
            }
            Service::Clusters => {
                ClusterDiscoveryServiceClient::new(channel)
                    .max_decoding_message_size(m)
                    .delta_clusters(requests)
                    .await?
            }
            Service::Endpoints => {
                EndpointDiscoveryServiceClient::new(channel)
                    .max_decoding_message_size(m)
                    .delta_endpoints(requests)
                    .await?
            }
            Service::Secrets => {
                SecretDiscoveryServiceClient::new(channel)
                    .max_decoding_message_size(m)
                    .delta_secrets(requests)
                    .await?
            }
        };
        Ok(response.into_inner())
    }
}

/// Keeps one stream open forever. Ends when the client task is gone.
pub(crate) async fn run<F: Flavor>(
    transport: usize,
    channel: Channel,
    service: Service,
    events: mpsc::Sender<Event>,
) {
    let mut backoff = Backoff::new();
    loop {
        let (tx, rx) = mpsc::channel(REQUEST_QUEUE);
        if events
            .send(Event::Opening {
                transport,
                tx: F::tx(tx),
            })
            .await
            .is_err()
        {
            return;
        }
        // Every wait also watches for the client task going away, so a dropped client
        // closes its streams instead of leaving them open until the next response.
        let opened = tokio::select! {
            opened = F::open(channel.clone(), service, ReceiverStream::new(rx)) => opened,
            _ = events.closed() => return,
        };
        let reason = match opened {
            Err(status) => describe(&status),
            Ok(mut inbound) => {
                if events.send(Event::Up { transport }).await.is_err() {
                    return;
                }
                loop {
                    let message = tokio::select! {
                        message = inbound.message() => message,
                        _ = events.closed() => return,
                    };
                    match message {
                        Ok(Some(response)) => {
                            backoff.reset();
                            if events.send(F::event(transport, response)).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => break "0, stream closed by the control plane".to_string(),
                        Err(status) => break describe(&status),
                    }
                }
            }
        };
        if events
            .send(Event::Down { transport, reason })
            .await
            .is_err()
        {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = events.closed() => return,
        }
    }
}

/// Envoy's log form: `<code>, <message>`.
fn describe(status: &Status) -> String {
    format!("{}, {}", status.code() as i32, status.message())
}
