"""`manage.py hosts ls | forget HOST_ID --reason TEXT | reconcile [--batch N]`."""

from django.core.management.base import BaseCommand, CommandError

from joinadmin.cli import cli_actor
from joins.host_services import HostNotFoundError, forget_host
from joins.lifecycle import MAX_BATCH, reconcile_hosts
from joins.models import Host


class Command(BaseCommand):
    help = (
        "List registered hosts, forget one so that its instance may join again, or reconcile "
        "them with AWS (retire terminated instances and revoke their certificates)."
    )

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        sub = parser.add_subparsers(dest="action", required=True)
        ls = sub.add_parser("ls", help="list registered hosts")
        ls.add_argument("--token", default="")
        forget = sub.add_parser("forget", help="forget a host (recorded)")
        forget.add_argument("host_id")
        forget.add_argument(
            "--reason",
            default="forgotten from the command line",
            help="why (kept in the admin action log)",
        )
        reconcile = sub.add_parser(
            "reconcile",
            help="ask AWS for the state of every host in service; retire terminated ones and "
            "revoke their certificates (recorded)",
        )
        reconcile.add_argument(
            "--batch",
            type=int,
            default=MAX_BATCH,
            help=f"instance ids per DescribeInstances call (1-{MAX_BATCH})",
        )

    def handle(self, *args, **options):  # type: ignore[no-untyped-def]
        if options["action"] == "reconcile":
            try:
                report = reconcile_hosts(actor=cli_actor(), batch=options["batch"], via="cli")
            except ValueError as exc:
                raise CommandError(str(exc)) from None
            self.stdout.write(report.summary())
            if not report.ok:
                raise CommandError(
                    "reconcile incomplete; the hosts of the groups above were left as they "
                    "were: " + "; ".join(report.errors)
                )
            return
        if options["action"] == "forget":
            try:
                forget_host(
                    options["host_id"], actor=cli_actor(), reason=options["reason"], via="cli"
                )
            except HostNotFoundError as exc:
                raise CommandError(str(exc)) from None
            self.stdout.write(f"forgot host {options['host_id']}; its instance may join again")
            return
        hosts = Host.objects.all()
        if options["token"]:
            hosts = hosts.filter(token=options["token"])
        self.stdout.write("HOST_ID\tTOKEN\tROLES\tREGION\tFIRST_JOINED\tLAST_JOINED")
        for host in hosts.iterator():
            self.stdout.write(
                "\t".join(
                    [
                        host.host_id,
                        host.token,
                        ",".join(host.roles),
                        host.region,
                        host.first_joined_at.isoformat(),
                        host.last_joined_at.isoformat(),
                    ]
                )
            )
