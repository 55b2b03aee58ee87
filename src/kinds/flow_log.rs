//! `flow_log`: VPC flow logs into a CloudWatch Logs group, delivered by an IAM
//! role. Created with a client token, so a retried create never makes a second.

use anyhow::{bail, Result};
use async_trait::async_trait;
use aws_sdk_ec2::types::{FlowLogsResourceType, LogDestinationType, ResourceType, TrafficType};

use super::ec2::{stack_filter, tag_spec, tags_of, update_tags};
use super::{Cx, Desired, Kind, Live};
use crate::aws::{api, error_code, eventually};
use crate::model::{Attrs, Value};
use crate::plan::read::fnv;
use crate::schema::{Default, Field, Ty};

pub struct FlowLog;

const FIELDS: &[Field] = &[
    Field::new("vpc", Ty::Ref(&["vpc"]), "the VPC whose traffic is logged").replace(),
    Field::new("log_group", Ty::Ref(&["log_group"]), "where the records go").replace(),
    Field::new(
        "role",
        Ty::Ref(&["iam_role"]),
        "the role that delivers them",
    )
    .replace(),
    Field::new(
        "traffic_type",
        Ty::Enum(&["ALL", "ACCEPT", "REJECT"]),
        "which traffic is logged",
    )
    .default(Default::Str("ALL"))
    .replace(),
];

#[async_trait]
impl Kind for FlowLog {
    fn name(&self) -> &'static str {
        "flow_log"
    }
    fn fields(&self) -> &'static [Field] {
        FIELDS
    }

    async fn discover(&self, cx: &Cx) -> Result<Vec<Live>> {
        let logs = cx
            .aws
            .ec2
            .describe_flow_logs()
            .filter(stack_filter(&cx.stack))
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(api("DescribeFlowLogs"))?;
        Ok(logs
            .iter()
            .filter_map(|f| {
                let mut attrs = Attrs::new();
                attrs.insert(
                    "vpc".into(),
                    Value::str(f.resource_id().unwrap_or_default()),
                );
                attrs.insert(
                    "log_group".into(),
                    Value::str(f.log_group_name().unwrap_or_default()),
                );
                attrs.insert(
                    "role".into(),
                    Value::str(f.deliver_logs_permission_arn().unwrap_or_default()),
                );
                attrs.insert(
                    "traffic_type".into(),
                    Value::str(f.traffic_type().map(|t| t.as_str()).unwrap_or_default()),
                );
                Live::from_tags(
                    f.flow_log_id().unwrap_or_default(),
                    tags_of(f.tags()),
                    attrs,
                )
            })
            .collect())
    }

    async fn create(&self, cx: &Cx, want: &Desired) -> Result<Live> {
        let token = format!(
            "tsprov-{:016x}",
            fnv(format!(
                "{}/{}/{}/{}/{}",
                cx.stack,
                cx.region,
                want.address,
                want.str("vpc"),
                want.str("log_group")
            )
            .as_bytes())
        );
        // The delivery role may be minutes old: IAM is eventually consistent.
        let out = eventually(|| async {
            cx.aws
                .ec2
                .create_flow_logs()
                .resource_ids(want.str("vpc"))
                .resource_type(FlowLogsResourceType::Vpc)
                .traffic_type(TrafficType::from(want.str("traffic_type")))
                .log_destination_type(LogDestinationType::CloudWatchLogs)
                .log_group_name(want.str("log_group"))
                .deliver_logs_permission_arn(want.str("role"))
                .client_token(&token)
                .tag_specifications(tag_spec(ResourceType::VpcFlowLog, &want.tags))
                .send()
                .await
                .map_err(api("CreateFlowLogs"))
        })
        .await?;
        if let Some(failure) = out.unsuccessful().first() {
            bail!(
                "CreateFlowLogs: {}",
                failure
                    .error()
                    .and_then(|e| e.message())
                    .unwrap_or("failed")
            );
        }
        let id = out.flow_log_ids().first().cloned().unwrap_or_default();
        Ok(Live::from_tags(id, want.tags.clone(), want.attrs.clone())
            .expect("desired tags carry the address"))
    }

    async fn update(
        &self,
        cx: &Cx,
        want: &Desired,
        live: &Live,
        _changed: &[String],
    ) -> Result<()> {
        update_tags(cx, &live.id, &live.tags, &want.tags).await
    }

    async fn delete(&self, cx: &Cx, live: &Live) -> Result<()> {
        let out = cx
            .aws
            .ec2
            .delete_flow_logs()
            .flow_log_ids(&live.id)
            .send()
            .await
            .map_err(api("DeleteFlowLogs"));
        match out {
            Err(e) if error_code(&e) == Some("InvalidFlowLogId.NotFound") => Ok(()),
            Err(e) => Err(e),
            Ok(out) => match out.unsuccessful().first() {
                Some(f)
                    if f.error().and_then(|e| e.code()) != Some("InvalidFlowLogId.NotFound") =>
                {
                    bail!(
                        "DeleteFlowLogs: {}",
                        f.error().and_then(|e| e.message()).unwrap_or("failed")
                    )
                }
                _ => Ok(()),
            },
        }
    }
}
