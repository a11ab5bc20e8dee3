"""``noclash repair --emit sql|alembic|django``: the plan as the project's own migration.

A repair applied behind an ORM's back leaves the ORM's history false: its next migration
drops or re-creates what it believes exists. Emitting the same statements as a migration
of the tool that manages the schema keeps that history true:

- ``sql``: a plain script (also what a Prisma migration's ``migration.sql`` holds);
- ``alembic``: a revision on top of the database's current head, ``op.execute`` of each
  statement, concurrent ones in ``autocommit_block()``;
- ``django``: a migration per app, one ``RunSQL`` per action whose ``state_operations``
  change Django's model state to match (the new partial ``UniqueConstraint``, the removed
  ``unique``/``unique_together``/constraint, the added legacy field), found in the state at
  migration time by table and column names, so custom ``db_table`` and ``db_column`` work.

The statements are exactly those ``repair --apply`` runs, set-based, so the migration is
right for every copy of the database, not only the one inspected.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict

from noclash.doctor.repairs import Action, RepairResult


def _digest(actions: list[Action]) -> str:
    text = json.dumps([a.statements for a in actions])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _split(action: Action) -> tuple[list[str], list[str]]:
    first = next((i for i, s in enumerate(action.steps) if s.concurrent), len(action.steps))
    return action.statements[:first], action.statements[first:]


def emit_sql(result: RepairResult, *, target: str, rebuilds: bool) -> str:
    """A plain SQL script: one transaction per action, concurrent statements after it."""
    out = [
        f"-- noclash repair plan for {target}, written by `noclash repair --emit sql`.",
        "-- Statements after a COMMIT run outside any transaction (CREATE INDEX CONCURRENTLY).",
    ]
    if rebuilds:
        out += [
            "-- A table rebuild needs foreign keys off for this connection (a no-op inside a",
            "-- transaction, so it comes first); PRAGMA foreign_key_check must return no row.",
            "PRAGMA foreign_keys = OFF;",
        ]
    for n, action in enumerate(result.actions, 1):
        now, later = _split(action)
        out += ["", f"-- {n}. {action.repair} {action.table}: {action.summary}"]
        if now:
            out.append("BEGIN;")
            out += [f"{s};" for s in now]
            if rebuilds:
                out.append("PRAGMA foreign_key_check;")
            out.append("COMMIT;")
        out += [f"{s};" for s in later]
    return "\n".join(out) + "\n"


def emit_alembic(result: RepairResult, *, heads: tuple[str, ...]) -> str:
    """An Alembic revision on top of ``heads`` (the database's ``alembic_version``)."""
    revision = _digest(result.actions)
    down: str = repr(heads[0]) if len(heads) == 1 else repr(tuple(heads)) if heads else "None"
    body: list[str] = []
    for n, action in enumerate(result.actions, 1):
        now, later = _split(action)
        body.append(f"    # {n}. {action.repair} {action.table}: {action.summary}")
        body += [f"    op.execute({s!r})" for s in now]
        if later:
            body.append("    with op.get_context().autocommit_block():")
            body += [f"        op.execute({s!r})" for s in later]
    summary = "; ".join(f"{a.repair} {a.table}" for a in result.actions)
    return "\n".join(
        [
            f'"""noclash repair: {summary}',
            "",
            f"Revision ID: {revision}",
            f"Revises: {', '.join(heads) or '<base>'}",
            '"""',
            "",
            "from alembic import op",
            "",
            f"revision = {revision!r}",
            f"down_revision = {down}",
            "branch_labels = None",
            "depends_on = None",
            "",
            "",
            "def upgrade() -> None:",
            *(body or ["    pass"]),
            "",
            "",
            "def downgrade() -> None:",
            "    # The rows changed are in noclash_repair_backup (or the --backup-dir JSONL).",
            '    raise NotImplementedError("restore from the noclash repair backup")',
            "",
        ]
    )


_DJANGO_STATE_OP = '''

class NoclashState(Operation):
    """Change the model state only (the SQL above changed the database): add or remove
    the uniqueness of ``columns`` on the model whose table is ``table``, or add a field."""

    reduces_to_sql = False
    reversible = False

    def __init__(self, changes):
        self.changes = changes

    def deconstruct(self):
        return (self.__class__.__name__, [self.changes], {})

    def describe(self):
        return "noclash repair: model state"

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        pass

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        pass

    @staticmethod
    def _model(state, table):
        for (app, name), model in state.models.items():
            if model.options.get("db_table", f"{app}_{name}") == table:
                return app, name, model
        raise LookupError(f"no model with table {table!r} in the migration state")

    @staticmethod
    def _column(name, field):
        if field.db_column:
            return field.db_column
        return f"{name}_id" if field.many_to_one or field.one_to_one else name

    def state_forwards(self, app_label, state):
        for change in self.changes:
            app, name, model = self._model(state, change["table"].rsplit(".", 1)[-1])
            by_column = {self._column(n, f): n for n, f in model.fields.items()}
            fields = [by_column[c] for c in change["columns"]]
            if change["kind"] == "add_column":
                model.fields[change["name"]] = models.TextField(null=True, blank=True)
            elif change["kind"] == "add_index":
                model.options.setdefault("indexes", []).append(
                    models.Index(fields=fields, name=change["name"])
                )
            elif change["kind"] == "add_unique":
                condition = None
                if change["state_column"]:
                    lookup = by_column[change["state_column"]] + "__in"
                    condition = models.Q(**{lookup: list(change["states"])})
                model.options.setdefault("constraints", []).append(
                    models.UniqueConstraint(
                        fields=fields, name=change["name"], condition=condition
                    )
                )
            elif change["kind"] == "drop_unique":
                together = {tuple(t) for t in model.options.get("unique_together", ())}
                model.options["unique_together"] = {
                    t for t in together if set(t) != set(fields)
                }
                model.options["constraints"] = [
                    c
                    for c in model.options.get("constraints", [])
                    if not (
                        isinstance(c, models.UniqueConstraint)
                        and c.condition is None
                        and set(c.fields) == set(fields)
                    )
                ]
                if len(fields) == 1 and model.fields[fields[0]].unique:
                    field = model.fields[fields[0]]
                    path, args, kwargs = field.deconstruct()[1:]
                    kwargs["unique"] = False
                    model.fields[fields[0]] = field.__class__(*args, **kwargs)
            state.reload_model(app, name, delay=True)
'''


def django_app(table: str, apps: list[str]) -> str | None:
    """The app owning ``table`` by Django's default ``<app_label>_<model>`` naming."""
    name = table.rsplit(".", 1)[-1]
    owners = [a for a in apps if name.startswith(f"{a}_")]
    return max(owners, key=len) if owners else None


def emit_django(result: RepairResult, *, history: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """``{"<app>/migrations/<name>.py": text}``: one migration per app that owns a table."""
    latest: dict[str, str] = {}
    for app, name in history:
        latest[app] = name
    apps = list(latest)
    by_app: dict[str, list[Action]] = {}
    for action in result.actions:
        app = django_app(action.table, apps) or (apps[-1] if apps else "noclash")
        by_app.setdefault(app, []).append(action)
    files: dict[str, str] = {}
    for app, actions in by_app.items():
        last = latest.get(app)
        number = int(last.split("_", 1)[0]) + 1 if last and last[:4].isdigit() else 1
        name = f"{number:04d}_noclash_repair_{_digest(actions)[:6]}"
        atomic = not any(s.concurrent for a in actions for s in a.steps)
        ops = []
        for action in actions:
            changes = [asdict(c) for c in action.schema]
            ops.append(
                "        migrations.RunSQL(\n"
                f"            # {action.repair} {action.table}: {action.summary}\n"
                f"            sql={action.statements!r},\n"
                "            reverse_sql=migrations.RunSQL.noop,\n"
                f"            state_operations=[NoclashState({changes!r})],\n"
                "        ),"
            )
        deps = f"[({app!r}, {last!r})]" if last else "[]"
        files[f"{app}/migrations/{name}.py"] = (
            f'"""noclash repair, written by `noclash repair --emit django`."""\n\n'
            "from django.db import migrations, models\n"
            "from django.db.migrations.operations.base import Operation\n"
            f"{_DJANGO_STATE_OP}\n\n"
            "class Migration(migrations.Migration):\n"
            + ("    atomic = False  # CREATE INDEX CONCURRENTLY\n" if not atomic else "")
            + f"    dependencies = {deps}\n"
            "    operations = [\n" + "\n".join(ops) + "\n    ]\n"
        )
    return files


__all__ = ["django_app", "emit_alembic", "emit_django", "emit_sql"]
