"""Small, named mends where the bundled moto contradicts AWS's documentation.

Each runs once as LocalStack starts (hook ``on_infra_start``) and is tested in
``localstack/test_extension.py``.
"""

from localstack.runtime import hooks


@hooks.on_infra_start()
def mend_nat_gateway_tag_filters():
    """DescribeNatGateways ignores ``tag:<key>``, ``tag-key`` and ``tag-value`` filters
    (moto only knows nat-gateway-id, vpc-id, subnet-id and state), so a tag-filtered
    read returns every NAT gateway of the region. AWS documents these filters."""
    from moto.ec2.models.nat_gateways import NatGatewayBackend
    from moto.ec2.utils import tag_filter_matches

    original = NatGatewayBackend.describe_nat_gateways
    if getattr(original, "_tsprov_mended", False):
        return

    def describe_nat_gateways(self, filters, nat_gateway_ids):
        found = original(self, filters, nat_gateway_ids)
        for name, values in (filters or {}).items():
            if name.startswith("tag:") or name in ("tag-key", "tag-value"):
                found = [n for n in found if tag_filter_matches(n, name, values)]
        return found

    describe_nat_gateways._tsprov_mended = True
    NatGatewayBackend.describe_nat_gateways = describe_nat_gateways


@hooks.on_infra_start()
def mend_elasticache_num_cache_clusters():
    """A cluster-mode-disabled replication group gets NumCacheClusters members in AWS;
    moto ignored the number and always made one (no replica, so no failover)."""
    from moto.elasticache.models import ReplicationGroup

    original = ReplicationGroup._set_node_members_clusters_disabled
    if getattr(original, "_tsprov_mended", False):
        return

    def members(self, member_clusters, replication_group_id, replication_group_domain, node_group,
                preferred_cache_cluster_azs, num_cache_clusters, replicas_per_node_group):
        if not replicas_per_node_group and num_cache_clusters and int(num_cache_clusters) > 1:
            replicas_per_node_group = int(num_cache_clusters) - 1
        return original(self, member_clusters, replication_group_id, replication_group_domain, node_group,
                        preferred_cache_cluster_azs, num_cache_clusters, replicas_per_node_group)

    members._tsprov_mended = True
    ReplicationGroup._set_node_members_clusters_disabled = members


@hooks.on_infra_start()
def mend_elasticache_deletes():
    """DeleteReplicationGroup left the group `deleting` forever (AWS removes it), and
    DeleteCacheSubnetGroup answered 501 (AWS documents it)."""
    from moto.core.responses import ActionResult
    from moto.elasticache.exceptions import CacheSubnetGroupNotFound
    from moto.elasticache.models import ElastiCacheBackend
    from moto.elasticache.responses import ElastiCacheResponse

    original = ElastiCacheBackend.delete_replication_group
    if getattr(original, "_tsprov_mended", False):
        return

    def delete_replication_group(self, replication_group_id, retain_primary_cluster):
        group = original(self, replication_group_id, retain_primary_cluster)
        self.replication_groups.pop(replication_group_id, None)
        return group

    def delete_cache_subnet_group(self, cache_subnet_group_name):
        if cache_subnet_group_name not in self.cache_subnet_groups:
            raise CacheSubnetGroupNotFound(cache_subnet_group_name)
        return self.cache_subnet_groups.pop(cache_subnet_group_name)

    def delete_cache_subnet_group_response(self):
        self.elasticache_backend.delete_cache_subnet_group(self._get_param("CacheSubnetGroupName"))
        return ActionResult({})

    delete_replication_group._tsprov_mended = True
    ElastiCacheBackend.delete_replication_group = delete_replication_group
    ElastiCacheBackend.delete_cache_subnet_group = delete_cache_subnet_group
    ElastiCacheResponse.delete_cache_subnet_group = delete_cache_subnet_group_response


@hooks.on_infra_start()
def mend_elasticache_modify_replication_group():
    """ModifyReplicationGroup answered 501; AWS changes the description, node type,
    automatic failover and Multi-AZ of a group in place."""
    from moto.core.responses import ActionResult
    from moto.elasticache.exceptions import ReplicationGroupNotFound
    from moto.elasticache.responses import ElastiCacheResponse

    if getattr(ElastiCacheResponse, "_tsprov_modify_mended", False):
        return

    def modify_replication_group(self):
        backend = self.elasticache_backend
        group_id = self._get_param("ReplicationGroupId")
        group = backend.replication_groups.get(group_id)
        if group is None:
            raise ReplicationGroupNotFound(group_id)
        if self._get_param("ReplicationGroupDescription") is not None:
            group.description = self._get_param("ReplicationGroupDescription")
        if self._get_param("CacheNodeType") is not None:
            group.cache_node_type = self._get_param("CacheNodeType")
        if self._get_param("AutomaticFailoverEnabled") is not None:
            group.automatic_failover = "enabled" if self._get_bool_param("AutomaticFailoverEnabled") else "disabled"
        if self._get_param("MultiAZEnabled") is not None:
            group.multi_az = "enabled" if self._get_bool_param("MultiAZEnabled") else "disabled"
        return ActionResult({"ReplicationGroup": group})

    ElastiCacheResponse.modify_replication_group = modify_replication_group
    ElastiCacheResponse._tsprov_modify_mended = True


@hooks.on_infra_start()
def mend_rds_master_user_secret_kms_key():
    """With ManageMasterUserPassword, RDS looked MasterUserSecretKmsKeyId up in moto's
    own KMS, which does not hold LocalStack's KMS keys: CreateDBCluster failed with 500
    (KeyError). AWS accepts any key of the account and reports it back as given."""
    from moto.rds.models import MasterUserSecret

    original = MasterUserSecret._create_secret
    if getattr(original, "_tsprov_mended", False):
        return

    def create_secret(self, kms_key_id):
        self._tsprov_kms_key_id = kms_key_id
        return original(self, None)

    def kms_key_id(self):
        return getattr(self, "_tsprov_kms_key_id", None) or (
            f"arn:aws:kms:{self.resource.backend.region_name}:{self.resource.backend.account_id}:alias/aws/secretsmanager"
        )

    create_secret._tsprov_mended = True
    MasterUserSecret._create_secret = create_secret
    MasterUserSecret.kms_key_id = property(kms_key_id)


@hooks.on_infra_start()
def mend_rds_modify_db_subnet_group():
    """ModifyDBSubnetGroup took the group out of the backend and never put it back:
    the group vanished. AWS changes it in place."""
    from moto.rds.models import RDSBackend

    original = RDSBackend.modify_db_subnet_group
    if getattr(original, "_tsprov_mended", False):
        return

    def modify_db_subnet_group(self, subnet_name, description, subnets):
        group = original(self, subnet_name, description, subnets)
        self.subnet_groups[subnet_name] = group
        return group

    modify_db_subnet_group._tsprov_mended = True
    RDSBackend.modify_db_subnet_group = modify_db_subnet_group


@hooks.on_infra_start()
def mend_nat_gateway_client_token():
    """CreateNatGateway ignored ClientToken, so a create retried after a lost answer made
    a second gateway. AWS answers a repeated token with the gateway it already made."""
    from moto.ec2.responses.nat_gateways import CREATE_NAT_GATEWAY, NatGateways

    original = NatGateways.create_nat_gateway
    if getattr(original, "_tsprov_mended", False):
        return
    made = {}

    def create_nat_gateway(self):
        token = self._get_param("ClientToken")
        key = (self.current_account, self.region, token)
        if token and key in made:
            nat = self.ec2_backend.nat_gateways.get(made[key])
            if nat is not None and nat.state not in ("deleting", "deleted"):
                return self.response_template(CREATE_NAT_GATEWAY).render(nat_gateway=nat)
        answer = original(self)
        if token:
            start = answer.find("<natGatewayId>") + len("<natGatewayId>")
            made[key] = answer[start:answer.find("</natGatewayId>", start)]
        return answer

    create_nat_gateway._tsprov_mended = True
    NatGateways.create_nat_gateway = create_nat_gateway


@hooks.on_infra_start()
def mend_nat_gateway_delete_frees_its_address():
    """DeleteNatGateway left the Elastic IP associated, so no new gateway could use it
    (Resource.AlreadyAssociated). AWS: deleting a NAT gateway disassociates its Elastic
    IP address but does not release it."""
    from moto.ec2.models.nat_gateways import NatGatewayBackend

    original = NatGatewayBackend.delete_nat_gateway
    if getattr(original, "_tsprov_mended", False):
        return

    def delete_nat_gateway(self, nat_gateway_id):
        nat = original(self, nat_gateway_id)
        for address in nat.address_set:
            allocation = address.get("allocationId")
            eips = self.address_by_allocation([allocation]) if allocation else []
            if eips and eips[0].eni is nat._eni:
                self.disassociate_address(association_id=eips[0].association_id)
        return nat

    delete_nat_gateway._tsprov_mended = True
    NatGatewayBackend.delete_nat_gateway = delete_nat_gateway
