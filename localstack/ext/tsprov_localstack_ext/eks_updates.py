"""Mend: EKS updates, which the bundled moto does not route (UpdateClusterVersion,
UpdateClusterConfig, UpdateNodegroupConfig, DescribeUpdate). They change moto's
cluster and node group records as AWS documents and complete at once; each
update is kept so that DescribeUpdate can report it ``Successful``."""

import uuid
from datetime import datetime, timezone

from localstack.aws.api import CommonServiceException
from moto.eks.models import eks_backends

_UPDATES = {}


def _not_found(message):
    return CommonServiceException(code="ResourceNotFoundException", message=message, status_code=404)


def _cluster(context, name):
    cluster = eks_backends[context.account_id][context.region].clusters.get(name)
    if cluster is None:
        raise _not_found(f"No cluster found for name: {name}.")
    return cluster


def _record(context, name, nodegroup, kind, params):
    update = {
        "id": str(uuid.uuid4()),
        "status": "Successful",
        "type": kind,
        "params": [{"type": k, "value": str(v)} for k, v in params.items()],
        "createdAt": datetime.now(timezone.utc),
        "errors": [],
    }
    _UPDATES[(context.account_id, context.region, name, nodegroup or "", update["id"])] = update
    return {"update": update}


def update_cluster_version(context, request):
    cluster = _cluster(context, request["name"])
    cluster.version = request["version"]
    return _record(context, request["name"], None, "VersionUpdate", {"Version": request["version"]})


def update_cluster_config(context, request):
    cluster = _cluster(context, request["name"])
    if request.get("logging"):
        cluster.logging = request["logging"]
        kind = "LoggingUpdate"
    else:
        kind = "EndpointAccessUpdate"
    for key, value in (request.get("resourcesVpcConfig") or {}).items():
        cluster.resources_vpc_config[key] = value
    return _record(context, request["name"], None, kind, {})


def update_nodegroup_config(context, request):
    cluster = _cluster(context, request["clusterName"])
    group = cluster.nodegroups.get(request["nodegroupName"])
    if group is None:
        raise _not_found(f"No node group found for name: {request['nodegroupName']}.")
    if request.get("scalingConfig"):
        group.scaling_config = {**group.scaling_config, **request["scalingConfig"]}
    labels = request.get("labels") or {}
    group.labels = {k: v for k, v in (group.labels or {}).items() if k not in labels.get("removeLabels", [])}
    group.labels.update(labels.get("addOrUpdateLabels") or {})
    taints = request.get("taints") or {}
    removed = {t["key"] for t in taints.get("removeTaints", [])}
    added = {t["key"]: t for t in taints.get("addOrUpdateTaints", [])}
    group.taints = [t for t in (group.taints or []) if t["key"] not in removed and t["key"] not in added] + list(added.values())
    return _record(context, request["clusterName"], request["nodegroupName"], "ConfigUpdate", {})


def describe_update(context, request):
    key = (context.account_id, context.region, request["name"], request.get("nodegroupName") or "", request["updateId"])
    if key not in _UPDATES:
        raise _not_found(f"No update found for ID: {request['updateId']}.")
    return {"update": _UPDATES[key]}


HANDLERS = {
    "UpdateClusterVersion": update_cluster_version,
    "UpdateClusterConfig": update_cluster_config,
    "UpdateNodegroupConfig": update_nodegroup_config,
    "DescribeUpdate": describe_update,
}
