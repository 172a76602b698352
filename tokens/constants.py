"""Code lists and limits of the EC2 join token resource.

Plain data only, so that the pure resource and codec modules, the models and the forms all read the
same lists. Names and values follow Teleport's `kind: token` (`version: v2`) where one exists.
"""

from __future__ import annotations

from typing import Final

#: The Teleport system roles an EC2-joined host may be granted, in Teleport's canonical spelling.
#: These are the roles Teleport's reuse check knows, hence the ones its EC2 join accepts.
ROLES: Final[tuple[str, ...]] = (
    "Node",
    "Proxy",
    "Kube",
    "App",
    "Db",
    "WindowsDesktop",
    "Discovery",
    "Okta",
    "MDM",
)

#: Spellings Teleport accepts besides the case-insensitive canonical name.
ROLE_ALIASES: Final[dict[str, str]] = {
    "windows_desktop": "WindowsDesktop",
}

#: Roles Teleport knows that can never be granted through an EC2 token, with the reason shown to
#: the user. Keyed by lower-case name: role names are matched case-insensitively.
REFUSED_ROLES: Final[dict[str, str]] = {
    "bot": (
        "the Bot role cannot use the ec2 join method; use the iam join method for bots running "
        "on AWS, or remove Bot from this token"
    ),
    "instance": (
        "the Instance role is not granted by a token: an agent receives it for the service roles "
        "the token lists; list those roles (e.g. Node) instead"
    ),
    "auth": (
        "the Auth role belongs to the cluster's own auth servers and is never granted to a "
        "joining host; remove it"
    ),
    "admin": "the Admin role is internal to the cluster and cannot be granted; remove it",
    "provisiontoken": "the ProvisionToken role is internal to the cluster; remove it",
    "trusted_cluster": "the Trusted_cluster role is internal to the cluster; remove it",
    "signup": "the Signup role is internal to the cluster; remove it",
    "nop": "the Nop role grants nothing and cannot be used by a joining host; remove it",
    "remoteproxy": "the RemoteProxy role is internal to the cluster; remove it",
}

JOIN_METHOD_EC2: Final = "ec2"
JOIN_METHODS: Final[tuple[str, ...]] = (JOIN_METHOD_EC2,)

RESOURCE_KIND: Final = "token"
RESOURCE_VERSION: Final = "v2"

#: Teleport's default when `aws_iid_ttl` is absent.
DEFAULT_IID_TTL: Final = "5m"
#: Bounds of `aws_iid_ttl`, in seconds. Teleport has no upper bound; an identity document is a
#: bearer credential that never expires on its own, so a day is the most this product accepts.
MIN_IID_TTL: Final = 1
MAX_IID_TTL: Final = 24 * 60 * 60

NAME_MAX_LENGTH: Final = 128
DESCRIPTION_MAX_LENGTH: Final = 1024
LABEL_KEY_MAX_LENGTH: Final = 256
LABEL_VALUE_MAX_LENGTH: Final = 1024
MAX_LABELS: Final = 64
#: Bounds that keep one token's rule matching cheap at join time.
MAX_ALLOW_RULES: Final = 100
MAX_REGIONS_PER_RULE: Final = 64

#: AWS partitions whose regions a rule may name, each with the prefixes its region names start
#: with (`<prefix>-<direction>-<number>`). A region belongs to exactly one partition; the longest
#: matching prefix decides (`us-gov-west-1` is `aws-us-gov`, not `aws`).
PARTITIONS: Final[dict[str, tuple[str, ...]]] = {
    "aws": ("us", "eu", "ap", "sa", "ca", "me", "af", "il", "mx"),
    "aws-us-gov": ("us-gov",),
    "aws-cn": ("cn",),
    "aws-eusc": ("eusc-de",),
}

#: The compass part of an AWS region name.
REGION_DIRECTIONS: Final[tuple[str, ...]] = (
    "north",
    "south",
    "east",
    "west",
    "central",
    "northeast",
    "northwest",
    "southeast",
    "southwest",
)

#: Values Teleport allows for its `teleport.dev/origin` label.
ORIGIN_LABEL: Final = "teleport.dev/origin"
ORIGIN_VALUES: Final[tuple[str, ...]] = (
    "defaults",
    "config-file",
    "dynamic",
    "cloud",
    "kubernetes",
    "okta",
    "scim",
    "discovery-kubernetes",
    "entra-id",
    "aws-identity-center",
)

#: Kubernetes operator shape (`TeleportProvisionToken`).
K8S_API_VERSION: Final = "resources.teleport.dev/v2"
K8S_KIND: Final = "TeleportProvisionToken"
K8S_LIST_KINDS: Final[tuple[str, ...]] = ("List", "TeleportProvisionTokenList")
#: Annotation keys Teleport's operator reads metadata from (the operator reads `description`;
#: `expires` is the operator's key for expiring resources, used here for tokens as well).
K8S_DESCRIPTION_ANNOTATION: Final = "description"
K8S_EXPIRES_ANNOTATION: Final = "expires"

#: Terraform resource type of Teleport's provider.
TERRAFORM_RESOURCE_TYPE: Final = "teleport_provision_token"

# --------------------------------------------------------------------------------------------
# Allow-rule conditions: optional rule fields beyond Teleport's (docs/extensions.md, "Allow-rule
# conditions"). They are checked against the DescribeInstances answer of the matched rule; a rule
# without them means exactly what it means in Teleport.

#: The condition fields of an allow rule, in the order a join checks them (cheap identity
#: checks first, the source address last) and the order exports write them.
CONDITION_FIELDS: Final[tuple[str, ...]] = (
    "aws_vpc_ids",
    "aws_subnet_ids",
    "aws_ami_ids",
    "aws_instance_profile_arns",
    "aws_security_group_ids",
    "aws_tags",
    "require_imdsv2",
    "max_imds_hop_limit",
    "require_source_ip_match",
)

#: Conditions holding EC2 resource ids, with the id prefix AWS gives them.
RESOURCE_ID_CONDITIONS: Final[dict[str, str]] = {
    "aws_vpc_ids": "vpc",
    "aws_subnet_ids": "subnet",
    "aws_ami_ids": "ami",
    "aws_security_group_ids": "sg",
}

#: What a resource-id condition is about, in the words of messages ("a VPC id").
RESOURCE_ID_NOUNS: Final[dict[str, str]] = {
    "aws_vpc_ids": "VPC",
    "aws_subnet_ids": "subnet",
    "aws_ami_ids": "AMI",
    "aws_security_group_ids": "security group",
}

#: Bounds that keep a rule readable and its evaluation cheap.
MAX_CONDITION_VALUES: Final = 100
#: AWS allows 50 user tags on an instance, so more required keys could never all match.
MAX_TAG_CONDITIONS: Final = 50
MAX_TAG_VALUES: Final = 100
#: AWS's limits of an EC2 tag.
TAG_KEY_MAX_LENGTH: Final = 128
TAG_VALUE_MAX_LENGTH: Final = 256
#: AWS's bounds of an instance's `HttpPutResponseHopLimit`.
MIN_IMDS_HOP_LIMIT: Final = 1
MAX_IMDS_HOP_LIMIT: Final = 64
