"""What `vlmft plugins list` reports: every plugin of every group, loaded or broken, available or why not."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from vlmft_cli import plugins


@dataclass
class PluginStatus:
    group: str
    name: str
    distribution: str
    version: str
    target: str
    status: str  # "available", "unavailable" or "broken"
    reason: str
    description: str


def plugin_statuses() -> list[PluginStatus]:
    rows: list[PluginStatus] = []
    for kind, group in plugins.GROUPS.items():
        for info in plugins.discover(kind):  # type: ignore[arg-type]
            status, reason, description = "available", "", ""
            if info.broken:
                status, reason = "broken", info.error or ""
            else:
                description = str(getattr(info.obj, "description", "") or "")
                check = getattr(info.obj, "availability", None)
                if callable(check):
                    try:
                        availability = check()
                    except Exception as exc:  # an availability check must not break the listing
                        availability = None
                        status, reason = "broken", f"availability check failed: {type(exc).__name__}: {exc}"
                    if availability is not None and not availability.available:
                        status, reason = "unavailable", availability.reason
            rows.append(PluginStatus(group, info.name, info.distribution, info.version, info.target, status, reason, description))
    return rows


def statuses_as_dicts() -> list[dict[str, str]]:
    return [asdict(row) for row in plugin_statuses()]
