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
