//! `skiff login --api URL [--token T]`: checks the token against the API,
//! then saves both as a profile (see [`crate::config`]).

use crate::client::Client;
use crate::config::{self, Overrides, Target, DEFAULT_PROFILE};
use crate::Error;
use reqwest::Method;

pub async fn login(overrides: &Overrides) -> Result<i32, Error> {
    let api = overrides
        .api
        .clone()
        .ok_or_else(|| Error::NotConfigured("skiff login needs --api URL".into()))?;
    let api = api.trim_end_matches('/').to_owned();
    let token = match &overrides.token {
        Some(token) => token.clone(),
        None => {
            eprintln!("token (then Enter):");
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|source| Error::File {
                    what: "reading the token from",
                    path: "stdin".into(),
                    source,
                })?;
            line.trim().to_owned()
        }
    };
    if token.is_empty() {
        return Err(Error::NotConfigured("no token given".into()));
    }
    // A wrong URL or token fails here, not at the next command. Only 401
    // refuses: an admin token is 403 on tenant routes and still worth saving.
    let client = Client::new(&Target {
        api: api.clone(),
        token: token.clone(),
    })?;
    let path = "/v1/quota";
    match client.send(path, client.request(Method::GET, path)).await {
        Ok(_) => {}
        Err(Error::Api { problem }) if problem.status != 401 => {}
        Err(e) => return Err(e),
    }
    let profile = overrides.profile.as_deref().unwrap_or(DEFAULT_PROFILE);
    let file = config::save_profile(&config::dir()?, profile, &api, &token)?;
    crate::outln!(
        "saved profile {profile}: {api} (token in {})",
        file.display()
    );
    Ok(0)
}
