"""Service providers for EKS, RDS and ElastiCache.

The community runtime answers 501 for these services. Each provider here is a
skeleton over the service's botocore model whose dispatch table sends every
operation to LocalStack's bundled moto backend (``call_moto``), in the same
process, so that they share the EC2 backend (subnet IDs resolve, regions stay
isolated). Routes are built from the dispatch table's keys, hence the table
lists every operation of the model.
"""

import json

from localstack.aws.api import CommonServiceException
from localstack.aws.forwarder import parse_response
from localstack.aws.skeleton import Skeleton
from localstack.aws.spec import load_service
from localstack.services.moto import call_moto, dispatch_to_moto
from localstack.services.plugins import Service, aws_provider


def _forward_to_moto(context, request):
    return call_moto(context)


def _forward_to_moto_eks(context, request):
    """Mend: moto's EKS errors name their type only in the ``x-amzn-ErrorType`` header,
    which is lost on the way, so clients saw the code "404" instead of
    ``ResourceNotFoundException``. AWS documents the type as the error code."""
    response = dispatch_to_moto(context)
    error_type = response.headers.get("x-amzn-ErrorType")
    if response.status_code >= 400 and error_type:
        try:
            message = json.loads(response.data or b"{}").get("message", "")
        except ValueError:
            message = response.data.decode("utf-8", "replace")
        raise CommonServiceException(code=error_type, message=message, status_code=response.status_code)
    return parse_response(context.operation, context.protocol, response, False)


def _moto_service(name: str, forward=_forward_to_moto, overrides=None) -> Service:
    model = load_service(name)
    dispatch_table = {operation: forward for operation in model.operation_names}
    dispatch_table.update(overrides or {})
    return Service(name=name, skeleton=Skeleton(model, dispatch_table))


@aws_provider()
def eks():
    # Mend: moto has no route for the update operations (501 "No moto route").
    from tsprov_localstack_ext import eks_updates

    return _moto_service("eks", _forward_to_moto_eks, eks_updates.HANDLERS)


@aws_provider()
def rds():
    return _moto_service("rds")


@aws_provider()
def elasticache():
    return _moto_service("elasticache")
