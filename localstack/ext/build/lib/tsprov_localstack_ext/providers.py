"""Service providers for EKS, RDS and ElastiCache.

The community runtime answers 501 for these services. Each provider here is a
skeleton over the service's botocore model whose dispatch table sends every
operation to LocalStack's bundled moto backend (``call_moto``), in the same
process, so that they share the EC2 backend (subnet IDs resolve, regions stay
isolated). Routes are built from the dispatch table's keys, hence the table
lists every operation of the model.
"""

from localstack.aws.skeleton import Skeleton
from localstack.aws.spec import load_service
from localstack.services.moto import call_moto
from localstack.services.plugins import Service, aws_provider


def _forward_to_moto(context, request):
    return call_moto(context)


def _moto_service(name: str) -> Service:
    model = load_service(name)
    dispatch_table = {operation: _forward_to_moto for operation in model.operation_names}
    return Service(name=name, skeleton=Skeleton(model, dispatch_table))


@aws_provider()
def eks():
    return _moto_service("eks")


@aws_provider()
def rds():
    return _moto_service("rds")


@aws_provider()
def elasticache():
    return _moto_service("elasticache")
