//! Building the S3 client: the `AWS_*` environment first, then the `[s3]`
//! config section on top, with timeouts and retries suited to downloading
//! large files.

use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::{BackoffConfig, ClientOptions, RetryConfig};

use crate::config::S3Config;

/// Retries per request when `[s3] max_retries` is 0 (object_store's own
/// default): with exponential backoff from 100 ms capped at 15 s, ten
/// retries ride out roughly a minute of S3 throttling or a flapping network.
const DEFAULT_MAX_RETRIES: usize = 10;

/// No retry starts later than this after the first attempt of a request.
/// object_store's default; it also bounds how long signed credentials must
/// stay valid, which is why it stays well under AWS's 5 minute limit.
const RETRY_TIMEOUT: Duration = Duration::from_secs(180);

/// The builder for bucket `bucket`. `env` is the process environment (a
/// parameter so tests can supply their own).
///
/// Precedence: every `AWS_*` variable object_store knows (keys, session
/// token, region, endpoint, web identity, container credentials...), then
/// the non-empty fields of `[s3]`, then the bucket from the URI. A custom
/// endpoint switches to path-style requests (what MinIO, Ceph and moto
/// expect) and, when it is `http://`, allows plain HTTP.
pub(crate) fn builder(
    bucket: &str,
    config: &S3Config,
    read_timeout: Duration,
    connect_timeout: Duration,
    env: impl IntoIterator<Item = (String, String)>,
) -> AmazonS3Builder {
    // object_store's default 30 s timeout covers a whole request *including
    // its body*, so any file that takes longer than 30 s to download would
    // fail. Disable it and detect stalls with a per-read timeout instead.
    let client = ClientOptions::new()
        .with_timeout_disabled()
        .with_connect_timeout(connect_timeout)
        .with_read_timeout(read_timeout);
    let mut builder = AmazonS3Builder::new().with_client_options(client);
    for (name, value) in env {
        if !name.starts_with("AWS_") {
            continue;
        }
        if let Ok(key) = name.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
            builder = builder.with_config(key, value);
        }
    }
    if !config.region.is_empty() {
        builder = builder.with_region(&config.region);
    }
    if !config.access_key_id.is_empty() {
        builder = builder.with_access_key_id(&config.access_key_id);
    }
    if !config.secret_access_key.is_empty() {
        builder = builder.with_secret_access_key(&config.secret_access_key);
    }
    if !config.endpoint.is_empty() {
        builder = builder
            .with_endpoint(&config.endpoint)
            .with_virtual_hosted_style_request(false);
    }
    let endpoint = builder
        .get_config_value(&AmazonS3ConfigKey::Endpoint)
        .unwrap_or_default();
    if endpoint.starts_with("http://") {
        builder = builder.with_allow_http(true);
    }
    let max_retries = if config.max_retries == 0 {
        DEFAULT_MAX_RETRIES
    } else {
        config.max_retries
    };
    builder.with_bucket_name(bucket).with_retry(RetryConfig {
        // 100 ms doubling up to 15 s: object_store's defaults.
        backoff: BackoffConfig::default(),
        max_retries,
        retry_timeout: RETRY_TIMEOUT,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn value(builder: &AmazonS3Builder, key: AmazonS3ConfigKey) -> Option<String> {
        builder.get_config_value(&key)
    }

    const T: Duration = Duration::from_secs(30);

    #[test]
    fn environment_supplies_credentials_region_and_endpoint() {
        let b = builder(
            "bucket",
            &S3Config::default(),
            T,
            T,
            env(&[
                ("AWS_ACCESS_KEY_ID", "env-key"),
                ("AWS_SECRET_ACCESS_KEY", "env-secret"),
                ("AWS_REGION", "eu-west-1"),
                ("AWS_ENDPOINT_URL", "http://127.0.0.1:9000"),
                ("AWS_BUCKET", "not-this-one"),
                ("HOME", "/root"),
            ]),
        );
        assert_eq!(
            value(&b, AmazonS3ConfigKey::AccessKeyId).as_deref(),
            Some("env-key")
        );
        assert_eq!(
            value(&b, AmazonS3ConfigKey::SecretAccessKey).as_deref(),
            Some("env-secret")
        );
        assert_eq!(
            value(&b, AmazonS3ConfigKey::Region).as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(
            value(&b, AmazonS3ConfigKey::Bucket).as_deref(),
            Some("bucket")
        );
        assert_eq!(
            value(
                &b,
                AmazonS3ConfigKey::Client(object_store::ClientConfigKey::AllowHttp)
            )
            .as_deref(),
            Some("true"),
            "an http:// endpoint from the environment allows plain HTTP"
        );
    }

    #[test]
    fn config_overrides_environment() {
        let config = S3Config {
            region: "us-west-2".into(),
            access_key_id: "cfg-key".into(),
            secret_access_key: "cfg-secret".into(),
            endpoint: "https://minio.internal".into(),
            max_retries: 3,
        };
        let b = builder(
            "bucket",
            &config,
            T,
            T,
            env(&[
                ("AWS_ACCESS_KEY_ID", "env-key"),
                ("AWS_SECRET_ACCESS_KEY", "env-secret"),
                ("AWS_REGION", "eu-west-1"),
                ("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "true"),
            ]),
        );
        assert_eq!(
            value(&b, AmazonS3ConfigKey::AccessKeyId).as_deref(),
            Some("cfg-key")
        );
        assert_eq!(
            value(&b, AmazonS3ConfigKey::SecretAccessKey).as_deref(),
            Some("cfg-secret")
        );
        assert_eq!(
            value(&b, AmazonS3ConfigKey::Region).as_deref(),
            Some("us-west-2")
        );
        assert_eq!(
            value(&b, AmazonS3ConfigKey::Endpoint).as_deref(),
            Some("https://minio.internal")
        );
        assert_eq!(
            value(&b, AmazonS3ConfigKey::VirtualHostedStyleRequest).as_deref(),
            Some("false"),
            "a custom endpoint uses path-style requests"
        );
        assert_ne!(
            value(
                &b,
                AmazonS3ConfigKey::Client(object_store::ClientConfigKey::AllowHttp)
            )
            .as_deref(),
            Some("true"),
            "https endpoints do not enable plain HTTP"
        );
    }

    #[test]
    fn whole_request_timeout_is_disabled_and_read_timeout_set() {
        let b = builder(
            "b",
            &S3Config::default(),
            Duration::from_secs(7),
            T,
            Vec::new(),
        );
        use object_store::ClientConfigKey as C;
        assert_eq!(value(&b, AmazonS3ConfigKey::Client(C::Timeout)), None);
        assert_eq!(
            value(&b, AmazonS3ConfigKey::Client(C::ReadTimeout)).as_deref(),
            Some("7s")
        );
    }
}
