"""The boot persistence scope: empty at every boot, the old one removed off the boot path."""

from __future__ import annotations

from pathlib import Path

from pvinit.supervisor.runtime import BOOT_SCOPE_OLD, fresh_boot_scope, sweep_boot_scope
from pvinit.trails.layout import StorageLayout


def _old_scopes(layout: StorageLayout) -> list[Path]:
    return [p for p in layout.disks.iterdir() if p.name.startswith(BOOT_SCOPE_OLD)]


def test_fresh_boot_scope_is_empty_and_the_last_one_is_moved_aside(tmp_path: Path) -> None:
    layout = StorageLayout(tmp_path)
    fresh_boot_scope(layout)
    boot = layout.scope_dir("boot", 0)
    (boot / "app" / "data").mkdir(parents=True)
    (boot / "app" / "data" / "file").write_text("from the last boot")

    fresh_boot_scope(layout)

    assert boot.is_dir() and list(boot.iterdir()) == []
    [old] = _old_scopes(layout)
    assert (old / "app" / "data" / "file").read_text() == "from the last boot"


def test_sweep_removes_every_old_scope_and_nothing_else(tmp_path: Path) -> None:
    layout = StorageLayout(tmp_path)
    for _ in range(3):  # e.g. power cuts before two sweeps
        fresh_boot_scope(layout)
        (layout.scope_dir("boot", 0) / "app").mkdir()
    perm = layout.scope_dir("permanent", 0) / "app"
    perm.mkdir(parents=True)
    assert len(_old_scopes(layout)) == 2
    logged: list[str] = []

    sweep_boot_scope(layout, logged.append)

    assert _old_scopes(layout) == []
    assert (layout.scope_dir("boot", 0) / "app").is_dir()
    assert perm.is_dir()
    assert logged == []
