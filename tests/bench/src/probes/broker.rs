//! The broker's message counters for one vhost, from the management API
//! (`GET /api/vhosts/<vhost>`, `message_stats`): messages published into the vhost and
//! messages delivered out of it. The API refreshes them every 5 s.

use std::str::FromStr;

use lapin::uri::AMQPUri;
use serde::Deserialize;

/// Cumulative counters of a vhost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BrokerCounters {
    pub published: u64,
    pub delivered: u64,
}

/// Reads the counters of the vhost of an AMQP URL.
#[derive(Debug, Clone)]
pub struct BrokerProbe {
    http: reqwest::Client,
    url: reqwest::Url,
    user: String,
    password: String,
}

/// `<api>/api/vhosts/<vhost>`, the vhost as one path segment (`/` is `%2F`).
pub fn vhost_url(api: &str, vhost: &str) -> anyhow::Result<reqwest::Url> {
    let mut url = reqwest::Url::parse(api).map_err(|e| anyhow::anyhow!("--rabbitmq-api `{api}`: {e}"))?;
    url.path_segments_mut()
        .map_err(|_| anyhow::anyhow!("--rabbitmq-api `{api}` cannot have a path"))?
        .pop_if_empty()
        .extend(["api", "vhosts", vhost]);
    Ok(url)
}

impl BrokerProbe {
    pub fn new(api: &str, amqp_url: &str) -> anyhow::Result<BrokerProbe> {
        let uri = AMQPUri::from_str(amqp_url).map_err(|e| anyhow::anyhow!("--amqp-url `{amqp_url}`: {e}"))?;
        Ok(BrokerProbe {
            http: reqwest::Client::builder().timeout(std::time::Duration::from_secs(10)).build()?,
            url: vhost_url(api, &uri.vhost)?,
            user: uri.authority.userinfo.username,
            password: uri.authority.userinfo.password,
        })
    }

    /// The counters now.
    pub async fn read(&self) -> anyhow::Result<BrokerCounters> {
        #[derive(Deserialize, Default)]
        struct Stats {
            #[serde(default)]
            publish: u64,
            #[serde(default)]
            deliver_get: u64,
        }
        #[derive(Deserialize)]
        struct Vhost {
            #[serde(default)]
            message_stats: Option<Stats>,
        }
        let resp = self.http.get(self.url.clone()).basic_auth(&self.user, Some(&self.password)).send().await?;
        anyhow::ensure!(resp.status().is_success(), "GET {} answered {}", self.url, resp.status());
        let stats = resp.json::<Vhost>().await?.message_stats.unwrap_or_default();
        Ok(BrokerCounters { published: stats.publish, delivered: stats.deliver_get })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vhost_is_one_encoded_path_segment() {
        assert_eq!(vhost_url("http://127.0.0.1:15672", "/").unwrap().as_str(), "http://127.0.0.1:15672/api/vhosts/%2F");
        assert_eq!(vhost_url("http://h:1/", "t_e2e_1").unwrap().as_str(), "http://h:1/api/vhosts/t_e2e_1");
        assert!(vhost_url("not a url", "/").is_err());
    }
}
