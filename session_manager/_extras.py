"""Optional dependencies: an import that fails names the extra that installs it."""

from __future__ import annotations

__all__ = ["DISTRIBUTION", "missing_extra"]

#: The name to ``pip install`` (the import name is ``session_manager``).
DISTRIBUTION = "mcp-session-manager"


def missing_extra(feature: str, extra: str, exc: ImportError) -> ModuleNotFoundError:
    """The error to raise when *feature* cannot import a package of the extra *extra*."""
    return ModuleNotFoundError(
        f"{feature} needs the {exc.name or 'missing'!r} package ({exc}): pip install '{DISTRIBUTION}[{extra}]'",
        name=exc.name,
    )
