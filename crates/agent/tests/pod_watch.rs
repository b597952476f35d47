//! The IMDS guard's pod map from a stand-in kube-apiserver on 127.0.0.1 (plain HTTP) that speaks
//! the real wire format: a `PodList` with `metadata.resourceVersion`, then `?watch=true` events
//! (`{"type","object"}` lines on a chunked response: ADDED, MODIFIED, DELETED, BOOKMARK, and
//! ERROR with a `410 Gone` Status), filtered by the field selector as the API server filters.
//! kube-rs' watcher runs unmodified against it.

#![allow(clippy::unwrap_used, clippy::panic, reason = "test code")]

use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use podiam_agent::imds::{Denial, PodIpMap, authorize};
use podiam_agent::pod_watch::watch_node_pods;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

type Body = BoxBody<Bytes, Infallible>;

#[derive(Default)]
struct Store {
    resource_version: u64,
    pods: BTreeMap<String, Value>,
    watchers: Vec<(String, mpsc::UnboundedSender<Bytes>)>,
    /// The query of every list and watch request, in order.
    lists: Vec<BTreeMap<String, String>>,
    watches: Vec<BTreeMap<String, String>>,
}

#[derive(Default)]
struct ApiServer(Mutex<Store>);

fn query(q: &str) -> BTreeMap<String, String> {
    form_urlencoded::parse(q.as_bytes()).into_owned().collect()
}

fn node_of(pod: &Value) -> &str {
    pod["spec"]["nodeName"].as_str().unwrap_or_default()
}

/// `fieldSelector=spec.nodeName=NODE` (the only selector this stand-in knows; others are refused).
fn selected(q: &BTreeMap<String, String>) -> Result<Option<String>, String> {
    match q.get("fieldSelector").map(String::as_str) {
        None | Some("") => Ok(None),
        Some(s) => s
            .strip_prefix("spec.nodeName=")
            .map(|n| Some(n.to_owned()))
            .ok_or_else(|| format!("unsupported field selector {s}")),
    }
}

impl ApiServer {
    async fn start(self: &Arc<Self>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let me = Arc::clone(self);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let me = Arc::clone(&me);
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let me = Arc::clone(&me);
                        async move { Ok::<_, Infallible>(me.handle(&req)) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        format!("http://{addr}")
    }

    /// Creates or replaces a pod; `emit` false changes the store without a watch event (what
    /// a watch that fell behind and then expired never saw).
    fn put(&self, uid: &str, ns: &str, node: &str, ip: &str, host_network: bool, emit: bool) {
        let mut s = self.0.lock().unwrap();
        s.resource_version += 1;
        let rv = s.resource_version;
        let kind = if s.pods.contains_key(uid) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        let pod = json!({
            "kind": "Pod", "apiVersion": "v1",
            "metadata": {"name": format!("pod-{uid}"), "namespace": ns, "uid": uid,
                         "resourceVersion": rv.to_string(), "creationTimestamp": "2026-12-01T00:00:00Z"},
            "spec": {"nodeName": node, "hostNetwork": host_network, "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "192.168.1.10"},
        });
        s.pods.insert(uid.to_owned(), pod.clone());
        if emit {
            Self::emit(&mut s, kind, &pod);
        }
    }

    fn delete(&self, uid: &str, emit: bool) {
        let mut s = self.0.lock().unwrap();
        s.resource_version += 1;
        let rv = s.resource_version.to_string();
        let mut pod = s.pods.remove(uid).unwrap();
        pod["metadata"]["resourceVersion"] = json!(rv);
        if emit {
            Self::emit(&mut s, "DELETED", &pod);
        }
    }

    /// A BOOKMARK at a resourceVersion past everything sent.
    fn bookmark(&self) -> String {
        let mut s = self.0.lock().unwrap();
        s.resource_version += 10;
        let rv = s.resource_version.to_string();
        let object = json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": rv,
            "annotations": {"k8s.io/initial-events-end": "true"}}});
        Self::emit(&mut s, "BOOKMARK", &object);
        rv
    }

    /// Ends every watch response normally, as `timeoutSeconds` does.
    fn end_watches(&self) {
        self.0.lock().unwrap().watchers.clear();
    }

    /// The watch's resourceVersion is too old: an ERROR event with a 410 Status, then the end.
    fn gone(&self) {
        let mut s = self.0.lock().unwrap();
        let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "too old resource version: 5 (40)", "reason": "Expired", "code": 410});
        Self::emit(&mut s, "ERROR", &status);
        s.watchers.clear();
    }

    fn emit(s: &mut Store, kind: &str, object: &Value) {
        let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap();
        line.push(b'\n');
        let line = Bytes::from(line);
        let node = node_of(object).to_owned();
        s.watchers.retain(|(selector, w)| {
            // A selector matches by the object's node; bookmarks and errors go to everyone.
            if kind == "BOOKMARK" || kind == "ERROR" || selector.is_empty() || *selector == node {
                w.send(line.clone()).is_ok()
            } else {
                true
            }
        });
    }

    fn json(status: StatusCode, body: &Value) -> Response<Body> {
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(serde_json::to_vec(body).unwrap())).boxed())
            .unwrap()
    }

    fn handle(&self, req: &Request<Incoming>) -> Response<Body> {
        let q = query(req.uri().query().unwrap_or_default());
        if req.uri().path() != "/api/v1/pods" {
            return Self::json(
                StatusCode::NOT_FOUND,
                &json!({"kind": "Status", "code": 404}),
            );
        }
        let node = match selected(&q) {
            Ok(n) => n.unwrap_or_default(),
            Err(e) => {
                return Self::json(
                    StatusCode::BAD_REQUEST,
                    &json!({"kind": "Status", "message": e, "code": 400}),
                );
            }
        };
        let mut s = self.0.lock().unwrap();
        if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
            s.watches.push(q);
            let (tx, rx) = mpsc::unbounded_channel();
            s.watchers.push((node, tx));
            let events = stream::unfold(rx, |mut rx| async move {
                rx.recv()
                    .await
                    .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
            });
            return Response::builder()
                .header("content-type", "application/json")
                .body(StreamBody::new(events).boxed())
                .unwrap();
        }
        s.lists.push(q);
        let items: Vec<Value> = s
            .pods
            .values()
            .filter(|p| node.is_empty() || node_of(p) == node)
            .cloned()
            .collect();
        Self::json(
            StatusCode::OK,
            &json!({"kind": "PodList", "apiVersion": "v1",
                    "metadata": {"resourceVersion": s.resource_version.to_string()}, "items": items}),
        )
    }

    fn lists(&self) -> Vec<BTreeMap<String, String>> {
        self.0.lock().unwrap().lists.clone()
    }

    fn watches(&self) -> Vec<BTreeMap<String, String>> {
        self.0.lock().unwrap().watches.clone()
    }

    fn resource_version(&self) -> String {
        self.0.lock().unwrap().resource_version.to_string()
    }
}

/// Polls `what` until it holds (at most 10 s, in 20 ms steps).
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for: {what}");
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The namespace IMDS would attribute `addr` to, or `None` when it refuses it as unknown.
fn namespace(map: &PodIpMap, addr: &str) -> Option<String> {
    map.current().get(&ip(addr)).cloned()
}

#[tokio::test]
async fn the_map_follows_the_nodes_pods_through_watch_bookmark_and_410() {
    let api = Arc::new(ApiServer::default());
    api.put("a", "kube-system", "node-a", "10.0.0.5", false, true);
    api.put("h", "kube-system", "node-a", "192.168.1.10", true, true);
    api.put("z", "evil", "node-b", "10.0.0.9", false, true);
    let url = api.start().await;
    let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
    let map = Arc::new(PodIpMap::fixed(Default::default()));
    let allowed: HashSet<String> = ["kube-system".to_owned()].into();

    // Before the first list nothing is known, and an unknown address is refused.
    assert_eq!(
        authorize(ip("10.0.0.5"), &map.current(), &allowed),
        Err(Denial::UnknownIp { ip: ip("10.0.0.5") })
    );
    let watch = tokio::spawn(watch_node_pods(client, "node-a".into(), Arc::clone(&map)));

    // List: this node's pods only, by field selector.
    until("the first list", || namespace(&map, "10.0.0.5").is_some()).await;
    assert_eq!(authorize(ip("10.0.0.5"), &map.current(), &allowed), Ok(()));
    assert_eq!(namespace(&map, "10.0.0.9"), None, "a pod of another node");
    assert_eq!(namespace(&map, "192.168.1.10"), None, "a hostNetwork pod");
    let lists = api.lists();
    assert_eq!(lists[0]["fieldSelector"], "spec.nodeName=node-a");

    // Then a watch from the list's resourceVersion, with bookmarks.
    until("the first watch", || !api.watches().is_empty()).await;
    let w = &api.watches()[0];
    assert_eq!(
        w["resourceVersion"], "3",
        "the list's resourceVersion: {w:?}"
    );
    assert_eq!(w["allowWatchBookmarks"], "true");
    assert_eq!(w["fieldSelector"], "spec.nodeName=node-a");

    api.put("b", "team", "node-a", "10.0.0.6", false, true);
    until("ADDED", || {
        namespace(&map, "10.0.0.6").as_deref() == Some("team")
    })
    .await;

    // The IP of pod a passes to a pod of another namespace; the new pod is reported first.
    api.put("c", "default", "node-a", "10.0.0.5", false, true);
    until("two namespaces claim 10.0.0.5", || {
        namespace(&map, "10.0.0.5").is_none()
    })
    .await;
    api.delete("a", true);
    until("DELETED", || {
        namespace(&map, "10.0.0.5").as_deref() == Some("default")
    })
    .await;
    assert!(matches!(
        authorize(ip("10.0.0.5"), &map.current(), &allowed),
        Err(Denial::Namespace { .. })
    ));
    api.put("b", "team", "node-a", "10.0.0.16", false, true);
    until("MODIFIED", || namespace(&map, "10.0.0.16").is_some()).await;
    assert_eq!(
        namespace(&map, "10.0.0.6"),
        None,
        "the old address is given up"
    );

    // A bookmark, then the watch ends as timeoutSeconds ends it: the next watch resumes at the
    // bookmark's resourceVersion, without a list.
    let bookmark = api.bookmark();
    api.end_watches();
    until("the second watch", || api.watches().len() == 2).await;
    assert_eq!(api.watches()[1]["resourceVersion"], bookmark);
    assert_eq!(api.lists().len(), 1, "no relist after a bookmark");

    // Changes the watch never reports, then 410 Gone: the watcher lists again.
    api.delete("b", false);
    api.put("d", "kube-system", "node-a", "10.0.0.7", false, false);
    api.gone();
    until("the relist", || namespace(&map, "10.0.0.7").is_some()).await;
    assert_eq!(api.lists().len(), 2);
    assert_eq!(
        namespace(&map, "10.0.0.16"),
        None,
        "a pod gone while the watch was behind"
    );
    assert_eq!(namespace(&map, "10.0.0.5").as_deref(), Some("default"));
    until("the watch after the relist", || api.watches().len() == 3).await;
    assert_eq!(api.watches()[2]["resourceVersion"], api.resource_version());
    watch.abort();
}
