//! Checks of a running process's OpenAPI document, for tests (feature `testing`):
//!
//! - [`assert_served_as_documented`]: every operation of the document reaches a handler (not the
//!   fallback, not `405`), and on every documented path the router serves exactly the documented
//!   methods (its `405` answers' `Allow` header says which it serves);
//! - [`validate_spec`]: `openapi-spec-validator` accepts the document;
//! - [`schemathesis`]: Schemathesis's run against the live process passes.
//!
//! The Python tools come from `infra/pytools` ([`python_tools`]), a virtualenv under `target/`. If
//! no Python 3 is installed at all, the checks that need it are skipped and say so on stderr.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use reqwest::Method;
use serde_json::Value;

use crate::http::NO_SUCH_ENDPOINT;

/// The methods an OpenAPI path item may hold, lowercase as in the document.
const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];
/// The methods probed for `405` on every documented path.
const PROBED: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// `GET <base>/openapi.json`.
pub async fn fetch_document(base: &str) -> Value {
    let response = reqwest::get(format!("{base}{}", crate::openapi::OPENAPI_PATH)).await.expect("GET /openapi.json");
    assert_eq!(response.status(), reqwest::StatusCode::OK, "GET /openapi.json");
    response.json().await.expect("the document is JSON")
}

/// Every operation of `doc` as `(METHOD, path template)`.
pub fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for method in METHODS.iter().filter(|m| item.get(**m).is_some()) {
            found.insert((method.to_ascii_uppercase(), path.clone()));
        }
    }
    found
}

/// `path` with each `{parameter}` replaced by a value of its documented type: the first value of an
/// `enum`, the nil UUID for `format: uuid`, else `x`.
fn concrete_path(path: &str, operation: &Value) -> String {
    let parameters = operation["parameters"].as_array().cloned().unwrap_or_default();
    let mut concrete = path.to_owned();
    for parameter in parameters.iter().filter(|p| p["in"] == "path") {
        let name = parameter["name"].as_str().unwrap_or_default();
        let schema = &parameter["schema"];
        let value = match (schema["enum"].get(0).and_then(Value::as_str), schema["format"].as_str()) {
            (Some(first), _) => first.to_owned(),
            (None, Some("uuid")) => uuid::Uuid::nil().to_string(),
            _ => "x".to_owned(),
        };
        concrete = concrete.replace(&format!("{{{name}}}"), &value);
    }
    concrete
}

/// Send `method` to `url` (no body), with `auth` as a bearer token if given; status, `Allow`,
/// and the problem's `detail` if the answer is one.
async fn probe(method: &str, url: &str, auth: Option<&str>) -> (u16, BTreeSet<String>, Option<String>) {
    let method = Method::from_bytes(method.as_bytes()).expect("an HTTP method");
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(token) = auth {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("an answer");
    let status = response.status().as_u16();
    let allow = response.headers().get("allow").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let allow = allow.split(',').map(|m| m.trim().to_ascii_uppercase()).filter(|m| !m.is_empty()).collect();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (status, allow, body["detail"].as_str().map(str::to_owned))
}

/// The router behind `base` serves exactly the operations of `doc`: each documented operation
/// reaches a handler, and each documented path answers every other method with `405` and an
/// `Allow` header naming the documented ones. `auth` is sent as a bearer token.
pub async fn assert_served_as_documented(base: &str, doc: &Value, auth: Option<&str>) {
    for (path, item) in doc["paths"].as_object().expect("paths").iter() {
        let documented: BTreeSet<String> =
            METHODS.iter().filter(|m| item.get(**m).is_some()).map(|m| m.to_ascii_uppercase()).collect();
        let first = documented.iter().next().expect("a path item with an operation").to_ascii_lowercase();
        let url = format!("{base}{}", concrete_path(path, &item[first.as_str()]));
        for method in &documented {
            let (status, _, detail) = probe(method, &url, auth).await;
            assert_ne!(status, 405, "{method} {path} is documented, but the router does not serve it");
            let fallback = status == 404 && detail.as_deref() == Some(NO_SUCH_ENDPOINT);
            assert!(!fallback, "{method} {path} is documented, but no route serves {url}");
        }
        for method in PROBED.iter().filter(|m| !documented.contains(**m)) {
            let (status, allow, _) = probe(method, &url, auth).await;
            assert_eq!(status, 405, "{method} {path}: served, but not documented");
            let mut expected = documented.clone();
            if expected.contains("GET") {
                expected.insert("HEAD".into());
            }
            assert_eq!(allow, expected, "{path}: the methods served (Allow) are not the documented ones");
        }
    }
}

/// The bin directory of the virtualenv `infra/pytools` prepares; `None` (after saying so) when no
/// Python 3 is installed at all. Panics, with the script's output, if the install fails.
pub fn python_tools() -> Option<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("pytools");
    let output = Command::new("bash").arg(&script).output().expect("run infra/pytools");
    let stderr = String::from_utf8_lossy(&output.stderr);
    match output.status.code() {
        Some(0) => Some(PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())),
        Some(3) => {
            eprintln!("SKIPPED: no Python 3.10+ installed, so this OpenAPI check did not run ({})", stderr.trim());
            None
        }
        _ => panic!("infra/pytools failed ({}):\n{stderr}", output.status),
    }
}

/// `doc` written to a fresh file under the system's temporary directory.
fn document_file(doc: &Value) -> PathBuf {
    let path = std::env::temp_dir().join(format!("{}.openapi.json", crate::testing::unique_name("doc")));
    std::fs::write(&path, doc.to_string()).expect("write the document");
    path
}

/// `openapi-spec-validator` accepts `doc`.
pub fn validate_spec(tools: &Path, doc: &Value) {
    let file = document_file(doc);
    let output =
        Command::new(tools.join("openapi-spec-validator")).arg(&file).output().expect("run openapi-spec-validator");
    let _ = std::fs::remove_file(&file);
    assert!(
        output.status.success(),
        "openapi-spec-validator refuses the document:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Run `st run <base>/openapi.json` with Schemathesis's default checks (all of them), the hooks of
/// `infra/schemathesis_hooks.py` and `args`; panics unless it passes (its report goes to stderr).
/// Blocking: call it from `spawn_blocking`.
pub fn schemathesis(tools: &Path, base: &str, args: &[String]) {
    let schema = format!("{base}{}", crate::openapi::OPENAPI_PATH);
    let output = Command::new(tools.join("st"))
        .args(["--no-color", "run", &schema, "--generation-database", "none"])
        .args(args)
        .env("SCHEMATHESIS_HOOKS", Path::new(env!("CARGO_MANIFEST_DIR")).join("schemathesis_hooks.py"))
        // Its caches go where it runs: in the virtualenv, not in the source tree.
        .current_dir(tools.parent().unwrap_or(tools))
        .output()
        .expect("run schemathesis");
    eprintln!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "Schemathesis did not pass ({}): its report is above", output.status);
}

/// Every check of this module on the process behind `base`: its document lists exactly `routes`
/// (`(METHOD, path template)`) and the router serves them as documented; then, unless no Python
/// is installed, `openapi-spec-validator` accepts it and Schemathesis (`max_examples` per
/// operation, a fixed seed) passes. `auth` is sent as a bearer token.
pub async fn check_live_document(base: &str, routes: &[(&str, &str)], auth: Option<&str>, max_examples: u32) {
    let doc = fetch_document(base).await;
    let expected: BTreeSet<(String, String)> = routes.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    assert_eq!(operations(&doc), expected, "the documented operations");
    assert_served_as_documented(base, &doc, auth).await;
    let Some(tools) = python_tools() else { return };
    let mut args = vec!["--max-examples".to_owned(), max_examples.to_string(), "--seed".to_owned(), SEED.to_owned()];
    args.extend(["--request-timeout".to_owned(), "10".to_owned(), "--workers".to_owned(), "2".to_owned()]);
    if let Some(token) = auth {
        args.extend(["--header".to_owned(), format!("Authorization: Bearer {token}")]);
    }
    let base = base.to_owned();
    tokio::task::spawn_blocking(move || {
        validate_spec(&tools, &doc);
        schemathesis(&tools, &base, &args);
    })
    .await
    .expect("the Python tools ran");
}

/// Schemathesis's seed: the same cases every run, so a failure reproduces (`st run ... --seed`).
pub const SEED: &str = "20261201";
