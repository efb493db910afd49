//! Helpers for driving kube's tower-test mock API server.

use http::{Method, Request, Response};
use kube::client::Body;
use serde_json::{Value, json};

pub type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// A client whose every request is answered by the returned handle.
pub fn client(namespace: &str) -> (kube::Client, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, namespace.to_owned()), handle)
}

/// Answers the next request, checking its method and path; returns the body it carried.
#[allow(dead_code)] // used by controller.rs and self_managed_tls.rs, not capabilities.rs
pub async fn expect(handle: &mut Handle, method: Method, path: &str, status: u16, body: Value) -> Value {
    let (request, send) = handle.next_request().await.expect("a request");
    assert_eq!(request.method(), method, "{}", request.uri());
    assert!(request.uri().path().starts_with(path), "expected {path}, got {}", request.uri());
    let sent = request.into_body().collect_bytes().await.unwrap();
    send.send_response(
        Response::builder().status(status).body(Body::from(serde_json::to_vec(&body).unwrap())).unwrap(),
    );
    if sent.is_empty() { Value::Null } else { serde_json::from_slice(&sent).unwrap() }
}

#[allow(dead_code)] // used by self_managed_tls.rs, not controller.rs
pub fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"})
}
