//! The REST client: one method per route the CLI uses, each answer read into
//! the API's own type (and kept as raw JSON too, so `--output json` shows
//! every field the server sent, including ones newer than this build).
//! A non-2xx answer becomes [`Error::Api`] with the server's problem+json.

use crate::config::Target;
use crate::Error;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use skiff_api::error::Problem;
use skiff_api::groups::{GroupList, GroupView};
use skiff_api::http::jobs::{JobList, JobView};
use skiff_api::model::{ContainerList, ContainerView};
use std::time::Duration;

/// An answer as the API's type, and as the JSON it came in.
#[derive(Debug)]
pub struct Fetched<T> {
    pub typed: T,
    pub raw: Value,
}

/// A page of a list route: its items and the cursor of the next page.
pub trait Page: DeserializeOwned {
    type Item;
    fn split(self) -> (Vec<Self::Item>, Option<String>);
}

impl Page for ContainerList {
    type Item = ContainerView;
    fn split(self) -> (Vec<ContainerView>, Option<String>) {
        (self.items, self.next)
    }
}

impl Page for GroupList {
    type Item = GroupView;
    fn split(self) -> (Vec<GroupView>, Option<String>) {
        (self.items, self.next)
    }
}

impl Page for JobList {
    type Item = JobView;
    fn split(self) -> (Vec<JobView>, Option<String>) {
        (self.items, self.next)
    }
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    api: String,
    token: String,
}

impl Client {
    pub fn new(target: &Target) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("skiff-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| Error::Transport {
                what: "building a client for",
                url: target.api.clone(),
                source,
            })?;
        Ok(Self {
            http,
            api: target.api.clone(),
            token: target.token.clone(),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api)
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, self.url(path))
            .bearer_auth(&self.token)
    }

    /// The WebSocket URL of `path` with `query` (`ws://`, or `wss://` for
    /// an https API).
    pub fn websocket_url(&self, path: &str, query: &[(&str, String)]) -> String {
        let Ok(mut url) = reqwest::Url::parse_with_params(&self.url(path), query) else {
            return self.url(path);
        };
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        // Both are special schemes, so the change is always allowed.
        let _ = url.set_scheme(scheme);
        url.into()
    }

    /// The bearer token (the WebSocket request sends it itself).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Sends `request`; a non-2xx answer becomes [`Error::Api`].
    pub async fn send(&self, path: &str, request: RequestBuilder) -> Result<Response, Error> {
        let response = request.send().await.map_err(|source| Error::Transport {
            what: "requesting",
            url: self.url(path),
            source,
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(problem_of(response).await)
    }

    /// Sends `request` and reads the answer as `T` (and as raw JSON).
    pub async fn fetch<T: DeserializeOwned>(
        &self,
        path: &str,
        request: RequestBuilder,
    ) -> Result<Fetched<T>, Error> {
        let url = self.url(path);
        let response = self.send(path, request).await?;
        let bytes = response.bytes().await.map_err(|source| Error::Transport {
            what: "reading the answer of",
            url: url.clone(),
            source,
        })?;
        let raw: Value = serde_json::from_slice(&bytes).map_err(|source| Error::Decode {
            url: url.clone(),
            source,
        })?;
        let typed =
            serde_json::from_value(raw.clone()).map_err(|source| Error::Decode { url, source })?;
        Ok(Fetched { typed, raw })
    }

    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Fetched<T>, Error> {
        self.fetch(path, self.request(Method::GET, path).query(query))
            .await
    }

    pub async fn post<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<Fetched<T>, Error> {
        self.fetch(path, self.request(Method::POST, path).json(body))
            .await
    }

    /// A POST without a body (stop, start, restart, cancel).
    pub async fn post_empty<T: DeserializeOwned>(&self, path: &str) -> Result<Fetched<T>, Error> {
        self.fetch(path, self.request(Method::POST, path)).await
    }

    /// DELETE; `Some` with the answer's JSON when there is one (202).
    pub async fn delete(&self, path: &str) -> Result<Option<Value>, Error> {
        let response = self.send(path, self.request(Method::DELETE, path)).await?;
        if response.status() == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        Ok(response.json().await.ok())
    }

    pub async fn container(&self, id: &str) -> Result<Fetched<ContainerView>, Error> {
        self.get(&format!("/v1/containers/{id}"), &[]).await
    }

    /// Every page of `GET /v1/containers` with `query` (state, label).
    pub async fn containers(
        &self,
        query: &[(&str, String)],
    ) -> Result<Vec<Fetched<ContainerView>>, Error> {
        self.all_pages::<ContainerList>("/v1/containers", query)
            .await
    }

    /// Every item of a paged list (`limit`, `cursor` -> `{items, next}`),
    /// each as its type and its raw JSON.
    pub async fn all_pages<P: Page>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Vec<Fetched<P::Item>>, Error> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut q = query.to_vec();
            q.push(("limit", "100".into()));
            if let Some(c) = &cursor {
                q.push(("cursor", c.clone()));
            }
            let page: Fetched<P> = self.get(path, &q).await?;
            let raws = page.raw["items"].as_array().cloned().unwrap_or_default();
            let (items, next) = page.typed.split();
            all.extend(
                items
                    .into_iter()
                    .zip(raws)
                    .map(|(typed, raw)| Fetched { typed, raw }),
            );
            match next {
                Some(next) => cursor = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// A container's id from its id, its name, or a unique prefix of its id.
    pub async fn resolve(&self, name_or_id: &str) -> Result<String, Error> {
        if uuid::Uuid::parse_str(name_or_id).is_ok() {
            return Ok(name_or_id.to_owned());
        }
        let all = self.containers(&[]).await?;
        if let Some(c) = all.iter().find(|c| c.typed.name == name_or_id) {
            return Ok(c.typed.id.to_string());
        }
        let matches: Vec<_> = all
            .iter()
            .filter(|c| c.typed.id.to_string().starts_with(name_or_id))
            .collect();
        match matches.as_slice() {
            [one] => Ok(one.typed.id.to_string()),
            [] => Err(Error::Resolve(format!(
                "no container named {name_or_id:?} or with an id starting with it"
            ))),
            many => Err(Error::Resolve(format!(
                "{name_or_id:?} is the start of {} container ids; give more of it",
                many.len()
            ))),
        }
    }
}

/// A non-2xx answer as a problem.
async fn problem_of(response: Response) -> Error {
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap_or_default();
    problem(status, &body)
}

/// The API's problem+json in `body`, else one made of the status and the
/// body's text.
pub fn problem(status: u16, body: &[u8]) -> Error {
    let problem = serde_json::from_slice::<Problem>(body).unwrap_or_else(|_| {
        let text = String::from_utf8_lossy(body).trim().to_owned();
        Problem {
            type_: "about:blank".into(),
            title: StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("error")
                .into(),
            status,
            detail: if text.is_empty() {
                "(no details)".into()
            } else {
                text
            },
            field: None,
            max: None,
            limit: None,
            use_: None,
        }
    });
    Error::Api {
        problem: Box::new(problem),
    }
}
