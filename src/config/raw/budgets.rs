//! `[budgets.*]` and `[alerts]` as written, and their validation (a child of `raw`, so it shares
//! its key-path helpers).

use super::*;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBudget {
    pub(super) period: String,
    pub(super) limit_usd: f64,
    pub(super) time_zone: Option<String>,
    pub(super) on_cap: Option<String>,
    pub(super) alert_thresholds: Option<Vec<f64>>,
    pub(super) reservation_ttl_secs: Option<f64>,
    pub(super) pacing_max_multiplier: Option<f64>,
    pub(super) pacing_min_multiplier: Option<f64>,
    pub(super) pacing_gain: Option<f64>,
    pub(super) pacing_warmup_fraction: Option<f64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAlerts {
    pub(super) webhook_url: Option<String>,
    pub(super) timeout_ms: Option<i64>,
    pub(super) max_retries: Option<i64>,
}

impl RawBudget {
    pub(super) fn validate(
        self,
        path: &str,
        key: String,
        pending_ttl_secs: f64,
    ) -> Result<BudgetConfig, ConfigError> {
        let period = match self.period.as_str() {
            "daily" => Period::Daily,
            "weekly" => Period::Weekly,
            "monthly" => Period::Monthly,
            other => {
                return Err(err(
                    format!("{path}.period"),
                    format!("must be \"daily\", \"weekly\" or \"monthly\", got {other:?}"),
                ))
            }
        };
        let time_zone = match self.time_zone.as_deref() {
            None => chrono_tz::Tz::UTC,
            Some(name) => name.parse::<chrono_tz::Tz>().map_err(|_| {
                err(
                    format!("{path}.time_zone"),
                    format!(
                        "unknown time zone {name:?}; use an IANA name like \"UTC\" or \
                         \"Europe/Berlin\""
                    ),
                )
            })?,
        };
        let on_cap = match self.on_cap.as_deref() {
            None | Some("cheapest") => OnCap::Cheapest,
            Some("reject") => OnCap::Reject,
            Some(other) => {
                return Err(err(
                    format!("{path}.on_cap"),
                    format!("must be \"cheapest\" or \"reject\", got {other:?}"),
                ))
            }
        };
        let mut cfg = BudgetConfig::new(key, period, self.limit_usd);
        cfg.time_zone = time_zone;
        cfg.on_cap = on_cap;
        if let Some(t) = self.alert_thresholds {
            cfg.alert_thresholds = t;
        }
        // A reservation must live as long as its decision accepts feedback: dropped earlier, other
        // requests fill the headroom and the late settlement overruns the limit.
        cfg.reservation_ttl_secs = match self.reservation_ttl_secs {
            None => budget::DEFAULT_RESERVATION_TTL_SECS.max(pending_ttl_secs),
            Some(t) if t < pending_ttl_secs => {
                return Err(err(
                    format!("{path}.reservation_ttl_secs"),
                    format!(
                        "must be >= limits.pending_ttl_secs ({pending_ttl_secs}), got {t}: a \
                         reservation dropped while its decision still accepts feedback lets the \
                         late settlement overrun the limit; raise {path}.reservation_ttl_secs or \
                         lower limits.pending_ttl_secs"
                    ),
                ))
            }
            Some(t) => t,
        };
        cfg.pacing_max_multiplier = self
            .pacing_max_multiplier
            .unwrap_or(budget::DEFAULT_PACING_MAX_MULTIPLIER);
        cfg.pacing_min_multiplier = self
            .pacing_min_multiplier
            .unwrap_or(budget::DEFAULT_PACING_MIN_MULTIPLIER);
        cfg.pacing_gain = self.pacing_gain.unwrap_or(budget::DEFAULT_PACING_GAIN);
        cfg.pacing_warmup_fraction = self
            .pacing_warmup_fraction
            .unwrap_or(budget::DEFAULT_PACING_WARMUP_FRACTION);
        cfg.validate().map_err(|e| field_err(path, e))?;
        Ok(cfg)
    }
}

impl RawAlerts {
    pub(super) fn validate(self) -> Result<AlertsConfig, ConfigError> {
        let webhook_url = match self.webhook_url {
            None => None,
            Some(u) => {
                let parsed = reqwest::Url::parse(&u).map_err(|e| {
                    err(
                        "alerts.webhook_url",
                        format!("must be an http(s) URL, got {u:?}: {e}"),
                    )
                })?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(err(
                        "alerts.webhook_url",
                        format!("must be an http or https URL, got {u:?}"),
                    ));
                }
                Some(u)
            }
        };
        let timeout_ms = positive_int(
            "alerts.timeout_ms",
            self.timeout_ms.unwrap_or(DEFAULT_ALERT_TIMEOUT_MS as i64),
            1,
        )?;
        let max_retries = self
            .max_retries
            .unwrap_or(i64::from(DEFAULT_ALERT_MAX_RETRIES));
        if !(0..=MAX_ALERT_RETRIES).contains(&max_retries) {
            return Err(err(
                "alerts.max_retries",
                format!("must be an integer in [0, {MAX_ALERT_RETRIES}], got {max_retries}"),
            ));
        }
        Ok(AlertsConfig {
            webhook_url,
            timeout_ms,
            max_retries: max_retries as u32,
        })
    }
}
