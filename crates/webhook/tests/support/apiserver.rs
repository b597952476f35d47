//! A stand-in kube-apiserver for ServiceAccounts, over plain HTTP on 127.0.0.1: the same list,
//! watch (`?watch=true`, newline-delimited `{"type","object"}` events on a chunked response) and
//! get responses as the real one, so kube-rs' watcher and `Api::get_opt` run unmodified.
//! Events can be withheld to model a watch that lags behind the store.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::stream;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

#[derive(Default)]
struct Store {
    resource_version: u64,
    service_accounts: BTreeMap<(String, String), Value>,
    watchers: Vec<mpsc::UnboundedSender<Bytes>>,
}

/// The stand-in server and its request counters.
#[derive(Default)]
pub struct ApiServer {
    store: Mutex<Store>,
    pub lists: AtomicUsize,
    pub watches: AtomicUsize,
    pub gets: AtomicUsize,
}

impl ApiServer {
    /// Serve on an ephemeral port; returns the base URL.
    pub async fn start(self: &Arc<Self>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let me = me.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let me = me.clone();
                        async move { Ok::<_, Infallible>(me.handle(req)) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        format!("http://{addr}")
    }

    /// Create or replace a ServiceAccount; `emit` false withholds the watch event (a lagging watch).
    pub fn put(&self, namespace: &str, name: &str, annotations: &[(&str, &str)], emit: bool) {
        let mut store = self.store.lock().unwrap();
        store.resource_version += 1;
        let rv = store.resource_version;
        let key = (namespace.to_owned(), name.to_owned());
        let kind = if store.service_accounts.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        let annotations: BTreeMap<_, _> = annotations
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let object = json!({
            "kind": "ServiceAccount",
            "apiVersion": "v1",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": format!("00000000-0000-0000-0000-{rv:012}"),
                "resourceVersion": rv.to_string(),
                "creationTimestamp": "2026-11-24T00:00:00Z",
                "annotations": annotations,
            }
        });
        store.service_accounts.insert(key, object.clone());
        if emit {
            Self::emit(&mut store, kind, object);
        }
    }

    fn emit(store: &mut Store, kind: &str, object: Value) {
        let mut line = serde_json::to_vec(&json!({ "type": kind, "object": object })).unwrap();
        line.push(b'\n');
        let line = Bytes::from(line);
        store.watchers.retain(|w| w.send(line.clone()).is_ok());
    }

    fn status(code: u16, reason: &str, message: String) -> Response<BoxBody<Bytes, Infallible>> {
        let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code});
        Self::json(StatusCode::from_u16(code).unwrap(), &body)
    }

    fn json(status: StatusCode, body: &Value) -> Response<BoxBody<Bytes, Infallible>> {
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(serde_json::to_vec(body).unwrap())).boxed())
            .unwrap()
    }

    fn handle(&self, req: Request<Incoming>) -> Response<BoxBody<Bytes, Infallible>> {
        let path = req.uri().path().to_owned();
        let query = req.uri().query().unwrap_or_default().to_owned();
        let watch = query
            .split('&')
            .any(|kv| kv == "watch=true" || kv == "watch=1");
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match segments.as_slice() {
            ["api", "v1", "serviceaccounts"] if watch => {
                self.watches.fetch_add(1, Ordering::SeqCst);
                let (tx, rx) = mpsc::unbounded_channel();
                self.store.lock().unwrap().watchers.push(tx);
                let events = stream::unfold(rx, |mut rx| async move {
                    rx.recv()
                        .await
                        .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
                });
                Response::builder()
                    .header("content-type", "application/json")
                    .body(StreamBody::new(events).boxed())
                    .unwrap()
            }
            ["api", "v1", "serviceaccounts"] => {
                self.lists.fetch_add(1, Ordering::SeqCst);
                let store = self.store.lock().unwrap();
                let items: Vec<Value> = store.service_accounts.values().cloned().collect();
                Self::json(
                    StatusCode::OK,
                    &json!({"kind": "ServiceAccountList", "apiVersion": "v1",
                        "metadata": {"resourceVersion": store.resource_version.to_string()}, "items": items}),
                )
            }
            ["api", "v1", "namespaces", ns, "serviceaccounts", name] => {
                self.gets.fetch_add(1, Ordering::SeqCst);
                let store = self.store.lock().unwrap();
                match store
                    .service_accounts
                    .get(&((*ns).to_owned(), (*name).to_owned()))
                {
                    Some(sa) => Self::json(StatusCode::OK, sa),
                    None => Self::status(
                        404,
                        "NotFound",
                        format!("serviceaccounts \"{name}\" not found"),
                    ),
                }
            }
            _ => Self::status(
                404,
                "NotFound",
                format!("the server could not find the requested resource ({path})"),
            ),
        }
    }
}
