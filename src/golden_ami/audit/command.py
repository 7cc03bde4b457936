# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""`golden-ami audit`: its arguments, its accounts file, and the run: one walk per account
(golden_ami.audit.fetch and .launch_templates read, .findings judges), then the report.

With --accounts FILE and --role-name NAME it assumes arn:<partition>:iam::<account>:role/NAME
in every listed account and walks them in parallel. The published AMIs are always read from
the caller's own account (where `publish` writes them and shares the AMIs from).

A read that AWS denies or that outlasts botocore's retries is unread (golden_ami.audit.fetch's
Reads): the audit goes on and exits INCOMPLETE. Exit codes, the first that applies: an
account that could not be audited at all (its error's code: 3, or 4 for a named cluster that
does not exist); 5, incomplete; 1, findings with --fail-on-findings; 0.
"""

from __future__ import annotations

import re
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import botocore.exceptions

from golden_ami import layout, verify_hosts
from golden_ami.audit import fetch, findings, launch_templates, report
from golden_ami.audit.model import UNKNOWN_DEFAULTS, AccountDefaults, Published, Walk
from golden_ami.aws import LOG, Aws, GoldenAmiError, UsageError, translate
from golden_ami.files import read_at_most
from golden_ami.output import Result

INCOMPLETE = 5  # exit code: a read was unread, so the report is not the whole truth
MAX_WORKERS = 8  # accounts walked at once
MAX_ACCOUNTS_FILE = 1024 * 1024  # bytes; 12 digits and a newline a line: some 80,000 accounts
FARGATE = frozenset({"FARGATE", "FARGATE_SPOT"})  # capacity providers without instances

ACCOUNT_ID = re.compile(r"[0-9]{12}")
ROLE_NAME = re.compile(r"[A-Za-z0-9_+=,.@/-]{1,512}")


def add_arguments(parser) -> None:
    parser.add_argument(
        "--cluster",
        action="append",
        dest="clusters",
        metavar="C",
        help="an ECS cluster name or ARN to audit (repeatable; default: every cluster of the region)",
    )
    layout.add_prefix_argument(parser)
    parser.add_argument(
        "--fail-on-findings",
        action="store_true",
        help="exit 1 when any instance, launch template or account default has a finding "
        f"(an incomplete audit exits {INCOMPLETE} whatever it found)",
    )
    parser.add_argument(
        "--accounts",
        type=Path,
        metavar="FILE",
        help="audit these accounts instead: one 12-digit account ID per line, # comments allowed",
    )
    parser.add_argument(
        "--role-name", metavar="NAME", help="the role to assume in each account of --accounts"
    )
    parser.add_argument(
        "--verify-hosts",
        action="store_true",
        help="also run `ecs-imds-block check` on each running instance through SSM Run Command: "
        "verified, drifted, not managed by SSM or timed out; drift is a finding",
    )
    low, high = verify_hosts.TIMEOUT_RANGE
    parser.add_argument(
        "--verify-timeout",
        type=int,
        metavar="SECONDS",
        help=f"how long --verify-hosts waits for the hosts' answers ({low}-{high}; "
        f"default {verify_hosts.DEFAULT_TIMEOUT})",
    )


def _shown(text: str, limit: int = 40) -> str:
    """A value for a one-line message: quoted, escaped, and cut short when long."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


def read_accounts(path: Path) -> list[str]:
    """The account IDs of an accounts file, in order, without duplicates."""
    data = read_at_most(path, MAX_ACCOUNTS_FILE, "accounts file")
    if len(data) > MAX_ACCOUNTS_FILE:
        raise UsageError(f"accounts file {path} is larger than {MAX_ACCOUNTS_FILE // 1024} KiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"accounts file {path} is not UTF-8 text (byte {exc.start})") from exc
    accounts: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if not ACCOUNT_ID.fullmatch(line):
            raise UsageError(f"{path}:{number}: {_shown(raw.strip())} is not a 12-digit AWS account ID")
        if line in accounts:
            LOG.warning("%s:%d: account %s is listed twice; auditing it once", path, number, line)
            continue
        accounts.append(line)
    if not accounts:
        raise UsageError(f"{path} lists no account IDs")
    return accounts


def _check_args(args) -> list[str] | None:
    if bool(args.accounts) != bool(args.role_name):
        raise UsageError("--accounts and --role-name go together: give both or neither")
    if not args.prefix.startswith("/"):
        raise UsageError(f"--prefix {_shown(args.prefix)} must be an SSM path starting with /")
    if args.role_name and not ROLE_NAME.fullmatch(args.role_name):
        raise UsageError(f"--role-name {_shown(args.role_name)} is not an IAM role name")
    if args.verify_timeout is not None:
        low, high = verify_hosts.TIMEOUT_RANGE
        if not args.verify_hosts:
            raise UsageError("--verify-timeout goes with --verify-hosts")
        if not low <= args.verify_timeout <= high:
            shown = args.verify_timeout
            raise UsageError(f"--verify-timeout {shown} is not between {low} and {high} seconds")
    return read_accounts(args.accounts) if args.accounts else None


def audit_account(
    aws: Aws,
    clusters: list[str] | None,
    published: Published,
    label: str | None = None,
    prefix=layout.DEFAULT_PREFIX,
    verify_timeout: int | None = None,
) -> Walk:
    """Walk the clusters of one account and region, their groups' launch templates and the
    account's IMDS defaults. Each read goes through `reads`: one that could not be made is on
    walk.unread, and the walk goes on without it."""
    tag = f"account {label}: " if label else ""
    where = f"{aws.region} (account {label})" if label else aws.region
    ecs, ec2 = aws.client("ecs"), aws.client("ec2")
    walk = Walk()
    reads = fetch.Reads(walk.unread, tag)
    names = list(dict.fromkeys(clusters or []))
    if not clusters:
        with reads.reading():
            names = fetch.cluster_arns(ecs)
            LOG.info("%s%d ECS clusters in %s", tag, len(names), aws.region)
    walk.clusters = len(names)
    providers: dict[str, list[str]] = {}
    account = None
    if names:
        with reads.reading():
            providers, account = fetch.cluster_providers(ecs, names, bool(clusters), where)
    members = fetch.container_instances(ecs, names, walk, label, where, reads)
    fetch.add_instances(ec2, members, walk, label, published, reads)
    account = label or account or next((i.account for i in walk.instances), None)

    # The Auto Scaling groups behind the clusters (those of their instances and of their
    # capacity providers) and the launch template versions those groups launch.
    links: dict[str, dict[str, set[str]]] = {"clusters": defaultdict(set), "providers": defaultdict(set)}
    for instance in walk.instances:
        if instance.auto_scaling_group:
            links["clusters"][instance.auto_scaling_group].add(instance.cluster)
    wanted = sorted({p for ps in providers.values() for p in ps} - FARGATE)
    provider_groups: dict[str, str] = {}
    if wanted:
        with reads.reading():
            provider_groups = fetch.provider_groups(ecs, wanted, tag)
    for cluster, ps in providers.items():
        for provider in ps:
            if provider in provider_groups:
                links["clusters"][provider_groups[provider]].add(cluster)
                links["providers"][provider_groups[provider]].add(provider)
    group_names = sorted(links["clusters"])
    groups: dict[str, dict] = {}
    if group_names:
        with reads.reading():
            groups = fetch.scaling_groups(aws.client("autoscaling"), group_names)
            for name in sorted(set(group_names) - set(groups)):
                LOG.warning("%sAuto Scaling group %s not found", tag, name)
    walk.templates, walk.launch_configurations, of_group = launch_templates.templates(
        ec2, groups, links, account, published, label is None, reads
    )

    with reads.reading() as read:
        walk.defaults = fetch.account_defaults(ec2, account, aws.region)
    if read.unread:
        walk.defaults = AccountDefaults(account=account, region=aws.region)
        walk.defaults.unknown.append(read.unread.leaves(UNKNOWN_DEFAULTS, "the account's IMDS defaults"))
    findings.evaluate_walk(walk, prefix, of_group)
    if verify_timeout is not None:
        running = {i.ec2_instance_id: i for i in walk.instances if i.state == "running"}
        checks: dict[str, verify_hosts.HostCheck] = {}
        with reads.reading() as read:
            checks = verify_hosts.verify(aws.client("ssm"), sorted(running), verify_timeout)
        for instance_id, instance in running.items():
            if instance_id in checks:
                findings.evaluate_host_check(instance, checks[instance_id])
            elif read.unread:
                findings.host_unchecked(instance, read.unread)
    for unread in walk.unread:
        unread.account = account
    return walk


def _audit_accounts(
    aws: Aws, accounts: list[str], role_name: str, clusters, published, prefix, verify_timeout
) -> tuple[dict, list]:
    """Walk every account in parallel: {account: Walk} and the accounts that failed."""
    partition = aws.session.get_partition_for_region(aws.region)

    def one(account: str) -> Walk:
        member = aws.assume(f"arn:{partition}:iam::{account}:role/{role_name}", label=account)
        return audit_account(member, clusters, published, account, prefix, verify_timeout)

    LOG.info("auditing %d accounts with role %s", len(accounts), role_name)
    with ThreadPoolExecutor(max_workers=min(MAX_WORKERS, len(accounts))) as pool:
        futures = {account: pool.submit(one, account) for account in accounts}
    walks, errors = {}, []
    for account, future in futures.items():
        try:
            walks[account] = future.result()
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            error = translate(exc)
        except GoldenAmiError as exc:
            error = exc
        else:
            continue
        LOG.error("account %s: %s", account, error)
        errors.append({"account": account, "error": str(error), "exit_code": error.exit_code})
    return walks, errors


def run(args, aws: Aws) -> Result:
    accounts = _check_args(args)
    own: list = []  # the caller's own reads: the published AMIs
    published = Published()
    with fetch.Reads(own).reading() as read:
        published = fetch.published_amis(aws, args.prefix)
    published.unread = read.unread
    verify_timeout = (args.verify_timeout or verify_hosts.DEFAULT_TIMEOUT) if args.verify_hosts else None
    if accounts:
        walks, errors = _audit_accounts(
            aws, accounts, args.role_name, args.clusters, published, args.prefix, verify_timeout
        )
    else:
        walk = audit_account(aws, args.clusters, published, prefix=args.prefix, verify_timeout=verify_timeout)
        walks, errors = {None: walk}, []

    unread = [*own, *(u for walk in walks.values() for u in walk.unread)]
    data, lines = report.render(
        walks,
        errors,
        unread,
        region=aws.region,
        prefix=args.prefix,
        published_amis=None if published.unread else len(published),
        accounts=accounts,
        verify=args.verify_hosts,
    )
    code = 0
    if errors:  # an account that could not be audited outweighs what the others found
        codes = {e["exit_code"] for e in errors}
        code = 3 if 3 in codes else max(codes)
    elif unread:  # an incomplete audit outweighs its findings: what it could not read may hold more
        code = INCOMPLETE
    elif args.fail_on_findings and any(
        record.findings
        for walk in walks.values()
        for record in [*walk.instances, *walk.templates, walk.defaults]
    ):
        code = 1
    return Result(data=data, lines=lines, code=code)
