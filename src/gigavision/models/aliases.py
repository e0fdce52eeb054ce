"""Model aliases: names (``production``, ``staging``, any) that point at one published model, with a history.

Predicting names a model through ``resolve`` (``infer/request.py``), so a promotion changes what the next
request loads, with no restart: the predictor cache is keyed by the model's folder and id, so the new model
loads fresh and the old one ages out of the cache.

Every move is one transaction on ``model_aliases`` plus one row in ``model_alias_events`` (who, when, why,
the evidence). Moves are ``UPDATE … WHERE version = ?``: two people (or a person and a loop) promoting at once
cannot both win; the second gets a ``Conflict`` naming where the alias points now. A caller that showed the
user a version passes it as ``expected_version`` and gets the same ``Conflict`` when the alias moved since.

- ``set``: point the alias at a model (creating it). On an existing alias the new model must have the same
  task and label set unless ``force`` (a deliberate change of what is served, recorded as such).
- ``promote``: the same move with its evidence (a comparison, a loop run), always checked: a model of
  another task or trained on another label set is refused.
- ``rollback``: back to the model the alias pointed at before the current one (a stack: rolling back twice
  goes back two promotions).
- ``remove``: the alias is gone; its history stays.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from gigavision.errors import Ambiguous, Conflict, InvalidInput, NotFound
from gigavision.models.store import MODEL_JSON, ModelInfo, get_model, models_dir
from gigavision.store.schema import ModelAliasEventRow, ModelAliasRow, utcnow

if TYPE_CHECKING:
    from gigavision.workspace import Workspace

ACTIONS = ("set", "promote", "rollback", "remove")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{0,63}$")
HISTORY_LIMIT = 1000
LINEAGE_IMAGES = 2000  # images whose frozen labels lineage reads to say who labelled them


@dataclass(frozen=True)
class Alias:
    """Where an alias points now; ``version`` counts its moves (what ``expected_version`` compares with)."""

    name: str
    model_id: str
    version: int
    updated_by: str
    updated_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.model_id,
            "version": self.version,
            "updated_by": self.updated_by,
            "updated_at": self.updated_at.isoformat(),
        }


@dataclass(frozen=True)
class AliasEvent:
    """One move of an alias: ``model_id`` is where it pointed afterwards (None: removed)."""

    id: int
    name: str
    action: str
    model_id: str | None
    previous_model_id: str | None
    actor: str
    at: datetime
    reason: str
    evidence: dict[str, Any] | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "alias": self.name,
            "action": self.action,
            "model": self.model_id,
            "previous_model": self.previous_model_id,
            "actor": self.actor,
            "at": self.at.isoformat(),
            "reason": self.reason,
            "evidence": self.evidence,
        }


def check_alias_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidInput(
            f"alias {name!r} is not valid: a letter, then letters, digits, '.', '_' or '-' (at most 64 characters)"
        )
    return name


def _alias(row: ModelAliasRow) -> Alias:
    return Alias(row.name, row.model_id, row.version, row.updated_by, row.updated_at)


def _event(row: ModelAliasEventRow) -> AliasEvent:
    return AliasEvent(
        row.id,
        row.name,
        row.action,
        row.model_id,
        row.previous_model_id,
        row.actor,
        row.at,
        row.reason or "",
        row.evidence,
    )


# -- reading ------------------------------------------------------------------------------------------------
def list_aliases(ws: Workspace, model_id: str | None = None) -> list[Alias]:
    """Every alias by name (those pointing at ``model_id`` when given)."""
    stmt = select(ModelAliasRow).order_by(ModelAliasRow.name)
    if model_id is not None:
        stmt = stmt.where(ModelAliasRow.model_id == model_id)
    with ws.session() as s:
        return [_alias(r) for r in s.scalars(stmt).all()]


def aliases_by_model(ws: Workspace) -> dict[str, list[str]]:
    """model id -> the aliases pointing at it (``models list``)."""
    out: dict[str, list[str]] = {}
    for a in list_aliases(ws):
        out.setdefault(a.model_id, []).append(a.name)
    return out


def get_alias(ws: Workspace, name: str) -> Alias:
    """The alias ``name``; NotFound lists the aliases that exist."""
    check_alias_name(name)
    with ws.session() as s:
        row = s.get(ModelAliasRow, name)
        if row is None:
            known = s.scalars(select(ModelAliasRow.name).order_by(ModelAliasRow.name).limit(20)).all()
    if row is None:
        hint = f"; aliases: {', '.join(known)}" if known else "; there are no aliases yet (gigavision models alias set)"
        raise NotFound(f"no alias {name!r}{hint}")
    return _alias(row)


def history(ws: Workspace, name: str, limit: int = HISTORY_LIMIT) -> list[AliasEvent]:
    """The moves of ``name``, newest first (also for a removed alias); NotFound when it never existed."""
    check_alias_name(name)
    if not 1 <= limit <= HISTORY_LIMIT:
        raise InvalidInput(f"limit must be 1..{HISTORY_LIMIT}, got {limit}")
    e = ModelAliasEventRow
    with ws.session() as s:
        rows = s.scalars(select(e).where(e.name == name).order_by(e.id.desc()).limit(limit)).all()
    if not rows:
        get_alias(ws, name)  # NotFound listing the aliases
    return [_event(r) for r in rows]


def resolve(ws: Workspace, ref: str) -> str:
    """The model id ``ref`` names: an alias, a model id, or a unique prefix of a model id (in that order)."""
    if not ref:
        raise InvalidInput("name a model: an alias (production) or a model id")
    if _NAME.match(ref):
        with ws.session() as s:
            row = s.get(ModelAliasRow, ref)
        if row is not None:
            return row.model_id
    folder = models_dir(ws)
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", ref) and ".." not in ref:
        if (folder / ref / MODEL_JSON).is_file():
            return ref
        matches = sorted(p.name for p in folder.iterdir() if p.name.startswith(ref) and (p / MODEL_JSON).is_file())
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise Ambiguous(f"model {ref!r} fits {len(matches)} models ({', '.join(matches[:5])}); name one")
    return get_model(ws, ref).id  # NotFound (or InvalidInput) listing the models


# -- checks -------------------------------------------------------------------------------------------------
def check_compatible(alias: str, current: ModelInfo, new: ModelInfo) -> None:
    """A model may replace ``current`` behind ``alias`` only with the same task and the same label set: the
    clients of an alias read its labels and would silently get other ones."""
    if new.task != current.task:
        raise InvalidInput(
            f"model {new.id} is a {new.task} model; alias {alias} serves {current.task} (model {current.id})"
        )
    if set(new.classes) != set(current.classes):
        added = sorted(set(new.classes) - set(current.classes))
        missing = sorted(set(current.classes) - set(new.classes))
        parts = ([f"adds {', '.join(added[:10])}"] if added else []) + (
            [f"lacks {', '.join(missing[:10])}"] if missing else []
        )
        raise InvalidInput(
            f"model {new.id} was trained on another label set than {current.id}, which alias {alias} serves"
            f" ({'; '.join(parts)}); point the alias at it deliberately with"
            f" 'gigavision models alias set {alias} {new.id} --force'"
        )


def _current_info(ws: Workspace, model_id: str) -> ModelInfo | None:
    """The model an alias points at, or None when its folder was removed (nothing left to compare with)."""
    try:
        return get_model(ws, model_id)
    except NotFound:
        return None


# -- moving -------------------------------------------------------------------------------------------------
def _move(
    ws: Workspace,
    name: str,
    action: str,
    model_id: str | None,
    *,
    actor: str,
    reason: str,
    evidence: dict[str, Any] | None,
    expected_version: int | None,
    seen: Alias | None,
) -> Alias | None:
    """Point ``name`` at ``model_id`` (None: remove it) if it is still as the caller saw it (``seen``)."""
    if not actor or len(actor) > 256:
        raise InvalidInput("actor must be 1 to 256 characters")
    if len(reason) > 10_000:
        raise InvalidInput("reason must be at most 10,000 characters")
    now = utcnow()
    try:
        with ws.session.begin() as s:
            row = s.get(ModelAliasRow, name)
            current = _alias(row) if row is not None else None
            _check_unmoved(name, seen, current, expected_version)
            if current is None:
                assert model_id is not None
                s.add(ModelAliasRow(name=name, model_id=model_id, version=1, updated_by=actor, updated_at=now))
                result: Alias | None = Alias(name, model_id, 1, actor, now)
            elif model_id is None:
                _checked(s.execute(delete(ModelAliasRow).where(_same(name, current.version))), name)
                result = None
            else:
                values = {"model_id": model_id, "version": current.version + 1, "updated_by": actor, "updated_at": now}
                _checked(s.execute(update(ModelAliasRow).where(_same(name, current.version)).values(**values)), name)
                result = Alias(name, model_id, current.version + 1, actor, now)
            s.add(
                ModelAliasEventRow(
                    name=name,
                    action=action,
                    model_id=model_id,
                    previous_model_id=current.model_id if current is not None else None,
                    actor=actor,
                    at=now,
                    reason=reason,
                    evidence=evidence,
                )
            )
    except IntegrityError as exc:  # created by someone else at the same moment
        raise Conflict(f"alias {name} was created by someone else at the same time; look at it and retry") from exc
    return result


def _same(name: str, version: int) -> Any:
    return (ModelAliasRow.name == name) & (ModelAliasRow.version == version)


def _checked(result: Any, name: str) -> None:
    if result.rowcount != 1:
        raise Conflict(f"alias {name} moved while this change was made; look at it again and retry")


def _check_unmoved(name: str, seen: Alias | None, current: Alias | None, expected: int | None) -> None:
    """Refuse when the alias is no longer what the caller decided on (``seen``) or showed (``expected``)."""
    now = f"it points at {current.model_id} (version {current.version})" if current else "it does not exist"
    if expected is not None and (current is None or current.version != expected):
        raise Conflict(f"alias {name} is no longer at version {expected}: {now}; look at it again and retry")
    if (seen is None) != (current is None) or (seen and current and seen.version != current.version):
        raise Conflict(f"alias {name} moved while this change was made: {now}; look at it again and retry")


def _peek(ws: Workspace, name: str) -> Alias | None:
    with ws.session() as s:
        row = s.get(ModelAliasRow, check_alias_name(name))
        return _alias(row) if row is not None else None


def _target(
    ws: Workspace, name: str, model_ref: str, seen: Alias | None, expected: int | None, *, check: bool
) -> ModelInfo:
    """The model ``model_ref`` names, checked against what ``name`` serves (after the version: a decision on a
    stale view is a conflict before anything else)."""
    _check_unmoved(name, seen, seen, expected)
    info = get_model(ws, resolve(ws, model_ref))
    if seen is None and (models_dir(ws) / name / MODEL_JSON).is_file():
        raise InvalidInput(f"alias {name!r} would hide the model of that id; choose another name")
    if seen is not None:
        if seen.model_id == info.id:
            raise InvalidInput(f"alias {name} already points at model {info.id}")
        current = _current_info(ws, seen.model_id)
        if check and current is not None:
            check_compatible(name, current, info)
    return info


def set_alias(
    ws: Workspace,
    name: str,
    model: str,
    *,
    actor: str,
    reason: str = "",
    force: bool = False,
    expected_version: int | None = None,
) -> Alias:
    """Point ``name`` at ``model`` (an id, a prefix or another alias), creating the alias if needed."""
    seen = _peek(ws, name)
    info = _target(ws, name, model, seen, expected_version, check=not force)
    moved = _move(
        ws,
        name,
        "set",
        info.id,
        actor=actor,
        reason=reason,
        evidence=None,
        expected_version=expected_version,
        seen=seen,
    )
    assert moved is not None
    return moved


def promote(
    ws: Workspace,
    name: str,
    model: str,
    *,
    actor: str,
    reason: str = "",
    evidence: dict[str, Any] | None = None,
    expected_version: int | None = None,
) -> Alias:
    """Point ``name`` at ``model`` with the evidence for it; a model of another task or label set is refused."""
    seen = _peek(ws, name)
    info = _target(ws, name, model, seen, expected_version, check=True)
    moved = _move(
        ws,
        name,
        "promote",
        info.id,
        actor=actor,
        reason=reason,
        evidence=evidence,
        expected_version=expected_version,
        seen=seen,
    )
    assert moved is not None
    return moved


def served_stack(events: list[AliasEvent]) -> list[str]:
    """The models an alias served, oldest first, as rollbacks see them: set/promote push, rollback pops,
    remove empties (``events`` oldest first)."""
    stack: list[str] = []
    for ev in events:
        if ev.action in ("set", "promote") and ev.model_id is not None:
            stack.append(ev.model_id)
        elif ev.action == "rollback" and stack:
            stack.pop()
        elif ev.action == "remove":
            stack.clear()
    return stack


def rollback(ws: Workspace, name: str, *, actor: str, reason: str = "", expected_version: int | None = None) -> Alias:
    """Point ``name`` back at the model it served before the current one."""
    seen = get_alias(ws, name)
    _check_unmoved(name, seen, seen, expected_version)
    stack = served_stack(list(reversed(history(ws, name))))
    if len(stack) < 2:
        raise InvalidInput(f"alias {name} has no earlier model to roll back to (it points at {seen.model_id})")
    target = stack[-2]
    get_model(ws, target)  # NotFound when that model was removed since
    moved = _move(
        ws,
        name,
        "rollback",
        target,
        actor=actor,
        reason=reason,
        evidence={"from": seen.model_id},
        expected_version=expected_version,
        seen=seen,
    )
    assert moved is not None
    return moved


def remove(ws: Workspace, name: str, *, actor: str, reason: str = "", expected_version: int | None = None) -> None:
    """Delete the alias (requests naming it fail from now on); its history stays."""
    seen = get_alias(ws, name)
    _move(
        ws,
        name,
        "remove",
        None,
        actor=actor,
        reason=reason,
        evidence=None,
        expected_version=expected_version,
        seen=seen,
    )


def check_unserved(ws: Workspace, model_id: str) -> None:
    """Refuse to delete a model an alias serves: requests naming the alias would fail from then on."""
    serving = [a.name for a in list_aliases(ws, model_id)]
    if serving:
        names = ", ".join(serving)
        raise Conflict(
            f"model {model_id} is served by alias {names}: promote another model or remove the alias first"
            f" (gigavision models alias remove {serving[0]})"
        )


def lineage(ws: Workspace, model_id: str, *, labellers: bool = False) -> dict[str, Any]:
    """What a model links to: the aliases serving it and the dataset version it was trained on (its creator
    and counts when the version still exists); with ``labellers``, who made the version's labels: annotations
    per source (``user:ana``, ``import:coco``, ``consensus``, ...), read from at most ``LINEAGE_IMAGES`` of
    its images (``labels.complete`` says whether that was all of them)."""
    info = get_model(ws, model_id)
    out: dict[str, Any] = {"model": info.id, "aliases": [a.name for a in list_aliases(ws, info.id)]}
    dataset: dict[str, Any] = {"ref": info.dataset, "content_hash": info.card.dataset_hash}
    try:
        from gigavision.datasets.versions import open_version

        version = open_version(ws, info.dataset)
    except (NotFound, InvalidInput):
        dataset["exists"] = False
    else:
        dataset.update(
            exists=True,
            created_by=version.created_by,
            created_at=version.created_at.isoformat(),
            images=version.counts.get("images"),
            annotations=version.counts.get("annotations"),
            same_content=version.content_hash == info.card.dataset_hash if info.card.dataset_hash else None,
        )
        if labellers:
            sources: dict[str, int] = {}
            read = 0
            for entry in version.images():
                if read == LINEAGE_IMAGES:
                    break
                read += 1
                for record in version.records(entry.id):
                    key = str(record.get("source") or "unknown")
                    sources[key] = sources.get(key, 0) + 1
            ordered = dict(sorted(sources.items(), key=lambda kv: (-kv[1], kv[0])))
            dataset["labels"] = {"by_source": ordered, "images_read": read, "complete": read == len(version)}
    out["dataset"] = dataset
    return out
