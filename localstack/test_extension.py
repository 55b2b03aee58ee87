"""Proves that the extension makes LocalStack answer EKS, RDS and ElastiCache.

Run with the LocalStack venv's python while LocalStack listens on 127.0.0.1:4566:
    localstack/.venv/bin/python localstack/test_extension.py
"""

import unittest
import uuid

import boto3

ENDPOINT = "http://127.0.0.1:4566"


def client(service, region="eu-west-1"):
    return boto3.client(
        service,
        endpoint_url=ENDPOINT,
        region_name=region,
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


class ExtensionServesServices(unittest.TestCase):
    def test_eks_answers(self):
        self.assertIn("clusters", client("eks").list_clusters())

    def test_rds_answers(self):
        self.assertIn("DBClusters", client("rds").describe_db_clusters())

    def test_elasticache_answers(self):
        self.assertIn("ReplicationGroups", client("elasticache").describe_replication_groups())

    def test_rds_subnet_group_resolves_ec2_subnets_per_region(self):
        # Shares the EC2 backend: a subnet made through EC2 is usable by RDS in the same region.
        ec2 = client("ec2", "ap-southeast-1")
        vpc = ec2.create_vpc(CidrBlock="10.99.0.0/16")["Vpc"]["VpcId"]
        subnets = [
            ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.99.{i}.0/24", AvailabilityZone=f"ap-southeast-1{az}")["Subnet"]["SubnetId"]
            for i, az in enumerate("ab")
        ]
        rds = client("rds", "ap-southeast-1")
        try:
            group = rds.create_db_subnet_group(
                DBSubnetGroupName="tsprov-ext-test", DBSubnetGroupDescription="ext test", SubnetIds=subnets
            )["DBSubnetGroup"]
            self.assertEqual(group["VpcId"], vpc)
            # Mend: a modified subnet group stays.
            rds.modify_db_subnet_group(DBSubnetGroupName="tsprov-ext-test", DBSubnetGroupDescription="changed", SubnetIds=subnets)
            kept = rds.describe_db_subnet_groups(DBSubnetGroupName="tsprov-ext-test")["DBSubnetGroups"][0]
            self.assertEqual(kept["DBSubnetGroupDescription"], "changed")
            # Regions stay isolated.
            names = [g["DBSubnetGroupName"] for g in client("rds", "eu-west-1").describe_db_subnet_groups()["DBSubnetGroups"]]
            self.assertNotIn("tsprov-ext-test", names)
        finally:
            rds.delete_db_subnet_group(DBSubnetGroupName="tsprov-ext-test")
            for s in subnets:
                ec2.delete_subnet(SubnetId=s)
            ec2.delete_vpc(VpcId=vpc)


class Mends(unittest.TestCase):
    def test_eks_updates(self):
        ec2 = client("ec2", "ca-central-1")
        eks = client("eks", "ca-central-1")
        vpc = ec2.create_vpc(CidrBlock="10.96.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.96.0.0/24")["Subnet"]["SubnetId"]
        try:
            eks.create_cluster(name="tsprov-mend", version="1.31", roleArn="arn:aws:iam::000000000000:role/r",
                               resourcesVpcConfig={"subnetIds": [subnet]})
            eks.create_nodegroup(clusterName="tsprov-mend", nodegroupName="ng", nodeRole="arn:aws:iam::000000000000:role/n",
                                 subnets=[subnet], scalingConfig={"minSize": 1, "desiredSize": 1, "maxSize": 3},
                                 labels={"a": "1"}, taints=[{"key": "k", "value": "v", "effect": "NO_SCHEDULE"}])
            update = eks.update_cluster_version(name="tsprov-mend", version="1.32")["update"]
            self.assertEqual(eks.describe_update(name="tsprov-mend", updateId=update["id"])["update"]["status"], "Successful")
            self.assertEqual(eks.describe_cluster(name="tsprov-mend")["cluster"]["version"], "1.32")
            eks.update_cluster_config(name="tsprov-mend", logging={"clusterLogging": [{"types": ["api", "audit"], "enabled": True}]})
            logging = eks.describe_cluster(name="tsprov-mend")["cluster"]["logging"]["clusterLogging"]
            self.assertIn({"types": ["api", "audit"], "enabled": True}, logging)
            update = eks.update_nodegroup_config(
                clusterName="tsprov-mend", nodegroupName="ng", scalingConfig={"desiredSize": 2},
                labels={"addOrUpdateLabels": {"b": "2"}, "removeLabels": ["a"]},
                taints={"removeTaints": [{"key": "k", "effect": "NO_SCHEDULE"}]},
            )["update"]
            self.assertEqual(eks.describe_update(name="tsprov-mend", nodegroupName="ng", updateId=update["id"])["update"]["status"], "Successful")
            group = eks.describe_nodegroup(clusterName="tsprov-mend", nodegroupName="ng")["nodegroup"]
            self.assertEqual(group["scalingConfig"]["desiredSize"], 2)
            self.assertEqual(group["labels"], {"b": "2"})
            self.assertEqual(group.get("taints", []), [])
        finally:
            for call in (lambda: eks.delete_nodegroup(clusterName="tsprov-mend", nodegroupName="ng"),
                         lambda: eks.delete_cluster(name="tsprov-mend")):
                try:
                    call()
                except Exception:
                    pass
            ec2.delete_subnet(SubnetId=subnet)
            ec2.delete_vpc(VpcId=vpc)

    def test_rds_managed_password_with_a_localstack_kms_key(self):
        # Unique per run: the automated snapshot is named after the cluster and the minute.
        name = f"tsprov-mend-kms-{uuid.uuid4().hex[:8]}"
        key = client("kms", "eu-west-3").create_key()["KeyMetadata"]["Arn"]
        rds = client("rds", "eu-west-3")
        cluster = rds.create_db_cluster(
            DBClusterIdentifier=name, Engine="aurora-postgresql", EngineVersion="16.4",
            MasterUsername="admin1", ManageMasterUserPassword=True, MasterUserSecretKmsKeyId=key,
            StorageEncrypted=True, KmsKeyId=key,
        )["DBCluster"]
        try:
            self.assertEqual(cluster["MasterUserSecret"]["KmsKeyId"], key)
            self.assertNotIn("MasterUserPassword", cluster)
        finally:
            rds.delete_db_cluster(DBClusterIdentifier=name, SkipFinalSnapshot=True)

    def test_elasticache_replication_group_members_and_deletes(self):
        ec2 = client("ec2", "ap-southeast-1")
        cache = client("elasticache", "ap-southeast-1")
        vpc = ec2.create_vpc(CidrBlock="10.97.0.0/16")["Vpc"]["VpcId"]
        subnets = [
            ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.97.{i}.0/24", AvailabilityZone=f"ap-southeast-1{az}")["Subnet"]["SubnetId"]
            for i, az in enumerate("ab")
        ]
        try:
            cache.create_cache_subnet_group(CacheSubnetGroupName="tsprov-mend", CacheSubnetGroupDescription="t", SubnetIds=subnets)
            group = cache.create_replication_group(
                ReplicationGroupId="tsprov-mend", ReplicationGroupDescription="t", Engine="redis",
                CacheNodeType="cache.t4g.small", NumCacheClusters=3, CacheSubnetGroupName="tsprov-mend",
                AutomaticFailoverEnabled=True, MultiAZEnabled=True,
            )["ReplicationGroup"]
            self.assertEqual(len(group["MemberClusters"]), 3)
            modified = cache.modify_replication_group(
                ReplicationGroupId="tsprov-mend", CacheNodeType="cache.r7g.large", ApplyImmediately=True
            )["ReplicationGroup"]
            self.assertEqual(modified["CacheNodeType"], "cache.r7g.large")
            self.assertEqual(modified["MultiAZ"], "enabled")
            cache.delete_replication_group(ReplicationGroupId="tsprov-mend")
            with self.assertRaises(Exception) as gone:
                cache.describe_replication_groups(ReplicationGroupId="tsprov-mend")
            self.assertEqual(gone.exception.response["Error"]["Code"], "ReplicationGroupNotFoundFault")
            cache.delete_cache_subnet_group(CacheSubnetGroupName="tsprov-mend")
            with self.assertRaises(Exception) as gone:
                cache.describe_cache_subnet_groups(CacheSubnetGroupName="tsprov-mend")
            self.assertEqual(gone.exception.response["Error"]["Code"], "CacheSubnetGroupNotFoundFault")
        finally:
            for s in subnets:
                ec2.delete_subnet(SubnetId=s)
            ec2.delete_vpc(VpcId=vpc)

    def test_eks_errors_carry_their_code(self):
        with self.assertRaises(Exception) as caught:
            client("eks").describe_cluster(name="tsprov-no-such-cluster")
        self.assertEqual(caught.exception.response["Error"]["Code"], "ResourceNotFoundException")
        self.assertEqual(caught.exception.response["ResponseMetadata"]["HTTPStatusCode"], 404)

    def test_nat_gateway_tag_filters(self):
        ec2 = client("ec2", "eu-west-2")
        vpc = ec2.create_vpc(CidrBlock="10.98.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.98.0.0/24")["Subnet"]["SubnetId"]
        nats = []
        # Unique per run: deleted gateways of an earlier run stay listed for a while.
        run = uuid.uuid4().hex[:8]
        try:
            for stack in (f"mend-a-{run}", f"mend-b-{run}"):
                eip = ec2.allocate_address(Domain="vpc")["AllocationId"]
                nat = ec2.create_nat_gateway(
                    SubnetId=subnet,
                    AllocationId=eip,
                    TagSpecifications=[{"ResourceType": "natgateway", "Tags": [{"Key": "tsprov:stack", "Value": stack}]}],
                )["NatGateway"]["NatGatewayId"]
                nats.append((nat, eip))
            found = ec2.describe_nat_gateways(Filters=[{"Name": "tag:tsprov:stack", "Values": [f"mend-a-{run}"]}])["NatGateways"]
            self.assertEqual([n["NatGatewayId"] for n in found], [nats[0][0]])
            by_key = ec2.describe_nat_gateways(Filters=[{"Name": "tag-key", "Values": ["tsprov:stack"]}])["NatGateways"]
            ours = [n for n in by_key if n["NatGatewayId"] in {nat for nat, _ in nats}]
            self.assertEqual(len(ours), 2)
            self.assertTrue(all(any(t["Key"] == "tsprov:stack" for t in n.get("Tags", [])) for n in by_key))
        finally:
            for nat, eip in nats:
                ec2.delete_nat_gateway(NatGatewayId=nat)
                ec2.release_address(AllocationId=eip)
            ec2.delete_subnet(SubnetId=subnet)
            ec2.delete_vpc(VpcId=vpc)


    def test_nat_gateway_client_token(self):
        ec2 = client("ec2", "ap-southeast-1")
        vpc = ec2.create_vpc(CidrBlock="10.98.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.98.1.0/24")["Subnet"]["SubnetId"]
        eip = ec2.allocate_address(Domain="vpc")["AllocationId"]
        try:
            first = ec2.create_nat_gateway(SubnetId=subnet, AllocationId=eip, ClientToken="mend-token")
            again = ec2.create_nat_gateway(SubnetId=subnet, AllocationId=eip, ClientToken="mend-token")
            nat = first["NatGateway"]["NatGatewayId"]
            self.assertEqual(again["NatGateway"]["NatGatewayId"], nat)
            ec2.delete_nat_gateway(NatGatewayId=nat)
            # Its address is free again: a new gateway may use it.
            renewed = ec2.create_nat_gateway(SubnetId=subnet, AllocationId=eip, ClientToken="mend-token-2")
            self.assertNotEqual(renewed["NatGateway"]["NatGatewayId"], nat)
            ec2.delete_nat_gateway(NatGatewayId=renewed["NatGateway"]["NatGatewayId"])
        finally:
            ec2.release_address(AllocationId=eip)
            ec2.delete_subnet(SubnetId=subnet)
            ec2.delete_vpc(VpcId=vpc)

if __name__ == "__main__":
    unittest.main(verbosity=2)
