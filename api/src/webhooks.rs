//! Completion webhooks: each replica sends the deliveries that are due
//! ([`crate::store::webhooks`]), signed the way payment webhooks are:
//! `Skiff-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`
//! with the tenant's secret. A failed attempt (no answer, or not 2xx) is
//! retried after `SKIFF_WEBHOOK_RETRY_BASE_S` doubling up to
//! `SKIFF_WEBHOOK_RETRY_MAX_S`, until `SKIFF_WEBHOOK_GIVE_UP_S` after the
//! delivery was queued. Delivery is at least once: a receiver should
//! de-duplicate on `Skiff-Delivery`.

use crate::store::webhooks::DueDelivery;
use crate::AppState;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long a claimed attempt may take before another replica may retry it.
const LEASE: Duration = Duration::from_secs(30);
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
const BATCH: i64 = 16;

/// The `Skiff-Signature` header for `body` sent at `t` (Unix seconds).
pub fn signature(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The wait before attempt `attempts + 1`: `base` doubling, at most `max`.
pub fn retry_delay(attempts: i32, base: Duration, max: Duration) -> Duration {
    let exponent = attempts.saturating_sub(1).clamp(0, 30) as u32;
    base.saturating_mul(2u32.saturating_pow(exponent)).min(max)
}

/// Sends due deliveries until `cancel`.
pub async fn run(state: Arc<AppState>, cancel: CancellationToken) {
    let client = match reqwest::Client::builder()
        .timeout(SEND_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(client) => client,
        Err(err) => {
            tracing::error!(error = %err, "webhook client: cannot build; webhooks are not sent");
            return;
        }
    };
    let poll = Duration::from_secs_f64(state.config.webhook_poll_s);
    loop {
        match state.store.claim_deliveries(LEASE, BATCH).await {
            Ok(due) => {
                for delivery in due {
                    if let Err(err) = attempt(&state, &client, delivery).await {
                        tracing::warn!(error = %err, "webhook attempt could not be recorded");
                    }
                }
            }
            Err(err) => tracing::warn!(error = %err, "claiming webhook deliveries failed"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(poll) => {}
        }
    }
}

async fn attempt(
    state: &AppState,
    client: &reqwest::Client,
    delivery: DueDelivery,
) -> Result<(), crate::store::StoreError> {
    let store = &state.store;
    let body = match &delivery.body {
        Some(body) => body.clone(),
        None => {
            let Some(rendered) = render(state, &delivery).await else {
                // Deleted meanwhile: nothing to tell.
                return store
                    .delivery_failed(delivery.id, None, "its container or job is gone", None)
                    .await;
            };
            store.save_delivery_body(delivery.id, &rendered).await?
        }
    };
    let Some(secret) = delivery.secret.as_deref() else {
        return store
            .delivery_failed(delivery.id, None, "the tenant has no webhook secret", None)
            .await;
    };
    let t = chrono::Utc::now().timestamp();
    let sent = client
        .post(&delivery.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("Skiff-Signature", signature(secret, t, &body))
        .header("Skiff-Delivery", delivery.id.to_string())
        .body(body)
        .send()
        .await;
    let (status, error) = match sent {
        Ok(response) if response.status().is_success() => {
            tracing::info!(delivery = delivery.id, container = ?delivery.container_id,
                job = ?delivery.job_id, attempts = delivery.attempts, "webhook delivered");
            return store
                .delivery_succeeded(delivery.id, response.status().as_u16())
                .await;
        }
        Ok(response) => (
            Some(response.status().as_u16()),
            format!("answered {}", response.status()),
        ),
        Err(err) => (None, err.to_string()),
    };
    let config = &state.config;
    let given_up = chrono::Utc::now() - delivery.created_at
        >= chrono::Duration::milliseconds((config.webhook_give_up_s * 1000.0) as i64);
    let retry_in = (!given_up).then(|| {
        retry_delay(
            delivery.attempts,
            Duration::from_secs_f64(config.webhook_retry_base_s),
            Duration::from_secs_f64(config.webhook_retry_max_s),
        )
    });
    tracing::info!(delivery = delivery.id, attempts = delivery.attempts, ?status, %error,
        ?retry_in, "webhook attempt failed");
    store
        .delivery_failed(delivery.id, status, &error, retry_in)
        .await
}

/// The final object a delivery sends: the container or the job as the API
/// shows it. None when it is gone (or cannot be read now).
async fn render(state: &AppState, delivery: &DueDelivery) -> Option<Vec<u8>> {
    let tenant = delivery.tenant_id;
    let rendered = match (delivery.container_id, delivery.job_id) {
        (Some(id), _) => crate::http::containers::current_view(state, tenant, id)
            .await
            .ok()
            .flatten()
            .map(|view| serde_json::to_vec(&view)),
        (None, Some(id)) => crate::http::jobs::current_view(state, tenant, id)
            .await
            .ok()
            .flatten()
            .map(|view| serde_json::to_vec(&view)),
        (None, None) => None,
    };
    rendered.and_then(Result::ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_double_from_the_base_up_to_the_max() {
        let (base, max) = (Duration::from_secs(5), Duration::from_secs(600));
        let cases = [(1, 5), (2, 10), (3, 20), (8, 600), (40, 600), (0, 5)];
        for (attempts, want) in cases {
            assert_eq!(
                retry_delay(attempts, base, max),
                Duration::from_secs(want),
                "{attempts}"
            );
        }
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_t_dot_body() {
        // Fixed inputs, checked with `printf '1700000000.{}' | openssl dgst -sha256 -hmac whsec`.
        let sig = signature("whsec", 1_700_000_000, b"{}");
        assert_eq!(
            sig,
            "t=1700000000,v1=7d44587dddbaf4c7f70fef20f48cd594834ffea1641e3ac227b84408298738af"
        );
        assert_ne!(sig, signature("other", 1_700_000_000, b"{}"));
        assert_ne!(sig, signature("whsec", 1_700_000_001, b"{}"));
    }
}
