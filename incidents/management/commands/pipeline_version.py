"""`manage.py pipeline_version import --alertmanager alertmanager.yml --label LABEL [--silences silences.json]
[--parent LABEL] [--notes TEXT] [--name NAME]`: a pipeline version from an Alertmanager configuration.

The configuration (and the silences, as Alertmanager's own JSON: `GET /api/v2/silences` or `amtool silence query -o
json`) become a policy spec that groups, inhibits and silences as Alertmanager does (docs/policy.md). The spec hash is
printed alone on the last line, so a script can take it with `tail -n 1`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from incidents import services
from incidents.management.cli import CLI_ACTOR, refusal
from incidents.models import PipelineVersion

LABEL_MAX = PipelineVersion._meta.get_field("label").max_length


class Command(BaseCommand):
    help = "Create pipeline versions; `import` makes one from an Alertmanager configuration."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="{import}")
        create = actions.add_parser("import", help="create a pipeline version from an Alertmanager configuration")
        create.add_argument("--alertmanager", required=True, metavar="FILE", help="the alertmanager.yml to import")
        create.add_argument("--label", required=True, help=f"the new version's label, such as v3.0.0 (<= {LABEL_MAX})")
        create.add_argument(
            "--silences", metavar="FILE", help="a JSON list of Alertmanager silences (GET /api/v2/silences)"
        )
        create.add_argument("--parent", metavar="LABEL", help="the pipeline version this one replaces")
        create.add_argument("--notes", default="", help="free text kept with the version")
        create.add_argument("--name", help="the policy's name (default: Imported Alertmanager configuration)")

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        label = options["label"].strip()
        if not label or len(label) > LABEL_MAX:
            raise CommandError(f"--label {options['label']!r}: a label needs 1 to {LABEL_MAX} characters")
        parent = None
        if options["parent"]:
            parent = PipelineVersion.objects.filter(label=options["parent"]).first()
            if parent is None:
                raise CommandError(f"--parent {options['parent']!r}: no pipeline version has that label")
        config_path = options["alertmanager"]
        config_text = _read(config_path, "--alertmanager")
        silences = _silences(options["silences"]) if options["silences"] else None
        try:
            version = services.pipeline_version_import_alertmanager(
                label=label, config_text=config_text, silences=silences, actor=CLI_ACTOR, parent=parent,
                notes=options["notes"], name=options["name"],
            )
        except ValidationError as exc:
            errors = exc.message_dict
            for field, path in (("config", config_path), ("silences", options["silences"])):
                if field in errors:
                    raise CommandError(f"{path}: {' '.join(errors[field])}") from exc
            raise refusal(exc) from exc
        spec = version.spec
        suppression = spec.get("suppression", {})
        self.stdout.write(
            f"Created pipeline version {version.label} from {config_path}: "
            f"{len(suppression.get('inhibit', []))} inhibit rule(s), {len(suppression.get('silences', []))} silence(s)"
            + (f", parent {parent.label}." if parent else ".")
        )
        self.stdout.write(version.spec_hash)


def _read(path: str, option: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise CommandError(f"{option} {path}: no such file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"{option} {path}: cannot read it: {exc}") from exc


def _silences(path: str) -> list[Any]:
    try:
        return services.alertmanager_silences_parse(_read(path, "--silences"))
    except ValueError as exc:
        raise CommandError(f"--silences {path}: {exc}") from exc
