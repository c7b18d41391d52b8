//! The GetSpend handler (role client): the engine's spend rollup grouped as asked, scoped to what
//! the caller may see. A tenant's key sees its own budget's rows only (not even spend charged to
//! no budget); other keys see everything, or one budget key when asked.
//!
//! The grouping runs under the engine lock over the rows of the asked days: a year of
//! high-cardinality tags holds Route for its duration, so on a busy service ask for narrow ranges,
//! or run the offline report on a backup of the data dir.

use tonic::{Request, Response, Status};

use super::{metrics::Method, RouteService};
use crate::proto;
use crate::spend::GroupBy;
use crate::validation::echo;

/// Most grouping dimensions one request may ask for (every dimension once, plus a few tags).
pub const MAX_GROUP_BY: usize = 12;

impl RouteService {
    pub(super) async fn get_spend_impl(
        &self,
        request: Request<proto::GetSpendRequest>,
    ) -> Result<Response<proto::GetSpendResponse>, Status> {
        let caller = self.caller(Method::GetSpend, request.metadata())?;
        let r = request.into_inner();
        if r.group_by.len() > MAX_GROUP_BY {
            return Err(Status::invalid_argument(format!(
                "group_by has {} entries; at most {MAX_GROUP_BY} are allowed",
                r.group_by.len()
            )));
        }
        let by = r
            .group_by
            .iter()
            .map(|g| g.parse::<GroupBy>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Status::invalid_argument(format!("group_by: {e}")))?;
        let ms = |field: &str, v: i64| {
            u64::try_from(v).map_err(|_| {
                Status::invalid_argument(format!(
                    "{field} must be Unix milliseconds >= 0 (0 = unbounded), got {v}"
                ))
            })
        };
        let since = ms("since_unix_ms", r.since_unix_ms)?;
        let until = match ms("until_unix_ms", r.until_unix_ms)? {
            0 => u64::MAX,
            u => u,
        };
        if let Some(p) = &caller {
            if !r.budget_key.is_empty() && !p.may_see_budget(&r.budget_key) {
                return Err(Status::permission_denied(format!(
                    "key `{}` may only see its tenant's spend, not budget {}; omit budget_key",
                    p.key_name,
                    echo(&r.budget_key)
                )));
            }
        }
        let visible = |key: &str| {
            (r.budget_key.is_empty() || key == r.budget_key)
                && caller.as_ref().is_none_or(|p| p.may_see_budget(key))
        };
        let (groups, cluster_wide, served_by, detail) = match &self.shared.cluster {
            Some(c) => {
                let a = crate::cluster::spend::report(c, &self.shared, since, until, &by, visible)
                    .await;
                let id = c.config.replica_id.clone();
                (a.groups, a.cluster_wide, id, a.detail)
            }
            None => {
                let g = self
                    .shared
                    .lock()
                    .engine
                    .spend_report(since, until, &by, visible);
                (g, false, String::new(), String::new())
            }
        };
        Ok(Response::new(proto::GetSpendResponse {
            cluster_wide,
            served_by,
            detail,
            columns: by.iter().map(GroupBy::column).collect(),
            rows: groups
                .into_iter()
                .map(|g| proto::SpendRow {
                    key: g.key,
                    spend_usd: g.totals.spend_usd(),
                    spend_nusd: g.totals.spend_nusd,
                    requests: g.totals.requests,
                    input_tokens: g.totals.input_tokens,
                    output_tokens: g.totals.output_tokens,
                    mean_cost_usd: g.totals.mean_cost_usd(),
                })
                .collect(),
        }))
    }
}
