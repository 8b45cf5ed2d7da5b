//! Docker's remote network driver protocol (libnetwork's "remote" driver):
//! JSON over HTTP on a Unix socket in `/run/docker/plugins/`, one `POST
//! /Subsystem.Method` per call. This module is the wire: it routes each call
//! to a [`Driver`], answers what the driver does not implement with 404 (so
//! that libnetwork takes it as optional), and puts a failure in the field
//! Docker reads: `Err` for the network driver, `Error` for the IPAM
//! driver. The daemon is the driver ([`crate::daemon`]).
//!
//! dockerd looks for plugins only under `/run/docker/plugins/` (or spec
//! files under `/etc/docker/plugins/`): the socket's name is the driver's
//! name in `docker network create -d NAME`.

pub mod options;

use std::convert::Infallible;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::UnixListener;

use crate::error::{Error, Result};

/// Where dockerd looks for legacy plugins' sockets.
pub const PLUGIN_DIR: &str = "/run/docker/plugins";

/// A driver's answer to one call: the reply, the failure Docker shows its
/// user, or None for a method not implemented.
pub type Answer = Option<std::result::Result<Value, String>>;

/// What Docker asks of a network driver, by method name (`CreateNetwork`).
pub trait Driver: Send + Sync + 'static {
    fn call(
        self: Arc<Self>,
        method: String,
        body: Value,
    ) -> Pin<Box<dyn Future<Output = Answer> + Send>>;
}

/// The socket of driver `name`.
pub fn socket_path(name: &str) -> PathBuf {
    Path::new(PLUGIN_DIR).join(format!("{name}.sock"))
}

/// Bind driver `name`'s socket, replacing a stale one (a daemon that died
/// leaves it); one that answers is another daemon's, and is left alone.
pub fn bind(name: &str) -> Result<UnixListener> {
    let path = socket_path(name);
    std::fs::create_dir_all(PLUGIN_DIR)
        .map_err(|e| Error::io(format!("create {PLUGIN_DIR}"), e))?;
    if std::os::unix::net::UnixStream::connect(&path).is_ok() {
        return Err(Error::Conflict(format!(
            "{}: another process serves Docker's `{name}` driver there",
            path.display()
        )));
    }
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(Error::io(format!("remove stale {}", path.display()), e));
        }
        _ => {}
    }
    // Only root (dockerd) connects: no window with a looser mode.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let listener = UnixListener::bind(&path);
    nix::sys::stat::umask(old);
    listener.map_err(|e| Error::io(format!("listen on {}", path.display()), e))
}

/// Serve Docker on `listener` until the task is dropped.
pub async fn serve(listener: UnixListener, driver: Arc<impl Driver>) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("docker plugin: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let driver = driver.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| answer(driver.clone(), req));
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!("docker plugin: connection: {e}");
            }
        });
    }
}

async fn answer(
    driver: Arc<impl Driver>,
    req: Request<Incoming>,
) -> std::result::Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().trim_start_matches('/').to_string();
    if req.method() != Method::POST {
        return Ok(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"Err": "POST only"}),
        ));
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Ok(reply(
                StatusCode::BAD_REQUEST,
                &json!({"Err": e.to_string()}),
            ));
        }
    };
    let body: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return Ok(reply(
                    StatusCode::BAD_REQUEST,
                    &json!({"Err": format!("{path}: bad JSON: {e}")}),
                ));
            }
        }
    };
    tracing::debug!(%path, %body, "docker plugin call");
    let start = std::time::Instant::now();
    let out = driver.call(path.clone(), body).await;
    tracing::debug!(%path, took_us = start.elapsed().as_micros() as u64, "docker plugin answer");
    Ok(match out {
        None => reply(
            StatusCode::NOT_FOUND,
            &json!({"Err": format!("{path}: not implemented")}),
        ),
        Some(Ok(v)) => reply(StatusCode::OK, &v),
        Some(Err(e)) => {
            tracing::info!(%path, "docker plugin: {e}");
            // IPAM's answers name the field `Error`, the network driver's
            // `Err` (libnetwork's ipams/remote/api and drivers/remote/api).
            let field = match path.starts_with("IpamDriver.") {
                true => "Error",
                false => "Err",
            };
            reply(StatusCode::OK, &json!({ field: e }))
        }
    })
}

fn reply(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/vnd.docker.plugins.v1.2+json"),
    );
    r
}
