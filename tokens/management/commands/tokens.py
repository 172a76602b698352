"""`manage.py tokens create|ls|get|rm`: the token workflows on the command line."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from joinadmin.cli import cli_actor, read_input
from tokens.codecs import EXPORT_FORMATS, to_json_list, to_yaml
from tokens.models import Token
from tokens.resource import ResourceError
from tokens.services import TokenExistsError, TokenNotFoundError, delete_token, import_tokens


def describe_errors(exc: ResourceError) -> str:
    lines = [
        f"invalid token resource: {exc.message}"
        if getattr(exc, "message", "")
        else "invalid token resource"
    ]
    for detail in exc.details:
        lines.append(f"  document {detail.document}, {detail.field}: {detail.message}")
    return "\n".join(lines)


class Command(BaseCommand):
    help = "Create, list, show and remove EC2 join tokens."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="create tokens from a YAML/JSON file or - for stdin")
        create.add_argument("file")
        create.add_argument("--force", action="store_true", help="replace tokens that exist")
        ls = sub.add_parser("ls", help="list tokens")
        ls.add_argument("-o", "--output", choices=["text", "json", "yaml"], default="text")
        get = sub.add_parser("get", help="print one token")
        get.add_argument("name")
        get.add_argument("-o", "--output", choices=sorted(EXPORT_FORMATS), default="yaml")
        rm = sub.add_parser("rm", help="delete a token")
        rm.add_argument("name")

    def handle(self, *args, **options):  # type: ignore[no-untyped-def]
        getattr(self, f"do_{options['action']}")(options)

    def do_create(self, options: dict) -> None:
        text = read_input(options["file"])
        try:
            plan = import_tokens(text, actor=cli_actor(), force=options["force"], via="cli")
        except ResourceError as exc:
            raise CommandError(describe_errors(exc)) from None
        except TokenExistsError as exc:
            raise CommandError(exc.message) from None
        for resource in plan.resources:
            verb = "replaced" if resource.name in plan.replaces else "created"
            self.stdout.write(f'token "{resource.name}" has been {verb}')

    def do_ls(self, options: dict) -> None:
        tokens = list(Token.objects.all())
        resources = [t.to_resource() for t in tokens]
        if options["output"] == "json":
            self.stdout.write(to_json_list(resources))
        elif options["output"] == "yaml":
            self.stdout.write(to_yaml(resources) if resources else "")
        else:
            rows = [("NAME", "ROLES", "RULES", "TTL", "EXPIRES", "STATUS")]
            for token in tokens:
                rules = "; ".join(
                    "/".join(
                        filter(None, [r.get("aws_account", ""), ",".join(r.get("aws_regions", []))])
                    )
                    or r.get("aws_role", "")
                    for r in token.allow
                )
                rows.append(
                    (
                        token.name,
                        ",".join(token.roles),
                        rules,
                        token.aws_iid_ttl,
                        token.expires.isoformat() if token.expires else "never",
                        token.status,
                    )
                )
            widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
            for row in rows:
                self.stdout.write(
                    "  ".join(col.ljust(w) for col, w in zip(row, widths, strict=True)).rstrip()
                )
            if len(rows) == 1:
                self.stderr.write("no tokens yet: create one with `manage.py tokens create FILE`")

    def do_get(self, options: dict) -> None:
        token = Token.objects.filter(name=options["name"]).first()
        if token is None:
            raise CommandError(f"no token named {options['name']!r}")
        _media, _ext, render = EXPORT_FORMATS[options["output"]]
        self.stdout.write(render(token.to_resource()).rstrip("\n"))

    def do_rm(self, options: dict) -> None:
        try:
            delete_token(options["name"], actor=cli_actor(), via="cli")
        except TokenNotFoundError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(f'token "{options["name"]}" has been deleted')
