//! A simulated system on port 0 and a small client for it.

use serde_json::{Value, json};
use tokio_util::sync::{CancellationToken, DropGuard};

/// A running simulated system; stops when dropped.
pub struct TestSim {
    pub base: String,
    pub sim: outside::Sim,
    pub client: reqwest::Client,
    _stop: DropGuard,
}

/// Serve `name` (`"gateway"` or `"carrier"`) on 127.0.0.1, port 0.
pub async fn spawn(name: &'static str) -> TestSim {
    let server = outside::Server::bind(name, "127.0.0.1:0".parse().expect("addr")).await.expect("binds");
    let base = format!("http://{}", server.local_addr());
    let sim = server.sim.clone();
    let token = CancellationToken::new();
    tokio::spawn(server.run(token.clone()));
    TestSim { base, sim, client: reqwest::Client::new(), _stop: token.drop_guard() }
}

impl TestSim {
    /// `POST` with an Idempotency-Key; the status and the JSON answer (`null` if none).
    pub async fn post(&self, path: &str, key: &str, body: Value) -> (u16, Value) {
        let resp = self
            .client
            .post(format!("{}{path}", self.base))
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
            .await
            .expect("answered");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> Value {
        let resp = self.client.get(format!("{}{path}", self.base)).send().await.expect("answered");
        assert_eq!(resp.status(), 200, "GET {path}");
        resp.json().await.expect("json")
    }

    /// `PUT /admin/behaviour`; the status and the answer.
    pub async fn behave(&self, behaviour: Value) -> (u16, Value) {
        let resp =
            self.client.put(format!("{}/admin/behaviour", self.base)).json(&behaviour).send().await.expect("answered");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// `GET /admin/stats`, as JSON (what an operator sees).
    pub async fn stats(&self) -> Value {
        self.get("/admin/stats").await
    }

    /// Authorize with `key`; the authorization id of the `201`.
    pub async fn authorize(&self, key: &str) -> String {
        let (status, body) = self.post("/authorizations", key, json!({"amount_cents": 1250, "currency": "EUR"})).await;
        assert_eq!(status, 201, "{body}");
        body["authorization_id"].as_str().expect("authorization_id").to_owned()
    }

    /// Book with `key`; the tracking number of the `201`.
    pub async fn book(&self, key: &str) -> String {
        let (status, body) = self.post("/shipments", key, json!({"country": "NL"})).await;
        assert_eq!(status, 201, "{body}");
        body["tracking_number"].as_str().expect("tracking_number").to_owned()
    }
}
