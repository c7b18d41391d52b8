//! The `GetAbReport` RPC (role `client`): an experiment's A/B report over the service's own
//! decision log, read on a blocking thread and computed by [`crate::ab_report`]. Without a data
//! dir there is no decision log to read: FAILED_PRECONDITION says so.

use std::collections::BTreeMap;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::metrics::Method;
use super::{convert, RouteService};
use crate::ab_report::ab_report;
use crate::proto;

impl RouteService {
    pub(super) async fn get_ab_report_impl(
        &self,
        request: Request<proto::GetAbReportRequest>,
    ) -> Result<Response<proto::GetAbReportResponse>, Status> {
        let caller = self.caller(Method::GetAbReport, request.metadata())?;
        let r = request.into_inner();
        if let (Some(p), false) = (&caller, r.task_class.is_empty()) {
            p.check_class(&r.task_class).map_err(convert::auth_status)?;
        }
        let window = |field: &str, v: i64| {
            u64::try_from(v).map_err(|_| {
                Status::invalid_argument(format!(
                    "{field}: must be a Unix time in ms >= 0 (0 = unbounded), got {v}"
                ))
            })
        };
        let since = window("since_unix_ms", r.since_unix_ms)?;
        let until = match window("until_unix_ms", r.until_unix_ms)? {
            0 => u64::MAX,
            u => u,
        };
        let sla: BTreeMap<String, f64> = {
            let core = self.shared.lock();
            let config = core.engine.config();
            if !r.task_class.is_empty() && !config.task_classes.contains_key(&r.task_class) {
                return Err(Status::not_found(format!(
                    "task_class {} is not configured",
                    crate::validation::echo(&r.task_class)
                )));
            }
            config
                .task_classes
                .iter()
                .filter_map(|(n, c)| c.max_latency_ms.map(|l| (n.clone(), l)))
                .collect()
        };
        let Some(store) = self.shared.store.as_ref().map(Arc::clone) else {
            return Err(Status::failed_precondition(
                "GetAbReport reads the decision log, and this service keeps none \
                 (storage.durability = \"memory\"); run it with a data dir",
            ));
        };
        let records = tokio::task::spawn_blocking(move || store.with(|s| s.export(since, until)))
            .await
            .map_err(|e| Status::internal(format!("reading the decision log failed: {e}")))?
            .map_err(|e| Status::internal(e.to_string()))?;
        let mut report = ab_report(&records, &r.task_class, &sla);
        if let Some(p) = &caller {
            report.groups.retain(|g| p.may_use_class(&g.task_class));
            report
                .differences
                .retain(|d| p.may_use_class(&d.task_class));
        }
        Ok(Response::new(report.into()))
    }
}
