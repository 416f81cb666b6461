//! `--kube`: Services, EndpointSlices and EnvoyFilters read from the Kubernetes API instead of
//! a directory, each kind through a list-and-watch (`kube::runtime` reflectors, with their
//! reconnect backoff). After a change and a quiet `debounce`, the whole state is read into the
//! same [`Inputs`](crate::k8s::Inputs) a directory gives, so both sources share every check.
//! Needs read access (get, list, watch) to those three kinds cluster-wide; see
//! `deploy/kubernetes/control-plane/rbac.yaml`.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::reflector::{self, store::Writer, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::k8s;

/// Istio's EnvoyFilter resource.
fn envoy_filter_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.istio.io", "v1alpha3", "EnvoyFilter"),
        "envoyfilters",
    )
}

fn with_type(mut value: serde_json::Value, api_version: &str, kind: &str) -> serde_json::Value {
    // Objects of a list carry no apiVersion/kind; the reader needs them.
    if let Some(obj) = value.as_object_mut() {
        obj.insert("apiVersion".to_owned(), api_version.into());
        obj.insert("kind".to_owned(), kind.into());
    }
    value
}

/// Everything the stores hold now, as objects for [`k8s::inputs_from_objects`].
fn snapshot(
    services: &Store<Service>,
    slices: &Store<EndpointSlice>,
    filters: &Store<DynamicObject>,
) -> super::Reading {
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    let mut push = |what: String,
                    v: Result<serde_json::Value, serde_json::Error>,
                    api: &str,
                    kind: &str| match v {
        Ok(v) => objects.push((what, with_type(v, api, kind))),
        Err(e) => errors.push(format!("{what}: {e}")),
    };
    for s in services.state() {
        let what = format!("kube: Service {}", name_of(&s.metadata));
        push(what, serde_json::to_value(s.as_ref()), "v1", "Service");
    }
    for s in slices.state() {
        let what = format!("kube: EndpointSlice {}", name_of(&s.metadata));
        push(
            what,
            serde_json::to_value(s.as_ref()),
            "discovery.k8s.io/v1",
            "EndpointSlice",
        );
    }
    for f in filters.state() {
        let what = format!("kube: EnvoyFilter {}", name_of(&f.metadata));
        push(
            what,
            serde_json::to_value(f.as_ref()),
            "networking.istio.io/v1alpha3",
            "EnvoyFilter",
        );
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    k8s::inputs_from_objects(objects).map_err(|e| e.into_iter().map(|e| e.to_string()).collect())
}

fn name_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name.as_deref().unwrap_or_default()
    )
}

/// Watches the three kinds and sends a reading once all have been listed, then after each
/// change (debounced). Runs until `tx` is closed.
pub async fn watch(client: Client, tx: mpsc::Sender<super::Reading>, debounce: Duration) {
    let (services, services_writer) = reflector::store::<Service>();
    let (slices, slices_writer) = reflector::store::<EndpointSlice>();
    let ar = envoy_filter_resource();
    let filters_writer: Writer<DynamicObject> = Writer::new(ar.clone());
    let filters = filters_writer.as_reader();
    let config = watcher::Config::default();
    let s = reflector::reflector(
        services_writer,
        watcher(Api::<Service>::all(client.clone()), config.clone()),
    )
    .default_backoff()
    .map(|e| e.map(|_| ()).map_err(|e| e.to_string()))
    .boxed();
    let e = reflector::reflector(
        slices_writer,
        watcher(Api::<EndpointSlice>::all(client.clone()), config.clone()),
    )
    .default_backoff()
    .map(|e| e.map(|_| ()).map_err(|e| e.to_string()))
    .boxed();
    let f = reflector::reflector(
        filters_writer,
        watcher(Api::<DynamicObject>::all_with(client, &ar), config),
    )
    .default_backoff()
    .map(|e| e.map(|_| ()).map_err(|e| e.to_string()))
    .boxed();
    let mut events = futures::stream::select_all([s, e, f]);
    // The first reading waits until every kind has been listed once.
    let ready = async {
        let _ = tokio::join!(
            services.wait_until_ready(),
            slices.wait_until_ready(),
            filters.wait_until_ready()
        );
    };
    tokio::pin!(ready);
    loop {
        tokio::select! {
            () = &mut ready => break,
            ev = events.next() => match ev {
                Some(Err(e)) => warn!("Kubernetes watch: {e}"),
                Some(Ok(())) => {}
                None => return,
            },
        }
    }
    info!("Kubernetes: Services, EndpointSlices and EnvoyFilters listed");
    if tx
        .send(snapshot(&services, &slices, &filters))
        .await
        .is_err()
    {
        return;
    }
    loop {
        // Wait for a change, then for `debounce` of quiet.
        match events.next().await {
            Some(Err(e)) => {
                warn!("Kubernetes watch: {e}");
                continue;
            }
            Some(Ok(())) => {}
            None => return,
        }
        loop {
            match tokio::time::timeout(debounce, events.next()).await {
                Err(_) => break,
                Ok(Some(Err(e))) => warn!("Kubernetes watch: {e}"),
                Ok(Some(Ok(()))) => {}
                Ok(None) => return,
            }
        }
        if tx
            .send(snapshot(&services, &slices, &filters))
            .await
            .is_err()
        {
            return;
        }
    }
}
